"""The stack rule `cage-limits-enforced`: one parent cgroup per cage, created with the cage's limits by
exactly one command on the cage's host, read from its script's facts line (stack_rules.py says how)."""

from __future__ import annotations

import ipaddress
import json
import re
import shlex
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

from cage_conventions import (
    CGROUP_DRIVERS,
    CGROUP_ROOT,
    FACTS_PREFIX,
    LABEL_CLAW,
    LABEL_ROLE,
    LIMITS_CGROUP_FACT,
    LIMITS_CGROUP_VAR,
    LIMITS_CREATE_SCRIPT,
    LIMITS_DELETE_COMMAND,
    LIMITS_DRIVER_FACT,
    LIMITS_DRIVER_VAR,
    LIMITS_DELETE_SCRIPT,
    LIMITS_FACTS,
    LIMITS_MARKER,
    LIMITS_SHELL,
    LIMITS_VARS,
    LOCAL_COMMAND,
    ROLE_BROKER,
    ROLE_CLAW,
    ROLE_PROXY,
    cage_cgroup,
    cgroup_parent,
)
from command_rules import public_keys_in
from container_rules import CLAW_NAME
from policy_support import (
    UNKNOWN,
    StackItem,
    Unverifiable,
    contains_unknown,
    field,
    labels_of,
    unverifiable_message,
)

from stack_graph import Graph

Config = Mapping[str, Any]
Found = Iterator[tuple[str, str | None]]


# --- cage-limits-enforced ---------------------------------------------------------------------------

_MARKER_PREFIX, _MARKER_SUFFIX = LIMITS_MARKER.split("{claw}")
_MARKER = re.compile("^" + re.escape(_MARKER_PREFIX) + r"(?P<claw>\S+?)" + re.escape(_MARKER_SUFFIX), re.MULTILINE)
_CGROUP_OF = re.compile(rf"^{LIMITS_CGROUP_VAR}=['\"]?{re.escape(CGROUP_ROOT)}/(?P<claw>[^'\"\s/]+)", re.MULTILINE)
_SLICE_OF = re.compile(
    rf"^{LIMITS_CGROUP_VAR}=['\"]?{re.escape(CGROUP_ROOT)}\.slice/{re.escape(CGROUP_ROOT)}-(?P<claw>[^'\"\s/]+)\.slice",
    re.MULTILINE,
)
_INTEGER = re.compile(r"[0-9]+")
# What the limits script must write where, by driver: a line that names the limit file (cgroupfs) or the
# slice's property (systemd) and the variable.
_LIMIT_WRITES = {
    "cgroupfs": (
        ("PIDS", ("pids.max",)),
        ("MEMORY", ("memory.max", "memory.limit_in_bytes")),
        ("CPU_QUOTA", ("cpu.max", "cpu.cfs_quota_us")),
    ),
    "systemd": (("PIDS", ("TasksMax=",)), ("MEMORY", ("MemoryMax=",)), ("CPU_QUOTA", ("CPUQuota=",))),
}


def bash_script(command: Any) -> str | None:
    """The script of a `/bin/bash -c '<script>'` command line, None if `command` is not one."""
    if not isinstance(command, str):
        return None
    try:
        argv = shlex.split(command)
    except ValueError:
        return None
    return argv[2] if len(argv) == 3 and tuple(argv[:2]) == LIMITS_SHELL else None


def script_facts(script: str) -> tuple[dict[str, Any] | None, str | None]:
    """The facts a script's header declares (its one `# clawcage-facts: {...}` line): (facts, None), or
    (None, why not). The renderer writes the line; a script without exactly one readable line has none."""
    lines = [line[len(FACTS_PREFIX) :] for line in script.splitlines() if line.startswith(FACTS_PREFIX)]
    if len(lines) != 1:
        return None, f"carries {len(lines)} facts lines `{FACTS_PREFIX}{{...}}`, not one"
    try:
        facts = json.loads(lines[0])
    except ValueError:
        return None, f"has a facts line that is not JSON: {lines[0][:60]!r}"
    if not isinstance(facts, dict):
        return None, f"has a facts line that is not a JSON object: {lines[0][:60]!r}"
    return facts, None


def limits_claws(command: Any) -> set[str]:
    """The cages whose limits a command's script sets: the cage its facts line declares for a limits script,
    and, so that an undeclared one is judged too, any cage its marker line or its cgroup assignment names."""
    if not isinstance(command, str):
        return set()
    text = bash_script(command) or command
    claws = {m.group("claw") for m in _MARKER.finditer(text)} | {m.group("claw") for m in _CGROUP_OF.finditer(text)}
    claws |= {m.group("claw").replace("\\x2d", "-") for m in _SLICE_OF.finditer(text)}
    facts, _ = script_facts(text)
    if (
        facts
        and facts.get("script") in (LIMITS_CREATE_SCRIPT, LIMITS_DELETE_SCRIPT)
        and isinstance(facts.get("claw"), str)
    ):
        claws.add(facts["claw"])
    return claws


def _assignment(script: str, name: str) -> tuple[str | None, str | None]:
    """(value, None) for a script that assigns `name` exactly once, at the start of a line; else (None, why)."""
    count = len(re.findall(rf"(?<![\w$]){name}\+?=", script))
    lines = re.findall(rf"^{name}=(\S*)[ \t]*$", script, re.MULTILINE)
    if count != 1 or len(lines) != 1:
        return None, f"assigns {name} {count} times, not once on a line of its own"
    try:
        words = shlex.split(lines[0]) if lines[0] else [""]
    except ValueError:
        words = []
    return (words[0], None) if len(words) == 1 else (None, f"assigns {name} an unreadable value {lines[0]!r}")


def _identity_problems(
    kind: str, script: str, claw: str, facts: Mapping[str, Any] | None, expected_script: str
) -> Iterator[str]:
    """The facts, the marker line and the cgroup assignment that tie a limits script to one cage."""
    driver = facts.get(LIMITS_DRIVER_FACT) if facts is not None else None
    expected = cage_cgroup(claw, driver) if driver in CGROUP_DRIVERS else None
    if facts is not None:
        if (facts.get("script"), facts.get("claw")) != (expected_script, claw):
            yield (
                f"its `{kind}` script's facts line declares {facts.get('script')!r} of cage "
                f"{facts.get('claw')!r}, not {expected_script!r} of cage {claw}"
            )
        elif expected is None:
            yield (
                f"its `{kind}` script's facts line gives the cgroup driver {driver!r}, not one of "
                f"{', '.join(CGROUP_DRIVERS)}"
            )
        elif facts.get(LIMITS_CGROUP_FACT) != expected:
            yield f"its `{kind}` script's facts line gives the cgroup {facts.get(LIMITS_CGROUP_FACT)!r}, not {expected}"
    marker = LIMITS_MARKER.format(claw=claw)
    if {m.group("claw") for m in _MARKER.finditer(script)} != {claw}:
        yield f"its `{kind}` script does not carry the line {marker!r} (and no other cage's)"
    value, problem = _assignment(script, LIMITS_CGROUP_VAR)
    if problem:
        yield f"its `{kind}` script {problem}"
    elif expected is not None and value != expected:
        yield f"its `{kind}` script sets {LIMITS_CGROUP_VAR}={value}, not {expected}"
    if driver in CGROUP_DRIVERS:
        value, problem = _assignment(script, LIMITS_DRIVER_VAR)
        if problem:
            yield f"its `{kind}` script {problem}"
        elif value != driver:
            yield f"its `{kind}` script sets {LIMITS_DRIVER_VAR}={value}, but its facts line gives the driver {driver}"


def _facts_or_problem(kind: str, script: str) -> tuple[dict[str, Any] | None, list[str]]:
    facts, problem = script_facts(script)
    if problem:
        return None, [
            (
                f"its `{kind}` script {problem}, so nothing declares which cage's limits it is (the "
                f"renderer writes one; a script without it is refused)"
            )
        ]
    return facts, []


def limits_create_problems(kind: str, command: Any, claw: str, max_pids: int) -> Iterator[str]:
    """Why `command` (a `create` or `update`) is not cage `claw`'s limits script within the ceilings.

    The limits are the ones its facts line declares; the header must assign exactly those values, once
    (the body assigns none of them again), and the body must write them to the cgroup's limit files."""
    script = bash_script(command)
    if script is None:
        yield f"its `{kind}` is not `{' '.join(LIMITS_SHELL)} '<script>'`"
        return
    facts, problems = _facts_or_problem(kind, script)
    yield from problems
    yield from _identity_problems(kind, script, claw, facts, LIMITS_CREATE_SCRIPT)
    for name in LIMITS_VARS:
        value, problem = _assignment(script, name)
        if problem:
            yield f"its `{kind}` script {problem}"
            continue
        if value is None or not _INTEGER.fullmatch(value) or int(value) < 1:
            yield f"its `{kind}` script sets {name}={value}, not a positive integer"
            continue
        if name == "PIDS" and int(value) > max_pids:
            yield f"its `{kind}` script sets PIDS={value}, above the ceiling of {max_pids} (maxPids)"
        fact = facts.get(LIMITS_FACTS[name]) if facts is not None else None
        if facts is not None and (isinstance(fact, bool) or not isinstance(fact, int) or fact != int(value)):
            yield (
                f"its `{kind}` script sets {name}={value}, but its facts line gives {LIMITS_FACTS[name]}="
                f"{fact!r}: a script and its facts must agree"
            )
    lines = script.splitlines()
    driver = facts.get(LIMITS_DRIVER_FACT) if facts is not None else None
    for name, files in _LIMIT_WRITES.get(driver, ()):
        # $NAME, ${NAME}, or NAME inside $(( ... )) arithmetic.
        used = re.compile(rf"\$\{{?{name}\b|\$\(\(.*(?<![A-Z0-9_]){name}(?![A-Z0-9_]).*\)\)")
        if not any(any(f in line for f in files) and used.search(line) for line in lines):
            yield f"its `{kind}` script never writes ${name} to {' or '.join(files)}"


def limits_delete_problems(command: Any, claw: str) -> Iterator[str]:
    """Why `command` (a `delete`) does not remove cage `claw`'s parent cgroup."""
    script = bash_script(command)
    if script is None:
        yield (
            f"its `delete` is not `{' '.join(LIMITS_SHELL)} '<script>'` removing cage {claw}'s cgroup: "
            f"the cage's limits would outlive it"
        )
        return
    facts, problems = _facts_or_problem("delete", script)
    yield from problems
    yield from _identity_problems("delete", script, claw, facts, LIMITS_DELETE_SCRIPT)
    if not re.search(rf"\b{LIMITS_DELETE_COMMAND}\b", script):
        yield f"its `delete` script does not remove the cgroup ({LIMITS_DELETE_COMMAND})"


def _limits_command_problems(command: StackItem, claw: str, max_pids: int) -> Iterator[str]:
    props = command.props
    yield from limits_create_problems("create", props.get("create"), claw, max_pids)
    update = props.get("update")
    if update is UNKNOWN:
        yield unverifiable_message("update")
    elif update:
        # Pulumi runs `update` instead of `create` on a change: it must set the same limits.
        yield from limits_create_problems("update", update, claw, max_pids)
    delete = props.get("delete")
    if delete is UNKNOWN:
        yield unverifiable_message("delete")
    else:
        yield from limits_delete_problems(delete, claw)


def _driver_problems(command: StackItem, claw: str, container_drivers: set[str]) -> Found:
    """The limits script must make the form of cgroup the containers name as their parent."""
    script = bash_script(command.props.get("create"))
    facts, _ = script_facts(script) if script else (None, None)
    driver = facts.get(LIMITS_DRIVER_FACT) if facts else None
    if driver in CGROUP_DRIVERS and len(container_drivers) == 1 and driver not in container_drivers:
        (used,) = container_drivers
        yield (
            (
                f"the limits command of cage {claw} makes its limits for the {driver} driver "
                f"({cage_cgroup(claw, driver)}), but its containers' `cgroupParent` is the {used} form "
                f"{cgroup_parent(claw, used)!r}: they would run outside the cage's limits."
            ),
            command.urn,
        )


def _state(value: Any) -> str:
    return "unknown" if value is UNKNOWN else "unset" if value in (None, "", set()) else "known"


def _same_address(a: str, b: str) -> bool:
    def canonical(address: str) -> str:
        address = address.strip().strip("[]").lower()
        try:
            return str(ipaddress.ip_address(address))
        except ValueError:
            return address.rstrip(".")

    return canonical(a) == canonical(b)


def _text(value: Any) -> str:
    return " ".join(str(v) for v in value) if isinstance(value, list) else str(value)


def _host_problems(graph: Graph, command: StackItem, claw: str, containers: Sequence[StackItem]) -> Found:
    """The limits command must run on the host whose Docker engine runs the cage's containers."""
    for provider_urn in sorted({c.provider_urn for c in containers}):
        container = next(c for c in containers if c.provider_urn == provider_urn)
        provider = graph.provider_props(container) or {}
        where = f"the Docker provider {provider_urn.rsplit('::', 1)[-1] or '(default)'} of cage {claw}'s containers"
        docker_host = provider.get("host")
        local_engine = isinstance(docker_host, str) and docker_host.startswith("unix://")
        if command.type == LOCAL_COMMAND:
            if docker_host is UNKNOWN:
                yield (
                    (
                        unverifiable_message("host") + f" (the `host` of {where}: a local limits command must run "
                        f"where the containers run)"
                    ),
                    command.urn,
                )
            elif not isinstance(docker_host, str) or not docker_host:
                yield (
                    (
                        f"{where} shows no `host`, so nothing shows that the local limits command runs where the "
                        f"containers run; set the provider's `host` (unix:///var/run/docker.sock for the local "
                        f"engine)."
                    ),
                    command.urn,
                )
            elif not local_engine:
                yield (
                    (
                        f"the limits command of cage {claw} is a local command (it runs on the machine running "
                        f"Pulumi), but {where} runs them on {docker_host}: the limits would land on another host."
                    ),
                    command.urn,
                )
            continue
        connection = command.props.get("connection")
        if connection is UNKNOWN:
            yield unverifiable_message("connection"), command.urn
            continue
        if not isinstance(connection, Mapping):
            yield f"the remote limits command of cage {claw} has no `connection`.", command.urn
            continue
        if local_engine:
            yield (
                (
                    f"the limits command of cage {claw} runs on a remote host, but {where} runs them on the local "
                    f"engine {docker_host}: the limits would land on another host."
                ),
                command.urn,
            )
            continue
        address: Any = (
            docker_host
            if docker_host is UNKNOWN
            else (urlsplit(docker_host).hostname if isinstance(docker_host, str) else None)
        )
        ssh_opts = provider.get("sshOpts")
        keys: Any = UNKNOWN if contains_unknown(ssh_opts) else public_keys_in(_text(ssh_opts)) if ssh_opts else set()
        command_host, command_key = connection.get("host"), connection.get("hostKey")
        compared = False
        if isinstance(command_host, str) and command_host and isinstance(address, str):
            compared = True
            if not _same_address(command_host, address):
                yield (
                    (
                        f"the limits command of cage {claw} connects to {command_host}, but {where} runs them on "
                        f"{address}: the limits would land on another host."
                    ),
                    command.urn,
                )
        if isinstance(command_key, str) and command_key and isinstance(keys, set) and keys:
            compared = True
            if not public_keys_in(command_key) & keys:
                yield (
                    (
                        f"the limits command of cage {claw} pins the host key {command_key.split()[0]} "
                        f"{command_key.split()[1][-12:] if len(command_key.split()) > 1 else ''}, which {where} "
                        f"does not pin in `sshOpts`: they talk to different hosts."
                    ),
                    command.urn,
                )
        if not compared:
            yield (
                (
                    f"cannot verify that the limits command of cage {claw} runs on the host of its containers: "
                    f"neither the address (command `connection.host` {_state(command_host)}, provider `host` "
                    f"{_state(address)}) nor the host key (command `connection.hostKey` {_state(command_key)}, "
                    f"provider `sshOpts` {_state(keys)}) is known on both sides during preview, so this rule fails "
                    f"closed. Make one pair known at preview time (e.g. pin the host key in the provider's "
                    f"`sshOpts` without depending on the address)."
                ),
                command.urn,
            )


def check_limits_enforced(items: Sequence[StackItem], config: Config) -> Found:
    max_pids = int(config["maxPids"])
    graph = Graph(items)
    yield from graph.problems
    cages: dict[str, list[StackItem]] = defaultdict(list)
    drivers: dict[str, set[str]] = defaultdict(set)  # the forms of `cgroupParent` a cage's containers use
    for container, labels, _ in graph.containers:
        role = labels.get(LABEL_ROLE)
        if role not in (ROLE_CLAW, ROLE_PROXY, ROLE_BROKER):
            continue
        claw = labels.get(LABEL_CLAW, "")
        if not CLAW_NAME.match(claw):
            yield (
                (
                    f"the {role} container has no valid `{LABEL_CLAW}` label (got {claw!r}), so no cage's limits "
                    f"hold it."
                ),
                container.urn,
            )
            continue
        cages[claw].append(container)
        try:
            parent = field(container.props, "cgroupParent")
        except Unverifiable as unknown:
            yield unverifiable_message(unknown.path), container.urn
            continue
        forms = {cgroup_parent(claw, d): d for d in CGROUP_DRIVERS}
        if parent in forms:
            drivers[claw].add(forms[parent])
        else:
            yield (
                (
                    f"`cgroupParent` is {parent!r}, not {' or '.join(map(repr, forms))} (the cage's slice, or its "
                    f"cgroup on an engine without systemd): the {role} container of cage {claw} would run outside "
                    f"the cage's pids, memory and cpu limits."
                ),
                container.urn,
            )

    by_claw: dict[str, list[StackItem]] = defaultdict(list)
    unknown_scripts: list[StackItem] = []
    for command in graph.commands:
        scripts = [command.props.get("create"), command.props.get("update")]
        if any(s is UNKNOWN for s in scripts):
            unknown_scripts.append(command)
        for claw in set().union(*(limits_claws(s) for s in scripts)):
            by_claw[claw].append(command)
    for command in unknown_scripts:
        yield (
            unverifiable_message("create") + " (or `update`): this command could set or undo a cage's limits.",
            command.urn,
        )

    for claw, containers in sorted(cages.items()):
        anchor = sorted(containers, key=lambda c: labels_of(c.props).get(LABEL_ROLE) != ROLE_CLAW)[0].urn
        commands = by_claw.get(claw, [])
        if not commands:
            if unknown_scripts:
                yield (
                    (
                        unverifiable_message("create") + f" (no command known during preview creates cage {claw}'s "
                        f"limits)"
                    ),
                    anchor,
                )
            else:
                yield (
                    (
                        f"no command creates cage {claw}'s parent cgroup with its limits: a "
                        f"fork bomb or a leak in the cage would reach the host's pids and memory."
                    ),
                    anchor,
                )
            continue
        if len(commands) > 1:
            yield (
                (
                    f"cage {claw} has {len(commands)} limits commands {sorted(c.urn for c in commands)}: exactly one "
                    f"sets a cage's limits (otherwise whichever runs last wins)."
                ),
                anchor,
            )
        if len(drivers[claw]) > 1:
            yield (
                (
                    f"the containers of cage {claw} use both forms of `cgroupParent` ({', '.join(sorted(drivers[claw]))}): "
                    f"one of them runs outside the limits its cage's command makes."
                ),
                anchor,
            )
        for command in commands:
            for problem in _limits_command_problems(command, claw, max_pids):
                yield f"the limits command of cage {claw}: {problem}.", command.urn
            yield from _driver_problems(command, claw, drivers[claw])
            yield from _host_problems(graph, command, claw, containers)
