"""Run this machine's Docker engine with the hardened daemon.json and the host firewall loaded.

    python -m tools.engine start    # render, load the firewall, (re)start dockerd only if needed
    python -m tools.engine stop
    python -m tools.engine status   # exit 0: running with the current config and firewall;
                                    # 1: stopped; 3: running, but stale; 2: error

Used by `.ci/run` and `make engine`, so that integration tests run against the same daemon settings
and cage firewall rules a production host gets (components/hostconfig.py). Differences from a
production host, on purpose:
- DNS: this machine's own resolvers (from /etc/resolv.conf, loopback ones dropped) instead of
  Hetzner's, and the firewall lets proxies reach exactly those on port 53;
- host input is not guarded (guard_host_input=False): this machine's own services are not ours to
  firewall; every rule about cage and proxy traffic is identical.
Without systemd (as here) dockerd is started in the background; with systemd, `systemctl restart
docker` is used. The path options exist so the tests can drive a private engine in its own network
namespace without touching the main one; `--resolv-conf` gives such an engine its own resolver (the
isolation bench's loopback test DNS, tests/integration/test_isolation_dns.py).
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from components.hostconfig import (
    AUDIT_BASE_RULES,
    AUDITD_CONF,
    LOCAL_CGROUP_DRIVER,
    NFT_TABLE,
    SYSCTLS,
    render_daemon_json,
    render_nftables,
)

ADMIN_SSH_CIDRS = ("127.0.0.1/32",)
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
DOCKERD_NOFILE = 1048576
# The host sysctls (components.hostconfig.SYSCTLS, which every provisioned host gets) that bound what a
# cage can do to its own processes; this machine gets them too. A key the kernel lacks is reported as
# unavailable, never faked (this test machine's kernel has no Yama; the cages' seccomp profile refuses
# ptrace either way, components/seccomp.py).
ENGINE_SYSCTLS = ("kernel.yama.ptrace_scope",)


@dataclass(frozen=True)
class EnginePaths:
    """Where the engine's files live; the defaults are the machine's main engine."""

    daemon_json: Path = Path("/etc/docker/daemon.json")
    firewall: Path = Path("/etc/clawstaff/firewall.nft")
    socket: Path = Path("/var/run/docker.sock")
    pidfile: Path = Path("/var/run/docker.pid")
    log: Path = Path("/var/log/clawstaff-dockerd.log")
    state: Path = Path("/run/clawstaff/engine.json")
    data_root: Path | None = None  # None: dockerd's default (/var/lib/docker)
    exec_root: Path | None = None  # None: dockerd's default (/var/run/docker)
    netns: str | None = None  # run dockerd and the firewall inside /run/netns/<netns>
    # The resolv.conf this engine sees instead of /etc/resolv.conf (tests: the isolation bench's
    # loopback resolver). dockerd then runs in its own mount namespace with the file bound over
    # /etc/resolv.conf; host mounts still propagate into it (slave), its own stay private.
    resolv_conf: Path | None = None

    @property
    def is_main(self) -> bool:
        return self.netns is None and self.data_root is None and self.resolv_conf is None


class EngineError(Exception):
    """A failure the user can act on; printed as one line, exit status 2."""


def host_resolvers(resolv_conf: str) -> list[str]:
    """IPv4 nameservers of resolv.conf text, minus loopback ones (a container cannot reach the
    host's 127.0.0.53); empty means: let Docker choose."""
    resolvers: list[str] = []
    for line in resolv_conf.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver":
            try:
                address = ipaddress.ip_address(parts[1])
            except ValueError:
                continue
            if address.version == 4 and not address.is_loopback and str(address) not in resolvers:
                resolvers.append(str(address))
    return resolvers


def desired_files(resolv_conf: str) -> tuple[str, str]:
    """(daemon.json text, nft rules text) for this machine."""
    resolvers = host_resolvers(resolv_conf)
    daemon_json = render_daemon_json(dns=resolvers, cgroup_driver=LOCAL_CGROUP_DRIVER)
    rules = render_nftables(ssh_allowed_cidrs=ADMIN_SSH_CIDRS, dns_resolvers=resolvers, guard_host_input=False)
    return daemon_json, rules


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def _in_netns(paths: EnginePaths, argv: list[str]) -> list[str]:
    # nsenter --net enters only the network namespace; `ip netns exec` would also remount /sys and
    # hide the cgroup mounts dockerd needs.
    return ["nsenter", f"--net=/run/netns/{paths.netns}", *argv] if paths.netns else argv


def _write_if_changed(path: Path, text: str, mode: int) -> bool:
    if path.exists() and path.read_text() == text:
        return False
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.chmod(mode)
    tmp.replace(path)
    return True


def _running_pid(paths: EnginePaths) -> int | None:
    try:
        pid = int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None
    try:
        comm = Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return None
    return pid if comm == "dockerd" else None


def _docker_info(paths: EnginePaths) -> dict | None:
    result = subprocess.run(
        ["docker", "-H", f"unix://{paths.socket}", "info", "--format", "{{json .}}"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    if result.returncode != 0:
        return None
    info = json.loads(result.stdout)
    return info if info.get("ServerVersion") else None


def _read_state(paths: EnginePaths) -> dict:
    try:
        return json.loads(paths.state.read_text())
    except (OSError, ValueError):
        return {}


def load_firewall(paths: EnginePaths, rules: str) -> None:
    """Write and load the rules; fail closed: no engine start when nft refuses them."""
    _write_if_changed(paths.firewall, rules, 0o600)
    result = subprocess.run(_in_netns(paths, ["nft", "-f", str(paths.firewall)]), capture_output=True, text=True)
    if result.returncode != 0:
        raise EngineError(f"nft refused {paths.firewall}: {result.stderr.strip()}")


def apply_sysctls(proc_sys: Path = Path("/proc/sys")) -> list[str]:
    """Set ENGINE_SYSCTLS to the hosts' values; `key=value` for each, `key=unavailable` where this
    kernel has no such key."""
    wanted = {key: value for key, value, _why in SYSCTLS}
    state = []
    for key in ENGINE_SYSCTLS:
        path = proc_sys / key.replace(".", "/")
        if not path.exists():
            state.append(f"{key}=unavailable")
            continue
        if path.read_text().strip() != wanted[key]:
            try:
                path.write_text(wanted[key] + "\n")
            except OSError as err:
                raise EngineError(f"cannot set {key} = {wanted[key]}: {err.strerror}") from None
        state.append(f"{key}={path.read_text().strip()}")
    return state


def raise_nofile_limit() -> None:
    """Give dockerd the open-files limit systemd gives it (LimitNOFILE): containers cannot raise
    their own limit (default-ulimits nofile) above the hard limit of the daemon that starts them."""
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (DOCKERD_NOFILE, DOCKERD_NOFILE))
    except (ValueError, OSError):  # no CAP_SYS_RESOURCE (a sandboxed machine): the most we may have
        _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _spawn_dockerd(paths: EnginePaths) -> None:
    argv = ["dockerd", "--config-file", str(paths.daemon_json), "--pidfile", str(paths.pidfile)]
    if not paths.is_main:
        argv += ["-H", f"unix://{paths.socket}"]
    if paths.data_root:
        argv += ["--data-root", str(paths.data_root)]
    if paths.exec_root:
        argv += ["--exec-root", str(paths.exec_root)]
    argv = _in_netns(paths, argv)
    if paths.resolv_conf:
        argv = [
            "unshare",
            "--mount",
            "--propagation",
            "slave",
            "--",
            "/bin/sh",
            "-c",
            'mount --bind "$0" /etc/resolv.conf && exec "$@"',
            str(paths.resolv_conf),
            *argv,
        ]
    paths.log.parent.mkdir(parents=True, exist_ok=True)
    with open(paths.log, "ab") as log:
        subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives this command, immune to its terminal's signals
            close_fds=True,
            preexec_fn=raise_nofile_limit,
        )


AUDITD_CONF_PATH = Path("/etc/audit/auditd.conf")  # the provisioned hosts' (components.hostconfig.AUDITD_CONF)


def audit_daemon_pid() -> int | None:
    """The pid of the audit daemon the kernel sends its records to (`auditctl -s`), or None."""
    result = subprocess.run(["auditctl", "-s"], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        field, _, value = line.partition(" ")
        if field == "pid" and value.strip().isdigit() and int(value) > 0:
            return int(value)
    return None


def ensure_audit_daemon() -> str:
    """Start auditd if it is not running: every cage's audit command refuses to load its rules
    without a daemon that writes the records (components/cageaudit.py)."""
    if shutil.which("auditctl") is None or shutil.which("auditd") is None:
        raise EngineError("auditd is not installed (apt-get install auditd): every cage's audit command needs it")
    conf_changed = _write_if_changed(AUDITD_CONF_PATH, AUDITD_CONF, 0o640)
    pid = audit_daemon_pid()
    if pid is not None and conf_changed:
        os.kill(pid, signal.SIGHUP)  # auditd re-reads its configuration
    if pid is None:
        if _systemd():
            subprocess.run(["systemctl", "start", "auditd.service"], check=True)
        else:
            subprocess.run(["auditd"], check=True)  # forks into the background once it is listening
        for _ in range(50):
            if (pid := audit_daemon_pid()) is not None:
                break
            time.sleep(0.2)
        else:
            raise EngineError("auditd was started but the kernel names no audit daemon (auditctl -s: pid 0)")
    # The provisioned hosts' settings (queue size, wait, failure mode): without systemd nothing loads
    # /etc/audit/rules.d here, and the kernel's default queue of 64 records stalls every audited cage.
    for line in AUDIT_BASE_RULES.splitlines():
        if line.strip() and not line.startswith("#") and line.strip() != "-i":
            done = subprocess.run(["auditctl", *shlex.split(line)], capture_output=True, text=True)
            if done.returncode != 0 and "Rule exists" not in done.stderr:
                raise EngineError(f"auditctl refused {line!r}: {done.stderr.strip()}")
    return f"auditd={pid}"


def _systemd() -> bool:
    return Path("/run/systemd/system").is_dir()


def _wait_for_engine(paths: EnginePaths) -> dict:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        info = _docker_info(paths)
        if info:
            return info
        time.sleep(0.5)
    tail = paths.log.read_text(errors="replace").splitlines()[-5:] if paths.log.exists() else []
    raise EngineError(f"dockerd did not answer within {START_TIMEOUT_S:.0f}s; last log lines: " + " | ".join(tail))


def _alive(pid: int) -> bool:
    """True while `pid` runs; reaps it when it is our own exited child (a zombie is not alive)."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except ChildProcessError:
        pass
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def stop(paths: EnginePaths) -> str:
    if paths.is_main and _systemd():
        subprocess.run(["systemctl", "stop", "docker.service", "docker.socket"], check=True)
        paths.state.unlink(missing_ok=True)
        return "engine: stopped (systemd)"
    pid = _running_pid(paths)
    if pid is None:
        paths.state.unlink(missing_ok=True)
        return "engine: not running"
    os.kill(pid, signal.SIGTERM)  # live-restore: the containers keep running
    deadline = time.monotonic() + STOP_TIMEOUT_S
    while time.monotonic() < deadline and _alive(pid):
        time.sleep(0.2)
    if _alive(pid):
        raise EngineError(f"dockerd (pid {pid}) did not stop within {STOP_TIMEOUT_S:.0f}s after SIGTERM")
    paths.state.unlink(missing_ok=True)
    return f"engine: stopped (pid {pid})"


def firewall_loaded(paths: EnginePaths) -> bool:
    argv = _in_netns(paths, ["nft", "list", "table", "inet", NFT_TABLE])
    return subprocess.run(argv, capture_output=True).returncode == 0


def _summary(info: dict, pid: int | None, config_sha: str, firewall: bool, sysctls: list[str] = ()) -> str:
    security = info.get("SecurityOptions") or []
    userns = any(opt.startswith("name=userns") for opt in security)
    insecure = [c for c in (info.get("RegistryConfig") or {}).get("InsecureRegistryCIDRs") or [] if c != "127.0.0.0/8"]
    return (
        f"engine: running (pid {pid}, dockerd {info.get('ServerVersion')}, "
        f"userns-remap={'on' if userns else 'OFF'}, live-restore={'on' if info.get('LiveRestoreEnabled') else 'OFF'}, "
        f"log={info.get('LoggingDriver')}, insecure-registries={insecure or 'none'}, "
        f"firewall=inet {NFT_TABLE} {'loaded' if firewall else 'MISSING'}, config sha256:{config_sha[:12]}"
        + "".join(f", {s}" for s in sysctls)
        + ")"
    )


def start(paths: EnginePaths, resolv_conf: str) -> str:
    """Idempotent: a no-op when dockerd already runs with this exact config; else (re)start it."""
    daemon_json, rules = desired_files(resolv_conf)
    config_sha = _sha256(daemon_json)
    load_firewall(paths, rules)  # always: cheap, atomic, repairs drift
    sysctls = apply_sysctls()
    if paths.is_main:
        sysctls.append(ensure_audit_daemon())
    _write_if_changed(paths.daemon_json, daemon_json, 0o644)

    pid = _running_pid(paths)
    state = _read_state(paths)
    if pid is not None and state.get("pid") == pid and state.get("config_sha256") == config_sha:
        info = _docker_info(paths)
        if info:
            return _summary(info, pid, config_sha, firewall_loaded(paths), sysctls) + " [unchanged]"
    previous = _docker_info(paths)
    carried = _save_images(paths, previous) if previous else None
    try:
        if paths.is_main and _systemd():
            subprocess.run(["systemctl", "restart", "docker.service"], check=True)
        else:
            if pid is not None:
                stop(paths)
            for directory in (paths.data_root, paths.exec_root):
                if directory:
                    directory.mkdir(parents=True, exist_ok=True)
            _spawn_dockerd(paths)
        info = _wait_for_engine(paths)
        note = ""
        if carried and previous and previous.get("DockerRootDir") != info.get("DockerRootDir"):
            note = " " + _load_images(paths, carried)
    finally:
        if carried:
            carried.unlink(missing_ok=True)
    pid = _running_pid(paths)
    paths.state.parent.mkdir(parents=True, exist_ok=True)
    paths.state.write_text(json.dumps({"pid": pid, "config_sha256": config_sha}) + "\n")
    return _summary(info, pid, config_sha, firewall_loaded(paths), sysctls) + " [started]" + note


def _save_images(paths: EnginePaths, info: dict) -> Path | None:
    """Before switching a running engine to userns-remap, save its tagged images: the remapped
    engine keeps its images in another directory and would otherwise start empty, and images
    built here (from Debian packages, no registry) cannot simply be pulled again."""
    if any(opt.startswith("name=userns") for opt in info.get("SecurityOptions") or []):
        return None  # already remapped: the data root does not move
    listed = subprocess.run(
        ["docker", "-H", f"unix://{paths.socket}", "image", "ls", "--format", "{{.Repository}}:{{.Tag}}"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    tags = sorted({t for t in listed if "<none>" not in t})
    if not tags:
        return None
    handle, name = tempfile.mkstemp(prefix="clawstaff-images-", suffix=".tar", dir="/var/tmp")
    os.close(handle)
    archive = Path(name)
    subprocess.run(["docker", "-H", f"unix://{paths.socket}", "image", "save", "-o", str(archive), *tags], check=True)
    return archive


def _load_images(paths: EnginePaths, archive: Path) -> str:
    result = subprocess.run(
        ["docker", "-H", f"unix://{paths.socket}", "image", "load", "-q", "-i", str(archive)],
        capture_output=True,
        text=True,
    )
    if result.returncode != 0:
        raise EngineError(f"could not carry the images over to the remapped engine: {result.stderr.strip()}")
    return f"(carried {len(result.stdout.splitlines())} images over to the remapped data root)"


def status(paths: EnginePaths, resolv_conf: str) -> tuple[int, str]:
    daemon_json, _ = desired_files(resolv_conf)
    config_sha = _sha256(daemon_json)
    pid = _running_pid(paths)
    info = _docker_info(paths)
    if info is None:
        return 1, "engine: not running"
    state = _read_state(paths)
    firewall = firewall_loaded(paths)
    summary = _summary(info, pid, config_sha, firewall)
    if state.get("pid") != pid or state.get("config_sha256") != config_sha or not firewall:
        return 3, summary + " [STALE: not started with the current config and firewall; run start]"
    return 0, summary


def _parse(argv: list[str] | None) -> tuple[str, EnginePaths]:
    parser = argparse.ArgumentParser(prog="python -m tools.engine", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=("start", "stop", "status"))
    defaults = EnginePaths()
    parser.add_argument("--daemon-json", type=Path, default=defaults.daemon_json)
    parser.add_argument("--firewall", type=Path, default=defaults.firewall)
    parser.add_argument("--socket", type=Path, default=defaults.socket)
    parser.add_argument("--pidfile", type=Path, default=defaults.pidfile)
    parser.add_argument("--log", type=Path, default=defaults.log)
    parser.add_argument("--state", type=Path, default=defaults.state)
    parser.add_argument("--data-root", type=Path)
    parser.add_argument("--exec-root", type=Path)
    parser.add_argument("--netns", help="run inside the network namespace /run/netns/NETNS (tests)")
    parser.add_argument(
        "--resolv-conf", type=Path, help="the resolv.conf dockerd sees instead of /etc/resolv.conf (tests)"
    )
    args = parser.parse_args(argv)
    paths = EnginePaths(
        daemon_json=args.daemon_json,
        firewall=args.firewall,
        socket=args.socket,
        pidfile=args.pidfile,
        log=args.log,
        state=args.state,
        data_root=args.data_root,
        exec_root=args.exec_root,
        netns=args.netns,
        resolv_conf=args.resolv_conf,
    )
    return args.command, paths


def main(argv: list[str] | None = None) -> int:
    command, paths = _parse(argv)
    if os.geteuid() != 0:
        print("engine: must run as root (it writes /etc/docker and loads firewall rules)", file=sys.stderr)
        return 2
    resolv_path = paths.resolv_conf or Path("/etc/resolv.conf")
    resolv_conf = resolv_path.read_text() if resolv_path.exists() else ""
    try:
        if command == "start":
            print(start(paths, resolv_conf))
            return 0
        if command == "stop":
            print(stop(paths))
            return 0
        code, line = status(paths, resolv_conf)
        print(line)
        return code
    except EngineError as err:
        print(f"engine: {err}", file=sys.stderr)
        return 2
    except subprocess.CalledProcessError as err:
        print(f"engine: {' '.join(map(str, err.cmd))} failed with status {err.returncode}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
