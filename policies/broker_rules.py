"""Rules of brokered credentials (issue 14): a secret delivered by the cage's broker never reaches the
claw, and the claw never holds the cage CA's private key.

What the pack can see and what it cannot: the real values travel sealed (the claw's blob and the
broker's), which the pack cannot open. So the claw container declares the names its blob holds as
values (CLAWCAGE_ENV_DELIVERED) and as placeholders (CLAWCAGE_PLACEHOLDERS), the broker declares its
bindings (CLAWCAGE_BROKER), and the pack holds the three consistent; tests/unit/test_broker_cage.py holds
each declaration equal to what the blobs open to. The CA's private key is made in the broker's memory
(images/egress-broker/broker-init): the pack refuses every way the graph could hand one to the claw
(an env value carrying a PEM private key, a mount of the broker's key directory, the CA directory
writable from the claw).
"""

from __future__ import annotations

import json
import posixpath
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

from cage_conventions import (
    BROKER_CA_MOUNT,
    BROKER_ENV,
    CONTAINER,
    ENV_DELIVERED_ENV,
    HOST_BROKER_ROOT,
    LABEL_CLAW,
    LABEL_ROLE,
    PLACEHOLDERS_ENV,
    ROLE_BROKER,
    ROLE_CLAW,
)
from container_mounts import host_mounts
from policy_support import StackItem, env_of, labels_of, resource_policy, stack_policy
from stack_graph import Graph, _read

Props = Mapping[str, Any]
Config = Mapping[str, Any]
Found = Iterator[tuple[str, str | None]]

PRIVATE_KEY_MARK = "PRIVATE KEY-----"


def _names(value: str | None) -> list[str]:
    return [n for n in (value or "").split(",") if n]


def broker_bindings(env: Mapping[str, str]) -> list[str] | None:
    """The names a broker's CLAWCAGE_BROKER binds; None when it is not the broker's specification."""
    try:
        spec = json.loads(env.get(BROKER_ENV, ""))
        return sorted(str(b["name"]) for b in spec["bindings"])
    except (ValueError, KeyError, TypeError):
        return None


def check_brokered_secrets_stay_out(items: Sequence[StackItem], config: Config) -> Found:
    graph = Graph(items)
    yield from graph.problems
    unreadable: list[tuple[str, str | None]] = []
    for claw in graph.claws():
        brokers = graph.cage_containers(claw, ROLE_BROKER)
        brokered: set[str] = set()
        for broker, _, _ in brokers:
            env = _read(broker, lambda i: env_of(i.props), unreadable) or {}
            names = broker_bindings(env)
            if names is None:
                yield f"claw {claw}'s broker has no readable {BROKER_ENV} (its bindings, as JSON).", broker.urn
                continue
            brokered |= set(names)
        for container, _, _ in graph.cage_containers(claw, ROLE_CLAW):
            env = _read(container, lambda i: env_of(i.props), unreadable) or {}
            delivered, placeholders = set(_names(env.get(ENV_DELIVERED_ENV))), set(_names(env.get(PLACEHOLDERS_ENV)))
            if brokered & delivered:
                yield (
                    f"claw {claw}'s container declares {sorted(brokered & delivered)} in {ENV_DELIVERED_ENV}, which "
                    f"its broker holds: a brokered secret's real value must never be sealed for the claw.",
                    container.urn,
                )
            if brokered - placeholders:
                yield (
                    f"claw {claw}'s container does not declare {sorted(brokered - placeholders)} in "
                    f"{PLACEHOLDERS_ENV}: a brokered secret reaches the claw as its placeholder only.",
                    container.urn,
                )
            if placeholders - brokered:
                yield (
                    f"claw {claw}'s container declares placeholders {sorted(placeholders - brokered)} that no "
                    f"broker of its cage binds.",
                    container.urn,
                )
            if brokers and ENV_DELIVERED_ENV not in env:
                yield (
                    f"claw {claw}'s cage has a broker but its container does not declare {ENV_DELIVERED_ENV}: "
                    f"the pack cannot tell which secrets are sealed for it.",
                    container.urn,
                )
    yield from unreadable


def check_claw_holds_no_ca_key(props: Props, config: Config) -> Iterator[str]:
    labels = labels_of(props)
    if labels.get(LABEL_ROLE) != ROLE_CLAW:
        return
    for name, value in sorted(env_of(props).items()):
        if PRIVATE_KEY_MARK in value:
            yield f"env {name} carries a PEM private key: no private key (the cage CA's above all) enters a claw."
    claw = labels.get(LABEL_CLAW, "")
    root = f"{HOST_BROKER_ROOT}/{claw}"
    for mount in host_mounts(props):
        source = posixpath.normpath(mount["source"]) if mount["source"].startswith("/") else mount["source"]
        if not (source == HOST_BROKER_ROOT or source.startswith(HOST_BROKER_ROOT + "/")):
            continue
        if source != f"{root}/ca":
            yield (
                f"`{mount['field']}` binds {source} into the claw: of the broker's state the claw mounts only "
                f"its own cage's CA directory {root}/ca (certificates, never a key)."
            )
        elif not mount["readOnly"] or posixpath.normpath(mount["target"]) != BROKER_CA_MOUNT:
            yield (
                f"`{mount['field']}` binds the CA directory {source} at {mount['target']} "
                f"{'read-only' if mount['readOnly'] else 'read-write'}: the claw reads it at {BROKER_CA_MOUNT}, "
                f"read-only (a writable one would let it plant a CA and a key)."
            )


POLICIES = [
    stack_policy(
        "brokered-secret-stays-out-of-the-claw",
        f"Seal a brokered secret for the cage's broker only: the claw's container declares it in "
        f"{PLACEHOLDERS_ENV} (its placeholder), never in {ENV_DELIVERED_ENV}.",
        check_brokered_secrets_stay_out,
    ),
    resource_policy(
        "claw-holds-no-cage-ca-key",
        f"Give a claw container no private key: no PEM private key in its env, no mount of the broker's key "
        f"directory, the cage CA's directory read-only at {BROKER_CA_MOUNT}.",
        (CONTAINER,),
        check_claw_holds_no_ca_key,
    ),
]
