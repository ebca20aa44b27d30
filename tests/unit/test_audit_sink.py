"""The audit sink as a host role (clawstaff:hosts[].role: audit-sink, issue 15): at most one per stack, a
cloud or dedicated host, with its retention (retentionDays, maxUse) on it alone; it holds no cages, so no
pin or lock may name it and placement never sees it; StackConfig.audit_sink is the one place to ask for
it. Every mistake is one ConfigError naming the file, the key, the value and what is allowed. A stack that
names one provisions it (its resources: tests/unit/test_sink.py) and says, in its outputs and a warning,
that the cage hosts do not upload to it yet."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components.config import (
    ALLOWED,
    DEFAULT_RETENTION_DAYS,
    CloudHostModel,
    ConfigError,
    DedicatedHostModel,
    load_stack_file,
    parse_stack_config,
    show_value,
)
from components.model import HOST_RESERVE, AuditSink
from components.placement import PlacementError, place_fleet
from components.units import GB, GiB
from tests.conftest import ROOT
from tests.unit.test_config import (
    HOST_KEY,
    SECRET_KEYS,
    SEALING_KEY,
    _json_values,
    assert_names,
    config_error,
    edited,
    local_raw,
    prod_raw,
)
from rich.console import Console

from tools import mockrun, preview

# A cx22: 40GB of disk, so 30GB for the trail once the host's 10GB reserve is kept back.
SINK = {"name": "fsn1-trail", "kind": "cloud", "serverType": "cx22", "location": "fsn1", "role": "audit-sink"}
METAL_SINK = {"name": "hel1-trail", "kind": "dedicated", "address": "198.51.100.9", "cpus": 4, "memory": "16GiB",
              "disk": "2TB", "hostKey": HOST_KEY, "role": "audit-sink"}  # fmt: skip
POOL = {"name": "cage", "kind": "pool", "serverType": "ccx13", "locations": ["fsn1"], "max": 3}


def with_sink(sink: dict[str, Any] = SINK, *changes: tuple[str, Any]) -> dict[str, Any]:
    """prod_raw (hosts fsn1-cage-01 and hel1-metal-01) with `sink` as hosts[2]."""
    return edited(prod_raw(), ("hosts[2]", dict(sink)), *changes)


def parsed(raw: dict[str, Any], stack: str = "prod"):
    return parse_stack_config(raw, stack=stack, secret_keys=SECRET_KEYS)


# --- the sink in the parsed stack --------------------------------------------------------------------


def test_a_stack_without_a_sink_has_none_and_role_cages_is_the_default():
    config = parsed(prod_raw())
    assert config.audit_sink is None
    explicit = edited(prod_raw(), ("hosts[0].role", "cages"), ("hosts[1].role", "cages"))
    assert parsed(explicit) == config


def test_a_cloud_sink_is_the_stacks_audit_sink_with_the_default_retention_and_never_a_cage_host():
    config = parsed(with_sink())
    sink = config.audit_sink
    assert isinstance(sink, AuditSink)
    assert (sink.host.name, sink.host.kind, sink.host.server_type, sink.host.location) == (
        "fsn1-trail", "cloud", "cx22", "fsn1"
    )  # fmt: skip
    assert sink.retention_days == DEFAULT_RETENTION_DAYS == 400
    assert sink.max_use == 40 * GB - HOST_RESERVE.disk == 30 * GB  # the default: the disk less the reserve
    assert [h.name for h in config.hosts] == ["fsn1-cage-01", "hel1-metal-01"]
    assert config.pools == ()


def test_a_dedicated_sink_takes_its_retention_and_maxuse_from_the_project_size_parser():
    config = parsed(with_sink(dict(METAL_SINK, retentionDays=3650, maxUse="200GiB")))
    sink = config.audit_sink
    assert (sink.host.name, sink.host.kind, sink.host.address) == ("hel1-trail", "dedicated", "198.51.100.9")
    assert (sink.retention_days, sink.max_use) == (3650, 200 * GiB)
    assert parsed(with_sink(dict(METAL_SINK, retentionDays=1, maxUse="1GiB"))).audit_sink.retention_days == 1
    # Exactly the room of the cx22 (its disk less the reserve) is allowed.
    assert parsed(with_sink(dict(SINK, maxUse="30GB"))).audit_sink.max_use == 30 * GB


def test_the_default_retention_is_explained_where_the_field_is_described():
    for model in (CloudHostModel, DedicatedHostModel):
        field = model.model_fields["retention_days"]
        assert field.default == 400
        assert "a year plus a quarter, a common minimum for regulated audit logs" in field.description
        assert model.model_fields["max_use"].description == ALLOWED["hosts[].maxUse"]
    assert "a year plus a quarter" in ALLOWED["hosts[].retentionDays"]


def test_the_project_stack_files_load_unchanged_and_have_no_sink():
    for stack in ("prod", "local"):
        raw, secret_keys = load_stack_file(ROOT / f"Pulumi.{stack}.yaml")
        config = parse_stack_config(raw, stack=stack, secret_keys=secret_keys)
        assert config.audit_sink is None
        listed = [h["name"] for h in raw["clawstaff:hosts"] if h["kind"] != "pool"]
        assert [h.name for h in config.hosts] == listed


# --- mistakes: (raw, stack, key, value as shown, reason, allowed) --------------------------------------

SECOND = dict(SINK, name="fsn1-trail-2")
MISTAKES: dict[str, tuple[dict[str, Any], str, str, str | None, str, str]] = {
    "a second sink names both": (
        with_sink(SINK, ("hosts[3]", SECOND)), "prod", "clawstaff:hosts[3].role", '"audit-sink"',
        "a second audit sink: fsn1-trail-2 (hosts[3]) and fsn1-trail (hosts[2])",
        "at most one host with role audit-sink per stack",
    ),
    "a Debian 12 sink (its journal-remote has no MaxUse=)": (
        with_sink(dict(SINK, image="debian-12")), "prod", "clawstaff:hosts[2].image", '"debian-12"',
        "debian-12 cannot be the audit sink: its journal-remote (systemd 252) has no MaxUse=",
        "debian-13 for the host with role audit-sink",
    ),
    "a pool cannot be the sink": (
        edited(prod_raw(), ("hosts[2]", dict(POOL, role="audit-sink"))), "prod", "clawstaff:hosts[2].role",
        '"audit-sink"', "a pool host cannot be the audit sink", "the audit sink is a cloud or dedicated host",
    ),
    "a local host cannot be the sink": (
        edited(local_raw(), ("hosts[0].role", "audit-sink")), "local", "clawstaff:hosts[0].role", '"audit-sink"',
        "a local host cannot be the audit sink", "cages (the default)",
    ),
    "an unknown role": (
        edited(prod_raw(), ("hosts[0].role", "sink")), "prod", "clawstaff:hosts[0].role", '"sink"',
        "not a host role", "cages (the default: the host runs cages) or audit-sink",
    ),
    "a claw pinned to the sink": (
        with_sink(SINK, ("claws[0].host", "fsn1-trail")), "prod", "clawstaff:claws[0].host", '"fsn1-trail"',
        "the audit sink (hosts[2]), which holds no cages", "a host that holds cages: one of fsn1-cage-01, hel1-metal-01",
    ),
    "a lock entry on the sink": (
        with_sink(SINK, ("clawstaff:placementLock", {"acme-support": "fsn1-trail"})), "prod",
        "clawstaff:placementLock.acme-support", '"fsn1-trail"', "the audit sink (hosts[2]), which holds no cages",
        "pulumi config rm --path 'placementLock.acme-support'",
    ),
    "retention of zero days": (
        with_sink(dict(SINK, retentionDays=0)), "prod", "clawstaff:hosts[2].retentionDays", "0",
        "not from 1 to 3650", "a whole number from 1 to 3650 (default 400",
    ),
    "retention over ten years": (
        with_sink(dict(SINK, retentionDays=3651)), "prod", "clawstaff:hosts[2].retentionDays", "3651",
        "not from 1 to 3650", "a year plus a quarter",
    ),
    "retention as text": (
        with_sink(dict(SINK, retentionDays="400")), "prod", "clawstaff:hosts[2].retentionDays", '"400"',
        "not a whole number", "from 1 to 3650",
    ),
    "retention as a fraction": (
        with_sink(dict(SINK, retentionDays=30.5)), "prod", "clawstaff:hosts[2].retentionDays", "30.5",
        "not a whole number", "from 1 to 3650",
    ),
    "retention as true": (
        with_sink(dict(SINK, retentionDays=True)), "prod", "clawstaff:hosts[2].retentionDays", "true",
        "not a whole number", "from 1 to 3650",
    ),
    "maxUse not a size": (
        with_sink(dict(SINK, maxUse="lots")), "prod", "clawstaff:hosts[2].maxUse", '"lots"', "not a size",
        "a size of at least 1GiB such as 200GiB",
    ),
    "maxUse below the smallest": (
        with_sink(dict(SINK, maxUse="500MiB")), "prod", "clawstaff:hosts[2].maxUse", '"500MiB"', "less than 1GiB",
        "a size of at least 1GiB",
    ),
    "maxUse beyond the sink's disk": (
        with_sink(dict(SINK, maxUse="40GB")), "prod", "clawstaff:hosts[2].maxUse", '"40GB"',
        "more than the audit sink fsn1-trail can hold (40GB of disk less 10GB kept for the system)",
        "at most 30GB on this host",
    ),
    "a sink whose disk leaves no room": (
        with_sink(dict(METAL_SINK, disk="10GB")), "prod", "clawstaff:hosts[2].disk", '"10GB"',
        "too small for the audit sink: 10GB of disk less 10GB kept for the system leaves 0B for the trail",
        "a disk at least 1GiB larger than the 10GB kept",
    ),
    "retentionDays on a cloud host that holds cages": (
        edited(prod_raw(), ("hosts[0].retentionDays", 30)), "prod", "clawstaff:hosts[0].retentionDays", "30",
        "a key of the audit sink, and fsn1-cage-01 holds cages (role cages)",
        "retentionDays only on the host with role: audit-sink",
    ),
    "maxUse on a dedicated host that holds cages": (
        edited(prod_raw(), ("hosts[1].maxUse", "100GiB")), "prod", "clawstaff:hosts[1].maxUse", '"100GiB"',
        "a key of the audit sink, and hel1-metal-01 holds cages", "maxUse only on the host with role: audit-sink",
    ),
    "the default retention written on a host that holds cages": (
        edited(prod_raw(), ("hosts[0].retentionDays", 400)), "prod", "clawstaff:hosts[0].retentionDays", "400",
        "a key of the audit sink", "only on the host with role: audit-sink",
    ),
    "retentionDays on a pool": (
        edited(prod_raw(), ("hosts[2]", dict(POOL, retentionDays=30))), "prod", "clawstaff:hosts[2].retentionDays",
        "30", "not a key of a pool host", "the keys name, kind, serverType, locations, max",
    ),
    "maxUse on a local host": (
        edited(local_raw(), ("hosts[0].maxUse", "5GiB")), "local", "clawstaff:hosts[0].maxUse", '"5GiB"',
        "not a key of a local host", "the keys name, kind, cpus",
    ),
    "drain on the sink": (
        with_sink(dict(SINK, drain=True)), "prod", "clawstaff:hosts[2].drain", "true",
        "a key of a host that holds cages, and fsn1-trail is the audit sink", "no drain on the audit sink",
    ),
    "maxCages on the sink": (
        with_sink(dict(SINK, maxCages=10)), "prod", "clawstaff:hosts[2].maxCages", "10",
        "a key of a host that holds cages", "no maxCages on the audit sink (it holds no cages)",
    ),
    "only a sink, no host for the cages": (
        edited(prod_raw(), ("clawstaff:hosts", [SINK]), ("claws[1].host", None)), "prod", "clawstaff:hosts",
        show_value([SINK]), "only the audit sink (fsn1-trail): no host holds cages",
        "at least one host with role cages (the default) or a pool, beside the audit sink",
    ),
    "a sink with the name of another host": (
        with_sink(dict(SINK, name="fsn1-cage-01")), "prod", "clawstaff:hosts[2].name", '"fsn1-cage-01"',
        "a duplicate: hosts[0] has the same name", "unique among the hosts",
    ),
    "a sink at another host's address": (
        with_sink(dict(METAL_SINK, address="198.51.100.7")), "prod", "clawstaff:hosts[2].address",
        '"198.51.100.7"', "a duplicate: hosts[1] has it", "public IPv4 or IPv6 address",
    ),
}  # fmt: skip


@pytest.mark.parametrize(("raw", "stack", "key", "value", "reason", "allowed"), MISTAKES.values(), ids=MISTAKES.keys())
def test_each_sink_mistake_names_file_key_value_and_what_is_allowed(raw, stack, key, value, reason, allowed):
    error = config_error(raw, stack=stack)
    assert error.stack_file == f"Pulumi.{stack}.yaml"
    assert_names(error, key, value, reason, allowed)


def test_a_sink_beside_a_local_host_is_refused_as_any_server_is():
    error = config_error(edited(local_raw(), ("hosts[1]", SINK)), stack="local")
    assert_names(error, "clawstaff:hosts[0].kind", '"local"', "a local host in a stack with a cloud host (hosts[1])",
                 "a local host alone")  # fmt: skip


def test_a_runtime_only_the_sink_could_run_is_refused_naming_only_the_cage_hosts():
    raw = with_sink(SINK, ("hosts[0].image", "debian-12"), ("hosts[1].image", "debian-12"),
                    ("claws[0].runtime", "gvisor"))  # fmt: skip
    error = config_error(raw)
    assert error.key == "clawstaff:claws[0].runtime", str(error)
    assert "which no host of this stack runs" in str(error)
    assert "hosts[0]" in str(error) and "hosts[1]" in str(error) and "hosts[2]" not in str(error)


# --- placement and host counting never see the sink -----------------------------------------------------


def test_a_claw_too_large_for_the_cage_hosts_is_refused_even_if_the_sink_could_hold_it():
    big = dict(METAL_SINK, cpus=64, memory="512GiB")
    error = config_error(with_sink(big, ("claws[0].cpus", 32)))
    assert error.key == "clawstaff:claws[0].cpus", str(error)
    assert "the largest host, hel1-metal-01, has 16" in str(error) and "hel1-trail" not in str(error)


def test_adding_a_sink_moves_no_cage_and_placement_never_puts_one_there():
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    before = place_fleet(parse_stack_config(raw, stack="prod", secret_keys=secret_keys))
    raw = copy.deepcopy(raw)
    raw["clawstaff:hosts"].append(dict(METAL_SINK, cpus=256, memory="1TiB", disk="20TB"))  # the largest host
    config = parse_stack_config(raw, stack="prod", secret_keys=secret_keys)
    after = place_fleet(config)
    assert after == before
    assert config.audit_sink.host.name == "hel1-trail"
    assert "hel1-trail" not in after.claws.values() and "hel1-trail" not in {h.name for h in after.hosts}


def test_full_cage_hosts_are_a_placement_error_and_the_sink_takes_no_overflow():
    claws = [{"name": f"claw-{i:02d}", "org": "acme", "image": prod_raw()["clawstaff:claws"][0]["image"], "cpus": 1,
              "memory": "1GiB", "pids": 128, "tmpfs": "64MiB"} for i in range(4)]  # fmt: skip
    cage_host = {"name": "fsn1-cage-01", "kind": "cloud", "serverType": "cx22", "location": "fsn1"}  # 1.5 cpus
    raw = edited(prod_raw(), ("clawstaff:hosts", [cage_host, METAL_SINK]), ("clawstaff:claws", claws),
                 ("clawstaff:clawSecrets", {}))  # fmt: skip
    with pytest.raises(PlacementError, match=r"3 claw\(s\) do not fit") as caught:
        place_fleet(parsed(raw))
    assert "hel1-trail" not in str(caught.value)


def test_the_fleet_makes_no_cage_host_for_the_sink():
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    raw = copy.deepcopy(raw)
    raw["clawstaff:hosts"].append(dict(SINK))
    evaluation = mockrun.evaluate("prod", raw, secret_keys)
    assert "fsn1-trail" not in evaluation.outputs["hosts"]
    assert all(claw["host"] != "fsn1-trail" for claw in evaluation.outputs["claws"].values())
    # Its resources are the AuditSink's (tests/unit/test_sink.py): no ClawHost, no Docker, no cage.
    sink = {(r.type, r.name) for r in evaluation.resources if r.name.startswith("fsn1-trail")}
    assert sink == {
        ("clawstaff:fleet:AuditSink", "fsn1-trail"), ("hcloud:index/firewall:Firewall", "fsn1-trail-firewall"),
        ("hcloud:index/server:Server", "fsn1-trail-server"), ("command:remote:Command", "fsn1-trail-host-key"),
        ("command:remote:Command", "fsn1-trail-bootstrap"),
        ("command:remote:Command", "fsn1-trail-trail-certificates"),
    }  # fmt: skip


# --- whatever the sink's keys hold, a ConfigError or a config ----------------------------------------------


@settings(max_examples=200, deadline=None)
@given(key=st.sampled_from(["role", "retentionDays", "maxUse", "kind", "drain", "maxCages"]), value=_json_values)
def test_any_value_at_a_sink_key_gives_a_config_error_or_a_config(key, value):
    raw = with_sink(dict(SINK, **{key: value}))
    try:
        config = parsed(raw)
    except ConfigError as error:
        message = str(error)
        assert message.startswith("Pulumi.prod.yaml: clawstaff:") and "; allowed: " in message
        assert "TOPSECRET" not in message and SEALING_KEY not in message
    else:
        assert config.audit_sink is None or config.audit_sink.host.name == "fsn1-trail"


# --- a provisioned sink says what is not done yet ----------------------------------------------------------


def test_a_configured_sink_is_provisioned_and_the_output_and_a_warning_say_the_cage_hosts_do_not_upload_yet():
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    raw = copy.deepcopy(raw)
    raw["clawstaff:hosts"].append(dict(SINK, retentionDays=730))
    evaluation = mockrun.evaluate("prod", raw, secret_keys)
    assert evaluation.outputs["auditSink"] == {
        "host": "fsn1-trail", "kind": "cloud", "location": "fsn1", "serverType": "cx22", "retentionDays": 730,
        "maxUse": "30GB", "url": "https://10.0.2.10:19532", "provisioned": True, "cageHostsUpload": False,
    }  # fmt: skip
    # pulumi.log.warn: what `pulumi up` shows, once.
    [warning] = evaluation.warnings
    assert warning.startswith("the audit sink fsn1-trail (retention 730 days, at most 30GB) is provisioned (its server")
    assert "it takes uploads at https://10.0.2.10:19532" in warning
    assert "no cage host uploads to it yet: each cage host keeps its own trail" in warning
    assert "not provisioned" not in warning
    # The offline preview prints the sink in a table of its own, then the warning after the tables.
    console = Console(record=True, width=400)
    preview.render(preview.build_plan(evaluation, []), evaluation.outputs, console, evaluation.warnings)
    text = console.export_text()
    assert "warning: " + warning in text
    row = next(line for line in text.splitlines() if "https://10.0.2.10:19532" in line and "│" in line)
    cells = [cell.strip() for cell in row.strip("│ ").split("│")]
    assert cells == [
        "fsn1-trail",
        "cloud",
        "cx22 fsn1",
        "https://10.0.2.10:19532",
        "730 days",
        "30GB",
        "yes",
        "not yet",
    ]
    assert text.index("Audit sink") < text.index("warning: ")


def test_a_dedicated_sink_is_summarised_at_its_own_address():
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    raw = copy.deepcopy(raw)
    raw["clawstaff:hosts"].append(dict(METAL_SINK))
    evaluation = mockrun.evaluate("prod", raw, secret_keys)
    summary = evaluation.outputs["auditSink"]
    assert (summary["kind"], summary["url"], summary["provisioned"], summary["cageHostsUpload"]) == (
        "dedicated", "https://198.51.100.9:19532", True, False
    )  # fmt: skip
    [warning] = evaluation.warnings
    assert "hel1-trail" in warning and "no cage host uploads to it yet" in warning


def test_a_stack_without_a_sink_has_no_sink_output_and_no_warning():
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    evaluation = mockrun.evaluate("prod", raw, secret_keys)
    assert "auditSink" not in evaluation.outputs and evaluation.warnings == []
