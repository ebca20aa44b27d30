# shellcheck shell=bash
# Remove the broker's key, the published CA certificate and their directory DIR; the shared tmpfs may
# stay mounted for other cages. Header: CLAW, PIECE, DIR.

# On a tmpfs an overwrite buys nothing: the pages are freed with the file.
rm -rf -- "$DIR"
