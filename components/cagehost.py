"""Host-side state of one ClawCage, rendered as idempotent bash scripts.

Pulumi runs these as the create/delete steps of `pulumi_command.local.Command` (the local host) and
`pulumi_command.remote.Command` (Hetzner hosts). Three pieces, each a create/delete pair:

- limits: a parent cgroup per cage (`/clawstaff/<claw>`) holding the hard pids, memory(+swap) and
  cpu limits of the whole cage; the claw and its proxy run below it through Docker's `cgroup_parent`
  (the Docker provider has no pids field, and one parent caps claw + proxy together);
- key: the cage key on a tmpfs (never disk), owned by the host uid the cage user maps to;
- volume: an ext4 filesystem on a sparse loop file, the cage's directory in it encrypted with an
  fscrypt v2 policy under a key made on the host and stored only wrapped.

Rules every script follows: `set -euo pipefail`; running create twice converges to the same state
(Pulumi re-runs create when an input changes); delete of something absent succeeds; secrets travel
only on stdin (Pulumi's secret `stdin`), never in the script text, argv, env or output. Names are
validated here and shell-quoted anyway. The scripts work on cgroup v1 and v2, with or without systemd.

Wiring (components): pass `shell_command(render_..._create(...))` as `create` and the delete script
likewise as `delete`, the secret as `stdin`, and no `update` (then create re-runs on any change and
converges). Set `delete_before_replace=True`: the state is keyed by the claw's name, so Pulumi's default
create-before-delete would let the old resource's delete remove what the new create just made.
Nothing re-runs create after a host reboot; until it runs again the cage has no key and no volume.

Host packages the scripts use (all Debian bookworm): bash, coreutils, util-linux (mount, losetup,
mountpoint, findmnt), e2fsprogs (mkfs.ext4), openssl, python3 (stdlib only: the fscrypt ioctls,
because fscryptctl is not packaged in bookworm).
"""

from __future__ import annotations

import base64
import re
import shlex
from decimal import Decimal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from components.conventions import CGROUP_ROOT, HOST_KEY_ROOT, HOST_PROXY_CONFIG_ROOT, host_key_dir, host_volume_dir
from components.sealing import CAGE_KEY_BYTES

# The cgroup below which every cage's parent cgroup lives, in every hierarchy.
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses a CFS quota below 1 ms
VOLUME_KEY_BYTES = 64  # fscrypt AES-256-XTS needs a 64-byte master key
VOLUME_KEK_BYTES = 32
MIN_VOLUME_BYTES = 16 * 1024 * 1024  # ext4 with a journal needs a few MiB before any data fits
KEY_TMPFS = HOST_KEY_ROOT.rsplit("/", 1)[0]  # /run/clawstaff: the tmpfs that holds every cage key
KEY_TMPFS_SIZE = "4m"  # one page per key file: room for about a thousand cages
# openssl enc parameters of the wrapped volume key; part of the on-disk format, change with care.
WRAP_CIPHER_ARGS = "-aes-256-cbc -md sha256 -pbkdf2 -iter 100000"

_DNS_LABEL = re.compile(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?")


def _claw_name(claw: str) -> str:
    if not isinstance(claw, str) or not _DNS_LABEL.fullmatch(claw):
        raise ValueError(f"claw name {claw!r} is not a DNS label "
                         "(1-63 lower-case letters, digits and hyphens, not starting or ending with a hyphen)")
    return claw


def _positive_int(name: str, value: int, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")
    return value


def _container_uid(uid: int) -> int:
    # A cage runs as a non-root numeric uid; 0 would hand the key to the remapped container root.
    if isinstance(uid, bool) or not isinstance(uid, int) or not 1 <= uid <= 65535:
        raise ValueError(f"container uid must be an integer 1-65535 (a non-root user), got {uid!r}")
    return uid


def shell_command(script: str) -> str:
    """The `create`/`delete` string for a Command: runs the script under bash whatever shell the
    provider hands it to (local: `/bin/sh -c`, remote: the login shell). Stdin passes through."""
    return "/bin/bash -c " + shlex.quote(script)


def cgroup_parent(claw: str) -> str:
    """The containers' `cgroup_parent`: with the cgroupfs driver they land below this cgroup."""
    return f"/{CGROUP_ROOT}/{_claw_name(claw)}"


def host_key_path(claw: str) -> str:
    """Where the cage key lives on the host (a tmpfs); bind-mounted read-only into the cage."""
    return f"{host_key_dir(_claw_name(claw))}/key"


def volume_mount_path(claw: str) -> str:
    """The encrypted directory the claw container bind-mounts at conventions.CAGE_VOLUME_MOUNT."""
    return f"{host_volume_dir(_claw_name(claw))}/mnt/data"


def cpu_quota_us(cpus: Decimal) -> int:
    """CFS quota for `cpus` CPUs over CPU_PERIOD_US (v1 cfs_quota_us, v2 first field of cpu.max)."""
    if isinstance(cpus, bool) or not isinstance(cpus, (Decimal, int)) or not Decimal(cpus).is_finite():
        raise ValueError(f"cpus must be a Decimal, got {cpus!r}")
    quota = int(Decimal(cpus) * CPU_PERIOD_US)
    if quota < MIN_CPU_QUOTA_US:
        raise ValueError(f"cpus must be at least {Decimal(MIN_CPU_QUOTA_US) / CPU_PERIOD_US}, got {cpus}")
    return quota


def derive_volume_kek(sealing_key: str, claw: str) -> bytes:
    """The key-encryption key of a claw's volume key, derived from the stack's sealing secret.

    Per claw (the name is in the info string), distinct from the cage key (its own info string), and
    stable, so a re-create after a reboot can unwrap the volume key. It only wraps: deleting the
    wrapped volume key shreds the data although this KEK can always be derived again.
    """
    if not sealing_key:
        raise ValueError("sealing key is empty")
    hkdf = HKDF(algorithm=hashes.SHA256(), length=VOLUME_KEK_BYTES, salt=b"clawstaff/volume-kek/v1",
                info=b"clawstaff/clawcage/volume-kek/v1\x00" + _claw_name(claw).encode())
    return hkdf.derive(sealing_key.encode("utf-8"))


def volume_kek_stdin(kek: bytes) -> str:
    """What the volume create script expects on stdin: the KEK in base64 and a newline."""
    if len(kek) != VOLUME_KEK_BYTES:
        raise ValueError(f"volume KEK must be {VOLUME_KEK_BYTES} bytes")
    return base64.b64encode(kek).decode("ascii") + "\n"


# --- shared script parts ---------------------------------------------------------------------------


def _preamble(piece: str, claw: str) -> str:
    return f"""#!/bin/bash
# clawstaff {piece} of cage {claw}: rendered by components/cagehost.py; safe to run again.
set -euo pipefail
umask 077
export PATH=/usr/sbin:/usr/bin:/sbin:/bin LC_ALL=C
CLAW={shlex.quote(claw)}
die() {{ printf 'clawstaff {piece} %s: %s\\n' "$CLAW" "$*" >&2; exit 1; }}
"""


# userns-remap: container id U is host id (start of dockremap's range) + U. Computed on the host at run
# time, because only the host knows its ranges.
_HOST_ID = r"""
host_id() {  # host_id /etc/subuid|/etc/subgid U -> the host id that container id U maps to
  local file=$1 id=$2 line start count
  line=$(grep -m1 '^dockremap:' "$file" 2>/dev/null) \
    || die "userns-remap is not configured: $file has no dockremap range (dockerd --userns-remap=default creates it)"
  IFS=: read -r _ start count <<<"$line"
  [[ $start =~ ^[0-9]+$ && $count =~ ^[0-9]+$ ]] || die "malformed dockremap line in $file"
  (( id < count )) || die "container id $id is outside the dockremap range of $count ids in $file"
  echo $(( start + id ))
}
"""

# Reads one secret from stdin into the named variable without it touching argv, env or a file.
_READ_SECRET = r"""
read_secret() {  # read_secret VAR BYTES: base64 text on stdin that decodes to BYTES bytes
  local -n out=$1
  IFS= read -r -d '' out || true
  out=${out//[$' \t\r\n']/}
  [[ -n $out ]] || die "nothing on stdin: the ${1//_/ } must arrive there"
  local n
  n=$(printf '%s' "$out" | base64 -d 2>/dev/null | wc -c) || die "the ${1//_/ } on stdin is not base64"
  [[ $n -eq $2 ]] || die "the ${1//_/ } on stdin must decode to $2 bytes"
}
"""


# --- 1. limits -------------------------------------------------------------------------------------

# The cgroup mounts of this host: v2 unified, or v1 hierarchies (hybrid hosts have both kinds).
_CGROUP_FUNCS = r"""
cgroup_v2() { [[ $(stat -fc %T /sys/fs/cgroup) == cgroup2fs ]]; }
v1_mount() {  # v1_mount CONTROLLER -> the mount point of the v1 hierarchy that has it
  awk -v c="$1" '$3 == "cgroup" && index("," $4 ",", "," c ",") { print $2; exit }' /proc/self/mounts
}
all_cgroup_dirs() {  # this cage's cgroup in every hierarchy where it exists
  local m
  awk '$3 == "cgroup" || $3 == "cgroup2" { print $2 }' /proc/self/mounts | while read -r m; do
    if [[ -d $m/$CG ]]; then printf '%s\n' "$m/$CG"; fi
  done
}
swap_active() { [[ $(awk 'NR > 1' /proc/swaps | wc -l) -gt 0 ]]; }
"""


def render_limits_create(claw: str, *, cpus: Decimal, memory: int, pids: int) -> str:
    """Create the cage's parent cgroup and write its hard limits (the whole cage: claw + proxy).

    Why a parent cgroup: the Docker provider cannot set a pids limit, and one parent caps the claw
    and its proxy together, so a runaway cage is throttled or OOM-killed inside its own cgroup while
    its neighbours are untouched. Memory means memory+swap. Re-running it applies changed limits.
    """
    claw = _claw_name(claw)
    quota = cpu_quota_us(cpus)
    memory = _positive_int("memory", memory, 4 * 1024 * 1024)
    pids = _positive_int("pids", pids, 2)
    return _preamble("limits", claw) + f"""CG={shlex.quote(cgroup_parent(claw).lstrip("/"))}
PIDS={pids}
MEMORY={memory}
CPU_QUOTA={quota}
CPU_PERIOD={CPU_PERIOD_US}
{_CGROUP_FUNCS}
put() {{ printf '%s\\n' "$2" > "$1" || die "cannot write $2 to $1"; }}

if cgroup_v2; then
  root=/sys/fs/cgroup
  for c in cpu memory pids; do
    grep -qw "$c" "$root/cgroup.controllers" || die "the cgroup v2 controller $c is not available on this host"
  done
  # Controllers must be enabled in every ancestor's subtree_control to be usable below it, including
  # in the cage's own cgroup, where the containers' cgroups are created. Only missing ones are
  # written: systemd has usually enabled them at the root already.
  enable() {{
    local c
    for c in cpu memory pids; do
      grep -qw "$c" "$1/cgroup.subtree_control" || put "$1/cgroup.subtree_control" "+$c"
    done
  }}
  enable "$root"
  mkdir -p "$root/{CGROUP_ROOT}" "$root/$CG"
  enable "$root/{CGROUP_ROOT}"
  enable "$root/$CG"
  d=$root/$CG
  put "$d/pids.max" "$PIDS"
  put "$d/memory.max" "$MEMORY"
  if [[ -e $d/memory.swap.max ]]; then
    put "$d/memory.swap.max" 0
  elif swap_active; then
    die "swap is on but swap accounting is off (no memory.swap.max): cannot cap memory+swap"
  fi
  put "$d/cpu.max" "$CPU_QUOTA $CPU_PERIOD"
else
  for c in pids memory cpu; do
    [[ -n $(v1_mount "$c") ]] || die "no cgroup v1 hierarchy has the $c controller on this host"
    mkdir -p "$(v1_mount "$c")/$CG"
  done
  d=$(v1_mount pids)/$CG
  put "$d/pids.max" "$PIDS"
  d=$(v1_mount memory)/$CG
  if [[ -e $d/memory.memsw.limit_in_bytes ]]; then
    # memsw must stay >= the memory limit at every step: raise it first when growing.
    if (( MEMORY > $(cat "$d/memory.memsw.limit_in_bytes") )); then
      put "$d/memory.memsw.limit_in_bytes" "$MEMORY"
      put "$d/memory.limit_in_bytes" "$MEMORY"
    else
      put "$d/memory.limit_in_bytes" "$MEMORY"
      put "$d/memory.memsw.limit_in_bytes" "$MEMORY"
    fi
  else
    put "$d/memory.limit_in_bytes" "$MEMORY"
    ! swap_active || die "swap is on but swap accounting is off (no memory.memsw.*): cannot cap memory+swap"
  fi
  d=$(v1_mount cpu)/$CG
  put "$d/cpu.cfs_period_us" "$CPU_PERIOD"
  put "$d/cpu.cfs_quota_us" "$CPU_QUOTA"
fi
"""


def render_limits_delete(claw: str) -> str:
    """Remove the cage's cgroup from every hierarchy (runc creates it in those we do not limit too).

    Refuses, naming the cgroup, while a process is still inside: a running container would otherwise
    keep its cgroup and leak. Empty leftover children (a dead container's) are removed. The shared
    /clawstaff parent stays: another cage's create may be using it at the same moment.
    """
    claw = _claw_name(claw)
    return _preamble("limits", claw) + f"""CG={shlex.quote(cgroup_parent(claw).lstrip("/"))}
{_CGROUP_FUNCS}
mapfile -t dirs < <(all_cgroup_dirs)
for d in "${{dirs[@]}}"; do
  n=$(find "$d" -name cgroup.procs -exec cat {{}} + | wc -l)
  (( n == 0 )) || die "cgroup $d still holds $n processes: a container of this cage is still running; remove the cage's containers first"
done
for d in "${{dirs[@]}}"; do
  find "$d" -depth -type d -exec rmdir {{}} + || die "cannot remove cgroup $d"
done
"""


# --- 2. key delivery -------------------------------------------------------------------------------


def render_key_create(claw: str, *, uid: int, subuid_file: str = "/etc/subuid",
                      subgid_file: str = "/etc/subgid") -> str:
    """Put the cage key (base64 text on stdin) on a tmpfs, readable only by the cage's user.

    Why: the key opens the cage's sealed credentials, so it must never reach a disk: /run is not a
    tmpfs on every host, so the script mounts its own at /run/clawstaff. The file is written under a
    temporary name already 0400 and renamed into place, so it never exists with wider permissions or
    half written. Its owner is the host uid that container uid `uid` maps to under userns-remap.
    `subuid_file`/`subgid_file` exist for tests; hosts use the defaults.
    """
    claw = _claw_name(claw)
    uid = _container_uid(uid)
    key_dir = host_key_dir(claw)
    return _preamble("key", claw) + f"""TMPFS={shlex.quote(KEY_TMPFS)}
KEY_ROOT={shlex.quote(HOST_KEY_ROOT)}
DIR={shlex.quote(key_dir)}
KEY={shlex.quote(host_key_path(claw))}
{_HOST_ID}{_READ_SECRET}
owner_uid=$(host_id {shlex.quote(subuid_file)} {uid})
owner_gid=$(host_id {shlex.quote(subgid_file)} {uid})
cage_key=
read_secret cage_key {CAGE_KEY_BYTES}

mkdir -p "$TMPFS"
if ! mountpoint -q "$TMPFS"; then
  mount -t tmpfs -o mode=0711,size={KEY_TMPFS_SIZE},nosuid,nodev,noexec clawstaff-keys "$TMPFS"
fi
[[ $(findmnt -n -o FSTYPE --mountpoint "$TMPFS") == tmpfs ]] \\
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
  printf '%s\\n' "$cage_key" > "$tmp"
)
chown "$owner_uid:$owner_gid" "$tmp"
mv -f -T -- "$tmp" "$KEY"
cage_key=
"""


def render_key_delete(claw: str) -> str:
    """Remove the cage key and its directory; the shared tmpfs may stay mounted for other cages."""
    claw = _claw_name(claw)
    return _preamble("key", claw) + f"""DIR={shlex.quote(host_key_dir(claw))}
# On a tmpfs an overwrite buys nothing: the pages are freed with the file.
rm -rf -- "$DIR"
"""


# --- 3. encrypted volume ---------------------------------------------------------------------------

# The fscrypt ioctls, as fscryptctl does them (fscryptctl is not packaged in Debian bookworm).
# Commands: identifier (key on stdin), add_key MNT (key on stdin), set_policy ID DIR,
# get_policy DIR (exit 3: not encrypted), remove_key ID MNT. Keys arrive on stdin as base64 text.
_FSCRYPT_PY = r'''
import base64, binascii, errno, fcntl, hashlib, hmac, os, struct, sys

SET_POLICY, GET_POLICY_EX = 0x800C6613, 0xC0096616
ADD_KEY, REMOVE_KEY_ALL_USERS = 0xC0506617, 0xC0406619
SPEC_IDENTIFIER, POLICY_V2 = 2, 2
AES_256_XTS, AES_256_CTS, PAD_32 = 1, 4, 0x03
REMOVAL_FILES_BUSY = 0x1
KEY_BYTES = 64

def fail(message, code=1):
    sys.stderr.write("fscrypt: " + message + "\n")
    sys.exit(code)

def read_key():
    try:
        key = bytearray(base64.b64decode(sys.stdin.buffer.read().strip(), validate=True))
    except (binascii.Error, ValueError):
        fail("the key on stdin is not base64")
    if len(key) != KEY_BYTES:
        fail("the key on stdin must be %d bytes" % KEY_BYTES)
    return key

def identifier(key):
    # The kernel's key identifier: HKDF-SHA512(key), info "fscrypt\0" + context 1, 16 bytes.
    prk = hmac.new(bytes(64), bytes(key), hashlib.sha512).digest()
    return hmac.new(prk, b"fscrypt\0\x01\x01", hashlib.sha512).digest()[:16]

def ioctl(path, request, buf, directory=False):
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        fcntl.ioctl(fd, request, buf, True)
    finally:
        os.close(fd)

def key_identifier(hex_id):
    try:
        raw = bytes.fromhex(hex_id)
    except ValueError:
        raw = b""
    if len(raw) != 16:
        fail("bad key identifier")
    return raw

def spec(hex_id):
    return struct.pack("=II16s16x", SPEC_IDENTIFIER, 0, key_identifier(hex_id))

command, args = sys.argv[1], sys.argv[2:]
try:
    if command == "identifier":
        print(identifier(read_key()).hex())
    elif command == "add_key":
        key = read_key()
        buf = bytearray(struct.pack("=II32sII32x", SPEC_IDENTIFIER, 0, b"", KEY_BYTES, 0)) + key
        try:
            ioctl(args[0], ADD_KEY, buf)
            print(bytes(buf[8:24]).hex())
        finally:
            key[:] = bytes(len(key))
            buf[:] = bytes(len(buf))
    elif command == "set_policy":
        policy = struct.pack("=BBBB4x16s", POLICY_V2, AES_256_XTS, AES_256_CTS, PAD_32,
                             key_identifier(args[0]))
        ioctl(args[1], SET_POLICY, bytearray(policy), directory=True)
    elif command == "get_policy":
        buf = bytearray(struct.pack("=Q", 24) + bytes(24))
        try:
            ioctl(args[0], GET_POLICY_EX, buf)
        except OSError as e:
            if e.errno == errno.ENODATA:
                fail("%s is not encrypted" % args[0], 3)
            raise
        if buf[8] != POLICY_V2:
            fail("%s has an fscrypt policy of version %d, not 2" % (args[0], buf[8]))
        print(bytes(buf[16:32]).hex())
    elif command == "remove_key":
        buf = bytearray(spec(args[0]) + bytes(24))
        try:
            ioctl(args[1], REMOVE_KEY_ALL_USERS, buf)
        except OSError as e:
            if e.errno != errno.ENOKEY:
                raise
        else:
            if struct.unpack_from("=I", buf, 40)[0] & REMOVAL_FILES_BUSY:
                fail("files of the volume are still in use; the key is only partly removed")
    else:
        fail("unknown command " + command)
except OSError as e:
    fail("%s: %s" % (command, os.strerror(e.errno)))
'''


def _volume_paths(claw: str) -> str:
    vdir = host_volume_dir(claw)
    return f"""VDIR={shlex.quote(vdir)}
IMG="$VDIR/backing.img"
MNT="$VDIR/mnt"
DATA={shlex.quote(volume_mount_path(claw))}
WRAPPED="$VDIR/volume-key.wrapped"
FSCRYPT_PY={shlex.quote(_FSCRYPT_PY)}
fscrypt() {{ python3 -c "$FSCRYPT_PY" "$@"; }}
"""


def render_volume_create(claw: str, *, size: int, uid: int, subuid_file: str = "/etc/subuid",
                         subgid_file: str = "/etc/subgid") -> str:
    """Create, or re-open after a reboot, the cage's encrypted volume of exactly `size` bytes.

    Why this shape: the filesystem's size is the disk cap (ENOSPC stays inside the volume); fscrypt
    encrypts the cage's directory at rest under a fresh 64-byte key made on this host; only that key
    wrapped under the KEK from stdin is stored, beside the backing file, so destroying the wrapped key
    shreds the data. Without fscrypt support it fails: never a plaintext volume. A re-run unwraps the
    stored key (a wrong KEK is refused before it touches the filesystem) and converges.
    """
    claw = _claw_name(claw)
    size = _positive_int("volume size", size, MIN_VOLUME_BYTES)
    uid = _container_uid(uid)
    return _preamble("volume", claw) + _volume_paths(claw) + f"""SIZE={size}
{_HOST_ID}{_READ_SECRET}
wrap_args=({WRAP_CIPHER_ARGS})
[[ -e /sys/fs/ext4/features/encryption ]] \\
  || die "this kernel's ext4 has no encryption support: refusing to create an unencrypted volume"
for tool in mkfs.ext4 losetup mountpoint findmnt openssl python3 shred; do
  command -v "$tool" >/dev/null || die "$tool is not installed (packages: e2fsprogs util-linux openssl python3)"
done
owner_uid=$(host_id {shlex.quote(subuid_file)} {uid})
owner_gid=$(host_id {shlex.quote(subgid_file)} {uid})
kek=
read_secret kek {VOLUME_KEK_BYTES}

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
loop=$(losetup -j "$IMG" -n -O NAME | head -n 1)
[[ -n $loop ]] || loop=$(losetup --find --show -- "$IMG")
mkdir -p "$MNT"
if ! mountpoint -q "$MNT"; then
  mount -t ext4 -o nosuid,nodev,noexec "$loop" "$MNT"
fi
[[ $(findmnt -n -o SOURCE --mountpoint "$MNT") == "$loop" ]] \\
  || die "$MNT is mounted from something other than the volume's loop device $loop"
chmod 0700 "$MNT"

# The volume key: unwrap the stored one, or make one here and store it wrapped before any use.
if [[ -e $WRAPPED ]]; then
  volume_key=$(openssl enc -d "${{wrap_args[@]}}" -pass fd:3 -in "$WRAPPED" 3< <(printf '%s' "$kek") 2>/dev/null) \\
    || die "cannot unwrap the volume key with the key-encryption key on stdin (wrong key or damaged $WRAPPED)"
else
  [[ ! -e $DATA ]] || die "$DATA exists but the wrapped volume key is gone: its data cannot be decrypted; delete the volume"
  volume_key=$(head -c {VOLUME_KEY_BYTES} /dev/urandom | base64 -w 0)
  rm -f -- "$WRAPPED.new"
  printf '%s' "$volume_key" | openssl enc -e "${{wrap_args[@]}}" -salt -pass fd:3 -out "$WRAPPED.new" 3< <(printf '%s' "$kek")
  sync -- "$WRAPPED.new"
  mv -T -- "$WRAPPED.new" "$WRAPPED"
fi
kek=
key_id=$(printf '%s' "$volume_key" | fscrypt identifier 2>/dev/null) \\
  || die "the unwrapped volume key is malformed (wrong key-encryption key?)"
if [[ -e $DATA ]]; then
  policy_id=$(fscrypt get_policy "$DATA") || die "$DATA is not encrypted: refusing to use it"
  [[ $policy_id == "$key_id" ]] \\
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
"""


def render_volume_delete(claw: str) -> str:
    """Shred and remove the cage's volume: key out of the kernel, unmount, detach, destroy the key.

    Why this order: the wrapped key is overwritten and deleted before the backing file, so an
    interrupted delete never leaves readable data behind. Refuses while another mount namespace (a
    running container) still has the volume mounted, instead of leaking a busy loop device.
    """
    claw = _claw_name(claw)
    return _preamble("volume", claw) + _volume_paths(claw) + r"""
if mountpoint -q "$MNT"; then
  majmin=$(mountpoint -d "$MNT")
  self_ns=$(readlink /proc/self/ns/mnt)
  for info in /proc/[0-9]*/mountinfo; do
    pid=${info#/proc/}; pid=${pid%/mountinfo}
    awk -v d="$majmin" '$3 == d { found = 1 } END { exit !found }' "$info" 2>/dev/null || continue
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
# Crypto-shredding: without the wrapped key the backing file's ciphertext cannot be opened.
for f in "$WRAPPED" "$WRAPPED.new"; do
  [[ ! -e $f ]] || shred --iterations=1 --zero --remove=wipesync -- "$f"
done
! mountpoint -q "$MNT" 2>/dev/null || die "$MNT is still mounted"
rm -rf -- "$VDIR"
"""


# --- 4. proxy configuration ------------------------------------------------------------------------


def proxy_config_dir(claw: str) -> str:
    """The host directory holding the cage proxy's squid.conf, bind-mounted read-only into the proxy.

    On disk, not tmpfs: it holds no secret, and the proxy must find it again after a host reboot."""
    return f"{HOST_PROXY_CONFIG_ROOT}/{_claw_name(claw)}"


def render_proxy_config_create(claw: str) -> str:
    """Install the proxy's rendered squid.conf (text on stdin), atomically and world-readable.

    Why a file from the host: the proxy's root filesystem is read-only, and Docker refuses to copy a
    file into such a container. The proxy container carries the file's hash in a label, so a changed
    config replaces (restarts) the proxy.
    """
    claw = _claw_name(claw)
    return _preamble("proxy config", claw) + f"""DIR={shlex.quote(proxy_config_dir(claw))}
umask 022
install -d -m 0755 {shlex.quote(HOST_PROXY_CONFIG_ROOT)} "$DIR"
tmp=$(mktemp "$DIR/.squid.conf.XXXXXX")
trap 'rm -f "$tmp"' EXIT
cat > "$tmp"
[[ -s $tmp ]] || die "nothing on stdin: the proxy configuration must arrive there"
chmod 0444 "$tmp"
mv -f "$tmp" "$DIR/squid.conf"
trap - EXIT
"""


def render_proxy_config_delete(claw: str) -> str:
    """Remove the proxy's configuration directory; absent is fine."""
    claw = _claw_name(claw)
    return _preamble("proxy config", claw) + f"""rm -rf -- {shlex.quote(proxy_config_dir(claw))}
"""
