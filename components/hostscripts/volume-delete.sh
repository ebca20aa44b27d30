# shellcheck shell=bash
# Shred and remove the cage's volume: key out of the kernel, unmount, detach, destroy the wrapped key
# (before the backing file, so an interrupted delete never leaves readable data behind), remove VDIR.
# Refuses while another mount namespace (a running container) still has the volume mounted.
# Header: CLAW, PIECE, VDIR, DATA, FSCRYPT_PY.

if mountpoint -q "$MNT"; then
  majmin=$(mountpoint -d "$MNT")
  self_ns=$(readlink /proc/self/ns/mnt)
  for info in /proc/[0-9]*/mountinfo; do
    pid=${info#/proc/}; pid=${pid%/mountinfo}
    # Only a namespace that holds the volume other than as a propagated copy of the host's mount
    # counts: a copy at the same path that is a slave of it (systemd-udevd's private namespace on
    # systemd hosts) goes away with the unmount below. A container's bind mount is elsewhere.
    awk -v d="$majmin" -v m="$MNT" '$3 == d && !($5 == m && $0 ~ / master:[0-9]+ /) { found = 1 } END { exit !found }' \
      "$info" 2>/dev/null || continue
    ns=$(readlink "/proc/$pid/ns/mnt" 2>/dev/null) || continue
    [[ $ns == "$self_ns" ]] \
      || die "the volume is still mounted in another mount namespace (pid $pid, a running container?): stop the cage first"
  done
  if [[ -d $DATA ]] && key_id=$(fscrypt get_policy "$DATA" 2>/dev/null); then
    fscrypt remove_key "$key_id" "$MNT"
  fi
  umount "$MNT" || die "cannot unmount $MNT: still in use"
fi
if [[ -e $IMG ]]; then
  losetup -j "$IMG" -n -O NAME | while read -r loop; do losetup -d "$loop"; done
fi
# The opaque alias is a second name of the backing file: it goes with it.
if [[ -s $ALIAS_FILE ]]; then
  alias_name=$(<"$ALIAS_FILE")
  if [[ $alias_name =~ ^[0-9a-f]{32}\.img$ ]]; then
    rm -f -- "$ALIAS_DIR/$alias_name"
  fi
fi
# Crypto-shredding: without the wrapped key the backing file's ciphertext cannot be opened.
for f in "$WRAPPED" "$WRAPPED.new"; do
  [[ ! -e $f ]] || shred --iterations=1 --zero --remove=wipesync -- "$f"
done
! mountpoint -q "$MNT" 2>/dev/null || die "$MNT is still mounted"
rm -rf -- "$VDIR"
