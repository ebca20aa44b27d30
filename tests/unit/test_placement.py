"""Placement properties (components.placement), each proved over generated fleets with hypothesis.

Exact guarantees: determinism and independence from list order; capacity, overcommit and the cage
ceiling never exceeded; pins honoured; clear errors; a drain moves only the drained host's cages;
fields that are not limits never move a cage; with room to spare, adding, removing or resizing a claw
moves no other claw; and in every case a change moves only claws that sort after the changed one.
"""

from __future__ import annotations

import random
from dataclasses import replace
from decimal import Decimal

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from components.config import Capacity, Claw, Endpoint, Host, HostPool, PlacementPolicy
from components.placement import (
    HOST_RESERVE,
    PlacementError,
    cage_demand,
    cage_uids,
    host_limit,
    lower_bound_hosts,
    place,
    placement_key,
    reference_limit,
)
from tools.placement_lock import render_lock, write_lock

GiB, MiB, GB = 1024**3, 1024**2, 1000**3
IMAGE = "ghcr.io/clawstaff/claw-runtime@sha256:" + "ab" * 32
PROPERTY = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def claw(
    name: str,
    cpus: str = "0.5",
    memory: int = 512 * MiB,
    tmpfs: int = 64 * MiB,
    volume: int | None = None,
    host: str | None = None,
    **other,
) -> Claw:
    return Claw(name=name, org=other.get("org", "acme"), image=other.get("image", IMAGE), cpus=Decimal(cpus),
                memory=memory, pids=other.get("pids", 128), tmpfs=tmpfs, volume=volume,
                egress=other.get("egress", (Endpoint("api.anthropic.com", 443),)),
                secrets=other.get("secrets", ()), host=host, command=other.get("command"))  # fmt: skip


def host(name: str, cpus: int = 8, memory: int = 32 * GiB, disk: int = 240 * GB, **other) -> Host:
    return Host(name=name, kind="dedicated", capacity=Capacity(Decimal(cpus), memory, disk), **other)


# --- strategies ------------------------------------------------------------------------------------

names = st.from_regex(r"[a-z][a-z0-9]{0,6}", fullmatch=True)


@st.composite
def claws_strategy(draw, min_size=1, max_size=30, host_names=()):
    claw_names = draw(st.lists(names, min_size=min_size, max_size=max_size, unique=True))
    out = []
    for n in claw_names:
        memory = draw(st.sampled_from([128 * MiB, 256 * MiB, 512 * MiB, 1 * GiB, 2 * GiB, 4 * GiB]))
        out.append(claw(
            n,
            cpus=draw(st.sampled_from(["0.25", "0.5", "1", "1.5", "2"])),
            memory=memory,
            tmpfs=draw(st.sampled_from([16 * MiB, 64 * MiB, 128 * MiB])),
            volume=draw(st.sampled_from([None, None, 1 * GiB, 10 * GiB])),
            host=draw(st.sampled_from(host_names)) if host_names and draw(st.integers(0, 9)) == 0 else None,
        ))  # fmt: skip
    return out


@st.composite
def fleets(draw, pool: bool | None = None, max_claws=30):
    """(hosts, pools, claws, policy): a few listed hosts of mixed sizes, maybe a pool, claws of mixed
    limits, some pinned; small enough that capacity often binds."""
    host_names = draw(st.lists(st.from_regex(r"h[a-z0-9]{1,5}", fullmatch=True), min_size=0, max_size=4, unique=True))
    hosts = [host(n, cpus=draw(st.sampled_from([2, 4, 8])), memory=draw(st.sampled_from([4 * GiB, 8 * GiB, 16 * GiB])),
                  disk=draw(st.sampled_from([40 * GB, 80 * GB])), max_cages=draw(st.sampled_from([None, 3, 10])))
             for n in host_names]  # fmt: skip
    with_pool = draw(st.booleans()) if pool is None else pool
    pools = [HostPool(name="pool", server_type=draw(st.sampled_from(["cx22", "cx32", "ccx13"])),
                      locations=("fsn1", "nbg1"), max=draw(st.integers(1, 12)), image="debian-12")] if with_pool else []  # fmt: skip
    assume(hosts or pools)
    pinnable = tuple(host_names) + ((pools[0].host(1).name,) if pools else ())
    claws = draw(claws_strategy(max_size=max_claws, host_names=pinnable))
    policy = PlacementPolicy(overcommit_cpus=draw(st.sampled_from([Decimal(1), Decimal(2)])),
                             max_cages_per_host=draw(st.sampled_from([4, 100])))  # fmt: skip
    return hosts, pools, claws, policy


def try_place(hosts, pools, claws, policy):
    try:
        return place(hosts, claws, pools=pools, policy=policy)
    except PlacementError:
        return None


def all_hosts(hosts, pools):
    return {h.name: h for h in [*hosts, *(h for p in pools for h in p.hosts())]}


# --- exact properties ------------------------------------------------------------------------------


@PROPERTY
@given(fleets(), st.randoms(use_true_random=False))
def test_same_config_same_placement_whatever_the_order_of_the_lists(fleet, rnd):
    hosts, pools, claws, policy = fleet
    first = try_place(hosts, pools, claws, policy)
    shuffled_hosts, shuffled_claws = hosts[:], claws[:]
    rnd.shuffle(shuffled_hosts)
    rnd.shuffle(shuffled_claws)
    second = try_place(shuffled_hosts, pools, shuffled_claws, policy)
    assert first == second


@PROPERTY
@given(fleets())
def test_capacity_overcommit_and_ceiling_are_never_exceeded_and_pins_are_honoured(fleet):
    hosts, pools, claws, policy = fleet
    result = try_place(hosts, pools, claws, policy)
    assume(result is not None)
    assert set(result.claws) == {c.name for c in claws}
    known = all_hosts(hosts, pools)
    for host_name, names in result.by_host().items():
        limit = host_limit(known[host_name], policy)
        demands = [cage_demand(c) for c in claws if c.name in names]
        assert sum((d.cpus for d in demands), Decimal(0)) <= limit.cpus
        assert sum(d.memory for d in demands) <= limit.memory
        assert sum(d.disk for d in demands) <= limit.disk
        assert len(demands) <= limit.cages
    for c in claws:
        if c.host:
            assert result.claws[c.name] == c.host


@PROPERTY
@given(fleets())
def test_pool_hosts_exist_only_when_they_hold_a_cage_and_listed_hosts_always_exist(fleet):
    hosts, pools, claws, policy = fleet
    result = try_place(hosts, pools, claws, policy)
    assume(result is not None)
    used = set(result.claws.values())
    assert {h.name for h in result.hosts} == {h.name for h in hosts} | {
        h for h in used if h not in {x.name for x in hosts}
    }


@PROPERTY
@given(fleets(), st.data())
def test_draining_a_host_moves_exactly_its_cages(fleet, data):
    hosts, pools, claws, policy = fleet
    before = try_place(hosts, pools, claws, policy)
    assume(before is not None and before.claws)
    target = data.draw(st.sampled_from(sorted(set(before.claws.values()))))
    assume(not any(c.host == target for c in claws))  # a pin to a draining host is an error (tested below)
    if any(h.name == target for h in hosts):
        hosts = [replace(h, drain=True) if h.name == target else h for h in hosts]
    else:
        pools = [replace(p, drain=(target,)) for p in pools]
    after = try_place(hosts, pools, claws, policy)
    assume(after is not None)
    for name, old in before.claws.items():
        if old == target:
            assert after.claws[name] != target
        else:
            assert after.claws[name] == old, f"{name} moved from {old} though only {target} drains"


def test_a_pin_to_a_draining_host_is_an_error_that_says_so():
    hosts = [host("ha", drain=True), host("hb")]
    with pytest.raises(
        PlacementError, match=r"c1 \(pinned to ha, which is draining: unpin it or pin it to another host\)"
    ):
        place(hosts, [claw("c1", host="ha")])


@PROPERTY
@given(fleets(), st.data())
def test_fields_that_are_not_limits_never_move_a_cage(fleet, data):
    hosts, pools, claws, policy = fleet
    before = try_place(hosts, pools, claws, policy)
    assume(before is not None)
    edited = [replace(c, egress=(Endpoint("example.com", 443),), secrets=("TOKEN",), pids=4096, org="other",
                      image="ghcr.io/x/y@sha256:" + "cd" * 32, command=("/bin/true",)) for c in claws]  # fmt: skip
    assert try_place(hosts, pools, edited, policy) == before


def _moved(before, after, ignore):
    return {n for n, h in before.claws.items() if n not in ignore and after.claws.get(n) != h}


@PROPERTY
@given(fleets(), claws_strategy(max_size=1))
def test_adding_a_claw_moves_only_claws_that_sort_after_it(fleet, new):
    hosts, pools, claws, policy = fleet
    (new,) = new
    assume(new.name not in {c.name for c in claws})
    before, after = try_place(hosts, pools, claws, policy), try_place(hosts, pools, claws + [new], policy)
    assume(before is not None and after is not None)
    ref = reference_limit(hosts, pools, policy)
    key = {c.name: placement_key(c, ref) for c in claws}
    for name in _moved(before, after, {new.name}):
        assert key[name] > placement_key(new, ref)


@PROPERTY
@given(fleets(), st.data())
def test_removing_or_resizing_a_claw_moves_only_claws_that_sort_after_it(fleet, data):
    hosts, pools, claws, policy = fleet
    before = try_place(hosts, pools, claws, policy)
    assume(before is not None)
    changed = data.draw(st.sampled_from(claws))
    ref = reference_limit(hosts, pools, policy)
    key = {c.name: placement_key(c, ref) for c in claws}
    removed = try_place(hosts, pools, [c for c in claws if c is not changed], policy)
    resized_claw = replace(changed, memory=data.draw(st.sampled_from([128 * MiB, 2 * GiB])), cpus=Decimal("1"))
    resized = try_place(hosts, pools, [resized_claw if c is changed else c for c in claws], policy)
    # A resized claw takes its new place in the order (largest first): what sorts after either place may move.
    first_place = min(key[changed.name], placement_key(resized_claw, ref))
    for after, since in ((removed, key[changed.name]), (resized, first_place)):
        if after is not None:
            for name in _moved(before, after, {changed.name}):
                assert key[name] > since


@PROPERTY
@given(claws_strategy(max_size=40), claws_strategy(max_size=1), st.data())
def test_with_room_to_spare_adding_removing_or_resizing_a_claw_moves_no_other_claw(claws, new, data):
    """Listed hosts that nothing fills: every claw sits on its first HRW choice, whatever the others do."""
    hosts = [host(f"h{i}", cpus=4096, memory=4096 * GiB, disk=10**15, max_cages=1000) for i in range(5)]
    (new,) = new
    assume(new.name not in {c.name for c in claws})
    before = place(hosts, claws)
    changed = data.draw(st.sampled_from(claws))
    variants = [
        claws + [new],
        [c for c in claws if c is not changed],
        [replace(c, cpus=Decimal(2), memory=4 * GiB, volume=50 * GiB) if c is changed else c for c in claws],
    ]
    for variant in variants:
        after = place(hosts, variant)
        assert not _moved(before, after, {new.name, changed.name})


@PROPERTY
@given(fleets(pool=True, max_claws=25), st.integers(1, 20))
def test_raising_a_pools_max_changes_nothing_that_already_fit(fleet, more):
    hosts, pools, claws, policy = fleet
    before = try_place(hosts, pools, claws, policy)
    assume(before is not None)
    grown = [replace(p, max=min(p.max + more, 999)) for p in pools]
    assert try_place(hosts, grown, claws, policy) == before


# --- the lock --------------------------------------------------------------------------------------


@st.composite
def changes(draw, hosts, pools, claws):
    """One change to a fleet that must not move a locked claw other than `changed` (None: none)."""
    kind = draw(st.sampled_from(["add", "remove", "resize", "drain", "remove-host"]))
    if kind == "add":
        (new,) = draw(claws_strategy(max_size=1))
        assume(new.name not in {c.name for c in claws})
        return hosts, pools, claws + [new], new.name, None
    if kind in ("remove", "resize"):
        changed = draw(st.sampled_from(claws))
        if kind == "remove":
            return hosts, pools, [c for c in claws if c is not changed], changed.name, None
        grown = replace(
            changed,
            cpus=Decimal(draw(st.sampled_from(["0.25", "2"]))),
            memory=draw(st.sampled_from([128 * MiB, 4 * GiB])),
        )
        return hosts, pools, [grown if c is changed else c for c in claws], changed.name, None
    target = draw(st.sampled_from(sorted(all_hosts(hosts, pools))))
    assume(not any(c.host == target for c in claws))
    if kind == "drain":
        return ([replace(h, drain=h.drain or h.name == target) for h in hosts],
                [replace(p, drain=(*p.drain, target)) if target.startswith(p.name + "-") else p for p in pools],
                claws, None, target)  # fmt: skip
    assume(any(h.name == target for h in hosts))
    return [h for h in hosts if h.name != target], pools, claws, None, target


@PROPERTY
@given(fleets(), st.data())
def test_a_locked_claw_never_moves_because_of_another_claw_or_host(fleet, data):
    hosts, pools, claws, policy = fleet
    before = try_place(hosts, pools, claws, policy)
    assume(before is not None)
    lock = dict(before.claws)
    assert try_place_locked(hosts, pools, claws, policy, lock) == before  # locking changes nothing
    hosts2, pools2, claws2, changed, gone_host = data.draw(changes(hosts, pools, claws))
    after = try_place_locked(
        hosts2, pools2, claws2, policy, {k: v for k, v in lock.items() if k in {c.name for c in claws2}}
    )
    assume(after is not None)
    for name, old in before.claws.items():
        if name != changed and old != gone_host and name in after.claws:
            if changed is not None and any(c.name == changed for c in claws2) and old == before.claws.get(changed):
                continue  # a resized claw's host-mates: checked in the next test
            assert after.claws[name] == old, f"locked {name} moved from {old}"


@PROPERTY
@given(fleets(), st.data())
def test_a_locked_claw_that_grows_moves_only_itself_or_host_mates_that_sort_after_it(fleet, data):
    hosts, pools, claws, policy = fleet
    before = try_place(hosts, pools, claws, policy)
    assume(before is not None)
    changed = data.draw(st.sampled_from(claws))
    grown = replace(changed, cpus=Decimal("2"), memory=4 * GiB)
    after = try_place_locked(hosts, pools, [grown if c is changed else c for c in claws], policy, dict(before.claws))
    assume(after is not None)
    for c in claws:
        if c is not changed and after.claws[c.name] != before.claws[c.name]:
            assert before.claws[c.name] == before.claws[changed.name]  # a host-mate
            ref = reference_limit(hosts, pools, policy)
            assert placement_key(c, ref) > placement_key(grown, ref)


def try_place_locked(hosts, pools, claws, policy, lock):
    try:
        return place(hosts, claws, pools=pools, policy=policy, lock=lock)
    except PlacementError:
        return None


def test_a_lock_to_a_host_that_is_gone_or_full_is_only_a_preference():
    hosts = [host("ha", cpus=2), host("hb", cpus=2)]  # 1.5 usable cpus: one cage of 1 cpu each
    result = place(hosts, [claw("c1", cpus="1"), claw("c2", cpus="1")], lock={"c1": "hx", "c2": "hb"})
    assert result.claws == {"c1": "ha", "c2": "hb"}


def test_the_lock_is_written_into_the_stack_file_without_touching_the_rest():
    text = "# prod\nencryptionsalt: x\nconfig:\n  clawstaff:hosts: []  # keep me\n"
    once = write_lock(text, {"b": "h2", "a": "h1"})
    assert once == text + "  clawstaff:placementLock:\n    a: h1\n    b: h2\n"
    twice = write_lock(once + "  clawstaff:sealingKey:\n    secure: v1:abc\n", {"a": "h3"})
    assert twice == text + "  clawstaff:placementLock:\n    a: h3\n  clawstaff:sealingKey:\n    secure: v1:abc\n"
    with pytest.raises(ValueError, match="last top-level key must be config"):
        write_lock("config:\n  a: 1\nother: 2\n", {"a": "h"})
    assert render_lock({"a": "h"}) == "  clawstaff:placementLock:\n    a: h\n"


# --- errors ----------------------------------------------------------------------------------------


def test_an_impossible_placement_names_each_claw_that_does_not_fit_and_by_how_much():
    hosts = [host("ha", cpus=2, memory=4 * GiB)]  # usable: 1.5 cpus, 3GiB
    claws = [claw("big", cpus="1", memory=2 * GiB), claw("bigger", cpus="1", memory=2 * GiB), claw("tiny", cpus="0.25")]
    with pytest.raises(PlacementError) as error:
        place(hosts, claws, stack_file="Pulumi.prod.yaml")
    text = str(error.value)
    assert text.startswith("Pulumi.prod.yaml: clawstaff:claws: 2 claw(s) do not fit on the hosts: ")
    # Whichever order they come in, one claw of 1.25 cpus (with its proxy) fits in 1.5; the other two do not.
    assert len({n for n in ("big", "bigger", "tiny") if f"{n} (needs" in text}) == 2
    assert "cpus short by" in text and "closest: ha" in text
    assert "add a host, raise a pool's max, unpin, or lower the limits" in text


def test_a_pinned_claw_that_does_not_fit_its_host_says_what_its_host_lacks():
    hosts = [host("ha", cpus=2, memory=4 * GiB), host("hb")]
    with pytest.raises(
        PlacementError,
        match=r"c1 \(needs cpus 2.25, memory 2112MiB, disk 64MiB; its pinned host ha: "
        r"cpus short by 0.75 \(needs 2.25, 1.5 free\)\)",
    ):
        place(hosts, [claw("c1", cpus="2", memory=2 * GiB, host="ha")])


def test_a_full_pool_is_named_in_the_error():
    pool = HostPool("cage", "cx22", ("fsn1",), max=1, image="debian-12")  # 1.5 cpus usable
    with pytest.raises(PlacementError, match=r"pool\(s\) cage at their max"):
        place([], [claw(f"c{i}", cpus="0.5") for i in range(3)], pools=[pool])


def test_the_cage_ceiling_is_an_explicit_shortfall():
    hosts = [host("ha", max_cages=1)]
    with pytest.raises(PlacementError, match="at its ceiling of 1 cages"):
        place(hosts, [claw("c1"), claw("c2")])


# --- packing ---------------------------------------------------------------------------------------


def test_overcommit_lets_more_cpus_onto_a_host_but_memory_is_never_overcommitted_by_default():
    hosts = [host("ha", cpus=2, memory=64 * GiB)]  # 1.5 usable cpus
    claws = [claw(f"c{i}", cpus="1") for i in range(2)]  # 2 x 1.25 with proxies
    with pytest.raises(PlacementError):
        place(hosts, claws)
    assert set(place(hosts, claws, policy=PlacementPolicy(overcommit_cpus=Decimal(2))).claws.values()) == {"ha"}
    assert PlacementPolicy().overcommit_memory == 1


def test_a_pool_fills_its_hosts_in_order_and_makes_no_more_than_the_lower_bound_on_uniform_cages():
    pool = HostPool("cage", "ccx23", ("fsn1", "nbg1", "hel1"), max=50, image="debian-12")
    claws = [claw(f"claw-{i:04d}", cpus="0.45", memory=1 * GiB) for i in range(200)]  # 0.7 cpus with the proxy
    result = place([], claws, pools=[pool])
    bound, binding = lower_bound_hosts(claws, pool.host(1))
    assert [h.name for h in result.hosts] == [f"cage-{i:03d}" for i in range(1, bound + 1)]
    assert [h.location for h in result.hosts][:4] == ["fsn1", "nbg1", "hel1", "fsn1"]
    assert (bound, binding) == (40, "cpus")  # 3.5 usable cpus hold 5 cages of 0.7; 15GiB would hold 14


def test_lower_bound_is_never_above_what_placement_uses():
    rnd = random.Random(7)
    pool = HostPool("cage", "ccx33", ("fsn1",), max=200, image="debian-12")
    claws = [claw(f"c{i}", cpus=rnd.choice(["0.25", "0.5", "1", "2"]), memory=rnd.choice([256 * MiB, 1 * GiB, 4 * GiB]))
             for i in range(300)]  # fmt: skip
    used = len(place([], claws, pools=[pool]).hosts)
    bound, _ = lower_bound_hosts(claws, pool.host(1))
    assert bound <= used <= bound + 1


def test_reserve_and_proxy_are_counted():
    limit = host_limit(host("ha", cpus=8, memory=32 * GiB, disk=240 * GB))
    assert limit.cpus == 8 - HOST_RESERVE.cpus and limit.memory == 31 * GiB
    d = cage_demand(claw("c", cpus="1", memory=1 * GiB, tmpfs=64 * MiB, volume=5 * GiB))
    assert (d.cpus, d.memory, d.disk) == (Decimal("1.25"), 1 * GiB + 64 * MiB, 64 * MiB + 5 * GiB)


def test_proxy_overhead_is_the_cage_components_own():
    from components import cage, placement

    assert placement.PROXY_CPUS is cage.PROXY_CPUS and placement.PROXY_MEMORY is cage.PROXY_MEMORY


# --- uids ------------------------------------------------------------------------------------------


@PROPERTY
@given(st.lists(names, min_size=1, max_size=60, unique=True))
def test_cage_uids_are_distinct_per_host_and_below_the_userns_range(claw_names):
    uids = cage_uids(claw_names)
    flat = [u for pair in uids.values() for u in pair]
    assert len(set(flat)) == len(flat) and all(10000 <= u < 65536 for u in flat)
