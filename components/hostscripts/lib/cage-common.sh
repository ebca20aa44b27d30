# shellcheck shell=bash
# The start of every cage script (after the renderer's header, which sets CLAW and PIECE).
umask 077
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
die() { printf 'clawstaff %s %s: %s\n' "$PIECE" "$CLAW" "$*" >&2; exit 1; }
