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

import hashlib
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tools import mockrun, replay, vm

HOST_NAME = "vm-cage-01"
SERVER = "hcloud:index/server:Server"
REMOTE = "command:remote:Command"


IDLE = ["/usr/bin/python3", "-c", "import signal; signal.pause()"]


def _idle_claw(name: str, org: str, **extra: Any) -> dict[str, Any]:
    """One of the tier's idle claws: the same small limits for each, what differs in `extra`."""
    limits = {"cpus": 0.75, "memory": "256MiB", "pids": 64, "tmpfs": "32MiB"}
    return {"name": name, "org": org, "image": "built:claw-runtime", **limits, **extra, "command": IDLE}


CONTROL_PLANE = "control.clawstaff.example:443"  # every claw's allowlist holds it; the VM reaches no such host


def stack_config(operator_public_key: str, sealing_key: str, probe_secret: str) -> dict[str, Any]:
    """A one-host cloud stack: the host the VM stands in for."""
    return {
        "clawstaff:controlPlane": CONTROL_PLANE,
        "clawstaff:proxyImage": "built:egress-proxy",  # this machine's build, loaded into the VM's engine
        "clawstaff:admin": {"sshAllowedCidrs": [f"{vm.HOST_IP}/32"], "sshPublicKeys": [operator_public_key]},
        "clawstaff:hosts": [
            {"name": HOST_NAME, "kind": "cloud", "serverType": "cx32", "location": "fsn1", "image": "debian-13"}
        ],
        # Three idle claws of three orgs: two under runc (one with an encrypted volume and a sealed
        # secret), one under gVisor (with a volume and a secret too), so the host gets runsc.
        "clawstaff:claws": [
            _idle_claw("vm-probe", "acme", volume="64MiB", secrets=["ANTHROPIC_API_KEY"]),
            _idle_claw("vm-neighbour", "globex"),
            _idle_claw("vm-gvisor", "initech", runtime="gvisor", volume="64MiB", secrets=["ANTHROPIC_API_KEY"]),
        ],
        "clawstaff:sealingKey": sealing_key,
        "clawstaff:clawSecrets": {
            "vm-probe": {"ANTHROPIC_API_KEY": probe_secret},
            "vm-gvisor": {"ANTHROPIC_API_KEY": gvisor_secret(probe_secret)},
        },
    }


def gvisor_secret(probe_secret: str) -> str:
    return probe_secret + "-gvisor"


@dataclass
class VmHost:
    evaluation: mockrun.Evaluation
    user_data: str
    first_contact_public: str  # the key line sshd presents until the first contact
    host_key_public: str  # the derived host key line, pinned from then on
    host_key_command: mockrun.Registered
    bootstrap_command: mockrun.Registered
    mock_address: str
    probe_secret: str  # a claw secret's plaintext: it must never be found on the VM's disk
    gvisor_secret: str  # the gVisor claw's (the probe's with a suffix: a search for the first finds both)

    def host_setup(self) -> frozenset[str]:
        """What exists before the cages: the Hetzner objects (the VM plays the server; the API's other
        objects have no stand-in here) and what `provision` ran. Pulumi's state holds these, so the
        deploy of the cages does not create them again."""
        hetzner = {r.urn for r in self.evaluation.resources if r.type.startswith("hcloud:")}
        return frozenset({*hetzner, self.host_key_command.urn, self.bootstrap_command.urn})


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
    secret = sealing_key(vm_dir)
    probe_secret = "sk-ant-vm-" + hashlib.sha256(secret.encode()).hexdigest()[:24]  # searched for on the VM
    raw = stack_config(operator_public, secret, probe_secret)
    evaluation = mockrun.evaluate("vm", raw, {"clawstaff:sealingKey", "clawstaff:clawSecrets"})
    server = _one(evaluation, SERVER, f"{HOST_NAME}-server")
    host_key_command = _one(evaluation, REMOTE, f"{HOST_NAME}-host-key")
    bootstrap = _one(evaluation, REMOTE, f"{HOST_NAME}-bootstrap")
    import yaml

    user_data = mockrun.unwrap_secrets(server.inputs["userData"])
    keys = yaml.safe_load(user_data)["ssh_keys"]
    return VmHost(
        evaluation=evaluation,
        user_data=user_data,
        first_contact_public=keys["ed25519_public"],
        host_key_public=mockrun.unwrap_secrets(bootstrap.inputs["connection"])["hostKey"],
        host_key_command=host_key_command,
        bootstrap_command=bootstrap,
        mock_address=mockrun.unwrap_secrets(host_key_command.inputs["connection"])["host"],
        probe_secret=probe_secret,
        gvisor_secret=gvisor_secret(probe_secret),
    )


HostKeyRefused = replay.HostKeyRefused


def run_remote(command: mockrun.Registered, *, address: str, identity: Path, timeout: float = 1800) -> str:
    """A registered remote.Command's create, run as pulumi-command runs it (tools.replay.ssh_exec)."""
    return replay.ssh_exec(command, mockrun.unwrap_secrets(command.inputs["connection"]), address, identity,
                           mockrun.unwrap_secrets(command.inputs["create"]), mockrun.unwrap_secrets(command.inputs.get("stdin")), "create",
                           timeout=timeout)  # fmt: skip


def provision(host: VmHost, machine: vm.Vm) -> dict[str, str]:
    """The program's first contact and bootstrap, replayed onto the VM; their output, by command."""
    logs = {}
    for command in (host.host_key_command, host.bootstrap_command):
        logs[command.name] = run_remote(command, address=machine.address, identity=machine.operator_key)
    machine.host_key = host.host_key_public
    machine.save()
    return logs


def load_images(host: VmHost, machine: vm.Vm) -> list[str]:
    """The images the cages pin, from this machine's engine into the VM's (no registry here): the
    loaded image keeps its ID, so the containers' `sha256:` pins resolve there as they do here."""
    pinned = sorted({mockrun.unwrap_secrets(r.inputs["image"]) for r in host.evaluation.by_type(replay.CONTAINER)})
    for image in pinned:
        if machine.ssh(f"docker image inspect {image} >/dev/null 2>&1", check=False).returncode == 0:
            continue
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        load = subprocess.run([*machine.ssh_argv(), "docker load -q"], stdin=save.stdout, capture_output=True,
                              text=True, timeout=1800)  # fmt: skip
        save.wait()
        if save.returncode != 0 or load.returncode != 0:
            raise vm.VmError(f"could not load {image} into the VM: {load.stderr[-1000:]}")
    return pinned


def deploy_cages(host: VmHost, machine: vm.Vm) -> replay.Deployment:
    """The rest of `pulumi up` for the host: its Docker provider over ssh://, the egress network, and
    every cage (remote commands for limits, key, volume, proxy config; networks; containers)."""
    load_images(host, machine)
    remote = replay.Remote(addresses={host.mock_address: machine.address}, identity=machine.operator_key)
    return replay.deploy(host.evaluation, remote=remote, existing=host.host_setup())
