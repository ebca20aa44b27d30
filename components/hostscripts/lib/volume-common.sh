# shellcheck shell=bash
# The volume's files below VDIR, and the fscrypt helper (fscrypt.py, in FSCRYPT_PY from the header).
# shellcheck disable=SC2034  # the volume scripts that follow use them
IMG="$VDIR/backing.img"
MNT="$VDIR/mnt"
WRAPPED="$VDIR/volume-key.wrapped"
# The loop device is attached through a hard link with a random name, outside VDIR: the kernel shows
# the path a loop device was set up from in /sys/block/loop*/loop/backing_file to every container,
# and that path must not name the tenant. ALIAS_FILE keeps the link's name for re-attaching.
ALIAS_DIR="${VDIR%/*}/.loop"
ALIAS_FILE="$VDIR/loop-alias"
fscrypt() { python3 -c "$FSCRYPT_PY" "$@"; }
