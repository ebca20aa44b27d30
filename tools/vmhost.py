"""The VM tier's host as the program registers it, and the replay of its host commands over SSH.

The VM stands in for one Hetzner Cloud server. What it gets is what the program registers for a
cloud host of a one-host stack (evaluated under Pulumi's mocks, like the offline preview): the
server's user-data, then the first-contact command (pinned to the first-contact key, installing the
derived host key from stdin) and the bootstrap command (pinned to the derived key). `run_remote`
runs such a command the way pulumi-command's `remote.Command` does: one SSH session as the
connection's user to the connection's host, its `create` as the command, its stdin on stdin, and the
host key the connection pins as the only key trusted (a known_hosts line built from it; never
StrictHostKeyChecking=no). A host that presents another key is refused before anything runs.

The one change to what the program registers: the mock engine gives the server a documentation
address; the VM's address (tools.vm.VM_IP) takes its place, as Hetzner's API would give the real one.
"""

from __future__ import annotations

import secrets
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pulumi.runtime import rpc

from tools import mockrun, vm

HOST_NAME = "vm-cage-01"
SERVER = "hcloud:index/server:Server"
REMOTE = "command:remote:Command"


def stack_config(operator_public_key: str, sealing_key: str) -> dict[str, Any]:
    """A one-host cloud stack: the host the VM stands in for."""
    return {
        "clawstaff:controlPlane": "control.clawstaff.example:443",
        "clawstaff:proxyImage": "ghcr.io/clawstaff/egress-proxy@sha256:" + "e9" * 32,
        "clawstaff:admin": {"sshAllowedCidrs": [f"{vm.HOST_IP}/32"], "sshPublicKeys": [operator_public_key]},
        "clawstaff:hosts": [
            {"name": HOST_NAME, "kind": "cloud", "serverType": "cx32", "location": "fsn1", "image": "debian-13"}
        ],
        # One idle claw: the cages' own host commands and containers come with the next step of the tier.
        "clawstaff:claws": [
            {
                "name": "vm-probe",
                "org": "acme",
                "image": "ghcr.io/clawstaff/claw-runtime@sha256:" + "c1a0" * 16,
                "cpus": 0.25,
                "memory": "256MiB",
                "pids": 64,
                "tmpfs": "32MiB",
            }
        ],  # fmt: skip
        "clawstaff:sealingKey": sealing_key,
        "clawstaff:clawSecrets": {},
    }


@dataclass
class VmHost:
    evaluation: mockrun.Evaluation
    user_data: str
    first_contact_public: str  # the key line sshd presents until the first contact
    host_key_public: str  # the derived host key line, pinned from then on
    host_key_command: mockrun.Registered
    bootstrap_command: mockrun.Registered
    mock_address: str


def _unwrap(value: Any) -> Any:
    return rpc.unwrap_rpc_secret(value) if rpc.is_rpc_secret(value) else value


def _one(evaluation: mockrun.Evaluation, type_: str, name: str) -> mockrun.Registered:
    found = [r for r in evaluation.resources if r.type == type_ and r.name == name]
    if len(found) != 1:
        raise vm.VmError(f"the program registered {len(found)} {type_} named {name}, not one")
    return found[0]


def sealing_key(vm_dir: Path = vm.VM_DIR) -> str:
    """The tier's stack secret: random, made once per machine, root-only, never sent to the VM."""
    path = vm_dir / "sealing-key"
    if not path.exists():
        vm_dir.mkdir(parents=True, exist_ok=True)
        path.touch(mode=0o600)
        path.write_text(secrets.token_urlsafe(48))
    return path.read_text().strip()


def rendered(vm_dir: Path = vm.VM_DIR) -> VmHost:
    _, operator_public = vm.operator_key(vm_dir)
    raw = stack_config(operator_public, sealing_key(vm_dir))
    evaluation = mockrun.evaluate("vm", raw, {"clawstaff:sealingKey"})
    server = _one(evaluation, SERVER, f"{HOST_NAME}-server")
    host_key_command = _one(evaluation, REMOTE, f"{HOST_NAME}-host-key")
    bootstrap = _one(evaluation, REMOTE, f"{HOST_NAME}-bootstrap")
    import yaml

    user_data = _unwrap(server.inputs["userData"])
    keys = yaml.safe_load(user_data)["ssh_keys"]
    return VmHost(
        evaluation=evaluation,
        user_data=user_data,
        first_contact_public=keys["ed25519_public"],
        host_key_public=_unwrap(bootstrap.inputs["connection"])["hostKey"],
        host_key_command=host_key_command,
        bootstrap_command=bootstrap,
        mock_address=_unwrap(host_key_command.inputs["connection"])["host"],
    )


class HostKeyRefused(vm.VmError):
    pass


def run_remote(
    command: mockrun.Registered, *, address: str, identity: Path, timeout: float = 1800
) -> subprocess.CompletedProcess:
    """Run a registered remote.Command's create over SSH, trusting only the key its connection pins."""
    connection = _unwrap(command.inputs["connection"])
    unknown = set(connection) - {"host", "user", "hostKey", "port", "dialErrorLimit", "perDialTimeout"}
    if unknown:
        raise vm.VmError(f"{command.name}: connection inputs this replay does not understand: {sorted(unknown)}")
    host_key = connection.get("hostKey")
    if not host_key:
        raise vm.VmError(f"{command.name}: the connection pins no host key; refusing to trust on first use")
    port = int(connection.get("port", 22))
    with tempfile.NamedTemporaryFile("w", prefix="known_hosts.", delete=False) as known:
        known.write(f"{address} {host_key}\n" if port == 22 else f"[{address}]:{port} {host_key}\n")
    argv = ["ssh", "-i", str(identity), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known.name}",
            "-o", "GlobalKnownHostsFile=/dev/null", "-o", f"ConnectTimeout={int(connection.get('perDialTimeout', 15))}",
            "-p", str(port),
            f"{connection.get('user', 'root')}@{address}", _unwrap(command.inputs["create"])]  # fmt: skip
    stdin = _unwrap(command.inputs.get("stdin")) or ""
    # pulumi-command dials up to dialErrorLimit times (10 by default) before it gives up.
    attempts = max(1, int(connection.get("dialErrorLimit", 10)))
    try:
        for attempt in range(attempts):
            done = subprocess.run(argv, input=stdin, capture_output=True, text=True, timeout=timeout)
            dial_failed = (
                done.returncode == 255
                and "Host key verification failed" not in done.stderr
                and ("Connection refused" in done.stderr or "timed out" in done.stderr or "No route" in done.stderr)
            )
            if not dial_failed or attempt == attempts - 1:
                break
            time.sleep(2)
    finally:
        Path(known.name).unlink(missing_ok=True)
    if done.returncode == 255 and "Host key verification failed" in done.stderr:
        raise HostKeyRefused(f"{command.name}: {address} did not present the pinned key ({host_key.split()[-1]})")
    if done.returncode != 0:
        raise vm.VmError(f"{command.name} failed on {address} (exit {done.returncode}): {done.stderr[-3000:]}")
    return done


def provision(host: VmHost, machine: vm.Vm) -> dict[str, str]:
    """The program's first contact and bootstrap, replayed onto the VM; their stderr, by command."""
    logs = {}
    for command in (host.host_key_command, host.bootstrap_command):
        done = run_remote(command, address=machine.address, identity=machine.operator_key)
        logs[command.name] = done.stderr
    machine.host_key = host.host_key_public
    machine.save()
    return logs
