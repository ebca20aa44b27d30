"""Stack rules: what no single resource shows, the shape of the whole graph of cages.

How the pack reads the graph (conventions the components emit, restated in cage_conventions.py):

* a cage is everything labelled `clawstaff.claw=<claw>`: one container with `clawstaff.role=claw`, one with
  `clawstaff.role=proxy`, one network with `clawstaff.role=cage-network`;
* a container's networks are the `name`s in `networksAdvanced` (refer to a network by its name, not its
  id), plus `networkMode` unless it is "none"; with neither, Docker puts it on the shared default
  `bridge`;
* a network is known by its `name` input (the resource name when unset).

Network names are unique in the stack (the components name them `cage-<claw>` and `egress-<host>`): a
name used twice is reported, because every rule here knows a network by its name.

The whole-cage limits (pulumi-docker's Container has no pids field; one parent cgroup caps claw and proxy
together) follow the components' convention, restated in cage_conventions.py and checked by
`cage-limits-enforced`: both cage containers have `cgroupParent` `/clawstaff/<claw>`; exactly one
`command:local:Command` or `command:remote:Command` creates that cgroup, its `create` being
`/bin/bash -c '<script>'`. What the script sets is read from its facts line, one JSON object the renderer
writes into the header (`# clawcage-facts: {"script": "limits-create", "claw": ..., "cgroup":
"clawstaff/<claw>", "pids": ..., "memory": ..., "cpu_quota": ..., "cpu_period": ...}`), not from the
shell. The script must agree with it, or it is refused: the header carries the line `# clawstaff limits
of cage <claw>: ...` and assigns `CG`, `PIDS`, `MEMORY`, `CPU_QUOTA`, `CPU_PERIOD` once each, to exactly
the facts' values (integer literals, nothing assigns them again), and the body writes them to the
cgroup's pids, memory and cpu limits. Its `delete` is the matching script (facts of `limits-delete`)
that removes the cgroup; and it runs on the host whose Docker engine runs the containers. A script
whose facts are missing, unreadable or disagree is refused; so is any other command whose script names
a cage's cgroup (`CG=clawstaff/<claw>`) or marker without declaring it. Where the host cannot be seen
(a remote command's address and host key unknown at preview), the rule fails closed.

Plaintext-secret detection (`secrets-reach-containers-sealed`) is a heuristic, because policy config can
hold no secret and the Python SDK hides which inputs are secrets: a container env value (other than the
sealed blob) equal to a command's `stdin` or to a command `environment` value named like a credential is
a plaintext secret; and two cages carrying the same sealed blob share a key.
"""

from __future__ import annotations

import ipaddress
import json
import posixpath
import re
import shlex
from collections import defaultdict
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any, TypeVar
from urllib.parse import urlsplit

from cage_conventions import (
    CGROUP_ROOT,
    COMMANDS,
    CONTAINER,
    FACTS_PREFIX,
    LABEL_CLAW,
    LABEL_HOST,
    LABEL_ROLE,
    LIMITS_CGROUP_FACT,
    LIMITS_CGROUP_VAR,
    LIMITS_CREATE_SCRIPT,
    LIMITS_DELETE_COMMAND,
    LIMITS_DELETE_SCRIPT,
    LIMITS_FACTS,
    LIMITS_MARKER,
    LIMITS_SHELL,
    LIMITS_VARS,
    LOCAL_COMMAND,
    NETWORK,
    ROLE_CAGE_NETWORK,
    ROLE_CLAW,
    ROLE_EGRESS_NETWORK,
    ROLE_PROXY,
    SEALED_ENV,
    cgroup_parent,
)
from command_rules import public_keys_in
from container_rules import CLAW_NAME, host_mounts
from policy_support import (
    UNKNOWN,
    StackItem,
    Unverifiable,
    contains_unknown,
    env_of,
    field,
    labels_of,
    stack_policy,
    unverifiable_message,
)

Config = Mapping[str, Any]
Found = Iterator[tuple[str, str | None]]
T = TypeVar("T")


def _read(item: StackItem, read: Callable[[StackItem], T], problems: list[tuple[str, str | None]]) -> T | None:
    """Run `read` on one resource; an unknown input becomes a violation on that resource, not an abort."""
    try:
        return read(item)
    except Unverifiable as unknown:
        problems.append((unverifiable_message(unknown.path), item.urn))
        return None


def container_networks(props: Mapping[str, Any]) -> set[str]:
    names = {
        str(n["name"]) for n in field(props, "networksAdvanced", []) or [] if isinstance(n, Mapping) and n.get("name")
    }
    mode = field(props, "networkMode")
    if mode and str(mode) != "none":
        names.add(str(mode))
    return names or {"bridge"}


def network_name(item: StackItem) -> str:
    return str(field(item.props, "name") or item.name)


class Graph:
    """The cage-relevant facts of a stack, read once; unknown inputs are collected as problems."""

    def __init__(self, items: Sequence[StackItem]) -> None:
        self.problems: list[tuple[str, str | None]] = []
        self.containers: list[tuple[StackItem, dict[str, str], set[str]]] = []
        self.networks: dict[str, tuple[StackItem, dict[str, str]]] = {}
        self.commands: list[StackItem] = []
        self.providers: dict[str, Mapping[str, Any]] = {}
        self.name_clashes: list[tuple[str, str | None]] = []
        named: dict[str, list[str]] = defaultdict(list)
        for item in items:
            if item.type == CONTAINER:
                labels = _read(item, lambda i: labels_of(i.props), self.problems)
                nets = _read(item, lambda i: container_networks(i.props), self.problems)
                if labels is not None and nets is not None:
                    self.containers.append((item, labels, nets))
            elif item.type == NETWORK:
                name = _read(item, network_name, self.problems)
                labels = _read(item, lambda i: labels_of(i.props), self.problems)
                if name is not None and labels is not None:
                    self.networks[name] = (item, labels)
                    named[name].append(item.urn)
            elif item.type in COMMANDS:
                self.commands.append(item)
            elif item.type.startswith("pulumi:providers:"):
                self.providers[item.urn] = item.props
        for name, urns in sorted(named.items()):
            if len(urns) > 1:
                self.name_clashes.append(
                    (
                        f"{len(urns)} networks are named {name!r} ({sorted(urns)}): the pack "
                        f"knows a network by its name, so network names are unique in the "
                        f"stack (cage-<claw>, egress-<host>).",
                        urns[0],
                    )
                )

    def provider_props(self, item: StackItem) -> Mapping[str, Any] | None:
        """The inputs of the provider that creates `item`, None if the graph does not show them."""
        if item.provider_urn in self.providers:
            return self.providers[item.provider_urn]
        return item.provider_props or None

    def claws(self) -> list[str]:
        names = {labels.get(LABEL_CLAW) for _, labels, _ in self.containers}
        names |= {
            labels.get(LABEL_CLAW)
            for _, labels in self.networks.values()
            if labels.get(LABEL_ROLE) == ROLE_CAGE_NETWORK
        }
        return sorted(n for n in names if n)

    def cage_containers(self, claw: str, role: str) -> list[tuple[StackItem, dict[str, str], set[str]]]:
        return [c for c in self.containers if c[1].get(LABEL_CLAW) == claw and c[1].get(LABEL_ROLE) == role]

    def cage_networks(self, claw: str) -> list[tuple[str, StackItem]]:
        return [
            (name, item)
            for name, (item, labels) in self.networks.items()
            if labels.get(LABEL_CLAW) == claw and labels.get(LABEL_ROLE) == ROLE_CAGE_NETWORK
        ]

    def members(self, network: str) -> list[StackItem]:
        return [item for item, _, nets in self.containers if network in nets]


def check_claw_network_membership(items: Sequence[StackItem], config: Config) -> Found:
    graph = Graph(items)
    yield from graph.problems
    yield from graph.name_clashes
    for claw in graph.claws():
        proxies = graph.cage_containers(claw, ROLE_PROXY)
        proxy_urns = {p[0].urn for p in proxies}
        for container, _, nets in graph.cage_containers(claw, ROLE_CLAW):
            for net in sorted(nets):
                members = graph.members(net)
                strangers = sorted(m.urn for m in members if m.urn != container.urn and m.urn not in proxy_urns)
                if strangers:
                    yield (
                        f"claw {claw}'s network {net!r} is also joined by {strangers}: a claw shares its "
                        f"network with its own proxy only.",
                        container.urn,
                    )
                if not proxy_urns & {m.urn for m in members}:
                    yield (
                        f"claw {claw}'s network {net!r} is not joined by claw {claw}'s proxy: its only way "
                        f"out must be its own proxy.",
                        container.urn,
                    )


def check_cage_shape(items: Sequence[StackItem], config: Config) -> Found:
    graph = Graph(items)
    yield from graph.problems
    yield from graph.name_clashes
    for claw in graph.claws():
        claws = graph.cage_containers(claw, ROLE_CLAW)
        proxies = graph.cage_containers(claw, ROLE_PROXY)
        networks = graph.cage_networks(claw)
        anchor = next((c[0] for c in claws + proxies), networks[0][1] if networks else None)
        urn = anchor.urn if anchor is not None else None
        for what, found in (("claw containers", claws), ("proxies", proxies), ("cage networks", networks)):
            if len(found) != 1:
                yield f"claw {claw} has {len(found)} {what}: a cage has exactly one of each.", urn
        network_names = {name for name, _ in networks}
        for container, _, nets in claws:
            if len(nets) != 1 or not nets <= network_names:
                yield (
                    f"claw {claw}'s container joins {sorted(nets)}: it joins exactly one network, its own "
                    f"cage network {sorted(network_names)}.",
                    container.urn,
                )
        for container, _, nets in proxies:
            if not nets & network_names:
                yield f"claw {claw}'s proxy does not join the cage network {sorted(network_names)}.", container.urn


def _paths_overlap(a: str, b: str) -> bool:
    if not a.startswith("/") or not b.startswith("/"):
        return a == b
    a, b = posixpath.normpath(a), posixpath.normpath(b)
    return a == b or a.startswith(b.rstrip("/") + "/") or b.startswith(a.rstrip("/") + "/")


def check_nothing_shared(items: Sequence[StackItem], config: Config) -> Found:
    graph = Graph(items)
    yield from graph.problems
    yield from graph.name_clashes
    network_users: dict[str, set[str]] = defaultdict(set)
    sources: list[tuple[str, str, StackItem]] = []  # (claw, source, container)
    unreadable: list[tuple[str, str | None]] = []
    for container, labels, nets in graph.containers:
        claw = labels.get(LABEL_CLAW)
        if not claw:
            continue
        for net in nets:
            net_labels = graph.networks[net][1] if net in graph.networks else {}
            if net_labels.get(LABEL_ROLE) != ROLE_EGRESS_NETWORK:
                network_users[net].add(claw)
        mounts = _read(container, lambda i: host_mounts(i.props), unreadable)
        for mount in mounts or []:
            if mount["kind"] != "tmpfs" and mount["source"]:
                sources.append((claw, mount["source"], container))
    yield from unreadable
    for net, claws in sorted(network_users.items()):
        if len(claws) > 1:
            yield f"network {net!r} is used by the cages {sorted(claws)}: no network is shared by two cages.", None
    reported: set[tuple[str, str]] = set()
    for index, (claw, source, container) in enumerate(sources):
        for other_claw, other_source, other in sources[index + 1 :]:
            pair = tuple(sorted((container.urn, other.urn)))
            if other_claw != claw and _paths_overlap(source, other_source) and pair not in reported:
                reported.add(pair)  # type: ignore[arg-type]
                yield (
                    f"mount source {source!r} of cage {claw} overlaps {other_source!r} of cage {other_claw}: "
                    f"no volume, mount source or key path is used by two cages.",
                    container.urn,
                )


def check_same_host(items: Sequence[StackItem], config: Config) -> Found:
    graph = Graph(items)
    yield from graph.problems
    yield from graph.name_clashes
    for claw in graph.claws():
        containers = graph.cage_containers(claw, ROLE_CLAW) + graph.cage_containers(claw, ROLE_PROXY)
        members: list[tuple[StackItem, dict[str, str]]] = [(c, labels) for c, labels, _ in containers]
        members += [(item, graph.networks[name][1]) for name, item in graph.cage_networks(claw)]
        for _, _, nets in graph.cage_containers(claw, ROLE_PROXY):
            members += [
                graph.networks[n]
                for n in sorted(nets)
                if n in graph.networks and graph.networks[n][1].get(LABEL_ROLE) == ROLE_EGRESS_NETWORK
            ]
        providers = {item.provider_urn for item, _ in members}
        hosts = {labels[LABEL_HOST] for _, labels in members if labels.get(LABEL_HOST)}
        if len(providers) > 1:
            yield (
                f"claw {claw}'s container, proxy and networks use different providers {sorted(providers)}: "
                f"a cage lives on one host.",
                members[0][0].urn,
            )
        if len(hosts) > 1:
            yield f"claw {claw}'s resources are labelled for different hosts {sorted(hosts)}.", members[0][0].urn


_CREDENTIAL_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LENGTH = 8


def check_secrets_sealed(items: Sequence[StackItem], config: Config) -> Found:
    graph = Graph(items)
    yield from graph.problems
    known_secrets: dict[str, str] = {}  # value -> where it was seen
    for command in graph.commands:
        stdin = command.props.get("stdin")
        if isinstance(stdin, str) and len(stdin.strip()) >= MIN_SECRET_LENGTH:
            known_secrets[stdin.strip()] = f"the stdin of {command.urn}"
        environment = command.props.get("environment")
        for name, value in environment.items() if isinstance(environment, Mapping) else []:
            if _CREDENTIAL_NAME.search(name) and isinstance(value, str) and len(value) >= MIN_SECRET_LENGTH:
                known_secrets[value] = f"env {name} of {command.urn}"
    sealed_by: dict[str, set[str]] = defaultdict(set)
    unreadable: list[tuple[str, str | None]] = []
    for container, labels, _ in graph.containers:
        env = _read(container, lambda i: env_of(i.props), unreadable)
        for name, value in (env or {}).items():
            if name == SEALED_ENV:
                sealed_by[value].add(labels.get(LABEL_CLAW, container.urn))
            elif value.strip() in known_secrets:
                yield (
                    f"env {name} holds the plaintext of a secret ({known_secrets[value.strip()]}): "
                    f"credentials reach a container only sealed in {SEALED_ENV}.",
                    container.urn,
                )
    yield from unreadable
    for value, claws in sealed_by.items():
        if value and len(claws) > 1:
            yield f"the cages {sorted(claws)} carry the same {SEALED_ENV}: each cage is sealed under its own key.", None


# --- cage-limits-enforced ---------------------------------------------------------------------------

_MARKER_PREFIX, _MARKER_SUFFIX = LIMITS_MARKER.split("{claw}")
_MARKER = re.compile("^" + re.escape(_MARKER_PREFIX) + r"(?P<claw>\S+?)" + re.escape(_MARKER_SUFFIX), re.MULTILINE)
_CGROUP_OF = re.compile(rf"^{LIMITS_CGROUP_VAR}=['\"]?{re.escape(CGROUP_ROOT)}/(?P<claw>[^'\"\s/]+)", re.MULTILINE)
_INTEGER = re.compile(r"[0-9]+")
# What the limits script must write where: a line that names the limit file and the variable.
_LIMIT_WRITES = (
    ("PIDS", ("pids.max",)),
    ("MEMORY", ("memory.max", "memory.limit_in_bytes")),
    ("CPU_QUOTA", ("cpu.max", "cpu.cfs_quota_us")),
)


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
    expected = cgroup_parent(claw).lstrip("/")
    if facts is not None:
        if (facts.get("script"), facts.get("claw")) != (expected_script, claw):
            yield (
                f"its `{kind}` script's facts line declares {facts.get('script')!r} of cage "
                f"{facts.get('claw')!r}, not {expected_script!r} of cage {claw}"
            )
        elif facts.get(LIMITS_CGROUP_FACT) != expected:
            yield f"its `{kind}` script's facts line gives the cgroup {facts.get(LIMITS_CGROUP_FACT)!r}, not {expected}"
    marker = LIMITS_MARKER.format(claw=claw)
    if {m.group("claw") for m in _MARKER.finditer(script)} != {claw}:
        yield f"its `{kind}` script does not carry the line {marker!r} (and no other cage's)"
    value, problem = _assignment(script, LIMITS_CGROUP_VAR)
    if problem:
        yield f"its `{kind}` script {problem}"
    elif value != expected:
        yield f"its `{kind}` script sets {LIMITS_CGROUP_VAR}={value}, not {expected}"


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
    for name, files in _LIMIT_WRITES:
        used = (f"${name}", f"${{{name}}}")
        if not any(any(f in line for f in files) and any(u in line for u in used) for line in lines):
            yield f"its `{kind}` script never writes ${name} to {' or '.join(files)}"


def limits_delete_problems(command: Any, claw: str) -> Iterator[str]:
    """Why `command` (a `delete`) does not remove cage `claw`'s parent cgroup."""
    script = bash_script(command)
    if script is None:
        yield (
            f"its `delete` is not `{' '.join(LIMITS_SHELL)} '<script>'` removing the cgroup "
            f"{cgroup_parent(claw)}: the cage's limits would outlive it"
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
    for container, labels, _ in graph.containers:
        role = labels.get(LABEL_ROLE)
        if role not in (ROLE_CLAW, ROLE_PROXY):
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
        if parent != cgroup_parent(claw):
            yield (
                (
                    f"`cgroupParent` is {parent!r}, not {cgroup_parent(claw)!r}: the {role} container of cage "
                    f"{claw} would run outside the cage's pids, memory and cpu limits."
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
                        f"no command creates cage {claw}'s parent cgroup {cgroup_parent(claw)} with its limits: a "
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
        for command in commands:
            for problem in _limits_command_problems(command, claw, max_pids):
                yield f"the limits command of cage {claw}: {problem}.", command.urn
            yield from _host_problems(graph, command, claw, containers)


POLICIES = [
    stack_policy(
        "cage-network-shared-only-with-own-proxy",
        "Put each claw container on networks joined by its own proxy and nothing else.",
        check_claw_network_membership,
    ),
    stack_policy(
        "cage-has-one-proxy-and-one-network",
        "Give every claw exactly one container, one proxy and one cage network, and attach the "
        "claw container to that network only.",
        check_cage_shape,
    ),
    stack_policy(
        "cage-resources-not-shared",
        "Give every cage its own networks, volumes, mount sources and key paths; share none "
        "between cages (the host's egress network excepted).",
        check_nothing_shared,
    ),
    stack_policy(
        "cage-on-one-host",
        "Create a cage's container, proxy and networks through the same host's Docker provider.",
        check_same_host,
    ),
    stack_policy(
        "secrets-reach-containers-sealed",
        f"Pass credentials to containers only sealed in {SEALED_ENV}, under a key of their own; "
        f"never a plaintext secret in env.",
        check_secrets_sealed,
    ),
    stack_policy(
        "cage-limits-enforced",
        "Run both cage containers in the cage's parent cgroup (`cgroupParent` /clawstaff/<claw>), "
        "created on their host by exactly one command whose `create` is the cage's limits script "
        "(PIDS 1..maxPids, MEMORY and CPU_QUOTA positive) and whose `delete` removes the cgroup.",
        check_limits_enforced,
        {"maxPids": {"type": "integer", "minimum": 1, "default": 4096}},
    ),
]
