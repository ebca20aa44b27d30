"""The allowlist rules: the compliant cage passes; what the denylist rules did not think of is refused, named,
and answered with the table's row; unknowns fail closed; the tables print."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

import allowlist
import allowlist_rules
from shape import Judged, owners
from tests.policies import fixtures as fx
from tests.policies.conftest import PACK_DIR
from tests.policies.harness import policy_named, validate_resource

Props = dict[str, Any]


def check(name: str, props: Props, type_: str = fx.CONTAINER) -> list[str]:
    return validate_resource(policy_named(allowlist_rules.POLICIES, name), type_, props)


def claw(change: Callable[[Props], Any]) -> Props:
    props = fx.claw_container()
    change(props)
    return props


def proxy(change: Callable[[Props], Any]) -> Props:
    props = fx.proxy_container()
    change(props)
    return props


def env(*entries: str) -> Callable[[Props], Any]:
    return lambda p: p["envs"].extend(entries)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
@pytest.mark.parametrize("volume", [False, True], ids=["no-volume", "volume"])
def test_the_compliant_cage_and_host_pass_every_allowlist(remote: bool, volume: bool) -> None:
    for type_, name, props, _ in fx.cage(volume=volume, remote=remote) + fx.host_resources(local=not remote):
        for policy in allowlist_rules.POLICIES:
            assert validate_resource(policy, type_, props) == [], (name, policy.name)


CLAW_BREACHES: list[tuple[str, Callable[[Props], Any], str]] = [
    # namespace modes, and the forms that join another container's
    ("networkMode host", lambda p: p.update(networkMode="host"), "`networkMode` is set"),
    ("networkMode container", lambda p: p.update(networkMode="container:proxy-acme-support"), "`networkMode` is set"),
    ("networkMode bridge", lambda p: p.update(networkMode="bridge"), "bypasses the cage network"),
    ("pidMode container", lambda p: p.update(pidMode="container:proxy-acme-support"), "`pidMode` is set"),
    ("ipcMode container", lambda p: p.update(ipcMode="container:proxy-acme-support"), '`ipcMode` is "container:'),
    ("ipcMode shareable", lambda p: p.update(ipcMode="shareable"), 'not "private"'),
    ("cgroupnsMode host", lambda p: p.update(cgroupnsMode="host"), "`cgroupnsMode` is set"),
    ("usernsMode host", lambda p: p.update(usernsMode="host"), "leaves the daemon's userns-remap"),
    # security options: only what the program emits
    (
        "seccomp profile",
        lambda p: p["securityOpts"].append("seccomp=/tmp/permissive.json"),
        '`securityOpts[2]` ("seccomp=/tmp/permissive.json")',
    ),  # [1] is the project profile
    ("selinux off", lambda p: p["securityOpts"].append("label=disable"), '("label=disable")'),
    ("systempaths", lambda p: p["securityOpts"].append("systempaths=unconfined"), "does not name"),
    # DNS and names
    ("dns server", lambda p: p.update(dns=["1.1.1.1"]), '`dns` has no item that is "127.0.0.1"'),
    ("dns search", lambda p: p.update(dnsSearches=["corp.example"]), "`dnsSearches` is set"),
    ("dns options", lambda p: p.update(dnsOpts=["ndots:0"]), "`dnsOpts` is set"),
    ("extra hosts", lambda p: p.update(hosts=[{"host": "api.anthropic.com", "ip": "203.0.113.9"}]), "`hosts` is set"),
    ("no dns", lambda p: p.pop("dns"), "`dns` is not set"),
    # audit cannot be switched off or made lossy
    ("log mode", lambda p: p["logOpts"].update(mode="non-blocking"), "`logOpts.mode` is set"),
    ("log tag", lambda p: p["logOpts"].update(tag="{{.Name}}"), "`logOpts.tag` is set"),
    # environment: the runtime's names and the proxy only
    ("NO_PROXY", env("NO_PROXY=*"), "sets NO_PROXY"),
    ("no_proxy", env("no_proxy=.example"), "sets no_proxy"),
    ("ALL_PROXY", env("ALL_PROXY=socks5://198.51.100.1:1080"), "sets ALL_PROXY"),
    ("credential", env("ANTHROPIC_API_KEY=sk-ant-plaintext"), "sets ANTHROPIC_API_KEY"),
    ("proxy elsewhere", lambda p: p["envs"].__setitem__(2, "HTTPS_PROXY=http://203.0.113.9:3128"), "HTTPS_PROXY"),
    ("proxy twice", env("HTTPS_PROXY=http://203.0.113.9:3128"), "sets HTTPS_PROXY more than once"),
    ("another cage's name", lambda p: p["envs"].__setitem__(1, "CLAWCAGE_CLAW=globex-ops"), "CLAWCAGE_CLAW"),
    # user and groups
    ("root group", lambda p: p.update(user="10000:0"), "no root group"),
    ("supplementary root", lambda p: p.update(groupAdds=["0"]), "`groupAdds` is set"),
    ("supplementary docker", lambda p: p.update(groupAdds=["docker"]), "grant host access"),
    # mounts: no propagation, no other mount options
    (
        "propagation",
        lambda p: p["mounts"][0].update(bindOptions={"propagation": "rshared"}),
        "`mounts[0].bindOptions` is set",
    ),
    ("consistency", lambda p: p["mounts"][1].update(consistency="delegated"), "`mounts[1].consistency` is set"),
    ("tmpfs mount", lambda p: p["mounts"].append({"type": "tmpfs", "target": "/x"}), '`mounts[2].type` is "tmpfs"'),
    ("volumes", lambda p: p.update(volumes=[{"volumeName": "scratch", "containerPath": "/s"}]), "`volumes` is set"),
    ("tmpfs exec again", lambda p: p.update(tmpfs={"/tmp": "rw,noexec,nosuid,nodev,size=1,exec"}), "`tmpfs./tmp`"),
    ("tmpfs elsewhere", lambda p: p["tmpfs"].update({"/dev/shm": "rw,noexec,nosuid,size=1"}), "`tmpfs./dev/shm`"),
    # devices, sysctls, ports
    ("devices", lambda p: p.update(devices=[{"hostPath": "/dev/fuse"}]), "`devices` is set"),
    ("device rules", lambda p: p.update(deviceCgroupRules=["c 10:229 rwm"]), "`deviceCgroupRules` is set"),
    ("device read", lambda p: p.update(deviceReadBps=[{"path": "/dev/sda", "rate": "1mb"}]), "`deviceReadBps`"),
    ("a safe sysctl", lambda p: p["sysctls"].update({"net.ipv4.ping_group_range": "0 0"}), "`sysctls.net.ipv4.ping"),
    ("ipv6 back on", lambda p: p["sysctls"].update({"net.ipv6.conf.all.disable_ipv6": "0"}), "disable_ipv6` is"),
    ("ports", lambda p: p.update(ports=[{"internal": 8080}]), "cages take no inbound traffic"),
    # the rest of the shape
    ("uploads", lambda p: p.update(uploads=[{"file": "/etc/claw.env", "content": "KEY=x"}]), "plaintext in state"),
    ("entrypoint", lambda p: p.update(entrypoints=["/bin/sh"]), "skips the cage runtime"),
    ("cpu quota too", lambda p: p.update(cpuQuota=50000), "`cpuQuota` is set"),
    ("ulimits", lambda p: p.update(ulimits=[{"name": "nproc", "hard": 65535, "soft": 65535}]), "`ulimits` is set"),
    ("hostname", lambda p: p.update(hostname="host"), "`hostname` is set"),
    ("name", lambda p: p.update(name="claw-globex-ops"), '`name` is "claw-globex-ops", not "claw-acme-support"'),
    ("alias", lambda p: p["networksAdvanced"][0].update(aliases=["egress-proxy"]), "`networksAdvanced[0]`"),
    ("address", lambda p: p["networksAdvanced"][0].update(ipv4Address="10.0.0.9"), "`networksAdvanced[0]`"),
    ("docker's init", lambda p: p.update(init=True), "`init` is true, not false"),
    ("extra label", lambda p: p["labels"].append({"label": "traefik.enable", "value": "true"}), "traefik.enable"),
    ("start later", lambda p: p.update(start=False), "`start` is false"),
    ("healthcheck key", lambda p: p["healthcheck"].update(startInterval="1s"), "`healthcheck.startInterval`"),
]


@pytest.mark.parametrize(("case", "change", "expected"), CLAW_BREACHES, ids=[c[0] for c in CLAW_BREACHES])
def test_a_claw_container_breach_is_refused_and_named(case: str, change: Callable[[Props], Any], expected: str) -> None:
    found = check("claw-container-allowlist", claw(change))
    assert any(expected in m for m in found), found


def test_a_violation_quotes_the_tables_row() -> None:
    (message,) = check("claw-container-allowlist", claw(lambda p: p.update(ipcMode="shareable")))
    assert message == (
        '`ipcMode` is "shareable", not "private"; allowlist row `claw container` | `ipcMode` | "private" | '
        "a private IPC namespace nobody can join."
    )
    (message,) = check("claw-container-allowlist", claw(lambda p: p.update(pidMode="host")))
    assert message.startswith('`pidMode` is set ("host"), but the claw container allowlist has no row for it: ')
    assert "A claw container sets only name, image, user," in message


def test_the_runtimes_names_are_allowed_and_a_credential_among_them_is_left_to_the_env_rule() -> None:
    assert check("claw-container-allowlist", claw(env("CLAWCAGE_DEBUG=1"))) == []


PROXY_BREACHES: list[tuple[Callable[[Props], Any], str]] = [
    (lambda p: p.update(envs=["NO_PROXY=*"]), "`envs` is set"),
    (lambda p: p.update(dns=["127.0.0.1"]), "`dns` is set"),
    (lambda p: p["networksAdvanced"].append({"name": "cage-globex-ops"}), "`networksAdvanced[2]`"),
    (lambda p: p["networksAdvanced"][1].update(name="egress-other-host"), "`networksAdvanced` has no item"),
    (lambda p: p["networksAdvanced"][0].update(aliases=["egress-proxy", "api.anthropic.com"]), "`networksAdvanced"),
    (lambda p: p.update(name="proxy"), '`name` is "proxy", not "proxy-acme-support"'),
    (lambda p: p.update(healthcheck={"tests": ["NONE"]}), "`healthcheck` is set"),
    (lambda p: p["labels"][4].update(value="not a digest"), "clawstaff.config-sha256"),
    (lambda p: p.update(init=False), "`init` is false, not true"),
]


@pytest.mark.parametrize(("change", "expected"), PROXY_BREACHES)
def test_a_proxy_breach_is_refused_and_named(change: Callable[[Props], Any], expected: str) -> None:
    found = check("proxy-container-allowlist", proxy(change))
    assert any(expected in m for m in found), found


NETWORK_BREACHES: list[tuple[str, Callable[[Props], Any], str]] = [
    ("cage-network-allowlist", lambda p: p.update(driver="macvlan"), '`driver` is "macvlan"'),
    ("cage-network-allowlist", lambda p: p.update(attachable=True), "`attachable` is true"),
    ("cage-network-allowlist", lambda p: p.update(ipamConfigs=[{"subnet": "10.0.0.0/8"}]), "`ipamConfigs` is set"),
    ("cage-network-allowlist", lambda p: p["options"].update({"com.docker.network.driver.mtu": "9000"}), "mtu"),
    ("cage-network-allowlist", lambda p: p["options"].update(icc_off()), 'enable_icc` is "false"'),
    ("cage-network-allowlist", lambda p: p["options"].pop("com.docker.network.bridge.name"), "bridge.name` is miss"),
    ("cage-network-allowlist", lambda p: p["options"].update(bridge("br-cage")), "not cg-<12 hex>"),
    ("cage-network-allowlist", lambda p: p.pop("options"), "`options` is not set"),
    ("cage-network-allowlist", lambda p: p.update(name="cage-globex-ops"), 'not "cage-acme-support"'),
    ("cage-network-allowlist", lambda p: p.update(ipamDriver="dhcp"), '`ipamDriver` is "dhcp"'),
    ("egress-network-allowlist", lambda p: p["ipamConfigs"][0].update(subnet="10.0.0.0/8"), "`ipamConfigs` has no"),
    ("egress-network-allowlist", lambda p: p.update(internal=True), "`internal` is true"),
    ("egress-network-allowlist", lambda p: p["options"].update(bridge("docker0")), "not ce-<12 hex>"),
    ("egress-network-allowlist", lambda p: p["labels"].append({"label": "clawstaff.claw", "value": "x"}), "claw"),
]


def icc_off() -> dict[str, str]:
    return {"com.docker.network.bridge.enable_icc": "false"}


def bridge(name: str) -> dict[str, str]:
    return {"com.docker.network.bridge.name": name}


@pytest.mark.parametrize(("policy", "change", "expected"), NETWORK_BREACHES)
def test_a_network_breach_is_refused_and_named(policy: str, change: Callable[[Props], Any], expected: str) -> None:
    props = fx.cage_network() if policy.startswith("cage") else fx.egress_network()
    change(props)
    found = check(policy, props, fx.NETWORK)
    assert any(expected in m for m in found), found


COMMAND_BREACHES: list[tuple[Callable[[Props], Any], str]] = [
    (lambda p: p.update(update=p["create"]), "`update` is set"),
    (lambda p: p.update(environment={"KEY": "x"}), "key material arrives on stdin only"),
    (lambda p: p.update(triggers=["x"]), "`triggers` is set"),
    (lambda p: p["connection"].update(password="hunter2"), "`connection.password` is set"),
    (lambda p: p["connection"].update(proxy={"host": "jump.example"}), "`connection.proxy` is set"),
    (lambda p: p["connection"].update(privateKey="-----BEGIN"), "`connection.privateKey` is set"),
    (lambda p: p["connection"].update(user="admin"), '`connection.user` is "admin"'),
    (lambda p: p["connection"].pop("hostKey"), "`connection.hostKey` is missing"),
    (lambda p: p.update(delete="/bin/bash -c 'true'"), "`delete` carries 0 facts lines"),
    (lambda p: p.update(delete=fx.key_command()["delete"]), '"key-delete" of cage "acme-support", not "limits-delete"'),
    (lambda p: p.update(delete=fx.limits_command("globex-ops")["delete"]), 'cage "globex-ops", not "limits-delete"'),
    (lambda p: p.pop("delete"), "`delete` is not set"),
    (lambda p: p.update(logging="stdoutAndStderr"), "`logging` is set"),
]


@pytest.mark.parametrize(("change", "expected"), COMMAND_BREACHES)
def test_a_cage_command_breach_is_refused_and_named(change: Callable[[Props], Any], expected: str) -> None:
    props = fx.limits_command(remote=True)
    change(props)
    found = check("cage-command-allowlist", props, fx.REMOTE_COMMAND)
    assert any(expected in m for m in found), found


def test_a_command_of_no_cage_piece_is_not_judged_by_the_cage_table() -> None:
    props = {"create": "cat > /usr/local/sbin/x && /usr/local/sbin/x", "stdin": "#!/bin/bash\n", "triggers": ["1"]}
    assert check("cage-command-allowlist", props, fx.REMOTE_COMMAND) == []


def test_an_allowlisted_input_unknown_during_preview_fails_closed() -> None:
    found = check("claw-container-allowlist", claw(lambda p: p.update(ipcMode=UNKNOWN_STRING_VALUE)))
    assert len(found) == 1 and "cannot verify `ipcMode`" in found[0]
    found = check("claw-container-allowlist", claw(lambda p: p["mounts"][0].update(type=UNKNOWN_STRING_VALUE)))
    assert len(found) == 1 and "cannot verify `mounts[0].type`" in found[0]


def test_an_unlisted_input_unknown_during_preview_is_refused() -> None:
    (message,) = check("claw-container-allowlist", claw(lambda p: p.update(pidMode=UNKNOWN_STRING_VALUE)))
    assert message.startswith("`pidMode` is set (<unknown during preview>)")


def test_a_value_judged_by_another_policy_is_left_to_it() -> None:
    # Reported once, by the policy that owns it (container-not-privileged), not again here.
    assert check("claw-container-allowlist", claw(lambda p: p.update(privileged=True))) == []
    assert check("claw-container-allowlist", claw(lambda p: p.update(readOnly=UNKNOWN_STRING_VALUE))) == []


def test_the_bridged_providers_defaults_marker_is_not_an_input() -> None:
    assert check("claw-container-allowlist", claw(lambda p: p.update(__defaults=["start"]))) == []
    assert check("claw-container-allowlist", claw(lambda p: p["mounts"][0].update(__defaults=[]))) == []


def test_every_policy_a_row_leaves_a_value_to_is_in_the_pack() -> None:
    import rules

    names = {p.name for p in rules.POLICIES}
    for title, (_, table) in allowlist.TABLES.items():
        for key, row in table.items():
            assert owners(row.allowed) <= names, (title, key)


def test_the_tables_print_as_text_and_markdown() -> None:
    text = subprocess.run(
        [sys.executable, str(PACK_DIR / "allowlist.py")], capture_output=True, text=True, check=True
    ).stdout
    markdown = subprocess.run(
        [sys.executable, str(PACK_DIR / "allowlist.py"), "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    for title, (_, table) in allowlist.TABLES.items():
        assert title in text and f"### {title}" in markdown
        for key in table:
            assert f"  {key}" in text and f"| `{key}` |" in markdown
    assert "pidMode" in text and "Any other input is refused" in markdown


def test_judged_rows_name_values_their_owner_refuses() -> None:
    for title, (_, table) in allowlist.TABLES.items():
        for key, row in table.items():
            if isinstance(row.allowed, Judged):
                assert row.allowed.bad, (title, key)


def test_docs_allowlist_md_is_current() -> None:
    printed = subprocess.run(
        [sys.executable, str(PACK_DIR / "allowlist.py"), "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    assert (PACK_DIR.parent / "docs" / "allowlist.md").read_text() == printed, (
        "docs/allowlist.md is stale: make allowlist"
    )
