# shellcheck shell=bash
# The volume's files below VDIR, and the fscrypt helper (fscrypt.py, in FSCRYPT_PY from the header).
# shellcheck disable=SC2034  # the volume scripts that follow use them
IMG="$VDIR/backing.img"
MNT="$VDIR/mnt"
WRAPPED="$VDIR/volume-key.wrapped"
fscrypt() { python3 -c "$FSCRYPT_PY" "$@"; }
