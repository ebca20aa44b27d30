# shellcheck shell=bash
# The broker's host-side state: its key (base64 text on stdin) at KEY on the tmpfs TMPFS, readable only
# by the host uid that container uid BROKER_UID maps to under userns-remap, and the directory CA where
# the broker publishes the cage CA's certificate (writable by the broker's uid, readable by all: the
# claw mounts it read-only). Written like key-create.sh: a temporary name already 0400, then a rename.
# Header: CLAW, PIECE, TMPFS, ROOT, DIR, KEYDIR, KEY, CA, BROKER_UID, SUBUID_FILE, SUBGID_FILE.

owner_uid=$(host_id "$SUBUID_FILE" "$BROKER_UID")
owner_gid=$(host_id "$SUBGID_FILE" "$BROKER_UID")
broker_key=
read_secret broker_key 64

mkdir -p "$TMPFS"
if ! mountpoint -q "$TMPFS"; then
  mount -t tmpfs -o mode=0711,size=4m,nosuid,nodev,noexec clawstaff-keys "$TMPFS"
fi
[[ $(findmnt -n -o FSTYPE --mountpoint "$TMPFS") == tmpfs ]] \
  || die "$TMPFS is mounted but is not a tmpfs: refusing to put a key on it"
mkdir -p "$ROOT"
chmod 0711 "$ROOT"
mkdir -p "$DIR" "$KEYDIR" "$CA"
chmod 0711 "$DIR"
chown "$owner_uid:$owner_gid" "$KEYDIR" "$CA"
chmod 0500 "$KEYDIR"
chmod 0755 "$CA"

tmp="$KEYDIR/.key.$$"
trap 'rm -f -- "$tmp"' EXIT
rm -f -- "$KEYDIR"/.key.*
(
  set -o noclobber
  umask 0377
  printf '%s\n' "$broker_key" > "$tmp"
)
chown "$owner_uid:$owner_gid" "$tmp"
mv -f -T -- "$tmp" "$KEY"
broker_key=
