# shellcheck shell=bash
# Create, or re-open after a reboot, the cage's encrypted volume of exactly SIZE bytes: ext4 on a sparse
# loop file IMG, mounted at MNT, the directory DATA in it encrypted with an fscrypt v2 policy under a
# fresh VOLUME_KEY_BYTES-byte key made here and stored only wrapped (WRAPPED, openssl enc with
# WRAP_CIPHER_ARGS) under the key-encryption key of KEK_BYTES bytes that arrives on stdin.
# Header: CLAW, PIECE, VDIR, DATA, FSCRYPT_PY, SIZE, CAGE_UID, SUBUID_FILE, SUBGID_FILE, KEK_BYTES,
# VOLUME_KEY_BYTES, WRAP_CIPHER_ARGS, SANDBOX_WALK (1: the claw runs under gVisor).

read -r -a wrap_args <<<"$WRAP_CIPHER_ARGS"
[[ -e /sys/fs/ext4/features/encryption ]] \
  || die "this kernel's ext4 has no encryption support: refusing to create an unencrypted volume"
for tool in mkfs.ext4 losetup mountpoint findmnt openssl python3 shred; do
  command -v "$tool" >/dev/null || die "$tool is not installed (packages: e2fsprogs util-linux openssl python3)"
done
owner_uid=$(host_id "$SUBUID_FILE" "$CAGE_UID")
owner_gid=$(host_id "$SUBGID_FILE" "$CAGE_UID")
kek=
read_secret kek "$KEK_BYTES"

mkdir -p "$VDIR"
chmod 0700 "$VDIR"
# The backing file: sparse, exactly SIZE bytes, formatted before it gets its final name.
if [[ -e $IMG ]]; then
  have=$(stat -c %s "$IMG")
  [[ $have -eq $SIZE ]] || die "the volume has $have bytes but $SIZE are asked for: resizing is not supported"
else
  rm -f -- "$IMG.new"
  truncate -s "$SIZE" "$IMG.new"
  # -m 0: no root reserve, so the cap is the same for every writer; 4 KiB blocks for fscrypt.
  mkfs.ext4 -q -F -b 4096 -m 0 -O encrypt -E nodiscard "$IMG.new" >/dev/null
  mv -T -- "$IMG.new" "$IMG"
fi
# The opaque alias (lib/volume-common.sh): made once, kept in ALIAS_FILE. A loop device attached before
# the alias existed keeps showing the old path until it is next attached (after a host reboot).
if [[ ! -s $ALIAS_FILE ]]; then
  printf '%s.img\n' "$(head -c 16 /dev/urandom | od -An -tx1 | tr -d ' \n')" > "$ALIAS_FILE.new"
  mv -T -- "$ALIAS_FILE.new" "$ALIAS_FILE"
fi
alias_name=$(<"$ALIAS_FILE")
[[ $alias_name =~ ^[0-9a-f]{32}\.img$ ]] || die "$ALIAS_FILE does not hold a loop alias name"
install -d -m 0700 "$ALIAS_DIR"
alias_path="$ALIAS_DIR/$alias_name"
if [[ ! $alias_path -ef $IMG ]]; then
  rm -f -- "$alias_path"
  ln -- "$IMG" "$alias_path"
fi
# losetup -j matches by inode: it finds a device attached through the alias or through IMG.
loop=$(losetup -j "$IMG" -n -O NAME | head -n 1)
[[ -n $loop ]] || loop=$(losetup --find --show -- "$alias_path")
mkdir -p "$MNT"
if ! mountpoint -q "$MNT"; then
  mount -t ext4 -o nosuid,nodev,noexec "$loop" "$MNT"
fi
[[ $(findmnt -n -o SOURCE --mountpoint "$MNT") == "$loop" ]] \
  || die "$MNT is mounted from something other than the volume's loop device $loop"
chmod 0700 "$MNT"

# The volume key: unwrap the stored one, or make one here and store it wrapped before any use.
if [[ -e $WRAPPED ]]; then
  volume_key=$(openssl enc -d "${wrap_args[@]}" -pass fd:3 -in "$WRAPPED" 3< <(printf '%s' "$kek") 2>/dev/null) \
    || die "cannot unwrap the volume key with the key-encryption key on stdin (wrong key or damaged $WRAPPED)"
else
  [[ ! -e $DATA ]] || die "$DATA exists but the wrapped volume key is gone: its data cannot be decrypted; delete the volume"
  volume_key=$(head -c "$VOLUME_KEY_BYTES" /dev/urandom | base64 -w 0)
  rm -f -- "$WRAPPED.new"
  printf '%s' "$volume_key" | openssl enc -e "${wrap_args[@]}" -salt -pass fd:3 -out "$WRAPPED.new" 3< <(printf '%s' "$kek")
  sync -- "$WRAPPED.new"
  mv -T -- "$WRAPPED.new" "$WRAPPED"
fi
kek=
key_id=$(printf '%s' "$volume_key" | fscrypt identifier 2>/dev/null) \
  || die "the unwrapped volume key is malformed (wrong key-encryption key?)"
if [[ -e $DATA ]]; then
  policy_id=$(fscrypt get_policy "$DATA") || die "$DATA is not encrypted: refusing to use it"
  [[ $policy_id == "$key_id" ]] \
    || die "the volume key does not open $DATA (wrong key-encryption key?)"
fi
added_id=$(printf '%s' "$volume_key" | fscrypt add_key "$MNT")
volume_key=
[[ $added_id == "$key_id" ]] || die "the kernel reports key $added_id, expected $key_id"
if [[ ! -e $DATA ]]; then
  # Encrypt an empty directory, then give it its final name: DATA never exists unencrypted.
  rm -rf -- "$DATA.new"
  mkdir -m 0700 "$DATA.new"
  fscrypt set_policy "$key_id" "$DATA.new"
  mv -T -- "$DATA.new" "$DATA"
fi
chown "$owner_uid:$owner_gid" "$DATA"
chmod 0700 "$DATA"

# Under gVisor the cage's bind mounts are made by the sandbox's gofer, which runs as root of the
# daemon's user namespace (host uid and gid 0 of the remap range), not as the host's root: it must be
# able to walk from / down to DATA (which the claw's uid owns; the gofer may open it as the root of the
# namespace that maps that uid). That one group may walk the volume's directories (0710: nothing to
# list, nothing to read); other host users still may not.
if [[ $SANDBOX_WALK == 1 ]]; then
  sandbox_gid=$(host_id "$SUBGID_FILE" 0)
  for dir in "${VDIR%/*/*}" "${VDIR%/*}" "$VDIR" "$MNT"; do
    chgrp "$sandbox_gid" "$dir"
    chmod 0710 "$dir"
  done
fi
