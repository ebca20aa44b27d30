"""After a host reboots: which cages came back, which failed closed, and the one command that brings
them back, with a preview of what it will do.

What a reboot does to a cage, by design (docs/vm-host.md, "Reboot"): what holds no secret is on disk
and comes back by itself (the slice with the cage's limits, the proxy's config, the networks, the
firewall, the proxy container); what holds one never touches a disk, so it is gone (the cage key on
its tmpfs, the volume's unwrapped key in the kernel), and the claw container cannot start without it
(its key directory and its volume's directory do not exist until they are made again): the cage fails
closed. Nothing on the host can bring it back, because the secrets come only from the stack (the
program's sealing key). This tool, run by an operator, does:

    python -m tools.recover --vm            # preview: what each cage lacks, and what --apply will run
    python -m tools.recover --vm --apply    # run exactly that, then show the cages again

For each cage of the host it re-runs the program's own `create` of the cage's key and volume commands
(as registered, the secret on stdin, over the connection pinned to the host's derived key: the same
path as `pulumi up`), then starts the proxy and claw containers that are not running. It never
creates or deletes a resource of the stack.

Only the VM tier's stack is wired to the command line: its secrets are on this machine. A real stack's
secrets are `secure:` values that only Pulumi decrypts (the offline evaluation sees placeholders, and
a placeholder key would seal nothing this cage can open), so in production the same re-run is
`pulumi up --replace <the cage's key and volume commands>` (docs/vm-host.md; not run here: no Pulumi
CLI on this machine).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from components.conventions import (
    AUDIT_KEY_PREFIX,
    HOST_KEY_ROOT,
    HOST_VOLUME_ROOT,
    LABEL_CLAW,
    LABEL_HOST,
    LABEL_ROLE,
    ROLE_CLAW,
)
from components.cagehost import shell_command
from components.hostscripts import render_script
from tools import mockrun, replay


class RecoverError(Exception):
    """Something the operator asked for cannot be done; the message says what and why."""


@dataclass(frozen=True)
class CageState:
    """What the host shows of one cage (components/hostscripts/cage-state.sh)."""

    claw: str
    boot_id: str
    key: bool
    volume_mounted: bool
    audited: bool
    claw_running: bool
    proxy_running: bool


@dataclass(frozen=True)
class Step:
    claw: str
    text: str
    command: mockrun.Registered | None = None  # a registered remote command whose create runs again
    container: str | None = None  # a container to start


def _labels(resource: mockrun.Registered) -> dict[str, str]:
    return {item["label"]: item["value"] for item in mockrun.unwrap_secrets(resource.inputs.get("labels") or [])}


def host_claws(evaluation: mockrun.Evaluation, host: str) -> list[str]:
    """The claws the program places on `host`, by the labels of their claw containers."""
    claws = sorted(
        labels[LABEL_CLAW]
        for r in evaluation.by_type(replay.CONTAINER)
        if (labels := _labels(r)).get(LABEL_ROLE) == ROLE_CLAW and labels.get(LABEL_HOST) == host
    )
    if not claws:
        raise RecoverError(f"the program places no cage on host {host!r}")
    return claws


def _command(evaluation: mockrun.Evaluation, name: str) -> mockrun.Registered | None:
    found = [r for r in evaluation.by_type(replay.REMOTE_COMMAND) if r.name == name]
    return found[0] if found else None


def state_script(claws: list[str]) -> str:
    return render_script(
        "cage-state.sh", title="state of the cages", CLAWS=" ".join(claws), KEY_ROOT=HOST_KEY_ROOT,
        VOLUME_ROOT=HOST_VOLUME_ROOT, AUDIT_KEY_PREFIX=AUDIT_KEY_PREFIX,
    )  # fmt: skip


def parse_states(output: str, claws: list[str]) -> list[CageState]:
    states = [CageState(**json.loads(line)) for line in output.splitlines() if line.strip()]
    if sorted(s.claw for s in states) != sorted(claws):
        raise RecoverError(f"the host reported cages {sorted(s.claw for s in states)}, not {sorted(claws)}")
    return states


def plan(evaluation: mockrun.Evaluation, states: list[CageState]) -> list[Step]:
    """What brings every cage back, in order: key, volume, audit rules (they watch the mounted volume),
    proxy, claw. A healthy cage needs nothing."""
    steps: list[Step] = []
    for state in states:
        claw = state.claw
        volume = _command(evaluation, f"{claw}-volume")
        key = _command(evaluation, f"{claw}-key")
        audit = _command(evaluation, f"{claw}-audit")
        if key is None or audit is None:
            raise RecoverError(f"the program registers no remote key or audit command for cage {claw}")
        if not state.key:
            steps.append(Step(claw, f"put cage {claw}'s key on the host's tmpfs (the key command's create)", key))
        if volume is not None and not state.volume_mounted:
            steps.append(Step(claw, f"re-open cage {claw}'s encrypted volume (the volume command's create)", volume))
        if not state.audited:
            steps.append(Step(claw, f"load cage {claw}'s kernel audit rules (the audit command's create)", audit))
        if not state.proxy_running:
            steps.append(Step(claw, f"start proxy-{claw}", container=f"proxy-{claw}"))
        if not state.claw_running:
            steps.append(Step(claw, f"start claw-{claw}", container=f"claw-{claw}"))
    return steps


def describe(host: str, states: list[CageState], steps: list[Step]) -> str:
    lines = [f"host {host}: {len(states)} cages (boot {states[0].boot_id[:8] if states else '?'})"]
    for s in states:
        lacks = [
            what
            for what, ok in (
                ("no key", s.key), ("volume not mounted", s.volume_mounted), ("unaudited", s.audited),
                ("proxy stopped", s.proxy_running), ("claw stopped", s.claw_running),
            )
            if not ok
        ]  # fmt: skip
        lines.append(f"  {s.claw}: " + (", ".join(lacks) if lacks else "running"))
    lines.append("to do:" if steps else "nothing to do: every cage runs.")
    lines += [f"  {i}. {step.text}" for i, step in enumerate(steps, 1)]
    return "\n".join(lines)


@dataclass
class Host:
    """Where the cages are: the program's evaluation, the host's name and the real address of it."""

    evaluation: mockrun.Evaluation
    name: str
    address: str
    identity: Path

    def _run(self, via: mockrun.Registered, script: str, stdin: str | None, step: str) -> str:
        connection = mockrun.unwrap_secrets(via.inputs["connection"])
        return replay.ssh_exec(via, connection, self.address, self.identity, script, stdin, step)

    def observe(self) -> list[CageState]:
        claws = host_claws(self.evaluation, self.name)
        via = _command(self.evaluation, f"{claws[0]}-key")
        output = self._run(via, shell_command(state_script(claws)), None, "state")
        return parse_states(output, claws)

    def apply(self, steps: list[Step]) -> None:
        for step in steps:
            if step.command is not None:
                inputs = mockrun.unwrap_secrets(step.command.inputs)
                self._run(step.command, inputs["create"], inputs.get("stdin"), "create")
            else:
                via = _command(self.evaluation, f"{step.claw}-key")
                self._run(via, f"docker start {step.container}", None, "start")


def recover(host: Host, *, apply: bool, out=print) -> list[CageState]:
    """Show the cages and the plan; with `apply`, run it and show the cages again (all must run)."""
    states = host.observe()
    steps = plan(host.evaluation, states)
    out(describe(host.name, states, steps))
    if not apply or not steps:
        return states
    host.apply(steps)
    states = host.observe()
    out(describe(host.name, states, []))
    stopped = [s.claw for s in states if not (s.key and s.audited and s.claw_running and s.proxy_running)]
    if stopped:
        raise RecoverError(f"cages {stopped} are still not running after recovery")
    return states


def _vm_host() -> Host:
    from tools import vm, vmhost

    machine = vm.Vm.load()
    if machine is None or not machine.alive():
        raise RecoverError("no VM is running (make vm, or the VM tier's tests with CLAWSTAFF_VM_KEEP=1)")
    rendered = vmhost.rendered()
    return Host(rendered.evaluation, vmhost.HOST_NAME, machine.address, machine.operator_key)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.recover", description=__doc__.split("\n\n")[0])
    parser.add_argument("--vm", action="store_true", required=True, help="the VM tier's host (tools/vm.py)")
    parser.add_argument("--apply", action="store_true", help="run the plan (without: only show it)")
    args = parser.parse_args(argv)
    try:
        recover(_vm_host(), apply=args.apply)
    except (RecoverError, replay.ReplayError) as error:
        print(f"recover: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
