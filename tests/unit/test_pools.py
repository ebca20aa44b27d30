"""Host pools (clawstaff:hosts entries of kind pool): config checks, stable names and locations, and the
fleet under Pulumi's mocks: only the pool hosts the cages need exist, and growing the pool never
renames, re-addresses, regroups or replaces a host, nor changes a cage that did not move."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.config import ConfigError, HostPool, load_stack_file, parse_stack_config, pool_host_name
from components.fleet import private_addresses, spread_groups
from tests.conftest import ROOT
from tools import mockrun

GiB = 1024**3
IMAGE = "ghcr.io/clawstaff/claw-runtime@sha256:" + "ab" * 32
SERVER = "hcloud:index/server:Server"
CONTAINER = "docker:index/container:Container"


def pool_raw(claws: int = 6, max_hosts: int = 5, **pool: Any) -> tuple[dict[str, Any], set[str]]:
    """The prod stack file with one listed cloud host and a pool of ccx13 (2 cpus: 1.5 usable, so one
    cage of 1 cpu per host), holding `claws` claws of 1 cpu without secrets."""
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    raw = copy.deepcopy(raw)
    raw.pop("clawstaff:placementLock", None)  # prod's lock names prod's claws, replaced below
    raw["clawstaff:hosts"] = [
        {"name": "fsn1-cage-01", "kind": "cloud", "serverType": "cx22", "location": "fsn1"},
        {"name": "cage", "kind": "pool", "serverType": "ccx13", "locations": ["fsn1", "nbg1", "hel1"],
         "max": max_hosts, **pool},
    ]  # fmt: skip
    raw["clawstaff:claws"] = [
        {"name": f"claw-{i:03d}", "org": "acme", "image": IMAGE, "cpus": 1, "memory": "1GiB", "pids": 128,
         "tmpfs": "64MiB", "egress": ["api.anthropic.com:443"]}
        for i in range(claws)
    ]  # fmt: skip
    raw["clawstaff:clawSecrets"] = {}
    return raw, secret_keys


def parse(raw, secret_keys):
    return parse_stack_config(raw, stack="prod", secret_keys=secret_keys)


def pool_error(**changes) -> str:
    raw, secret_keys = pool_raw()
    pool = raw["clawstaff:hosts"][1]
    for key, value in changes.items():
        pool[key] = value
    with pytest.raises(ConfigError) as error:
        parse(raw, secret_keys)
    return str(error.value)


# --- config ----------------------------------------------------------------------------------------


def test_a_pool_parses_into_a_host_pool_beside_the_listed_hosts():
    config = parse(*pool_raw())
    assert [h.name for h in config.hosts] == ["fsn1-cage-01"]
    (pool,) = config.pools
    assert pool == HostPool(name="cage", server_type="ccx13", locations=("fsn1", "nbg1", "hel1"), max=5,
                            image="debian-13")  # fmt: skip


@pytest.mark.parametrize(
    "changes, expected",
    [
        ({"locations": ["fsn1", "fsn1"]}, 'clawstaff:hosts[1].locations[1] = "fsn1": listed twice (also locations[0])'),
        ({"locations": []}, "clawstaff:hosts[1].locations = []: an empty list"),
        ({"locations": ["fra1"]}, 'clawstaff:hosts[1].locations[0] = "fra1": not a Hetzner location'),
        ({"serverType": "cax11", "locations": ["fsn1", "ash"]},
         'clawstaff:hosts[1].locations[1] = "ash": Hetzner does not offer cax11 there; allowed: for cax11: fsn1, nbg1, hel1.'),
        ({"max": 0}, "clawstaff:hosts[1].max = 0: not from 1 to 999"),
        ({"max": 1000}, "clawstaff:hosts[1].max = 1000: not from 1 to 999"),
        ({"max": "many"}, 'clawstaff:hosts[1].max = "many": not a whole number'),
        ({"drain": ["cage-006"]}, 'clawstaff:hosts[1].drain[0] = "cage-006": not a host of this pool; allowed: cage-001 up to cage-005.'),
        ({"drain": True}, "clawstaff:hosts[1].drain = true: not a list"),
        ({"maxCages": 0}, "clawstaff:hosts[1].maxCages = 0: not from 1 to 4000"),
        ({"name": "p" * 60}, "too long for a pool (its hosts are " + "p" * 60 + "-001, ...)"),
        ({"name": "fsn1-cage"}, 'clawstaff:hosts[1].name = "fsn1-cage": its host fsn1-cage-01'),
        ({"address": "198.51.100.9"}, 'clawstaff:hosts[1].address = "198.51.100.9": not a key of a pool host'),
        ({"location": "fsn1"}, 'clawstaff:hosts[1].location = "fsn1": not a key of a pool host; allowed: the keys name, kind, serverType, locations, max'),
    ],
)  # fmt: skip
def test_pool_mistakes_are_clear_errors(changes, expected):
    if changes.get("name") == "fsn1-cage":  # a listed host named like one of the pool's hosts
        raw, secret_keys = pool_raw()
        raw["clawstaff:hosts"][0]["name"] = "fsn1-cage-001"
        raw["clawstaff:hosts"][1]["name"] = "fsn1-cage"
        with pytest.raises(ConfigError) as error:
            parse(raw, secret_keys)
        assert 'clawstaff:hosts[1].name = "fsn1-cage": its host fsn1-cage-001' in str(error.value)
        return
    message = pool_error(**changes)
    assert message.startswith("Pulumi.prod.yaml: ")
    assert expected in message


def test_a_pin_may_name_a_pool_host_up_to_the_pools_max_and_no_further():
    raw, secret_keys = pool_raw()
    raw["clawstaff:claws"][0]["host"] = "cage-005"
    assert parse(raw, secret_keys).claws[0].host == "cage-005"
    raw["clawstaff:claws"][0]["host"] = "cage-006"
    with pytest.raises(
        ConfigError,
        match=r'clawstaff:claws\[0\].host = "cage-006": not a host of this stack; '
        r"allowed: one of fsn1-cage-01, cage-001 ... cage-005.",
    ):
        parse(raw, secret_keys)


def test_placement_settings_parse_with_memory_not_overcommitted_by_default():
    raw, secret_keys = pool_raw()
    assert parse(raw, secret_keys).placement.overcommit_memory == 1
    raw["clawstaff:placement"] = {"overcommit": {"cpus": 2}, "maxCagesPerHost": 40}
    policy = parse(raw, secret_keys).placement
    assert (policy.overcommit_cpus, policy.overcommit_memory, policy.max_cages_per_host) == (2, 1, 40)
    raw["clawstaff:placement"] = {"overcommit": {"memory": 0.5}}
    with pytest.raises(ConfigError, match=r"clawstaff:placement.overcommit.memory = 0.5: not from 1 to 16"):
        parse(raw, secret_keys)
    raw["clawstaff:placement"] = {"overcommit": {"pids": 2}}
    with pytest.raises(
        ConfigError,
        match=r"clawstaff:placement.overcommit.pids = 2: an unknown key; allowed: the keys cpus, memory, disk",
    ):
        parse(raw, secret_keys)


# --- names and locations ---------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 998),
    st.integers(1, 998),
    st.lists(st.sampled_from(["fsn1", "nbg1", "hel1"]), min_size=1, max_size=3, unique=True),
)
def test_growing_a_pool_never_renames_or_relocates_a_host(small, extra, locations):
    before = HostPool("cage", "ccx13", tuple(locations), max=small, image="debian-12").hosts()
    after = HostPool("cage", "ccx13", tuple(locations), max=min(small + extra, 999), image="debian-12").hosts()
    assert after[: len(before)] == before
    assert len({h.name for h in after}) == len(after)


def test_pool_hosts_spread_round_robin_over_the_locations():
    pool = HostPool("cage", "ccx13", ("fsn1", "nbg1", "hel1"), max=7, image="debian-12")
    assert [(h.name, h.location) for h in pool.hosts()] == [
        ("cage-001", "fsn1"), ("cage-002", "nbg1"), ("cage-003", "hel1"), ("cage-004", "fsn1"),
        ("cage-005", "nbg1"), ("cage-006", "hel1"), ("cage-007", "fsn1"),
    ]  # fmt: skip
    assert pool_host_name("cage", 12) == "cage-012"


def test_a_pool_hosts_group_and_address_depend_on_its_index_alone():
    small = HostPool("cage", "ccx13", ("fsn1",), max=12, image="debian-12").hosts()
    big = HostPool("cage", "ccx13", ("fsn1",), max=40, image="debian-12").hosts()
    groups_small, groups_big = spread_groups(small), spread_groups(big)
    assert all(groups_big[name] == group for name, group in groups_small.items())
    assert groups_big["cage-010"] == "cage-0" and groups_big["cage-011"] == "cage-1"
    assert private_addresses(big) == {}  # Hetzner assigns a pool host's address from its zone's subnet


# --- the fleet under mocks -------------------------------------------------------------------------


def evaluate(raw, secret_keys) -> mockrun.Evaluation:
    return mockrun.evaluate("prod", raw, secret_keys)


def test_the_fleet_makes_only_the_pool_hosts_the_cages_need():
    evaluation = evaluate(*pool_raw(claws=6, max_hosts=8))
    servers = sorted(r.inputs["name"] for r in evaluation.by_type(SERVER))
    # The listed host holds one cage of 1 cpu (1.5 usable), each ccx13 one more: five pool hosts of eight.
    assert servers == ["cage-001", "cage-002", "cage-003", "cage-004", "cage-005", "fsn1-cage-01"]
    hosts = [claw["host"] for claw in evaluation.outputs["claws"].values()]
    assert sorted(hosts) == servers


def test_a_pool_at_its_max_is_a_placement_error_naming_the_claw():
    from components.placement import PlacementError

    raw, secret_keys = pool_raw(claws=7, max_hosts=5)
    with pytest.raises(PlacementError, match=r"1 claw\(s\) do not fit.*pool\(s\) cage at their max"):
        evaluate(raw, secret_keys)


def test_adding_a_claw_that_needs_a_new_pool_host_changes_nothing_else_once_the_deployed_ones_are_locked():
    before = evaluate(*pool_raw(claws=6, max_hosts=8))
    raw, secret_keys = pool_raw(claws=7, max_hosts=8)
    raw["clawstaff:placementLock"] = {name: claw["host"] for name, claw in before.outputs["claws"].items()}
    after = evaluate(raw, secret_keys)
    old = {r.urn: mockrun.mask_secrets(r.inputs) for r in before.resources}
    new = {r.urn: mockrun.mask_secrets(r.inputs) for r in after.resources}
    assert set(old) <= set(new)
    assert all(new[urn] == inputs for urn, inputs in old.items()), "a resource of an existing cage or host changed"
    added = {urn.rsplit("::", 1)[-1] for urn in set(new) - set(old)}
    assert "cage-006-server" in added and "claw-006-claw" in added
    assert all(name.startswith(("cage-006", "claw-006")) for name in added), added


def test_without_a_lock_a_claw_that_sorts_early_pushes_later_ones_along_a_full_pool():
    """Why the lock exists: one cage per host, and claw-006 sorts (by SHA-256) before others."""
    before = evaluate(*pool_raw(claws=6, max_hosts=8)).outputs["claws"]
    after = evaluate(*pool_raw(claws=7, max_hosts=8)).outputs["claws"]
    assert any(after[name]["host"] != claw["host"] for name, claw in before.items())


def test_a_stale_lock_entry_is_a_clear_error():
    raw, secret_keys = pool_raw()
    raw["clawstaff:placementLock"] = {"claw-000": "cage-001", "gone": "cage-002"}
    with pytest.raises(
        ConfigError, match=r'clawstaff:placementLock.gone = "cage-002": a stale entry: no claw has this name'
    ):
        parse(raw, secret_keys)
    raw["clawstaff:placementLock"] = {"claw-000": "Not A Host"}
    with pytest.raises(
        ConfigError,
        match=r"clawstaff:placementLock.claw-000 = \"Not A Host\": has upper-case letters; "
        r"allowed: the name of a host",
    ):
        parse(raw, secret_keys)


def test_servers_of_a_pool_stand_in_their_locations_and_its_spread_groups():
    evaluation = evaluate(*pool_raw(claws=6, max_hosts=8))
    servers = {r.inputs["name"]: r for r in evaluation.by_type(SERVER)}
    assert [servers[f"cage-00{i}"].inputs["location"] for i in range(1, 6)] == ["fsn1", "nbg1", "hel1", "fsn1", "nbg1"]
    groups = {r.name for r in evaluation.by_type("hcloud:index/placementGroup:PlacementGroup")}
    assert groups == {"fleet-spread-0", "fleet-spread-cage-0"}
    assert "ip" not in servers["cage-001"].inputs["networks"][0] or servers["cage-001"].inputs["networks"][0]["ip"] in (
        None,
        "",
    )


def test_a_listed_host_may_be_drained_or_given_a_cage_ceiling_and_says_so_when_mistyped():
    raw, secret_keys = pool_raw()
    raw["clawstaff:hosts"][0].update(drain=True, maxCages=20)
    (host,) = parse(raw, secret_keys).hosts
    assert (host.drain, host.max_cages) == (True, 20)
    raw["clawstaff:hosts"][0]["drain"] = "yes"
    with pytest.raises(
        ConfigError, match=r'clawstaff:hosts\[0\].drain = "yes": not true or false; allowed: true \(move'
    ):
        parse(raw, secret_keys)


def test_draining_a_pool_host_in_the_config_moves_its_cages_and_the_host_goes_away():
    raw, secret_keys = pool_raw(claws=6, max_hosts=8)
    before = evaluate(raw, secret_keys).outputs["claws"]
    raw["clawstaff:hosts"][1]["drain"] = ["cage-002"]
    after = evaluate(raw, secret_keys)
    moved = {name for name, claw in before.items() if after.outputs["claws"][name]["host"] != claw["host"]}
    assert moved == {name for name, claw in before.items() if claw["host"] == "cage-002"}
    assert "cage-002" not in {r.inputs["name"] for r in after.by_type(SERVER)}
