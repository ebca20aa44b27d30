# shellcheck shell=bash
# Put the cage key (base64 text on stdin) at KEY on the tmpfs TMPFS, readable only by the host uid that
# container uid CAGE_UID maps to under userns-remap. Written under a temporary name already 0400 and
# renamed into place, so it never exists with wider permissions or half written.
# Header: CLAW, PIECE, TMPFS, KEY_ROOT, DIR, KEY, CAGE_UID, SUBUID_FILE, SUBGID_FILE.
# 64 below is components.sealing.CAGE_KEY_BYTES (tests/unit/test_cagehost.py holds the two equal).

owner_uid=$(host_id "$SUBUID_FILE" "$CAGE_UID")
owner_gid=$(host_id "$SUBGID_FILE" "$CAGE_UID")
cage_key=
read_secret cage_key 64

mkdir -p "$TMPFS"
if ! mountpoint -q "$TMPFS"; then
  mount -t tmpfs -o mode=0711,size=4m,nosuid,nodev,noexec clawstaff-keys "$TMPFS"
fi
[[ $(findmnt -n -o FSTYPE --mountpoint "$TMPFS") == tmpfs ]] \
  || die "$TMPFS is mounted but is not a tmpfs: refusing to put a key on it"
mkdir -p "$KEY_ROOT"
chmod 0711 "$KEY_ROOT"
mkdir -p "$DIR"
chown "$owner_uid:$owner_gid" "$DIR"
chmod 0500 "$DIR"

tmp="$DIR/.key.$$"
trap 'rm -f -- "$tmp"' EXIT
rm -f -- "$DIR"/.key.*
(
  set -o noclobber
  umask 0377
  printf '%s\n' "$cage_key" > "$tmp"
)
chown "$owner_uid:$owner_gid" "$tmp"
mv -f -T -- "$tmp" "$KEY"
cage_key=
