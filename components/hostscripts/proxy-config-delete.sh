# shellcheck shell=bash
# Remove the proxy's configuration directory DIR; absent is fine.
# Header: CLAW, PIECE, DIR.

rm -rf -- "$DIR"
