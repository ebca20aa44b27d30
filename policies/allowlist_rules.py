"""Resource rules that hold every cage resource to its table in allowlist.py: nothing set but what a row names.

A container or network is matched to its table by its `clawstaff.role` label (a container of another
role is refused by container-labels-claw-org; a network of another role is no cage's and is held by
shared-network-icc-off); a command is a cage command when its create or delete script's facts line names
a cage piece (`limits-create`, `key-delete`, ...). The templates of a row (`{claw}`, `{host}`) are filled
from the resource's own `clawstaff.claw` and `clawstaff.host` labels, or a command's facts.

For each input that is set: no row is a violation naming the input and its value; a row whose value is
not allowed is a violation naming the input, the value, and quoting the row; a value a row leaves to
another policy ("checked by ...") is that policy's to report. A required row that is not set is a
violation. A value unknown during preview fails closed, like every rule of the pack.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from allowlist import TABLES, WHY_NOT, Row, quote
from cage_conventions import (
    CAGE_SCRIPT_PIECES,
    COMMANDS,
    CONTAINER,
    LABEL_CLAW,
    LABEL_HOST,
    LABEL_ROLE,
    NETWORK,
    ROLE_CAGE_NETWORK,
    ROLE_BROKER,
    ROLE_CLAW,
    ROLE_EGRESS_NETWORK,
    ROLE_PROXY,
)
from container_rules import CLAW_NAME
from policy_support import UNKNOWN, Unverifiable, labels_of, resource_policy, unverifiable_message
from shape import META_KEYS, Judged, show
from limits_rules import bash_script, script_facts

Props = Mapping[str, Any]
Config = Mapping[str, Any]


def table_problems(title: str, props: Props, cage: Mapping[str, str]) -> Iterator[str]:
    """Every way `props` is not what the table `title` allows."""
    table: Mapping[str, Row] = TABLES[title][1]
    for key in sorted(props):
        value = props[key]
        if key in META_KEYS or value is None:
            continue
        row = table.get(key)
        if row is None:
            yield (
                f"`{key}` is set ({show(value)}), but the {title} allowlist has no row for it: "
                f"{WHY_NOT.get(key, 'the program never sets it')}. A {title} sets only {', '.join(table)}."
            )
            continue
        if isinstance(row.allowed, Judged):
            continue
        try:
            problems = row.allowed.check(value, key, cage)
        except Unverifiable as unknown:
            yield unverifiable_message(unknown.path)
            continue
        for problem in problems:
            yield f"{problem}; {quote(title, key)}."
    for key, row in table.items():
        if row.required and props.get(key) is None:
            yield f"`{key}` is not set; {quote(title, key)} (required)."


def cage_of(props: Props) -> dict[str, str]:
    """What the templates may name, from the resource's own labels (only valid DNS labels)."""
    labels = labels_of(props)
    found = {"claw": labels.get(LABEL_CLAW, ""), "host": labels.get(LABEL_HOST, "")}
    return {key: value for key, value in found.items() if CLAW_NAME.match(value)}


def _by_role(role: str, title: str):
    def check(props: Props, config: Config) -> Iterator[str]:
        if labels_of(props).get(LABEL_ROLE) != role:
            return
        yield from table_problems(title, props, cage_of(props))

    return check


def command_piece(props: Props) -> dict[str, str] | None:
    """{piece, claw} of a cage command (from its create script's facts, else its delete's); None otherwise."""
    for phase in ("create", "delete"):
        value = props.get(phase)
        if value is UNKNOWN or not isinstance(value, str):
            continue
        script = bash_script(value)
        facts, _ = script_facts(script) if script is not None else (None, None)
        if not facts or not isinstance(facts.get("script"), str):
            continue
        for piece in CAGE_SCRIPT_PIECES:
            if facts["script"] == f"{piece}-{phase}":
                claw = facts.get("claw")
                return {"piece": piece, **({"claw": claw} if isinstance(claw, str) and CLAW_NAME.match(claw) else {})}
    return None


def check_cage_command(props: Props, config: Config) -> Iterator[str]:
    cage = command_piece(props)
    if cage is not None:
        yield from table_problems("cage command", props, cage)


def _policy(name: str, title: str, types: tuple[str, ...], check: Any) -> Any:
    selects, table = TABLES[title]
    return resource_policy(
        name,
        f"Set on every {title} ({selects}) only the inputs its allowlist table names, with the values "
        f"the row allows (`python policies/allowlist.py` prints the table).",
        types,
        check,
    )


# The rule that applies each table.
RULE_OF_TABLE = {
    "claw container": "claw-container-allowlist",
    "proxy container": "proxy-container-allowlist",
    "broker container": "broker-container-allowlist",
    "cage network": "cage-network-allowlist",
    "egress network": "egress-network-allowlist",
    "cage command": "cage-command-allowlist",
}

POLICIES = [
    _policy(RULE_OF_TABLE["claw container"], "claw container", (CONTAINER,), _by_role(ROLE_CLAW, "claw container")),
    _policy(RULE_OF_TABLE["proxy container"], "proxy container", (CONTAINER,), _by_role(ROLE_PROXY, "proxy container")),
    _policy(
        RULE_OF_TABLE["broker container"], "broker container", (CONTAINER,), _by_role(ROLE_BROKER, "broker container")
    ),
    _policy(RULE_OF_TABLE["cage network"], "cage network", (NETWORK,), _by_role(ROLE_CAGE_NETWORK, "cage network")),
    _policy(
        RULE_OF_TABLE["egress network"], "egress network", (NETWORK,), _by_role(ROLE_EGRESS_NETWORK, "egress network")
    ),
    _policy(RULE_OF_TABLE["cage command"], "cage command", COMMANDS, check_cage_command),
]
