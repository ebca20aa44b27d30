"""A claw's timeline from its host's kernel audit trail: what it ran and which files it changed or read.

    python -m tools.audit --stack local --claw acme-reports [--since 2026-12-02T10:00] [--until ...] [--json]
    python -m tools.audit --vm --claw vm-probe ...

Reads the records of the cage's audit rules (components/cageaudit.py) from the host's auditd log
with `ausearch`, the cage's limit hits (OOM kills, refused forks) from the kernel's log and its API
calls from its egress proxy's log, on this machine for the `local` stack, over the host's pinned SSH
for the VM tier's host, and prints them as a table or, with --json, as JSON lines of the schema tools.audittrail.SCHEMA
(docs/audit.md). Times are UTC; --since/--until take ISO 8601 (a time without a zone is UTC).

What it does not do yet (docs/audit.md, "Not built yet"): read a central sink. A Hetzner host's
trail is on that host (`ausearch -k clawcage-<claw>` there); the shipping to a sink is issue 15's
second step.
Exit 0: printed (also when empty); 2: bad usage, an unknown claw, or a host that cannot be read.
"""

from __future__ import annotations

import argparse
import math
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path

import pulumi
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from components import conventions
from components.daemon import LOCAL_CGROUP_DRIVER, PROVISIONED_CGROUP_DRIVER
from components.conventions import audit_key, proxy_container
from tools import audittrail, mockrun, replay

EXIT_OK, EXIT_USAGE = 0, 2
NO_MATCHES = "<no matches>"


class AuditError(Exception):
    """What was asked cannot be answered; the message says what and why."""


def _seconds(moment: datetime | None, *, up: bool = False) -> int | None:
    """A bound as whole Unix seconds, widened to the second around it (the hosts' searches take
    seconds; `audittrail.within` then keeps the exact range)."""
    if moment is None:
        return None
    stamp = moment.timestamp()
    return math.ceil(stamp) if up else math.floor(stamp)


def _unix_bounds(since: datetime | None, until: datetime | None) -> list[tuple[str, int]]:
    """("since", s) and ("until", u) for the bounds given, in whole Unix seconds, widened."""
    widened = (("since", _seconds(since)), ("until", _seconds(until, up=True)))
    return [(flag, value) for flag, value in widened if value is not None]


def _ausearch_time(seconds: int) -> str:
    # ausearch reads a date in the C locale's %x (mm/dd/yy) and a 24-hour time, in the zone of TZ:
    # the script runs it with TZ=UTC LC_ALL=C.
    return datetime.fromtimestamp(seconds, timezone.utc).strftime("%m/%d/%y %H:%M:%S")


def search_script(claw: str, since: datetime | None = None, until: datetime | None = None) -> str:
    """What a host runs: the raw records of the cage's key from `since` to `until` (ausearch skips
    the records outside them without decoding them), then ausearch's own exit status (1 with no
    output is an empty trail, anything else an error)."""
    flags = {"since": "-ts", "until": "-te"}
    bounds = [
        part for flag, value in _unix_bounds(since, until) for part in (flags[flag], *_ausearch_time(value).split())
    ]
    # --input-logs: the log files auditd.conf names, rotated ones too. Without it ausearch reads its
    # stdin whenever that is not a terminal (over SSH, from a program) and finds nothing there.
    argv = ["ausearch", "--input-logs", "--raw", "-k", audit_key(claw), *bounds]
    return f'TZ=UTC LC_ALL=C {shlex.join(argv)} 2>&1; echo "search-exit=$?"'


def kernel_script(since: datetime | None = None, until: datetime | None = None) -> str:
    """What a host runs for the limit hits (tools.audittrail.limit_events): the kernel's log lines that
    say them, from the journal on a systemd host (it keeps them across reboots; from `since` to
    `until`), from the ring buffer on this machine's engine (all of it: it holds the last few
    hundred KiB); then the search's exit status (1 with no output: none)."""
    pattern = shlex.quote(audittrail.KERNEL_PATTERN)
    bounds = "".join(f" --{flag} @{value}" for flag, value in _unix_bounds(since, until))
    return (
        "set -o pipefail; if [ -d /run/systemd/system ]; then "
        f"journalctl -k -q -o short-unix --no-pager{bounds} --grep {pattern} 2>&1; "
        f"else dmesg --time-format iso 2>&1 | grep -E {pattern}; fi; "
        'echo "search-exit=$?"'
    )


def proxy_script(claw: str, since: datetime | None = None, until: datetime | None = None) -> str:
    """What a host runs for the claw's API calls (tools.audittrail.api_events): its egress proxy's log
    from `since` to `until`, each line with the engine's timestamp; then docker's exit status."""
    bounds = [f"--{flag}={value}" for flag, value in _unix_bounds(since, until)]
    argv = ["docker", "logs", "--timestamps", *bounds, proxy_container(claw)]
    return f'{shlex.join(argv)} 2>&1; echo "search-exit=$?"'


def _split_status(output: str) -> tuple[str, str]:
    body, _, status = output.rstrip("\n").rpartition("\n")
    if not status.startswith("search-exit="):
        body, status = output, "search-exit=?"
    return body, status.removeprefix("search-exit=")


def read_proxy_output(output: str, claw: str) -> str | None:
    """The proxy's lines from a host's answer to proxy_script; None when its container is gone (its
    log went with it: docs/audit.md); AuditError when docker failed otherwise."""
    body, code = _split_status(output)
    if code == "0":
        return body
    if code == "1" and "No such container" in body:
        return None
    raise AuditError(f"docker logs {proxy_container(claw)} failed on the host (exit {code}): {body.strip()[-500:]}")


def read_output(output: str, what: str = "ausearch") -> str:
    """The lines of a host's answer to search_script or kernel_script; AuditError when the search
    failed."""
    body, code = _split_status(output)
    if code == "0":
        return body
    if code == "1" and (not body.strip() or body.strip() == NO_MATCHES):  # --raw says nothing when none match
        return ""
    raise AuditError(f"{what} failed on the host (exit {code}): {body.strip()[-500:]}")


SEARCH_TIMEOUT = 300  # seconds


def local_run(script: str, timeout: float = SEARCH_TIMEOUT) -> str:
    """Run a search on this machine (the `local` stack's host). A search without --since decodes
    every log auditd kept (a busy host's are GiBs); one that runs past `timeout` is an AuditError."""
    try:
        done = subprocess.run(["/bin/bash", "-c", script], capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AuditError(
            f"the search ran past {timeout:g} s on this machine ({script.split(' 2>&1')[0]}): "
            "bound it with --since (the host's older logs are then skipped by their time)"
        ) from None
    return done.stdout


def timeline(
    claw: str,
    run: Callable[[str], str],
    orgs: dict[str, str],
    since: datetime | None = None,
    until: datetime | None = None,
    *,
    cgroup: str | None = None,
    notes: list[str] | None = None,
) -> list[audittrail.Event]:
    """The claw's events in time order, from `since` to `until`; `run` runs a script on the claw's
    host and returns what it printed. ausearch matches keys by prefix, so only events whose key is
    exactly this claw's are kept (claw `a` never shows claw `ab`'s). With `cgroup` (the cage's cgroup
    on that host) also its limit hits from the kernel's log and its API calls from its proxy's log;
    what could not be read is said in `notes`. Each source is its own round trip: a script's status
    is its answer's last line, after everything the claw could have put in its log."""
    records = audittrail.parse_records(read_output(run(search_script(claw, since, until))))
    found = [e for e in audittrail.events(records, orgs) if e.claw == claw]
    if cgroup is not None:
        lines = read_output(run(kernel_script(since, until)), "the kernel log search")
        limits = audittrail.limit_events(lines, claw, cgroup, orgs.get(claw))
        proxy = read_proxy_output(run(proxy_script(claw, since, until)), claw)
        calls = audittrail.api_events(proxy, claw, orgs.get(claw)) if proxy is not None else []
        if proxy is None and notes is not None:
            notes.append(f"no API calls: the proxy container {proxy_container(claw)} is gone, and its log with it")
        found = audittrail.merged(found, limits, calls)
    return audittrail.within(found, since, until)


def cage_cgroup(claw: str, driver: str) -> str:
    """The cage's cgroup as the kernel's log names it (absolute, below the cgroup mount)."""
    return "/" + conventions.cage_cgroup(claw, driver)


def _when(text: str | None, flag: str) -> datetime | None:
    if text is None:
        return None
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise AuditError(
            f"{flag} {text!r} is not an ISO 8601 time (e.g. 2026-12-02T10:00 or 2026-12-02T10:00:00Z)"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)


def _stack_claws(stack: str, root: Path) -> dict[str, str]:
    from components.config import load_stack_file, parse_stack_config

    raw, secret = load_stack_file(root / f"Pulumi.{stack}.yaml")
    return {c.name: c.org for c in parse_stack_config(raw, stack=stack, secret_keys=secret).claws}


def _vm_host() -> tuple[Callable[[str], str], dict[str, str]]:
    from tools import vm, vmhost

    machine = vm.Vm.load()
    if machine is None or not machine.alive():
        raise AuditError("no VM is running (make vm, or the VM tier's tests with CLAWSTAFF_VM_KEEP=1)")
    rendered = vmhost.rendered()
    orgs = {name: info["org"] for name, info in rendered.evaluation.outputs["claws"].items()}
    via = rendered.bootstrap_command  # the connection pinned to the host's derived key
    connection = mockrun.unwrap_secrets(via.inputs["connection"])

    def run(script: str) -> str:
        return replay.ssh_exec(via, connection, machine.address, machine.operator_key, script, None, "audit")

    return run, orgs


def table(claw: str, found: list[audittrail.Event]) -> Table:
    out = Table(title=f"audit trail of claw {claw} ({len(found)} events, UTC)", title_justify="left")
    for column in ("time", "kind", "what", "result", "pid", "program"):
        out.add_column(column, overflow="fold")
    for event in found:
        out.add_row(
            event.time.replace("T", " ").removesuffix("Z"),
            event.kind,
            escape(audittrail.describe(event)),
            event.result,
            str(event.pid or ""),
            escape(event.exe or event.comm or ""),
        )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.audit", description=__doc__.split("\n\n")[0])
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--stack", help="a stack whose host is this machine (local)")
    where.add_argument("--vm", action="store_true", help="the VM tier's host (tools/vm.py)")
    parser.add_argument("--claw", required=True)
    parser.add_argument("--since", help="ISO 8601, inclusive")
    parser.add_argument("--until", help="ISO 8601, inclusive")
    parser.add_argument("--json", action="store_true", help="JSON lines (schema clawstaff.audit/1)")
    args = parser.parse_args(argv)
    try:
        since, until = _when(args.since, "--since"), _when(args.until, "--until")
        if args.vm:
            run, orgs = _vm_host()
            where_text, driver = "the VM tier's host", PROVISIONED_CGROUP_DRIVER
        else:
            if args.stack != "local":
                raise AuditError(
                    f"stack {args.stack!r}: its hosts' trails are on the hosts (ausearch -k {audit_key(args.claw)} "
                    "there); reading them from a central sink is not built yet (docs/audit.md). This command "
                    "reads --stack local (this machine) and --vm"
                )
            orgs = _stack_claws(args.stack, mockrun.ROOT)
            run, where_text, driver = local_run, "Pulumi.local.yaml", LOCAL_CGROUP_DRIVER
        if args.claw not in orgs:
            raise AuditError(f"claw {args.claw!r} is not in {where_text} (claws: {', '.join(sorted(orgs))})")
        notes: list[str] = []
        found = timeline(args.claw, run, orgs, since, until, cgroup=cage_cgroup(args.claw, driver), notes=notes)
    except (AuditError, audittrail.TrailError, replay.ReplayError, pulumi.RunError) as error:
        Console(stderr=True).print(f"[red]audit:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE
    for note in notes:
        Console(stderr=True).print(f"[yellow]audit:[/] {escape(note)}", highlight=False, soft_wrap=True)
    if args.json:
        for event in found:
            print(event.to_json())
    else:
        Console(width=None if sys.stdout.isatty() else 200).print(table(args.claw, found))
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
