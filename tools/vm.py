"""A Debian 13 host in a VM: the production host path, booted and provisioned by the program itself.

    python -m tools.vm up [--rebuild] build the disk image (cached), boot, provision; it stays running
    python -m tools.vm ssh [CMD ...]  a command on the VM over SSH, the host key pinned
    python -m tools.vm status         exit 0: running and reachable; 1: not running
    python -m tools.vm down           stop the VM, remove its network, leave the image cache

What runs is what a Hetzner Cloud server runs, as far as this machine can make it:
- the disk: Debian 13 (trixie) from Debian's packages only (mmdebstrap: kernel, systemd, openssh,
  cloud-init, ifupdown), nothing of ours inside; booted by QEMU under TCG (software emulation: nested
  KVM does not work here), with systemd and cgroup v2 like every current Hetzner image;
- the user-data: exactly what the program renders for a cloud host (components.hostconfig.
  render_cloud_init), delivered by a NoCloud seed; the provider's own settings (the network, and the
  apt mirror, here a caching proxy standing in for Hetzner's) come as NoCloud vendor-data and
  network-config, as a provider's metadata would bring them;
- the network: a tap device `clawvm0` on this machine, 198.51.100.1/30 here and 198.51.100.2/30 in the VM
  (CLAWSTAFF_VM_SLOT=N moves both to the N-th /30 and the tap to clawvmN)
  (TEST-NET-2, never routed; this machine itself may sit on TEST-NET-1). An nftables table of its own lets the VM reach exactly one thing, the
  apt proxy on 198.51.100.1:3142 (apt-cacher-ng, started by this tool), and answers to connections this
  machine opens (SSH); everything else from the VM is dropped, and nothing is forwarded to or from
  it, so the VM cannot send a packet anywhere but this machine's test services.

`up` then does what `pulumi up` does for a new cloud host (tools/vmhost.py): the first contact,
pinned to the first-contact key from the user-data, installs the derived host key, and the bootstrap
runs again over a connection pinned to that key.

State lives under build/vm/: the cached base root filesystem (built once per package list;
`--rebuild` takes today's archive), the disk of the running VM, its console log, the tier's operator
SSH key and stack secret (root-only, never sent to the VM but over the pinned connection), and
vm.json (pid, address, the pinned host key). Needs root, mmdebstrap, qemu-system-x86, e2fsprogs, nftables,
apt-cacher-ng and openssh-client.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
VM_DIR = ROOT / "build" / "vm"
SUITE = "trixie"
MIRRORS = (
    "deb http://deb.debian.org/debian trixie main",
    "deb http://deb.debian.org/debian trixie-updates main",
    "deb http://deb.debian.org/debian-security trixie-security main",
)
# What a cloud image holds, from Debian only: a kernel, systemd, sshd, cloud-init, ifupdown (the
# network renderer cloud-init picks on Debian), and the few tools any Hetzner image has.
BASE_PACKAGES = (
    "systemd-sysv", "linux-image-amd64", "openssh-server", "cloud-init", "ifupdown", "ca-certificates",
    "procps", "netbase", "iproute2", "kmod", "e2fsprogs", "udev", "dbus", "python3",
)  # fmt: skip
# CLAWSTAFF_VM_SLOT (0-15) lets several checkouts run a VM each on one machine: each slot has its own
# tap, /30, proxy port and nftables table.
SLOT = int(os.environ.get("CLAWSTAFF_VM_SLOT", "0"))
if not 0 <= SLOT <= 15:
    raise SystemExit(f"CLAWSTAFF_VM_SLOT={SLOT}: allowed are 0 to 15")
TAP = f"clawvm{SLOT}"
HOST_IP = f"198.51.100.{4 * SLOT + 1}"
VM_IP = f"198.51.100.{4 * SLOT + 2}"
PREFIX = 30
APT_PROXY_PORT = 3143 + SLOT  # our own apt-cacher-ng, beside any system instance on 3142
NFT_TABLE = f"clawstaff_vmnet{SLOT}"
DISK_SIZE = "8G"
MEMORY_MIB = 3072
CPUS = 2
BOOT_TIMEOUT_S = 600
CLOUD_INIT_TIMEOUT_S = 1800


class VmError(RuntimeError):
    pass


def log(message: str) -> None:
    print(f"[vm] {message}", file=sys.stderr, flush=True)


def run(argv: list[str], *, check: bool = True, timeout: float | None = None, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, **kwargs)
    if check and done.returncode != 0:
        raise VmError(
            f"{' '.join(argv[:4])} ... failed (exit {done.returncode}): {(done.stderr or done.stdout)[-2000:]}"
        )
    return done


# ------------------------------------------------------------------------------------ the base image


def base_stamp() -> str:
    return hashlib.sha256("\n".join((SUITE, *MIRRORS, *BASE_PACKAGES)).encode()).hexdigest()[:16]


def ensure_base(vm_dir: Path = VM_DIR, rebuild: bool = False) -> Path:
    """The base root filesystem (cached): Debian's packages, as the archive serves them today."""
    base = vm_dir / f"base-{base_stamp()}"
    if (base / ".complete").exists() and not rebuild:
        return base
    if base.exists():
        shutil.rmtree(base)
    vm_dir.mkdir(parents=True, exist_ok=True)
    log(f"building the Debian 13 base image ({len(BASE_PACKAGES)} roots) into {base}")
    started = time.monotonic()
    run(
        ["mmdebstrap", "--variant=apt", "--mode=root", "--format=directory",
         "--aptopt=Acquire::Languages \"none\"",
         "--dpkgopt=path-exclude=/usr/share/doc/*", "--dpkgopt=path-exclude=/usr/share/man/*",
         "--dpkgopt=path-exclude=/usr/share/locale/*",
         "--include=" + ",".join(BASE_PACKAGES), SUITE, str(base), *MIRRORS],
        timeout=1800,
    )  # fmt: skip
    # What a cloud image leaves for first boot: no machine id (systemd makes one), no host keys
    # (cloud-init writes the ones the user-data gives), and an fstab for the one root disk.
    (base / "etc/machine-id").write_text("")
    for key in (base / "etc/ssh").glob("ssh_host_*"):
        key.unlink()
    (base / "etc/fstab").write_text("LABEL=root / ext4 rw,errors=remount-ro 0 1\n")
    (base / "etc/hostname").write_text("localhost\n")
    (base / ".complete").write_text(f"{time.monotonic() - started:.0f} s\n")
    log(f"base image ready in {time.monotonic() - started:.0f} s")
    return base


def kernel_and_initrd(base: Path) -> tuple[Path, Path]:
    kernels = sorted((base / "boot").glob("vmlinuz-*"))
    initrds = sorted((base / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise VmError(f"no kernel or initrd in {base / 'boot'}")
    return kernels[-1], initrds[-1]


# ------------------------------------------------------------------------------------ the seed


def vendor_data() -> str:
    """What the provider adds to every server (the user-data stays the program's): its apt mirror."""
    return "#cloud-config\n" + yaml.safe_dump({"apt": {"proxy": f"http://{HOST_IP}:{APT_PROXY_PORT}"}})


def network_config() -> str:
    return yaml.safe_dump({
        "version": 2,
        "ethernets": {"eth0": {"addresses": [f"{VM_IP}/{PREFIX}"], "routes": [{"to": "0.0.0.0/0", "via": HOST_IP}]}},
    })  # fmt: skip


def write_seed(base: Path, user_data: str, instance_id: str) -> None:
    seed = base / "var/lib/cloud/seed/nocloud"
    if seed.exists():
        shutil.rmtree(seed)
    seed.mkdir(parents=True)
    (seed / "meta-data").write_text(yaml.safe_dump({"instance-id": instance_id, "local-hostname": "vm"}))
    (seed / "user-data").write_text(user_data)
    (seed / "vendor-data").write_text(vendor_data())
    (seed / "network-config").write_text(network_config())
    for path in seed.iterdir():
        os.chmod(path, 0o600)


def make_disk(base: Path, disk: Path) -> None:
    disk.unlink(missing_ok=True)
    run(["mkfs.ext4", "-q", "-F", "-L", "root", "-d", str(base), str(disk), DISK_SIZE], timeout=600)


# ------------------------------------------------------------------------------------ the network


def nft_rules() -> str:
    return f"""table inet {NFT_TABLE} {{
  chain input {{
    type filter hook input priority -10; policy accept;
    iifname "{TAP}" ct state established,related accept
    iifname "{TAP}" ip daddr {HOST_IP} tcp dport {APT_PROXY_PORT} accept
    iifname "{TAP}" counter drop
  }}
  chain forward {{
    type filter hook forward priority -10; policy accept;
    iifname "{TAP}" counter drop
    oifname "{TAP}" counter drop
  }}
}}
"""


def network_up() -> None:
    if run(["ip", "link", "show", TAP], check=False).returncode != 0:
        run(["ip", "tuntap", "add", "dev", TAP, "mode", "tap"])
    run(["ip", "addr", "flush", "dev", TAP])
    run(["ip", "addr", "add", f"{HOST_IP}/{PREFIX}", "dev", TAP])
    run(["ip", "link", "set", TAP, "up"])
    run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)
    run(["nft", "-f", "-"], input=nft_rules())


def network_down() -> None:
    run(["nft", "delete", "table", "inet", NFT_TABLE], check=False)
    run(["ip", "link", "del", TAP], check=False)


def _listening(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=1):
            return True
    except OSError:
        return False


def apt_proxy_config(vm_dir: Path) -> Path:
    """The tier's own apt-cacher-ng: bound to the tap address only, with Debian's archive and
    security archive behind it (deb.debian.org, the one Debian host this machine reaches)."""
    conf = vm_dir / "apt-proxy"
    for sub in ("conf", "cache", "log", "run"):
        (conf / sub).mkdir(parents=True, exist_ok=True)
    (conf / "conf" / "backends_debian").write_text("http://deb.debian.org/debian/\n")
    (conf / "conf" / "acng.conf").write_text(
        f"CacheDir: {conf / 'cache'}\nLogDir: {conf / 'log'}\nSupportDir: /usr/lib/apt-cacher-ng\n"
        f"Port: {APT_PROXY_PORT}\nBindAddress: {HOST_IP}\n"
        f"PidFile: {conf / 'run' / 'pid'}\nSocketPath: {conf / 'run' / 'socket'}\n"
        "Remap-debrep: file:deb_mirror*.gz /debian ; file:backends_debian\n"
        "Remap-secdeb: security.debian.org deb.debian.org/debian-security /debian-security ; "
        "deb.debian.org/debian-security\n"
        "ExThreshold: 4\nPassThroughPattern: ^$\n"
    )
    return conf


def apt_proxy_up(vm_dir: Path = VM_DIR) -> None:
    """apt-cacher-ng on this machine: the VM's only way to Debian's packages (Hetzner's mirror's stand-in)."""
    if _listening(HOST_IP, APT_PROXY_PORT):
        return
    if shutil.which("apt-cacher-ng") is None:
        raise VmError("apt-cacher-ng is not installed (apt-get install apt-cacher-ng)")
    conf = apt_proxy_config(vm_dir)
    run(["apt-cacher-ng", "-c", str(conf / "conf"), "ForeGround=0"], timeout=30)
    for _ in range(30):
        if _listening(HOST_IP, APT_PROXY_PORT):
            return
        time.sleep(1)
    raise VmError(f"apt-cacher-ng does not listen on {HOST_IP}:{APT_PROXY_PORT}; see {conf / 'log'}")


def apt_proxy_down(vm_dir: Path = VM_DIR) -> None:
    pidfile = vm_dir / "apt-proxy" / "run" / "pid"
    try:
        os.kill(int(pidfile.read_text().strip()), signal.SIGTERM)
    except (OSError, ValueError):
        pass


# ------------------------------------------------------------------------------------ the VM


@dataclass
class Vm:
    pid: int
    address: str
    host_key: str  # the public key line sshd must present (pinned)
    operator_key: Path  # private key of the operator account the user-data authorizes
    console: Path
    workdir: Path

    def known_hosts(self) -> Path:
        path = self.workdir / "known_hosts"
        path.write_text(f"{self.address} {self.host_key}\n")
        return path

    def ssh_argv(self) -> list[str]:
        known = self.known_hosts()
        return ["ssh", "-i", str(self.operator_key), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
                "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known}",
                "-o", "GlobalKnownHostsFile=/dev/null", "-o", "ConnectTimeout=10", f"root@{self.address}"]  # fmt: skip

    def ssh(self, command: str, *, check: bool = True, timeout: float = 600, input: str | None = None):
        return run([*self.ssh_argv(), command], check=check, timeout=timeout, input=input)

    def alive(self) -> bool:
        try:
            os.kill(self.pid, 0)
        except OSError:
            return False
        return True

    def save(self) -> None:
        state = {k: str(v) if isinstance(v, Path) else v for k, v in self.__dict__.items()}
        (self.workdir / "vm.json").write_text(json.dumps(state, indent=2) + "\n")

    @classmethod
    def load(cls, workdir: Path = VM_DIR) -> "Vm | None":
        path = workdir / "vm.json"
        if not path.exists():
            return None
        state = json.loads(path.read_text())
        return cls(pid=state["pid"], address=state["address"], host_key=state["host_key"],
                   operator_key=Path(state["operator_key"]), console=Path(state["console"]),
                   workdir=Path(state["workdir"]))  # fmt: skip


def operator_key(vm_dir: Path = VM_DIR) -> tuple[Path, str]:
    """An SSH key pair for the tier's operator (the admin key the user-data authorizes)."""
    key = vm_dir / "operator_ed25519"
    vm_dir.mkdir(parents=True, exist_ok=True)
    if not key.exists():
        run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "clawstaff-vm-operator", "-f", str(key)])
    return key, (key.with_suffix(".pub")).read_text().strip()


def qemu_argv(disk: Path, kernel: Path, initrd: Path, console: Path, pidfile: Path) -> list[str]:
    return [
        "qemu-system-x86_64", "-accel", "tcg,thread=multi", "-cpu", "max", "-m", str(MEMORY_MIB),
        "-smp", str(CPUS), "-kernel", str(kernel), "-initrd", str(initrd),
        "-append", "root=/dev/vda rw console=ttyS0 net.ifnames=0 systemd.show_status=false",
        "-drive", f"file={disk},if=virtio,format=raw,cache=unsafe",
        "-netdev", f"tap,id=n0,ifname={TAP},script=no,downscript=no",
        "-device", "virtio-net-pci,netdev=n0",
        "-display", "none", "-serial", f"file:{console}", "-monitor", "none",
        "-daemonize", "-pidfile", str(pidfile),
    ]  # fmt: skip


def boot(user_data: str, host_key: str, *, vm_dir: Path = VM_DIR, rebuild: bool = False) -> Vm:
    """Boot a fresh VM from the base image with `user_data`; return once sshd presents `host_key`."""
    for tool in ("qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "nft", "ssh"):
        if shutil.which(tool) is None:
            raise VmError(f"{tool} is not installed (see .ci/run for the packages the VM tier needs)")
    down(vm_dir)
    base = ensure_base(vm_dir, rebuild)
    kernel, initrd = kernel_and_initrd(base)
    key, _ = operator_key(vm_dir)
    instance = hashlib.sha256(user_data.encode()).hexdigest()[:12]
    write_seed(base, user_data, f"clawstaff-vm-{instance}")
    disk = vm_dir / "disk.img"
    make_disk(base, disk)
    network_up()
    apt_proxy_up(vm_dir)
    console, pidfile = vm_dir / "console.log", vm_dir / "qemu.pid"
    console.unlink(missing_ok=True)
    started = time.monotonic()
    run(qemu_argv(disk, kernel, initrd, console, pidfile))
    vm = Vm(int(pidfile.read_text()), VM_IP, host_key, key, console, vm_dir)
    vm.save()
    log(f"booting (qemu pid {vm.pid}, TCG); console: {console}")
    while time.monotonic() - started < BOOT_TIMEOUT_S:
        if not vm.alive():
            raise VmError(f"qemu exited during boot; console tail:\n{tail(console)}")
        if _listening(VM_IP, 22) and vm.ssh("true", check=False, timeout=30).returncode == 0:
            log(f"sshd answers with the pinned host key after {time.monotonic() - started:.0f} s")
            return vm
        time.sleep(3)
    raise VmError(f"no SSH with the pinned host key after {BOOT_TIMEOUT_S} s; console tail:\n{tail(console)}")


def wait_for_cloud_init(vm: Vm) -> dict:
    """Poll until cloud-init has finished (its bootstrap restarts sshd, so no one long session);
    its status, errors included, as cloud-init reports it in JSON."""
    started = time.monotonic()
    status: dict = {}
    while time.monotonic() - started < CLOUD_INIT_TIMEOUT_S:
        try:
            done = vm.ssh("cloud-init status --format=json", check=False, timeout=90)
            status = json.loads(done.stdout or "{}")
        except subprocess.TimeoutExpired:
            # A handshake under TCG while apt and dpkg hold both vCPUs can take this long: the VM is
            # busy, not gone (that is the vm.alive() check below). Ask again until the deadline.
            log("cloud-init status: no answer within 90 s (the VM is busy); asking again")
            status = {}
        except ValueError:
            status = {}
        if status.get("status") in ("done", "error", "disabled"):
            break
        if not vm.alive():
            raise VmError(f"the VM died during cloud-init; console tail:\n{tail(vm.console)}")
        time.sleep(5)
    status["seconds"] = round(time.monotonic() - started)
    return status


def boot_id(vm: Vm) -> str:
    return vm.ssh("cat /proc/sys/kernel/random/boot_id", timeout=60).stdout.strip()


def reboot(vm: Vm) -> float:
    """Reboot the guest as an operator would (`systemctl reboot`; QEMU resets and boots the same disk)
    and wait until sshd answers with the pinned key from a new boot; the seconds it took."""
    before = boot_id(vm)
    started = time.monotonic()
    vm.ssh("systemctl reboot", check=False, timeout=60)  # the session may end before it returns
    while time.monotonic() - started < BOOT_TIMEOUT_S:
        if not vm.alive():
            raise VmError(f"qemu exited during the reboot; console tail:\n{tail(vm.console)}")
        time.sleep(5)
        if _listening(vm.address, 22):
            done = vm.ssh("cat /proc/sys/kernel/random/boot_id", check=False, timeout=30)
            if done.returncode == 0 and done.stdout.strip() not in ("", before):
                return time.monotonic() - started
    raise VmError(f"no SSH from a new boot after {BOOT_TIMEOUT_S} s; console tail:\n{tail(vm.console)}")


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no console log)"


def down(vm_dir: Path = VM_DIR) -> str:
    vm = Vm.load(vm_dir)
    said = "no VM running"
    if vm and vm.alive():
        os.kill(vm.pid, signal.SIGTERM)
        for _ in range(50):
            if not vm.alive():
                break
            time.sleep(0.2)
        else:
            os.kill(vm.pid, signal.SIGKILL)
        said = f"stopped qemu pid {vm.pid}"
    (vm_dir / "vm.json").unlink(missing_ok=True)
    apt_proxy_down(vm_dir)
    network_down()
    return said


def main(argv: list[str] | None = None) -> int:
    from components.config.report import ConfigError
    from tools import vmhost  # the program's rendering of the VM's host (imports the components)

    parser = argparse.ArgumentParser(prog="python -m tools.vm", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="verb", required=True)
    up = sub.add_parser("up")
    up.add_argument("--rebuild", action="store_true", help="rebuild the base image from today's archive")
    ssh = sub.add_parser("ssh")
    ssh.add_argument("command", nargs="*", default=["true"])
    sub.add_parser("status")
    sub.add_parser("down")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        print("error: the VM tier needs root (tap device, nftables, mmdebstrap)", file=sys.stderr)
        return 2
    try:
        if args.verb == "up":
            host = vmhost.rendered()
            vm = boot(host.user_data, host.first_contact_public, rebuild=args.rebuild)
            status = wait_for_cloud_init(vm)
            log(f"cloud-init: {status.get('status')} after {status.get('seconds')} s, errors: {status.get('errors')}")
            if status.get("status") != "done" or status.get("errors"):
                print(json.dumps(status, indent=2))
                return 1
            vmhost.provision(host, vm)
            log(f"provisioned: host key {host.host_key_public.split()[-1]} pinned; vm at {vm.address}")
            return 0
        vm = Vm.load()
        if args.verb == "down":
            print(down())
            return 0
        if vm is None or not vm.alive():
            print("no VM running (python -m tools.vm up)", file=sys.stderr)
            return 1
        if args.verb == "status":
            print(f"VM pid {vm.pid} at {vm.address}")
            return 0
        done = vm.ssh(" ".join(args.command), check=False)
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode
    except (VmError, ConfigError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
