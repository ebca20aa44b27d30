"""The graph of cages the stack rules read: containers with their labels and networks, networks by name,
commands and providers; unknown inputs collected as problems (the conventions are in stack_rules.py)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from typing import Any, TypeVar

from cage_conventions import (
    COMMANDS,
    CONTAINER,
    LABEL_CLAW,
    LABEL_ROLE,
    NETWORK,
    ROLE_CAGE_NETWORK,
)
from policy_support import (
    StackItem,
    Unverifiable,
    field,
    labels_of,
    unverifiable_message,
)

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
