"""Host-side state of one ClawCage: the scripts that create and delete it, rendered with their inputs.

Pulumi runs these as the create/delete steps of `pulumi_command.local.Command` (the local host) and
`pulumi_command.remote.Command` (Hetzner hosts). Three pieces, each a create/delete pair:

- limits: one parent cgroup per cage holding the hard pids, memory(+swap), cpu (and io weight) limits of
  the whole cage; the claw and its proxy run below it through Docker's `cgroup_parent` (the Docker
  provider has no pids field, and one parent caps claw + proxy together). On a systemd host (every host
  the program provisions) it is a slice unit, `clawstaff-<claw>.slice`, that the script writes and
  systemd keeps across container replacement and reboot; on an engine without systemd (this machine's)
  it is the cgroup `/clawstaff/<claw>` (components.conventions.cage_cgroup);
- key: the cage key on a tmpfs (never disk), owned by the host uid the cage user maps to;
- volume: an ext4 filesystem on a sparse loop file, the cage's directory in it encrypted with an
  fscrypt v2 policy under a key made on the host and stored only wrapped.

The scripts themselves are bash files in components/hostscripts/ (`limits-create.sh`, ..., with the
fscrypt helper `fscrypt.py`); this module validates the names, sizes and uids and hands them to
`hostscripts.render_script`, which writes them as shell-quoted header variables and a JSON facts line.
Rules every script follows: `set -euo pipefail`; running create twice converges to the same state
(Pulumi re-runs create when an input changes); delete of something absent succeeds; secrets travel
only on stdin (Pulumi's secret `stdin`), never in the script text, argv, env or output. The scripts
work on cgroup v1 and v2; the systemd form needs systemd and cgroup v2 (what bootstrap requires).

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
import shlex
from decimal import Decimal

from components.conventions import (
    CGROUP_ROOT,
    HOST_BROKER_ROOT,
    HOST_KEY_ROOT,
    HOST_PROXY_CONFIG_ROOT,
    cage_cgroup,
    cage_cgroup_parent,
    cage_slice,
    host_broker_ca_dir,
    host_broker_dir,
    host_broker_key_dir,
    host_key_dir,
    host_volume_dir,
    is_dns_label,
)
from components.hostscripts import fscrypt_helper, render_script
from components.kdf import VOLUME_KEK_INFO_PREFIX, VOLUME_KEK_SALT, hkdf_sha256
from components.sealing import CAGE_KEY_BYTES  # noqa: F401  (key-create.sh reads this many bytes; a test pins it)
from components.units import MiB

# The cgroup below which every cage's parent cgroup lives, in every hierarchy.
CPU_PERIOD_US = 100_000
MIN_CPU_QUOTA_US = 1_000  # the kernel refuses a CFS quota below 1 ms
# systemd's IOWeight of every cage slice: equal shares of a contended disk (systemd's default is 100).
# It takes effect where the disk's scheduler honours weights (BFQ, or io.cost); docs/vm-host.md.
CAGE_IO_WEIGHT = 100
VOLUME_KEY_BYTES = 64  # fscrypt AES-256-XTS needs a 64-byte master key
VOLUME_KEK_BYTES = 32
MIN_VOLUME_BYTES = 16 * MiB  # ext4 with a journal needs a few MiB before any data fits
KEY_TMPFS = HOST_KEY_ROOT.rsplit("/", 1)[0]  # /run/clawstaff: the tmpfs that holds every cage key (4m)
# openssl enc parameters of the wrapped volume key; part of the on-disk format, change with care.
WRAP_CIPHER_ARGS = "-aes-256-cbc -md sha256 -pbkdf2 -iter 100000"


def _claw_name(claw: str) -> str:
    if not isinstance(claw, str) or not is_dns_label(claw):
        raise ValueError(
            f"claw name {claw!r} is not a DNS label "
            "(1-63 lower-case letters, digits and hyphens, not starting or ending with a hyphen)"
        )
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


def cgroup_parent(claw: str, driver: str) -> str:
    """The containers' `cgroup_parent`: the cage's slice (systemd driver) or cgroup (cgroupfs); an
    unknown driver is refused by conventions.cage_cgroup."""
    return cage_cgroup_parent(_claw_name(claw), driver)


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
    return hkdf_sha256(
        sealing_key,
        salt=VOLUME_KEK_SALT,
        info=VOLUME_KEK_INFO_PREFIX + _claw_name(claw).encode(),
        length=VOLUME_KEK_BYTES,
    )


def volume_kek_stdin(kek: bytes) -> str:
    """What the volume create script expects on stdin: the KEK in base64 and a newline."""
    if len(kek) != VOLUME_KEK_BYTES:
        raise ValueError(f"volume KEK must be {VOLUME_KEK_BYTES} bytes")
    return base64.b64encode(kek).decode("ascii") + "\n"


# --- the scripts (components/hostscripts/*.sh) ------------------------------------------------------


def _render(piece: str, name: str, claw: str, facts: dict | None = None, **variables: str | int) -> str:
    """A cage script: `# clawstaff <piece> of cage <claw>:` names it, the facts line says which."""
    return render_script(
        name,
        title=f"{piece} of cage {claw}",
        facts={"claw": claw, **(facts or {})},
        CLAW=claw,
        PIECE=piece,
        **variables,
    )


def render_limits_create(claw: str, *, cpus: Decimal, memory: int, pids: int, driver: str) -> str:
    """Create the cage's parent cgroup and write its hard limits (the whole cage: claw + proxy).

    Why a parent cgroup: the Docker provider cannot set a pids limit, and one parent caps the claw
    and its proxy together, so a runaway cage is throttled or OOM-killed inside its own cgroup while
    its neighbours are untouched. Memory means memory+swap. Re-running it applies changed limits.
    With `driver` "systemd" the cgroup is the cage's slice: a unit file in /etc/systemd/system (so
    the limits hold again after a reboot, before any container starts in it), applied at once. The
    facts line carries the driver, the cgroup and the limits (what `cage-limits-enforced` reads).
    """
    claw = _claw_name(claw)
    cgroup = cage_cgroup(claw, driver)  # refuses an unknown driver
    quota = cpu_quota_us(cpus)
    memory = _positive_int("memory", memory, 4 * MiB)
    pids = _positive_int("pids", pids, 2)
    facts = {
        "driver": driver,
        "cgroup": cgroup,
        "pids": pids,
        "memory": memory,
        "cpu_quota": quota,
        "cpu_period": CPU_PERIOD_US,
    }
    return _render(
        "limits",
        "limits-create.sh",
        claw,
        facts,
        DRIVER=driver,
        CG=cgroup,
        SLICE=cage_slice(claw),
        IO_WEIGHT=CAGE_IO_WEIGHT,
        CGROUP_ROOT=CGROUP_ROOT,
        PIDS=pids,
        MEMORY=memory,
        CPU_QUOTA=quota,
        CPU_PERIOD=CPU_PERIOD_US,
    )


def render_limits_delete(claw: str, *, driver: str) -> str:
    """Remove the cage's cgroup from every hierarchy (runc creates it in those we do not limit too),
    and with the systemd driver the slice unit and its drop-ins.

    Refuses, naming the cgroup, while a process is still inside: a running container would otherwise
    keep its cgroup and leak. Empty leftover children (a dead container's) are removed. The shared
    parent (/clawstaff, clawstaff.slice) stays: another cage's create may be using it at that moment.
    """
    claw = _claw_name(claw)
    cgroup = cage_cgroup(claw, driver)  # refuses an unknown driver
    return _render(
        "limits",
        "limits-delete.sh",
        claw,
        {"driver": driver, "cgroup": cgroup},
        DRIVER=driver,
        CG=cgroup,
        SLICE=cage_slice(claw),
    )


def render_key_create(
    claw: str, *, uid: int, subuid_file: str = "/etc/subuid", subgid_file: str = "/etc/subgid"
) -> str:
    """Put the cage key (base64 text on stdin) on a tmpfs, readable only by the cage's user.

    Why: the key opens the cage's sealed credentials, so it must never reach a disk: /run is not a
    tmpfs on every host, so the script mounts its own at /run/clawstaff. The file is written under a
    temporary name already 0400 and renamed into place, so it never exists with wider permissions or
    half written. Its owner is the host uid that container uid `uid` maps to under userns-remap.
    `subuid_file`/`subgid_file` exist for tests; hosts use the defaults.
    """
    claw = _claw_name(claw)
    uid = _container_uid(uid)
    return _render(
        "key",
        "key-create.sh",
        claw,
        None,
        TMPFS=KEY_TMPFS,
        KEY_ROOT=HOST_KEY_ROOT,
        DIR=host_key_dir(claw),
        KEY=host_key_path(claw),
        CAGE_UID=uid,
        SUBUID_FILE=subuid_file,
        SUBGID_FILE=subgid_file,
    )


def render_key_delete(claw: str) -> str:
    """Remove the cage key and its directory; the shared tmpfs may stay mounted for other cages."""
    claw = _claw_name(claw)
    return _render("key", "key-delete.sh", claw, None, DIR=host_key_dir(claw))


def render_broker_state_create(
    claw: str, *, uid: int, subuid_file: str = "/etc/subuid", subgid_file: str = "/etc/subgid"
) -> str:
    """Put the broker key (base64 text on stdin) on the keys' tmpfs for the broker's user only, and
    make the directory where the broker publishes the cage CA's certificate (components.broker).

    Why a key of its own: the claw's key file is readable by the claw; the broker's opens the
    brokered secrets and is mounted into the broker alone. The CA directory holds no key: the CA's
    private key is made in the broker's memory and stays there."""
    claw = _claw_name(claw)
    uid = _container_uid(uid)
    return _render(
        "broker state",
        "broker-state-create.sh",
        claw,
        None,
        TMPFS=KEY_TMPFS,
        ROOT=HOST_BROKER_ROOT,
        DIR=host_broker_dir(claw),
        KEYDIR=host_broker_key_dir(claw),
        KEY=f"{host_broker_key_dir(claw)}/key",
        CA=host_broker_ca_dir(claw),
        BROKER_UID=uid,
        SUBUID_FILE=subuid_file,
        SUBGID_FILE=subgid_file,
    )


def render_broker_state_delete(claw: str) -> str:
    """Remove the broker key, the published certificate and their directory; absent is fine."""
    claw = _claw_name(claw)
    return _render("broker state", "broker-state-delete.sh", claw, None, DIR=host_broker_dir(claw))


def _volume_variables(claw: str) -> dict[str, str]:
    return {"VDIR": host_volume_dir(claw), "DATA": volume_mount_path(claw), "FSCRYPT_PY": fscrypt_helper()}


def render_volume_create(
    claw: str,
    *,
    size: int,
    uid: int,
    subuid_file: str = "/etc/subuid",
    subgid_file: str = "/etc/subgid",
    sandbox_walk: bool = False,
) -> str:
    """Create, or re-open after a reboot, the cage's encrypted volume of exactly `size` bytes.

    Why this shape: the filesystem's size is the disk cap (ENOSPC stays inside the volume); fscrypt
    encrypts the cage's directory at rest under a fresh 64-byte key made on this host; only that key
    wrapped under the KEK from stdin is stored, beside the backing file, so destroying the wrapped key
    shreds the data. Without fscrypt support it fails: never a plaintext volume. A re-run unwraps the
    stored key (a wrong KEK is refused before it touches the filesystem) and converges.

    `sandbox_walk`: the claw runs under gVisor, whose gofer (root of the daemon's user namespace, not
    the host's root) makes the bind mount: the volume's directories let that one group walk them.
    """
    claw = _claw_name(claw)
    size = _positive_int("volume size", size, MIN_VOLUME_BYTES)
    uid = _container_uid(uid)
    return _render(
        "volume",
        "volume-create.sh",
        claw,
        {"size": size, "sandbox_walk": bool(sandbox_walk)},
        **_volume_variables(claw),
        SANDBOX_WALK=1 if sandbox_walk else 0,
        SIZE=size,
        CAGE_UID=uid,
        SUBUID_FILE=subuid_file,
        SUBGID_FILE=subgid_file,
        KEK_BYTES=VOLUME_KEK_BYTES,
        VOLUME_KEY_BYTES=VOLUME_KEY_BYTES,
        WRAP_CIPHER_ARGS=WRAP_CIPHER_ARGS,
    )


def render_volume_delete(claw: str) -> str:
    """Shred and remove the cage's volume: key out of the kernel, unmount, detach, destroy the key.

    Why this order: the wrapped key is overwritten and deleted before the backing file, so an
    interrupted delete never leaves readable data behind. Refuses while another mount namespace (a
    running container) still has the volume mounted, instead of leaking a busy loop device.
    """
    claw = _claw_name(claw)
    return _render("volume", "volume-delete.sh", claw, None, **_volume_variables(claw))


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
    return _render(
        "proxy config", "proxy-config-create.sh", claw, None, ROOT=HOST_PROXY_CONFIG_ROOT, DIR=proxy_config_dir(claw)
    )


def render_proxy_config_delete(claw: str) -> str:
    """Remove the proxy's configuration directory; absent is fine."""
    claw = _claw_name(claw)
    return _render("proxy config", "proxy-config-delete.sh", claw, None, DIR=proxy_config_dir(claw))
