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
`cage-limits-enforced`: both cage containers have the same `cgroupParent`, the cage's own: the slice
`clawstaff-<claw>.slice` (systemd driver, `-` in the name escaped as `\x2d`) or the cgroup `/clawstaff/<claw>`
(cgroupfs); exactly one `command:local:Command` or `command:remote:Command` creates it, its `create` being
`/bin/bash -c '<script>'`. What the script sets is read from its facts line, one JSON object the renderer
writes into the header (`# clawcage-facts: {"script": "limits-create", "claw": ..., "driver": "systemd",
"cgroup": "clawstaff.slice/clawstaff-<claw>.slice", "pids": ..., "memory": ..., "cpu_quota": ...,
"cpu_period": ...}`), not from the shell; its driver must be the form the containers use. The script must
agree with it, or it is refused: the header carries the line `# clawstaff limits of cage <claw>: ...` and
assigns `DRIVER`, `CG`, `PIDS`, `MEMORY`, `CPU_QUOTA`, `CPU_PERIOD` once each, to exactly the facts' values
(integer literals, nothing assigns them again), and the body writes them to the cgroup's pids, memory and
cpu limits (cgroupfs) or the slice's TasksMax, MemoryMax and CPUQuota (systemd). Its `delete` is the matching script (facts of `limits-delete`)
that removes the cgroup; and it runs on the host whose Docker engine runs the containers. A script
whose facts are missing, unreadable or disagree is refused; so is any other command whose script names
a cage's cgroup (`CG=clawstaff/<claw>`, `CG=clawstaff.slice/clawstaff-<claw>.slice`) or marker without
declaring it. Where the host cannot be seen
(a remote command's address and host key unknown at preview), the rule fails closed.

Plaintext-secret detection (`secrets-reach-containers-sealed`) is a heuristic, because policy config can
hold no secret and the Python SDK hides which inputs are secrets: a container env value (other than the
sealed blob) equal to a command's `stdin` or to a command `environment` value named like a credential is
a plaintext secret; and two cages carrying the same sealed blob share a key.
"""

from __future__ import annotations

import posixpath
import re
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cage_conventions import (
    LABEL_CLAW,
    LABEL_HOST,
    LABEL_ROLE,
    ROLE_BROKER,
    ROLE_CLAW,
    ROLE_EGRESS_NETWORK,
    ROLE_PROXY,
    SEALED_ENV,
)
from container_rules import host_mounts
from limits_rules import bash_script as bash_script  # re-exported: the limits rule's readers, for tests and rules
from limits_rules import check_limits_enforced
from limits_rules import limits_claws as limits_claws
from limits_rules import limits_create_problems as limits_create_problems
from limits_rules import limits_delete_problems as limits_delete_problems
from limits_rules import script_facts as script_facts
from stack_graph import Graph as Graph
from policy_support import StackItem, env_of, stack_policy
from stack_graph import _read, container_networks as container_networks, network_name as network_name

Config = Mapping[str, Any]
Found = Iterator[tuple[str, str | None]]


def check_claw_network_membership(items: Sequence[StackItem], config: Config) -> Found:
    graph = Graph(items)
    yield from graph.problems
    yield from graph.name_clashes
    for claw in graph.claws():
        proxies = graph.cage_containers(claw, ROLE_PROXY)
        proxy_urns = {p[0].urn for p in proxies}
        broker_urns = {b[0].urn for b in graph.cage_containers(claw, ROLE_BROKER)}
        for container, _, nets in graph.cage_containers(claw, ROLE_CLAW):
            for net in sorted(nets):
                members = graph.members(net)
                own = proxy_urns | broker_urns
                strangers = sorted(m.urn for m in members if m.urn != container.urn and m.urn not in own)
                if strangers:
                    yield (
                        f"claw {claw}'s network {net!r} is also joined by {strangers}: a claw shares its "
                        f"network with its own proxy (and its own broker) only.",
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
        brokers = graph.cage_containers(claw, ROLE_BROKER)
        if len(brokers) > 1:
            yield f"claw {claw} has {len(brokers)} brokers: a cage has at most one.", urn
        for container, _, nets in brokers:
            if nets != network_names:
                yield (
                    f"claw {claw}'s broker joins {sorted(nets)}: it joins its cage network "
                    f"{sorted(network_names)} only (its way out is the cage's proxy).",
                    container.urn,
                )


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
        containers = (
            graph.cage_containers(claw, ROLE_CLAW)
            + graph.cage_containers(claw, ROLE_PROXY)
            + graph.cage_containers(claw, ROLE_BROKER)
        )
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
        "Run both cage containers in the cage's parent cgroup (`cgroupParent` the slice clawstaff-<claw>.slice, "
        "or /clawstaff/<claw> on an engine without systemd), "
        "created on their host by exactly one command whose `create` is the cage's limits script "
        "(PIDS 1..maxPids, MEMORY and CPU_QUOTA positive) and whose `delete` removes the cgroup.",
        check_limits_enforced,
        {"maxPids": {"type": "integer", "minimum": 1, "default": 4096}},
    ),
]
