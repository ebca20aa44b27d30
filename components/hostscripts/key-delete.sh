# shellcheck shell=bash
# Remove the cage key and its directory DIR; the shared tmpfs may stay mounted for other cages.
# Header: CLAW, PIECE, DIR.

# On a tmpfs an overwrite buys nothing: the pages are freed with the file.
rm -rf -- "$DIR"
