"""ClawHost under Pulumi's mocks: the resources each host kind registers, their parents and inputs."""

from __future__ import annotations

import hashlib

import yaml
from pulumi.runtime import rpc

from components.hostkeys import derive_first_contact_key, derive_ssh_host_key
from tools import mockrun

SERVER = "hcloud:index/server:Server"
FIREWALL = "hcloud:index/firewall:Firewall"
REMOTE = "command:remote:Command"
DOCKER_PROVIDER = "pulumi:providers:docker"
HOST = "clawstaff:fleet:ClawHost"


def _one(evaluation, type_, name):
    found = [r for r in evaluation.resources if r.type == type_ and r.name == name]
    assert len(found) == 1, f"expected one {type_} named {name}, found {len(found)}"
    return found[0]


def _connection(command):
    # pulumi-command marks the whole connection secret (it may carry a password or a private key).
    assert rpc.is_rpc_secret(command.inputs["connection"])
    return mockrun.unwrap_secrets(command.inputs["connection"])


def _children(evaluation, parent_urn):
    return [r for r in evaluation.resources if r.parent == parent_urn]


def test_every_prod_host_has_a_component_with_its_resources_parented(prod_eval, prod_config):
    hosts = {r.name: r for r in prod_eval.by_type(HOST)}
    assert set(hosts) == {h.name for h in prod_config.hosts}
    for host in prod_config.hosts:
        kids = {(r.type, r.name) for r in _children(prod_eval, hosts[host.name].urn)}
        assert (DOCKER_PROVIDER, f"{host.name}-docker") in kids
        assert (REMOTE, f"{host.name}-bootstrap") in kids
        if host.kind == "cloud":
            assert {(SERVER, f"{host.name}-server"), (FIREWALL, f"{host.name}-firewall")} <= kids
        else:
            assert (REMOTE, f"{host.name}-host-key") in kids


def test_cloud_firewall_admits_only_ssh_from_admin_networks(prod_eval, prod_config):
    for host in (h for h in prod_config.hosts if h.kind == "cloud"):
        firewall = _one(prod_eval, FIREWALL, f"{host.name}-firewall")
        rules = firewall.inputs["rules"]
        assert rules == [
            {
                "direction": "in",
                "protocol": "tcp",
                "port": "22",
                "sourceIps": list(prod_config.admin.ssh_allowed_cidrs),
                "description": "ssh from admin networks",
            }
        ]
        server = _one(prod_eval, SERVER, f"{host.name}-server")
        assert server.inputs["firewallIds"] == [int(mockrun.mock_id(FIREWALL, firewall.name))]


def test_cloud_server_is_spread_networked_and_booted_with_secret_user_data(prod_eval, prod_config):
    group_ids = {
        int(mockrun.mock_id(r.type, r.name)) for r in prod_eval.by_type("hcloud:index/placementGroup:PlacementGroup")
    }
    assert all(r.inputs["type"] == "spread" for r in prod_eval.by_type("hcloud:index/placementGroup:PlacementGroup"))
    private_ips = set()
    for host in (h for h in prod_config.hosts if h.kind == "cloud"):
        server = _one(prod_eval, SERVER, f"{host.name}-server")
        assert server.inputs["serverType"] == host.server_type
        assert server.inputs["location"] == host.location
        assert server.inputs["image"] == host.image
        assert server.inputs["placementGroupId"] in group_ids
        (net,) = server.inputs["networks"]
        private_ips.add(net["ip"])
        assert rpc.is_rpc_secret(server.inputs["userData"]), "user-data carries the first-contact key"
        user_data = rpc.unwrap_rpc_secret(server.inputs["userData"])
        assert user_data.startswith("#cloud-config")
        cloud = yaml.safe_load(user_data)
        first = derive_first_contact_key(prod_config.sealing_key, host.name)
        key = derive_ssh_host_key(prod_config.sealing_key, host.name)
        assert cloud["ssh_keys"]["ed25519_public"].split()[:2] == first.public_openssh.split()[:2]
        assert key.public_openssh.split()[1] not in user_data  # never the long-lived host key
        # The first contact pins the first-contact key and installs the derived one from stdin.
        install = _one(prod_eval, REMOTE, f"{host.name}-host-key")
        assert _connection(install)["hostKey"] == first.public_openssh
        assert rpc.unwrap_rpc_secret(install.inputs["stdin"]) == key.private_openssh
        assert "AFTER_CLOUD_INIT=1" in install.inputs["create"]
        assert len(server.inputs["sshKeys"]) == len(prod_config.admin.ssh_public_keys)
    assert len(private_ips) == len([h for h in prod_config.hosts if h.kind == "cloud"])


def test_every_ssh_connection_pins_the_derived_host_key(prod_eval, prod_config):
    for host in (h for h in prod_config.hosts if h.kind != "local"):
        key = derive_ssh_host_key(prod_config.sealing_key, host.name)
        bootstrap = _one(prod_eval, REMOTE, f"{host.name}-bootstrap")
        connection = _connection(bootstrap)
        assert connection["hostKey"] == key.public_openssh
        assert connection["user"] == "root"
        script = bootstrap.inputs["stdin"]
        assert bootstrap.inputs["triggers"] == [hashlib.sha256(script.encode()).hexdigest()]
        provider = _one(prod_eval, DOCKER_PROVIDER, f"{host.name}-docker")
        assert provider.inputs["host"].startswith("ssh://root@")
        opts = provider.inputs["sshOpts"]
        opts = opts if isinstance(opts, list) else __import__("json").loads(opts)
        assert "StrictHostKeyChecking=yes" in opts
        assert any(o.startswith("KnownHostsCommand=") and key.public_openssh in o for o in opts)
        assert bootstrap.urn in provider.dependencies


def test_dedicated_host_key_is_installed_over_a_connection_that_trusts_only_the_recorded_key(prod_eval, prod_config):
    (host,) = [h for h in prod_config.hosts if h.kind == "dedicated"]
    install = _one(prod_eval, REMOTE, f"{host.name}-host-key")
    assert _connection(install)["host"] == host.address
    assert _connection(install)["hostKey"] == host.host_key
    assert rpc.is_rpc_secret(install.inputs["stdin"]), "the private host key travels only as secret stdin"
    key = derive_ssh_host_key(prod_config.sealing_key, host.name)
    assert key.private_openssh not in install.inputs["create"]
    bootstrap = _one(prod_eval, REMOTE, f"{host.name}-bootstrap")
    assert install.urn in bootstrap.dependencies


def test_local_host_is_the_local_engine_and_nothing_else(local_eval):
    (host,) = local_eval.by_type(HOST)
    kids = _children(local_eval, host.urn)
    assert [(r.type, r.inputs.get("host")) for r in kids if r.type == DOCKER_PROVIDER] == [
        (DOCKER_PROVIDER, "unix:///var/run/docker.sock")
    ]
    assert not local_eval.by_type(SERVER) and not local_eval.by_type(REMOTE)


def test_hetzner_objects_are_shared_once_per_stack(prod_eval, prod_config):
    keys = prod_eval.by_type("hcloud:index/sshKey:SshKey")
    assert sorted(k.inputs["publicKey"] for k in keys) == sorted(prod_config.admin.ssh_public_keys)
    (network,) = prod_eval.by_type("hcloud:index/network:Network")
    assert network.inputs["ipRange"] == "10.0.0.0/16"
    zones = {s.inputs["networkZone"] for s in prod_eval.by_type("hcloud:index/networkSubnet:NetworkSubnet")}
    assert zones == {"eu-central"}
