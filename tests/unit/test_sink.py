"""The audit sink as resources (components/sink.py, components/server.py) under Pulumi's mocks, and the
Fleet's pure choices for it: its address, what its firewall admits, the dates of its certificates."""

from __future__ import annotations

import copy
import hashlib
import ipaddress
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st
from pulumi.runtime import rpc

from components.config import load_stack_file, parse_stack_config
from components.fleet import (
    NETWORK_ZONES,
    PRIVATE_NETWORK,
    ZONE_SUBNET_BASE,
    private_addresses,
    sink_address,
    sink_private_address,
    zone_subnet,
)
from components.hostkeys import derive_first_contact_key, derive_ssh_host_key
from components.hostscripts import header_variables, script_facts
from components.model import Capacity, Host
from components.sinkconfig import render_sink_certs_install, sink_certificates, sink_certificates_stdin
from components.trailpki import yearly_validity
from tests.conftest import ROOT, fixture_images_record
from tests.unit.test_audit_sink import METAL_SINK, SINK
from tests.unit.test_hostscripts import RENDERED_EXCLUDES, shellcheck, stack_scripts
from tests.unit.test_sinkconfig import set_elements
from tests.unit.test_hosts import FIREWALL, REMOTE, SERVER, _connection, _one
from tools import mockrun

SINK_TYPE = "clawstaff:fleet:AuditSink"
DOCKER_PROVIDER = "pulumi:providers:docker"
# A program that builds the Fleet on a date of the test's (test:now), as __main__.py does on today's.
DATED_PROGRAM = """
from datetime import datetime

import pulumi

from components import config as stack_config
from components.fleet import Fleet

Fleet("fleet", stack_config.load(), now=datetime.fromisoformat(pulumi.Config("test").require("now")))
"""


def _raw(sink: dict[str, Any] | None) -> tuple[dict[str, Any], set[str]]:
    raw, secret_keys = load_stack_file(ROOT / "Pulumi.prod.yaml")
    raw = copy.deepcopy(raw)
    if sink is not None:
        raw["clawstaff:hosts"].append(dict(sink))
    return raw, secret_keys


def _evaluate(sink: dict[str, Any] | None, now: str | None = None, tmp_path: Path | None = None) -> mockrun.Evaluation:
    raw, secret_keys = _raw(sink)
    program = None
    if now is not None:
        assert tmp_path is not None
        program = tmp_path / "dated.py"
        program.write_text(DATED_PROGRAM)
        raw["test:now"] = now
    with fixture_images_record():
        return mockrun.evaluate("prod", raw, secret_keys, program=program)


def _config(sink: dict[str, Any]):
    raw, secret_keys = _raw(sink)
    return parse_stack_config(raw, stack="prod", secret_keys=secret_keys)


@pytest.fixture(scope="module")
def cloud_eval() -> mockrun.Evaluation:
    return _evaluate(SINK)


@pytest.fixture(scope="module")
def metal_eval() -> mockrun.Evaluation:
    return _evaluate(METAL_SINK)


def _sink_children(evaluation: mockrun.Evaluation, name: str) -> dict[tuple[str, str], mockrun.Registered]:
    (component,) = [r for r in evaluation.by_type(SINK_TYPE) if r.name == name]
    fleet = next(r for r in evaluation.resources if r.type == "clawstaff:fleet:Fleet")
    assert component.parent == fleet.urn
    return {(r.type, r.name): r for r in evaluation.resources if r.parent == component.urn}


def _pinned(command: mockrun.Registered) -> tuple[str, str, str]:
    connection = _connection(command)
    return connection["host"], connection["user"], connection["hostKey"]


def _bootstrap_header(evaluation: mockrun.Evaluation, name: str) -> dict[str, str]:
    return header_variables(_one(evaluation, REMOTE, f"{name}-bootstrap").inputs["stdin"])


# --- the Fleet's choices (pure) ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("location", "address"),
    [("fsn1", "10.0.2.10"), ("nbg1", "10.0.2.10"), ("hel1", "10.0.2.10"), ("ash", "10.0.66.10"),
     ("hil", "10.0.130.10"), ("sin", "10.0.194.10")],
)  # fmt: skip
def test_a_cloud_sinks_address_is_fixed_by_its_zone_inside_the_zones_subnet(location: str, address: str) -> None:
    assert sink_private_address(location) == address
    subnet = ipaddress.ip_network(zone_subnet(NETWORK_ZONES[location]))
    assert ipaddress.ip_address(address) in subnet and ipaddress.ip_address(address) in ipaddress.ip_network(
        PRIVATE_NETWORK
    )


@given(st.lists(st.tuples(st.sampled_from(sorted(NETWORK_ZONES)), st.integers(0, 200)), max_size=40))
def test_no_listed_cage_host_ever_has_the_sinks_address(placed: list[tuple[str, int]]) -> None:
    hosts = [Host(f"cage-{location}-{n}", "cloud", Capacity(1, 1, 1), "cx22", location) for location, n in placed]
    taken = set(private_addresses(hosts).values())
    assert not taken & {sink_private_address(location) for location in NETWORK_ZONES}


def test_the_sink_is_reached_at_its_private_address_on_cloud_and_its_own_address_when_dedicated() -> None:
    assert sink_address(_config(SINK).audit_sink) == "10.0.2.10"
    assert sink_address(_config(METAL_SINK).audit_sink) == "198.51.100.9"
    assert set(ZONE_SUBNET_BASE) == set(NETWORK_ZONES.values())


# --- a cloud sink -----------------------------------------------------------------------------------------


def test_a_cloud_sink_is_a_server_behind_a_firewall_that_admits_admin_ssh_alone(cloud_eval, prod_config) -> None:
    kids = _sink_children(cloud_eval, "fsn1-trail")
    assert set(kids) == {
        (FIREWALL, "fsn1-trail-firewall"), (SERVER, "fsn1-trail-server"), (REMOTE, "fsn1-trail-host-key"),
        (REMOTE, "fsn1-trail-bootstrap"), (REMOTE, "fsn1-trail-trail-certificates"),
    }  # fmt: skip
    firewall = kids[(FIREWALL, "fsn1-trail-firewall")]
    assert firewall.inputs["rules"] == [
        {"direction": "in", "protocol": "tcp", "port": "22", "sourceIps": list(prod_config.admin.ssh_allowed_cidrs),
         "description": "ssh from admin networks"}
    ]  # fmt: skip
    server = kids[(SERVER, "fsn1-trail-server")]
    assert server.inputs["firewallIds"] == [int(mockrun.mock_id(FIREWALL, firewall.name))]
    assert server.inputs["labels"] == {"clawstaff-host": "fsn1-trail", "clawstaff-role": "audit-sink"}
    assert (server.inputs["serverType"], server.inputs["location"], server.inputs["image"]) == ("cx22", "fsn1",
                                                                                                "debian-13")  # fmt: skip
    assert "placementGroupId" not in server.inputs  # in no cage host's spread group
    assert len(server.inputs["sshKeys"]) == len(prod_config.admin.ssh_public_keys)
    (network,) = server.inputs["networks"]
    (stack_network,) = cloud_eval.by_type("hcloud:index/network:Network")
    assert network == {"networkId": int(mockrun.mock_id(stack_network.type, stack_network.name)), "ip": "10.0.2.10"}
    subnet = next(r for r in cloud_eval.by_type("hcloud:index/networkSubnet:NetworkSubnet"))
    assert subnet.urn in server.dependencies  # its zone's subnet exists before it
    # And the cage hosts keep their role.
    cage = _one(cloud_eval, SERVER, "fsn1-cage-01-server")
    assert cage.inputs["labels"] == {"clawstaff-host": "fsn1-cage-01", "clawstaff-role": "cage-host"}


def test_a_cloud_sink_boots_with_its_bootstrap_and_a_first_contact_key_only(cloud_eval, prod_config) -> None:
    server = _one(cloud_eval, SERVER, "fsn1-trail-server")
    assert rpc.is_rpc_secret(server.inputs["userData"]), "user-data carries the first-contact key"
    user_data = rpc.unwrap_rpc_secret(server.inputs["userData"])
    document = yaml.safe_load(user_data)
    first = derive_first_contact_key(prod_config.sealing_key, "fsn1-trail")
    key = derive_ssh_host_key(prod_config.sealing_key, "fsn1-trail")
    assert document["ssh_keys"]["ed25519_public"] == first.public_openssh
    assert key.public_openssh.split()[1] not in user_data  # never the long-lived host key
    (written,) = document["write_files"]
    bootstrap = _one(cloud_eval, REMOTE, "fsn1-trail-bootstrap")
    assert written["content"] == bootstrap.inputs["stdin"]  # the same script cloud-init and SSH run
    assert script_facts(written["content"])["script"] == "sink-bootstrap"
    ca, sink = sink_certificates(prod_config.sealing_key, "prod", "fsn1-trail", "10.0.2.10",
                                 yearly_validity(datetime.now(timezone.utc)))  # fmt: skip
    assert sink.key_pem.splitlines()[1] not in user_data and ca.key_pem.splitlines()[1] not in user_data
    install = _one(cloud_eval, REMOTE, "fsn1-trail-host-key")
    assert _connection(install)["hostKey"] == first.public_openssh
    assert rpc.unwrap_rpc_secret(install.inputs["stdin"]) == key.private_openssh
    assert "AFTER_CLOUD_INIT=1" in install.inputs["create"]


def test_a_cloud_sinks_firewall_admits_the_trail_port_from_the_private_network(cloud_eval) -> None:
    header = _bootstrap_header(cloud_eval, "fsn1-trail")
    rules = header["FIREWALL_RULES"]
    assert (set_elements(rules, "trail_hosts_v4"), set_elements(rules, "trail_hosts_v6")) == ([PRIVATE_NETWORK], [])
    assert "\naccept = 10.0.2.10:19532\n" in header["SINK_FILES"]  # stunnel on the private address alone


def test_every_connection_after_the_first_pins_the_derived_key_and_the_certificates_follow_the_bootstrap(
    cloud_eval, prod_config
) -> None:
    key = derive_ssh_host_key(prod_config.sealing_key, "fsn1-trail")
    bootstrap = _one(cloud_eval, REMOTE, "fsn1-trail-bootstrap")
    certificates = _one(cloud_eval, REMOTE, "fsn1-trail-trail-certificates")
    for command in (bootstrap, certificates):
        assert _connection(command)["hostKey"] == key.public_openssh
        assert _connection(command)["host"] == mockrun.computed_outputs(SERVER, "fsn1-trail-server", {})["ipv4Address"]
    assert bootstrap.inputs["triggers"] == [hashlib.sha256(bootstrap.inputs["stdin"].encode()).hexdigest()]
    assert _one(cloud_eval, REMOTE, "fsn1-trail-host-key").urn in bootstrap.dependencies
    assert bootstrap.urn in certificates.dependencies


def test_the_certificates_travel_as_secret_stdin_and_are_known_by_their_fingerprints(cloud_eval, prod_config) -> None:
    certificates = _one(cloud_eval, REMOTE, "fsn1-trail-trail-certificates")
    validity = yearly_validity(datetime.now(timezone.utc))
    ca, sink = sink_certificates(prod_config.sealing_key, "prod", "fsn1-trail", "10.0.2.10", validity)
    assert rpc.is_rpc_secret(certificates.inputs["stdin"]), "the sink's key travels only as secret stdin"
    assert rpc.unwrap_rpc_secret(certificates.inputs["stdin"]) == sink_certificates_stdin(ca, sink)
    assert certificates.inputs["create"] == render_sink_certs_install("10.0.2.10")
    assert certificates.inputs["triggers"] == [ca.fingerprint, sink.fingerprint]
    key_lines = sink.key_pem.splitlines()[1:-1]
    assert not any(line in str(certificates.inputs["triggers"]) + certificates.inputs["create"] for line in key_lines)
    assert hashlib.sha256(sink.key_pem.encode()).hexdigest() not in certificates.inputs["triggers"]


def test_the_stack_output_carries_no_secret_of_the_sink(cloud_eval, prod_config) -> None:
    _, sink = sink_certificates(prod_config.sealing_key, "prod", "fsn1-trail", "10.0.2.10",
                                yearly_validity(datetime.now(timezone.utc)))  # fmt: skip
    text = str(cloud_eval.outputs)
    assert "PRIVATE" not in text and sink.key_pem.splitlines()[1] not in text


# --- a dedicated sink -------------------------------------------------------------------------------------


def test_a_dedicated_sink_is_adopted_like_a_dedicated_cage_host(metal_eval, prod_config) -> None:
    kids = _sink_children(metal_eval, "hel1-trail")
    assert set(kids) == {(REMOTE, "hel1-trail-host-key"), (REMOTE, "hel1-trail-bootstrap"),
                         (REMOTE, "hel1-trail-trail-certificates")}  # fmt: skip
    install = kids[(REMOTE, "hel1-trail-host-key")]
    assert _pinned(install) == ("198.51.100.9", "root", METAL_SINK["hostKey"])
    key = derive_ssh_host_key(prod_config.sealing_key, "hel1-trail")
    assert rpc.is_rpc_secret(install.inputs["stdin"]) and key.private_openssh not in install.inputs["create"]
    for name in ("hel1-trail-bootstrap", "hel1-trail-trail-certificates"):
        assert _pinned(kids[(REMOTE, name)]) == ("198.51.100.9", "root", key.public_openssh)
    assert install.urn in kids[(REMOTE, "hel1-trail-bootstrap")].dependencies
    assert not [r for r in metal_eval.by_type(SERVER) if r.name.startswith("hel1-trail")]
    assert not [r for r in metal_eval.by_type(DOCKER_PROVIDER) if r.name.startswith("hel1-trail")]


def test_a_dedicated_sink_admits_the_trail_port_from_each_cage_hosts_addresses_alone(metal_eval, prod_config) -> None:
    rules = _bootstrap_header(metal_eval, "hel1-trail")["FIREWALL_RULES"]
    expected_v4, expected_v6 = set(), set()
    for host in prod_config.hosts:
        if host.kind == "cloud":
            outputs = mockrun.computed_outputs(SERVER, f"{host.name}-server", {})
            expected_v4.add(f"{outputs['ipv4Address']}/32")
            expected_v6.add(outputs["ipv6Network"])
        else:
            expected_v4.add(f"{host.address}/32")
    assert set(set_elements(rules, "trail_hosts_v4")) == expected_v4 and len(expected_v4) == len(prod_config.hosts)
    assert set(set_elements(rules, "trail_hosts_v6")) == expected_v6
    assert PRIVATE_NETWORK not in rules
    header = _bootstrap_header(metal_eval, "hel1-trail")
    assert "\naccept = 198.51.100.9:19532\n" in header["SINK_FILES"]
    certificates = _one(metal_eval, REMOTE, "hel1-trail-trail-certificates")
    assert header_variables(certificates.inputs["create"])["ADDRESS"] == "198.51.100.9"


def test_a_dedicated_sink_beside_dedicated_cage_hosts_alone_needs_no_hetzner_object(tmp_path) -> None:
    raw, secret_keys = _raw(METAL_SINK)
    raw["clawstaff:hosts"] = [h for h in raw["clawstaff:hosts"] if h.get("kind") != "cloud"]
    raw["clawstaff:claws"] = [dict(c, host="hel1-metal-01") for c in raw["clawstaff:claws"]]
    raw["clawstaff:placementLock"] = {}
    with fixture_images_record():
        evaluation = mockrun.evaluate("prod", raw, secret_keys)
    assert not [r for r in evaluation.resources if r.type.startswith("hcloud:")]
    rules = _bootstrap_header(evaluation, "hel1-trail")["FIREWALL_RULES"]
    assert (set_elements(rules, "trail_hosts_v4"), set_elements(rules, "trail_hosts_v6")) == (["198.51.100.7/32"], [])


# --- both: linted scripts, and the same certificates run after run ---------------------------------------------


@pytest.mark.parametrize("which", ["cloud", "metal"])
def test_shellcheck_passes_on_every_script_a_stack_with_a_sink_renders(which, cloud_eval, metal_eval, tmp_path) -> None:
    scripts = stack_scripts(cloud_eval if which == "cloud" else metal_eval)
    name = "fsn1-trail" if which == "cloud" else "hel1-trail"
    sink = {n: t for n, t in scripts.items() if n.startswith(f"{name}-")}
    assert set(sink) == {f"{name}-host-key.create", f"{name}-bootstrap.stdin", f"{name}-trail-certificates.create"}
    paths = []
    for label, text in sorted(sink.items()):
        path = tmp_path / f"{label}.sh"
        path.write_text(text)
        paths.append(path)
    shellcheck(paths, RENDERED_EXCLUDES)


def test_every_run_in_a_year_renders_the_same_sink_and_a_new_year_only_new_certificates(tmp_path) -> None:
    june, november, next_year = (
        _evaluate(SINK, now, tmp_path) for now in ("2026-06-01T09:00:00+00:00", "2026-11-30T23:00:00+00:00",
                                                    "2027-01-02T08:00:00+00:00")
    )  # fmt: skip

    def sink_inputs(evaluation):
        return {r.name: mockrun.unwrap_secrets(dict(r.inputs)) for r in evaluation.resources
                if r.name.startswith("fsn1-trail")}  # fmt: skip

    assert sink_inputs(june) == sink_inputs(november)  # no run in the year touches the sink
    before, after = sink_inputs(november), sink_inputs(next_year)
    changed = {name for name in before if before[name] != after[name]}
    assert changed == {"fsn1-trail-trail-certificates"}  # the first run of a year rolls the certificates
    assert before["fsn1-trail-trail-certificates"]["create"] == after["fsn1-trail-trail-certificates"]["create"]
    assert before["fsn1-trail-trail-certificates"]["triggers"] != after["fsn1-trail-trail-certificates"]["triggers"]
