"""Stack policies over small graphs: two compliant cages on one host, then one breach at a time."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

import stack_rules
from components import cagehost
from tests.policies import fixtures as fx
from tests.policies.harness import StackEntry, policy_named, validate_stack

POLICY_NAMES = [p.name for p in stack_rules.POLICIES]
LIMITS = "cage-limits-enforced"
OTHER_HOST = "hel1-cage-02"


def two_cages() -> list[StackEntry]:
    """Two cages of one org on a Hetzner host, their commands over the host's pinned SSH connection."""
    return fx.cage("acme-support", "acme") + fx.cage("acme-sales", "acme", volume=False) + fx.host_resources()


def two_local_cages() -> list[StackEntry]:
    """The same on the local host: local commands, the local Docker engine."""
    return (
        fx.cage("acme-support", "acme", remote=False)
        + fx.cage("acme-sales", "acme", volume=False, remote=False)
        + fx.host_resources(local=True)
    )


def check(name: str, entries: list[StackEntry], config: dict[str, Any] | None = None) -> list[tuple[str, str | None]]:
    return validate_stack(policy_named(stack_rules.POLICIES, name), entries, config)


def props_of(entries: list[StackEntry], name: str) -> dict[str, Any]:
    for _, resource_name, props, _ in entries:
        if resource_name == name:
            return props
    raise KeyError(name)


def without(entries: list[StackEntry], name: str) -> list[StackEntry]:
    return [e for e in entries if e[1] != name]


def messages(found: list[tuple[str, str | None]]) -> str:
    return "\n".join(m for m, _ in found)


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("make", [two_cages, two_local_cages], ids=["hetzner", "local"])
def test_two_compliant_cages_on_one_host_pass(name: str, make: Callable[[], list[StackEntry]]) -> None:
    assert check(name, make()) == []


def test_every_stack_policy_is_mandatory_and_kebab_case() -> None:
    for policy in stack_rules.POLICIES:
        assert policy.enforcement_level.value == "mandatory"
        assert policy.name == policy.name.lower() and " " not in policy.name and "_" not in policy.name


# --- cage-network-shared-only-with-own-proxy ---------------------------------------------------------


def test_a_neighbours_proxy_on_the_claw_network_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-sales-proxy")["networksAdvanced"].append({"name": "cage-acme-support"})
    found = check("cage-network-shared-only-with-own-proxy", entries)
    assert len(found) == 1
    message, urn = found[0]
    assert "claw acme-support's network 'cage-acme-support' is also joined by" in message
    assert "acme-sales-proxy" in message and urn == fx.urn(fx.CONTAINER, "acme-support-claw")


def test_a_claw_on_the_shared_egress_network_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-claw")["networksAdvanced"].append({"name": "egress-fsn1-cage-01"})
    assert "acme-sales-proxy" in messages(check("cage-network-shared-only-with-own-proxy", entries))


def test_a_claw_whose_proxy_is_elsewhere_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-proxy")["networksAdvanced"] = [{"name": "egress-fsn1-cage-01"}]
    assert "is not joined by claw acme-support's proxy" in messages(
        check("cage-network-shared-only-with-own-proxy", entries)
    )


def test_a_claw_left_on_dockers_default_bridge_is_refused() -> None:
    entries = two_cages()
    del props_of(entries, "acme-support-claw")["networksAdvanced"]
    props_of(entries, "acme-sales-claw")["networkMode"] = "bridge"
    del props_of(entries, "acme-sales-claw")["networksAdvanced"]
    text = messages(check("cage-network-shared-only-with-own-proxy", entries))
    assert "claw acme-support's network 'bridge' is also joined by" in text
    assert "acme-sales-claw" in text


# --- network names ------------------------------------------------------------------------------------


def test_two_networks_with_one_name_are_refused_by_every_network_rule() -> None:
    # Two hosts that both call their egress network "egress": the pack could no longer tell them apart.
    entries = two_cages() + fx.host_resources(OTHER_HOST)
    props_of(entries, "fsn1-cage-01-egress")["name"] = "egress"
    props_of(entries, f"{OTHER_HOST}-egress")["name"] = "egress"
    for name in (
        "cage-network-shared-only-with-own-proxy",
        "cage-has-one-proxy-and-one-network",
        "cage-resources-not-shared",
        "cage-on-one-host",
    ):
        assert "2 networks are named 'egress'" in messages(check(name, entries)), name


# --- cage-has-one-proxy-and-one-network ---------------------------------------------------------------


def test_a_cage_without_a_proxy_is_refused() -> None:
    found = check("cage-has-one-proxy-and-one-network", without(two_cages(), "acme-support-proxy"))
    assert found == [
        ("claw acme-support has 0 proxies: a cage has exactly one of each.", fx.urn(fx.CONTAINER, "acme-support-claw"))
    ]


def test_a_cage_with_two_networks_is_refused() -> None:
    entries = two_cages()
    extra = fx.cage_network("acme-support")
    extra["name"] = "cage-acme-support-2"
    entries.append((fx.NETWORK, "acme-support-network-2", extra, fx.DOCKER_PROVIDER))
    props_of(entries, "acme-support-claw")["networksAdvanced"].append({"name": "cage-acme-support-2"})
    text = messages(check("cage-has-one-proxy-and-one-network", entries))
    assert "claw acme-support has 2 cage networks" in text
    assert "joins exactly one network" in text


def test_a_second_claw_container_for_one_claw_is_refused() -> None:
    entries = two_cages()
    entries.append((fx.CONTAINER, "acme-support-claw-2", fx.claw_container("acme-support"), fx.DOCKER_PROVIDER))
    assert "claw acme-support has 2 claw containers" in messages(check("cage-has-one-proxy-and-one-network", entries))


def test_a_cage_network_without_containers_is_refused() -> None:
    entries = [e for e in two_cages() if e[1] not in ("acme-sales-claw", "acme-sales-proxy")]
    text = messages(check("cage-has-one-proxy-and-one-network", entries))
    assert "claw acme-sales has 0 claw containers" in text and "claw acme-sales has 0 proxies" in text


# --- cage-resources-not-shared ------------------------------------------------------------------------


def test_a_volume_mounted_by_two_cages_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-sales-claw")["mounts"].append(
        {"type": "bind", "source": "/srv/clawstaff/volumes/acme-support", "target": "/data"}
    )
    found = check("cage-resources-not-shared", entries)
    assert len(found) == 1
    assert "overlaps '/srv/clawstaff/volumes/acme-support' of cage acme-sales" in found[0][0]


def test_a_key_path_used_by_two_cages_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-sales-claw")["mounts"][0]["source"] = "/run/clawstaff/cages/acme-support"
    assert "no volume, mount source or key path is used by two cages" in messages(
        check("cage-resources-not-shared", entries)
    )


def test_a_proxy_configuration_used_by_two_cages_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-sales-proxy")["mounts"][0]["source"] = "/etc/clawstaff/proxies/acme-support"
    assert "overlaps '/etc/clawstaff/proxies/acme-support'" in messages(check("cage-resources-not-shared", entries))


def test_a_network_used_by_two_cages_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-sales-proxy")["networksAdvanced"].append({"name": "cage-acme-support"})
    assert "network 'cage-acme-support' is used by the cages ['acme-sales', 'acme-support']" in messages(
        check("cage-resources-not-shared", entries)
    )


def test_the_hosts_egress_network_is_the_one_shared_network() -> None:
    entries = two_cages()
    props_of(entries, "fsn1-cage-01-egress")["labels"] = []  # no longer recognisable as the egress network
    assert "network 'egress-fsn1-cage-01' is used by the cages" in messages(check("cage-resources-not-shared", entries))


# --- cage-on-one-host ---------------------------------------------------------------------------------


def test_a_proxy_on_another_hosts_provider_is_refused() -> None:
    other = fx.docker_provider_urn(OTHER_HOST)
    entries = [(t, n, p, other if n == "acme-support-proxy" else prov) for t, n, p, prov in two_cages()]
    found = check("cage-on-one-host", entries + fx.host_resources(OTHER_HOST))
    assert len(found) == 1
    assert "claw acme-support's container, proxy and networks use different providers" in found[0][0]


def test_resources_labelled_for_two_hosts_are_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-network")["labels"][2]["value"] = OTHER_HOST
    found = check("cage-on-one-host", entries)
    assert f"labelled for different hosts ['fsn1-cage-01', '{OTHER_HOST}']" in messages(found)


# --- secrets-reach-containers-sealed ------------------------------------------------------------------


def test_a_plaintext_secret_in_container_env_is_refused() -> None:
    entries = two_cages()
    key = props_of(entries, "acme-support-key")["stdin"].strip()
    props_of(entries, "acme-support-claw")["envs"].append(f"CLAWCAGE_DEBUG={key}")
    found = check("secrets-reach-containers-sealed", entries)
    assert len(found) == 1
    message, urn = found[0]
    assert "env CLAWCAGE_DEBUG holds the plaintext of a secret (the stdin of" in message and key not in message
    assert urn == fx.urn(fx.CONTAINER, "acme-support-claw")


def test_a_command_credential_env_value_in_a_container_is_refused() -> None:
    entries = two_cages()
    entries.append(
        (
            fx.COMMAND,
            "slack",
            {"create": "true", "environment": {"SLACK_BOT_TOKEN": "xoxb-123456789"}},
            fx.COMMAND_PROVIDER,
        )
    )
    props_of(entries, "acme-sales-claw")["envs"].append("SLACK=xoxb-123456789")
    assert "env SLACK holds the plaintext of a secret (env SLACK_BOT_TOKEN" in messages(
        check("secrets-reach-containers-sealed", entries)
    )


def test_two_cages_with_the_same_sealed_blob_share_a_key() -> None:
    entries = two_cages()
    props_of(entries, "acme-sales-claw")["envs"][0] = props_of(entries, "acme-support-claw")["envs"][0]
    assert "the cages ['acme-sales', 'acme-support'] carry the same CLAWCAGE_SEALED" in messages(
        check("secrets-reach-containers-sealed", entries)
    )


# --- cage-limits-enforced -----------------------------------------------------------------------------


def limits_script(claw: str = "acme-support") -> str:
    """The script inside the fixture's limits `create` for a Hetzner host (a slice), as two_cages has it."""
    create = fx.limits_command(claw, remote=True)["create"]
    return create[len("/bin/bash -c ") :].strip("'").replace("'\"'\"'", "'")


def edited(old: str, new: str, claw: str = "acme-support") -> str:
    script = limits_script(claw)
    assert old in script, old
    return cagehost.shell_command(script.replace(old, new))


def with_var(name: str, value: str) -> str:
    """The limits `create` with one assignment's value replaced."""
    script, count = re.subn(rf"^{name}=.*$", f"{name}={value}", limits_script(), flags=re.MULTILINE)
    assert count == 1, name
    return cagehost.shell_command(script)


PIDS_LINE = f"PIDS={fx.CLAW_PIDS + 64}\n"


def test_limits_script_helper_round_trips() -> None:
    assert cagehost.shell_command(limits_script()) == fx.limits_command(remote=True)["create"]


def test_a_cage_without_a_limits_command_is_refused() -> None:
    found = check(LIMITS, without(two_cages(), "acme-sales-limits"))
    assert found == [
        (
            "no command creates cage acme-sales's parent cgroup with its limits: a "
            "fork bomb or a leak in the cage would reach the host's pids and memory.",
            fx.urn(fx.CONTAINER, "acme-sales-claw"),
        )
    ]


@pytest.mark.parametrize(
    ("container", "value", "expected"),
    [
        (
            "acme-support-proxy",
            "/clawstaff/acme-sales",
            "`cgroupParent` is '/clawstaff/acme-sales', not 'clawstaff-acme\\\\x2dsupport.slice' or "
            "'/clawstaff/acme-support' (the cage's slice, or its cgroup on an engine without systemd): the proxy "
            "container of cage acme-support would run outside",
        ),
        ("acme-support-claw", None, "`cgroupParent` is None, not 'clawstaff-acme\\\\x2dsupport.slice'"),
        # The slice of another cage, and acme's slice (the parent of acme-support's, were `-` not escaped).
        ("acme-support-claw", "clawstaff-acme\\x2dsales.slice", "is 'clawstaff-acme\\\\x2dsales.slice', not"),
        ("acme-support-claw", "clawstaff-acme-support.slice", "is 'clawstaff-acme-support.slice', not"),
        ("acme-support-claw", "/docker", "`cgroupParent` is '/docker'"),
        ("acme-support-claw", "/clawstaff/acme-support/../acme-sales", "is '/clawstaff/acme-support/../acme-sales'"),
    ],
)
def test_a_container_outside_its_cages_cgroup_is_refused(container: str, value: str | None, expected: str) -> None:
    entries = two_cages()
    props_of(entries, container)["cgroupParent"] = value
    found = check(LIMITS, entries)
    assert len(found) == 1 and expected in found[0][0] and found[0][1] == fx.urn(fx.CONTAINER, container)


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda p: p.update(create=with_var("PIDS", "0")), "sets PIDS=0, not a positive integer"),
        (lambda p: p.update(create=with_var("PIDS", "max")), "sets PIDS=max, not a positive integer"),
        (lambda p: p.update(create=with_var("PIDS", "$((1<<30))")), "not a positive integer"),
        (lambda p: p.update(create=with_var("MEMORY", "-1")), "sets MEMORY=-1, not a positive integer"),
        (lambda p: p.update(create=with_var("MEMORY", "")), "sets MEMORY=, not a positive integer"),
        (lambda p: p.update(create=with_var("CPU_QUOTA", "0")), "sets CPU_QUOTA=0, not a positive integer"),
        (lambda p: p.update(create=with_var("CPU_PERIOD", "1e5")), "sets CPU_PERIOD=1e5, not a positive integer"),
        (lambda p: p.update(create=edited(PIDS_LINE, "")), "assigns PIDS 0 times"),
        (lambda p: p.update(create=edited("\nfi\n", "\nfi\nPIDS=999999\n")), "assigns PIDS 2 times"),
        (lambda p: p.update(create=edited("\nfi\n", "\nfi\nexport PIDS=999999\n")), "assigns PIDS 2 times"),
        (
            lambda p: p.update(create=edited('"TasksMax=$PIDS"', '"TasksMax=infinity"')),
            "never writes $PIDS to TasksMax=",
        ),
        (
            lambda p: p.update(create=edited('"CPUQuota=$(( CPU_QUOTA * 100 / CPU_PERIOD ))%"', '"CPUQuota=100%"')),
            "never writes $CPU_QUOTA to CPUQuota=",
        ),
        (
            lambda p: p.update(create=with_var("DRIVER", "cgroupfs")),
            "sets DRIVER=cgroupfs, but its facts line gives the driver systemd",
        ),
        (
            lambda p: p.update(create=with_var("CG", "clawstaff/../system.slice")),
            "sets CG=clawstaff/../system.slice, not clawstaff.slice/clawstaff-acme\\x2dsupport.slice",
        ),
        (lambda p: p.update(create=limits_script()), "its `create` is not `/bin/bash -c '<script>'`"),
        (lambda p: p.update(create="/bin/sh -c " + p["create"][len("/bin/bash -c ") :]), "is not `/bin/bash -c"),
        (
            lambda p: p.update(delete=None),
            "its `delete` is not `/bin/bash -c '<script>'` removing cage acme-support's cgroup",
        ),
        (
            lambda p: p.update(delete=fx.key_command()["delete"]),
            "its `delete` script does not carry the line '# clawstaff limits of cage acme-support:'",
        ),
        (
            lambda p: p.update(
                delete=cagehost.shell_command(
                    cagehost.render_limits_delete("acme-support", driver="cgroupfs").replace("rmdir", "ls")
                )
            ),
            "its `delete` script does not remove the cgroup (rmdir)",
        ),
        (
            lambda p: p.update(update=edited(PIDS_LINE, "PIDS=99999\n")),
            "its `update` script sets PIDS=99999, above the ceiling of 4096",
        ),
    ],
)
def test_a_wrong_limits_command_is_refused(change: Callable[[dict[str, Any]], None], expected: str) -> None:
    entries = two_cages()
    change(props_of(entries, "acme-support-limits"))
    found = check(LIMITS, entries)
    assert any(expected in m and urn == fx.urn(fx.REMOTE_COMMAND, "acme-support-limits") for m, urn in found), found
    assert all("acme-sales" not in m for m, _ in found), found


def facts_replaced(text: str, /, **changes: Any) -> str:
    """The script `text` with its facts line rewritten: keys set to new values (None removes a key)."""
    prefix = "# clawcage-facts: "
    (line,) = [line for line in text.splitlines() if line.startswith(prefix)]
    facts = json.loads(line[len(prefix) :])
    for key, value in changes.items():
        if value is None:
            facts.pop(key, None)
        else:
            facts[key] = value
    return text.replace(line, prefix + json.dumps(facts, sort_keys=True))


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        # The facts line is where the pack reads what a script sets: without it, or unreadable, it is refused.
        (lambda p: p.update(create=edited(fx_facts_line(), "")), "carries 0 facts lines"),
        (
            lambda p: p.update(create=edited(fx_facts_line(), fx_facts_line() + "\n" + fx_facts_line())),
            "carries 2 facts lines",
        ),
        (
            lambda p: p.update(create=edited(fx_facts_line(), "# clawcage-facts: {not json")),
            "facts line that is not JSON",
        ),
        (lambda p: p.update(create=edited(fx_facts_line(), "# clawcage-facts: [1, 2]")), "not a JSON object"),
        (
            lambda p: p.update(
                delete=cagehost.shell_command(
                    facts_replaced(
                        cagehost.render_limits_delete("acme-support", driver="cgroupfs"), claw=None, script=None
                    )
                )
            ),
            "its `delete` script's facts line declares None of cage None, not 'limits-delete' of cage acme-support",
        ),
        # Facts and script disagree: the header sets one thing, the facts say another.
        (
            lambda p: p.update(create=cagehost.shell_command(facts_replaced(limits_script(), pids=64))),
            f"sets PIDS={fx.CLAW_PIDS + 64}, but its facts line gives pids=64: a script and its facts must agree",
        ),
        (
            lambda p: p.update(create=cagehost.shell_command(facts_replaced(limits_script(), memory=None))),
            "but its facts line gives memory=None",
        ),
        (
            lambda p: p.update(create=cagehost.shell_command(facts_replaced(limits_script(), cpu_quota="125000"))),
            "but its facts line gives cpu_quota='125000'",
        ),
        (lambda p: p.update(create=with_var("MEMORY", "4194304")), "sets MEMORY=4194304, but its facts line gives"),
        (
            lambda p: p.update(create=cagehost.shell_command(facts_replaced(limits_script(), claw="acme-sales"))),
            "facts line declares 'limits-create' of cage 'acme-sales', not 'limits-create' of cage acme-support",
        ),
        (
            lambda p: p.update(create=cagehost.shell_command(facts_replaced(limits_script(), script="limits-delete"))),
            "facts line declares 'limits-delete' of cage 'acme-support', not 'limits-create'",
        ),
        (
            lambda p: p.update(create=cagehost.shell_command(facts_replaced(limits_script(), cgroup="clawstaff"))),
            "its `create` script's facts line gives the cgroup 'clawstaff', not clawstaff.slice/clawstaff-acme\\x2dsupport.slice",
        ),
        (
            lambda p: p.update(update=cagehost.shell_command(facts_replaced(limits_script(), pids=99999))),
            "its `update` script sets PIDS=320, but its facts line gives pids=99999",
        ),
    ],
)
def test_a_limits_script_whose_facts_are_missing_or_disagree_is_refused(
    change: Callable[[dict[str, Any]], None], expected: str
) -> None:
    entries = two_cages()
    change(props_of(entries, "acme-support-limits"))
    found = check(LIMITS, entries)
    assert any(expected in m and urn == fx.urn(fx.REMOTE_COMMAND, "acme-support-limits") for m, urn in found), found
    assert all("acme-sales" not in m for m, _ in found if "acme-sales'" not in expected), found


def fx_facts_line(claw: str = "acme-support") -> str:
    (line,) = [line for line in limits_script(claw).splitlines() if line.startswith("# clawcage-facts: ")]
    return line


def test_the_limits_are_read_from_the_facts_line() -> None:
    facts = stack_rules.script_facts(limits_script())[0]
    assert facts == {
        "script": "limits-create",
        "claw": "acme-support",
        "driver": "systemd",
        "cgroup": "clawstaff.slice/clawstaff-acme\\x2dsupport.slice",
        "pids": fx.CLAW_PIDS + 64,
        "memory": props_memory(),
        "cpu_quota": 125_000,
        "cpu_period": 100_000,
    }
    assert stack_rules.limits_claws(fx.limits_command()["create"]) == {"acme-support"}


def props_memory() -> int:
    return fx.CLAW_MEMORY + fx.cage_component.PROXY_MEMORY


def test_the_pids_ceiling_is_configurable() -> None:
    found = check(LIMITS, two_cages(), {"maxPids": 100})
    assert len(found) == 2 and all("above the ceiling of 100 (maxPids)" in m for m, _ in found)
    assert check(LIMITS, two_cages(), {"maxPids": fx.CLAW_PIDS + 64}) == []


def test_a_second_limits_command_for_one_cage_is_refused() -> None:
    entries = two_cages()
    entries.append(
        (
            fx.REMOTE_COMMAND,
            "acme-support-more-pids",
            fx.limits_command("acme-support", remote=True),
            fx.COMMAND_PROVIDER,
        )
    )
    assert "cage acme-support has 2 limits commands" in messages(check(LIMITS, entries))


def test_a_command_that_rewrites_a_cages_cgroup_counts_as_a_limits_command() -> None:
    entries = two_cages()
    # No marker line, but it assigns the cage's cgroup: it is judged as (a second) limits command.
    entries.append(
        (
            fx.REMOTE_COMMAND,
            "sneaky",
            {
                "create": cagehost.shell_command("CG=clawstaff/acme-support\necho max > /sys/fs/cgroup/$CG/pids.max\n"),
                "connection": fx.connection(),
            },
            fx.COMMAND_PROVIDER,
        )
    )
    text = messages(check(LIMITS, entries))
    assert "cage acme-support has 2 limits commands" in text
    assert "does not carry the line '# clawstaff limits of cage acme-support:'" in text


# The host of the limits command is the host of the containers.


def test_a_limits_command_on_another_host_is_refused() -> None:
    entries = two_cages() + fx.host_resources(OTHER_HOST)
    props_of(entries, "acme-support-limits")["connection"] = fx.connection(OTHER_HOST)
    found = [(m, u) for m, u in check(LIMITS, entries)]
    text = messages(found)
    assert f"connects to {fx.host_address(OTHER_HOST)}, but the Docker provider fsn1-cage-01-docker" in text
    assert "which the Docker provider fsn1-cage-01-docker of cage acme-support's containers does not pin" in text
    assert {u for _, u in found} == {fx.urn(fx.REMOTE_COMMAND, "acme-support-limits")}


def test_a_limits_command_pinning_another_hosts_key_is_refused() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-limits")["connection"]["hostKey"] = fx.host_public_key(OTHER_HOST)
    found = check(LIMITS, entries)
    assert len(found) == 1 and "pins the host key ssh-ed25519" in found[0][0]


def test_a_local_limits_command_for_containers_on_a_remote_engine_is_refused() -> None:
    entries = two_cages()
    limits = props_of(entries, "acme-support-limits")
    del limits["connection"]
    entries = [(fx.COMMAND if n == "acme-support-limits" else t, n, p, prov) for t, n, p, prov in entries]
    found = check(LIMITS, entries)
    assert len(found) == 1
    assert "is a local command (it runs on the machine running Pulumi), but the Docker provider" in found[0][0]
    assert "runs them on ssh://root@203.0.113.10:22" in found[0][0]


def test_a_remote_limits_command_for_containers_on_the_local_engine_is_refused() -> None:
    entries = two_local_cages()
    entries = [
        (
            fx.REMOTE_COMMAND if n == "acme-support-limits" else t,
            n,
            {**p, "connection": fx.connection()} if n == "acme-support-limits" else p,
            prov,
        )
        for t, n, p, prov in entries
    ]
    assert (
        "runs on a remote host, but the Docker provider fsn1-cage-01-docker of cage acme-support's containers "
        "runs them on the local engine unix:///var/run/docker.sock" in messages(check(LIMITS, entries))
    )


def test_the_provider_is_read_from_the_engines_provider_record_too() -> None:
    # Without the provider resource among the stack's resources, its inputs come with each resource.
    entries = [e for e in two_cages() if not e[0].startswith("pulumi:providers:")]
    found = check(LIMITS, entries)
    assert found and all("cannot verify that the limits command" in m for m, _ in found)


# --- unknown inputs during preview --------------------------------------------------------------------


def test_unknown_container_networks_fail_closed_in_every_graph_rule() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-claw")["networksAdvanced"] = [{"name": UNKNOWN_STRING_VALUE}]
    for name in (
        "cage-network-shared-only-with-own-proxy",
        "cage-has-one-proxy-and-one-network",
        "cage-resources-not-shared",
        "cage-on-one-host",
        LIMITS,
    ):
        found = check(name, entries)
        assert found, name
        assert any(
            "cannot verify `networksAdvanced`" in m and urn == fx.urn(fx.CONTAINER, "acme-support-claw")
            for m, urn in found
        ), (name, found)


def test_an_unknown_cgroup_parent_fails_closed() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-proxy")["cgroupParent"] = UNKNOWN_STRING_VALUE
    found = check(LIMITS, entries)
    assert len(found) == 1 and "cannot verify `cgroupParent`" in found[0][0]
    assert found[0][1] == fx.urn(fx.CONTAINER, "acme-support-proxy")


def test_an_unknown_limits_script_fails_closed_rather_than_matching_nothing() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-limits")["create"] = UNKNOWN_STRING_VALUE
    found = check(LIMITS, entries)
    assert [urn for _, urn in found] == [
        fx.urn(fx.REMOTE_COMMAND, "acme-support-limits"),
        fx.urn(fx.CONTAINER, "acme-support-claw"),
    ]
    assert all("cannot verify `create`" in m for m, _ in found)
    assert "no command known during preview creates cage acme-support's limits" in found[1][0]


def test_an_unknown_delete_fails_closed() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-limits")["delete"] = UNKNOWN_STRING_VALUE
    found = check(LIMITS, entries)
    assert len(found) == 1 and "cannot verify `delete`" in found[0][0]


def test_a_host_that_cannot_be_seen_on_either_side_fails_closed() -> None:
    # A new Hetzner server: its address is unknown during preview, and so are the provider's URL and sshOpts
    # built from it.
    entries = two_cages()
    props_of(entries, "acme-support-limits")["connection"]["host"] = UNKNOWN_STRING_VALUE
    props_of(entries, "fsn1-cage-01-docker").update(host=UNKNOWN_STRING_VALUE, sshOpts=UNKNOWN_STRING_VALUE)
    found = [m for m, _ in check(LIMITS, entries) if "acme-support" in m]
    assert len(found) == 1
    assert found[0].startswith(
        "cannot verify that the limits command of cage acme-support runs on the host of its "
        "containers: neither the address (command `connection.host` unknown, provider `host` "
        "unknown) nor the host key (command `connection.hostKey` known, provider `sshOpts` "
        "unknown)"
    )


def test_a_pinned_host_key_identifies_the_host_when_the_address_is_unknown() -> None:
    # Both sides pin the same derived host key: whoever answers holds that key, so both reach one machine.
    entries = two_cages()
    for name in ("acme-support-limits", "acme-sales-limits"):
        props_of(entries, name)["connection"]["host"] = UNKNOWN_STRING_VALUE
    props_of(entries, "fsn1-cage-01-docker")["host"] = UNKNOWN_STRING_VALUE
    assert check(LIMITS, entries) == []


def test_an_unknown_connection_fails_closed() -> None:
    entries = two_cages()
    props_of(entries, "acme-support-limits")["connection"] = UNKNOWN_STRING_VALUE
    found = check(LIMITS, entries)
    assert len(found) == 1 and "cannot verify `connection`" in found[0][0]


def test_an_unknown_local_engine_fails_closed_for_a_local_command() -> None:
    entries = two_local_cages()
    props_of(entries, "fsn1-cage-01-docker")["host"] = UNKNOWN_STRING_VALUE
    found = check(LIMITS, entries)
    assert len(found) == 2 and all("cannot verify `host`" in m for m, _ in found)


def test_unknown_env_fails_closed_for_the_sealed_rule() -> None:
    entries = two_cages()
    props_of(entries, "acme-sales-claw")["envs"] = UNKNOWN_STRING_VALUE
    found = check("secrets-reach-containers-sealed", entries)
    assert found == [(found[0][0], fx.urn(fx.CONTAINER, "acme-sales-claw"))]
    assert "cannot verify `envs`" in found[0][0]
