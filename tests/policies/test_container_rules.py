"""Every container policy: the compliant claw and proxy pass, each breach is named, unknowns fail closed."""

from __future__ import annotations

import base64
from collections.abc import Callable
from typing import Any

import pytest
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

import container_rules
from tests.policies import fixtures as fx
from tests.policies.harness import policy_named, validate_resource

Props = dict[str, Any]
POLICY_NAMES = [p.name for p in container_rules.POLICIES]
SEALED_BODY = fx.sealed_blob(fx.CLAW).removeprefix("clawcage-v1:")  # real AES-SIV output, standard base64
URLSAFE_BODY = base64.urlsafe_b64encode(base64.b64decode(SEALED_BODY) + b"\xfb\xff").decode()


def check(name: str, props: Props, config: dict[str, Any] | None = None) -> list[str]:
    return validate_resource(policy_named(container_rules.POLICIES, name), fx.CONTAINER, props, config)


def with_(change: Callable[[Props], None], props: Props | None = None) -> Props:
    props = props if props is not None else fx.claw_container()
    change(props)
    return props


def set_(key: str, value: Any) -> Callable[[Props], None]:
    return lambda props: props.__setitem__(key, value)


def drop(key: str) -> Callable[[Props], None]:
    return lambda props: props.pop(key, None)


def add_mount(mount: Props) -> Callable[[Props], None]:
    return lambda props: props.setdefault("mounts", []).append(mount)


@pytest.mark.parametrize("name", POLICY_NAMES)
@pytest.mark.parametrize("make", [fx.claw_container, fx.proxy_container], ids=["claw", "proxy"])
def test_the_compliant_cage_containers_pass(name: str, make: Callable[[], Props]) -> None:
    assert check(name, make()) == []


def test_every_container_policy_is_mandatory_kebab_case_and_says_what_to_do() -> None:
    for policy in container_rules.POLICIES:
        assert policy.enforcement_level.value == "mandatory"
        assert policy.name == policy.name.lower() and " " not in policy.name and "_" not in policy.name
        assert policy.description.rstrip().endswith(".") and len(policy.description) > 30


VIOLATIONS: list[tuple[str, Callable[[Props], None], str]] = [
    ("container-not-privileged", set_("privileged", True), "`privileged` is true"),
    ("container-drops-all-capabilities", set_("capabilities", {"drops": ["NET_RAW"]}), 'not ["ALL"]'),
    (
        "container-drops-all-capabilities",
        set_("capabilities", {"drops": ["ALL"], "adds": ["SYS_ADMIN"]}),
        "grants ['SYS_ADMIN']",
    ),
    ("container-no-new-privileges", set_("securityOpts", []), 'lacks "no-new-privileges:true"'),
    ("container-no-new-privileges", set_("securityOpts", ["no-new-privileges:false"]), "lacks"),
    (
        "container-seccomp-confined",
        set_("securityOpts", ["no-new-privileges:true", "seccomp=unconfined"]),
        'has "seccomp=unconfined"',
    ),
    (
        "container-apparmor-confined",
        set_("securityOpts", ["no-new-privileges:true", "apparmor:unconfined"]),
        'has "apparmor:unconfined"',
    ),
    ("container-read-only-rootfs", set_("readOnly", False), "`readOnly` is not true"),
    ("container-read-only-rootfs", drop("readOnly"), "`readOnly` is not true"),
    ("container-non-root-user", set_("user", "claw"), "set a numeric uid:gid"),
    ("container-non-root-user", drop("user"), "`user` is None"),
    ("container-non-root-user", set_("user", "0:0"), "must not be 0"),
    ("container-non-root-user", set_("user", "10001:0"), "must not be 0"),
    ("container-memory-limited", drop("memory"), "`memory` is not set"),
    ("container-memory-limited", set_("memorySwap", 2048), "`memorySwap` is 2048 MB, not equal"),
    ("container-memory-limited", drop("memorySwap"), "`memorySwap` is not set"),
    ("container-memory-limited", lambda p: p.update(memory=32768, memorySwap=32768), "above the ceiling of 16384"),
    ("container-cpu-limited", drop("cpus"), "neither `cpus` nor `cpuQuota`"),
    ("container-cpu-limited", set_("cpus", "16"), "16 CPUs, above the ceiling of 8"),
    ("container-no-host-namespaces", set_("networkMode", "host"), "host's network namespace"),
    ("container-no-host-namespaces", set_("pidMode", "host"), "host's PID namespace"),
    ("container-no-host-namespaces", set_("pidMode", "container:clawcage-other"), "another container's PID"),
    ("container-no-host-namespaces", set_("ipcMode", "shareable"), "could join"),
    ("container-no-host-namespaces", set_("usernsMode", "host"), "host's user namespace"),
    ("container-no-host-namespaces", set_("cgroupnsMode", "host"), "host's cgroup namespace"),
    ("container-no-published-ports", set_("ports", [{"internal": 8080, "external": 80}]), "['80->8080']"),
    ("container-no-published-ports", set_("publishAllPorts", True), "`publishAllPorts` is true"),
    ("container-no-devices", set_("devices", [{"hostPath": "/dev/kvm"}]), "['/dev/kvm']"),
    ("container-no-devices", set_("deviceCgroupRules", ["c 10:* rwm"]), "opens host device classes"),
    ("container-no-devices", set_("gpus", "all"), "GPUs are not allowed"),
    ("container-no-devices", set_("deviceRequests", [{"driver": "nvidia", "count": -1}]), "`deviceRequests`"),
    (
        "container-mounts-confined",
        add_mount({"type": "bind", "source": "/etc", "target": "/host-etc"}),
        "outside the cage's own",
    ),
    (
        "container-mounts-confined",
        add_mount({"type": "bind", "source": "/run/clawstaff/cages/other-claw/key", "target": "/k", "readOnly": True}),
        "outside the cage's own",
    ),
    (
        "container-mounts-confined",
        add_mount({"type": "bind", "source": "/srv/clawstaff/volumes/acme-support/../other/data", "target": "/x"}),
        "outside the cage's own",
    ),
    ("container-mounts-confined", lambda p: p["mounts"][0].update(readOnly=False), "must be mounted read-only"),
    ("container-mounts-confined", lambda p: p["mounts"][0].pop("readOnly"), "must be mounted read-only"),
    (
        "container-mounts-confined",
        lambda p: p["mounts"][0].update(target="/etc/clawcage"),
        "key directory is mounted at /run/clawcage",
    ),
    (
        "container-mounts-confined",
        lambda p: p["mounts"][0].update(source="/run/clawstaff/cages/acme-support/key", target="/run/clawcage/key"),
        "itself, not a path inside it",
    ),
    (
        "container-mounts-confined",
        add_mount(
            {
                "type": "bind",
                "source": "/etc/clawstaff/proxies/acme-support",
                "target": "/etc/clawcage",
                "readOnly": True,
            }
        ),
        "only the proxy container mounts the cage's proxy configuration, not its claw container",
    ),
    (
        "container-mounts-confined",
        add_mount(
            {"type": "bind", "source": "/etc/clawstaff/proxies/other-claw", "target": "/etc/clawcage", "readOnly": True}
        ),
        "outside the cage's own",
    ),
    ("container-mounts-confined", lambda p: p["mounts"][1].update(target="/home"), "volume is mounted at /data"),
    (
        "container-mounts-confined",
        add_mount({"type": "volume", "source": "shared", "target": "/shared"}),
        "named volume",
    ),
    (
        "container-mounts-confined",
        set_("volumes", [{"fromContainer": "clawcage-other", "containerPath": "/x"}]),
        "another container's volumes",
    ),
    (
        "container-mounts-confined",
        set_("volumes", [{"hostPath": "/home", "containerPath": "/home"}]),
        "outside the cage's own",
    ),
    (
        "container-no-docker-socket",
        add_mount({"type": "bind", "source": "/var/run/docker.sock", "target": "/var/run/docker.sock"}),
        "container engine's socket",
    ),
    (
        "container-no-docker-socket",
        set_("volumes", [{"hostPath": "/run", "containerPath": "/hostrun"}]),
        "container engine's socket",
    ),
    ("container-tmpfs-noexec-sized", set_("tmpfs", {"/tmp": "rw,size=64m"}), "lacks noexec, nosuid"),
    ("container-tmpfs-noexec-sized", set_("tmpfs", {"/tmp": "rw,noexec,nosuid"}), "has no size="),
    (
        "container-tmpfs-noexec-sized",
        add_mount({"type": "tmpfs", "target": "/scratch", "tmpfsOptions": {"sizeBytes": 1 << 20}}),
        "cannot be made noexec",
    ),
    ("container-image-pinned", set_("image", "ghcr.io/clawstaff/claw-runtime:latest"), "is not pinned by digest"),
    (
        "container-image-pinned",
        set_("image", "docker.io/library/busybox@sha256:" + "0" * 64),
        "does not come from an allowed registry",
    ),
    ("container-image-pinned", set_("image", "sha256:" + "1" * 64), "is the local image id"),
    (
        "container-image-pinned",
        set_("image", "ghcr.io/clawstaff-evil/claw@sha256:" + "0" * 64),
        "does not come from an allowed registry",
    ),
    ("container-image-pinned", drop("image"), "`image` is not set"),
    ("container-sysctls-safe", set_("sysctls", {"net.ipv4.ip_forward": "1"}), "['net.ipv4.ip_forward']"),
    ("container-restart-bounded", set_("restart", "always"), "restart forever"),
    ("container-restart-bounded", set_("restart", "unless-stopped"), "restart forever"),
    ("container-restart-bounded", set_("maxRetryCount", 0), "`maxRetryCount` is 0"),
    ("container-restart-bounded", set_("maxRetryCount", 50), "set 1..5"),
    ("container-log-rotation", drop("logDriver"), "`logDriver` is not set"),
    ("container-log-rotation", set_("logDriver", "none"), "`logDriver` is 'none'"),
    ("container-log-rotation", set_("logOpts", {"max-size": "10m"}), "lacks ['max-file']"),
    (
        "container-labels-claw-org",
        lambda p: p.__setitem__("labels", [lb for lb in p["labels"] if lb["label"] != "clawstaff.org"]),
        "label clawstaff.org is missing",
    ),
    (
        "container-labels-claw-org",
        lambda p: p["labels"][3].update(value="sidecar"),
        "not one of ['claw', 'proxy', 'broker']",
    ),
    (
        "container-env-no-plaintext-credentials",
        lambda p: p["envs"].append("ANTHROPIC_API_KEY=sk-ant-xyz"),
        "env ANTHROPIC_API_KEY looks like a plaintext credential",
    ),
    (
        "container-env-no-plaintext-credentials",
        lambda p: p["envs"].append("DB_PASSWORD_FILE=/x"),
        "env DB_PASSWORD_FILE",
    ),
    (
        "container-env-no-plaintext-credentials",
        set_("envs", ["CLAWCAGE_SEALED=not base64!"]),
        "does not start with 'clawcage-v1:'",
    ),
    (
        "container-env-no-plaintext-credentials",
        set_("envs", ["CLAWCAGE_SEALED=" + SEALED_BODY]),
        "does not start with 'clawcage-v1:'",
    ),
    (
        "container-env-no-plaintext-credentials",
        set_("envs", ["CLAWCAGE_SEALED=clawcage-v2:" + SEALED_BODY]),
        "does not start with 'clawcage-v1:'",
    ),
    (
        "container-env-no-plaintext-credentials",
        set_("envs", ["CLAWCAGE_SEALED=clawcage-v1:" + URLSAFE_BODY]),
        "is not standard, padded base64",
    ),
    (
        "container-env-no-plaintext-credentials",
        set_("envs", ["CLAWCAGE_SEALED=clawcage-v1:" + SEALED_BODY.rstrip("=")]),
        "is not standard, padded base64",
    ),
    (
        "container-env-no-plaintext-credentials",
        set_("envs", ["CLAWCAGE_SEALED=clawcage-v1: " + SEALED_BODY]),
        "is not standard, padded base64",
    ),
    (
        "container-env-no-plaintext-credentials",
        set_("envs", ["CLAWCAGE_SEALED=clawcage-v1:" + base64.b64encode(bytes(16)).decode()]),
        "decodes to 16 bytes, fewer than an AES-SIV tag (16 bytes) and data",
    ),
    ("container-env-no-plaintext-credentials", set_("envs", ["CLAWCAGE_SEALED=clawcage-v1:"]), "decodes to 0 bytes"),
    (
        "container-cgroup-parent-confined",
        set_("cgroupParent", "/docker"),
        "neither a cgroup below /clawstaff/ nor a slice",
    ),
    (
        "container-cgroup-parent-confined",
        set_("cgroupParent", "/clawstaff"),
        "neither a cgroup below /clawstaff/ nor a slice",
    ),
    (
        "container-cgroup-parent-confined",
        set_("cgroupParent", "/clawstaff/"),
        "neither a cgroup below /clawstaff/ nor a slice",
    ),
    (
        "container-cgroup-parent-confined",
        set_("cgroupParent", "/clawstaff/../system.slice"),
        "neither a cgroup below /clawstaff/ nor a slice",
    ),
    (
        "container-cgroup-parent-confined",
        set_("cgroupParent", "clawstaff/acme-support"),
        "neither a cgroup below /clawstaff/ nor a slice",
    ),
    (
        "container-cgroup-parent-confined",
        set_("cgroupParent", "clawstaff.slice"),
        "neither a cgroup below /clawstaff/ nor a slice",
    ),
    # A slice elsewhere, or a grandchild spelled with `-` levels, is not a cage's slice.
    ("container-cgroup-parent-confined", set_("cgroupParent", "system.slice"), "nor a slice below clawstaff.slice"),
    ("container-cgroup-parent-confined", set_("cgroupParent", "clawstaff-a-b.slice"), "nor a slice below clawstaff"),
    ("container-cgroup-parent-confined", set_("cgroupParent", "clawstaff-.slice"), "nor a slice below clawstaff"),
    ("container-cgroup-parent-confined", set_("cgroupParent", "clawstaff-a.slice/x"), "nor a slice below clawstaff"),
]


@pytest.mark.parametrize(
    ("name", "change", "expected"), VIOLATIONS, ids=[f"{v[0]}:{i}" for i, v in enumerate(VIOLATIONS)]
)
def test_a_breach_is_reported_with_what_is_wrong(name: str, change: Callable[[Props], None], expected: str) -> None:
    messages = check(name, with_(change))
    assert len(messages) >= 1
    assert any(expected in m for m in messages), messages


def test_every_container_policy_has_a_violating_case() -> None:
    assert {v[0] for v in VIOLATIONS} == set(POLICY_NAMES)


@pytest.mark.parametrize(
    ("name", "change", "config"),
    [
        (
            "container-drops-all-capabilities",
            set_("capabilities", {"drops": ["ALL"], "adds": ["NET_BIND_SERVICE"]}),
            {"allowedCapabilities": ["NET_BIND_SERVICE"]},
        ),
        ("container-memory-limited", lambda p: p.update(memory=32768, memorySwap=32768), {"maxMemoryMb": 65536}),
        ("container-cpu-limited", set_("cpus", "16"), {"maxCpus": 16.0}),
        ("container-no-devices", set_("gpus", "all"), {"allowGpus": True}),
        ("container-image-pinned", set_("image", "sha256:" + "1" * 64), {"allowLocalImageIds": True}),
        (
            "container-image-pinned",
            set_("image", "registry.example/claw@sha256:" + "2" * 64),
            {"allowedRegistries": ["registry.example/"]},
        ),
        (
            "container-sysctls-safe",
            set_("sysctls", {"net.core.somaxconn": "1024"}),
            {"safeSysctls": ["net.core.somaxconn"]},
        ),
        ("container-restart-bounded", set_("maxRetryCount", 50), {"maxRestarts": 100}),
        ("container-log-rotation", set_("logDriver", "awslogs"), {"shippingLogDrivers": ["awslogs"]}),
    ],
)
def test_config_widens_a_limit(name: str, change: Callable[[Props], None], config: dict[str, Any]) -> None:
    props = with_(change)
    assert check(name, props) != []
    assert check(name, props, config) == []


@pytest.mark.parametrize(
    ("name", "change", "config"),
    [
        ("container-memory-limited", lambda p: None, {"maxMemoryMb": 512}),
        ("container-cpu-limited", lambda p: None, {"maxCpus": 0.5}),
        ("container-restart-bounded", lambda p: None, {"maxRestarts": 2}),
    ],
)
def test_config_tightens_a_limit(name: str, change: Callable[[Props], None], config: dict[str, Any]) -> None:
    assert check(name, with_(change), config) != []


@pytest.mark.parametrize(
    ("name", "props"),
    [
        ("container-cpu-limited", with_(lambda p: (p.pop("cpus"), p.update(cpuQuota=50000, cpuPeriod=100000)))),
        ("container-restart-bounded", with_(set_("restart", "no"))),
        ("container-log-rotation", with_(set_("logDriver", "journald"))),
        ("container-sysctls-safe", with_(set_("sysctls", {"net.ipv6.conf.all.disable_ipv6": "1"}))),
        ("container-no-host-namespaces", with_(lambda p: p.update(ipcMode="private", networkMode="none"))),
        ("container-no-docker-socket", with_(set_("volumes", [{"volumeName": "docker.sock.d"}]))),
        ("container-cgroup-parent-confined", with_(drop("cgroupParent"))),
        ("container-cgroup-parent-confined", with_(set_("cgroupParent", ""))),
        ("container-cgroup-parent-confined", with_(set_("cgroupParent", "clawstaff-acme\\x2dsupport.slice"))),
        ("container-mounts-confined", with_(lambda p: p["mounts"][0].update(target="/run/clawcage/"))),
        ("container-mounts-confined", with_(lambda p: p["mounts"].pop())),  # a claw without a volume
        ("container-env-no-plaintext-credentials", with_(set_("envs", ["CLAWCAGE_CLAW=acme-support"]))),
    ],
)
def test_other_compliant_forms(name: str, props: Props) -> None:
    assert check(name, props) == []


def test_memory_arriving_as_floats_from_the_wire_is_read_as_numbers() -> None:
    assert check("container-memory-limited", with_(lambda p: p.update(memory=1024.0, memorySwap=1024.0))) == []


# The input each policy reads first: unknown during preview, it must be reported, not skipped.
UNKNOWN_INPUTS = {
    "container-not-privileged": "privileged",
    "container-drops-all-capabilities": "capabilities",
    "container-no-new-privileges": "securityOpts",
    "container-seccomp-confined": "securityOpts",
    "container-apparmor-confined": "securityOpts",
    "container-read-only-rootfs": "readOnly",
    "container-non-root-user": "user",
    "container-memory-limited": "memory",
    "container-cpu-limited": "cpus",
    "container-no-host-namespaces": "networkMode",
    "container-no-published-ports": "ports",
    "container-no-devices": "devices",
    "container-mounts-confined": "mounts",
    "container-no-docker-socket": "mounts",
    "container-tmpfs-noexec-sized": "tmpfs",
    "container-image-pinned": "image",
    "container-sysctls-safe": "sysctls",
    "container-restart-bounded": "restart",
    "container-log-rotation": "logDriver",
    "container-labels-claw-org": "labels",
    "container-env-no-plaintext-credentials": "envs",
    "container-cgroup-parent-confined": "cgroupParent",
}


def test_every_container_policy_has_an_unknown_case() -> None:
    assert set(UNKNOWN_INPUTS) == set(POLICY_NAMES)


@pytest.mark.parametrize(("name", "key"), sorted(UNKNOWN_INPUTS.items()))
def test_an_input_unknown_during_preview_fails_closed(name: str, key: str) -> None:
    messages = check(name, with_(set_(key, UNKNOWN_STRING_VALUE)))
    assert len(messages) == 1
    assert f"cannot verify `{key}" in messages[0] and "unknown during preview" in messages[0]


def test_an_unknown_nested_value_fails_closed_too() -> None:
    props = with_(lambda p: p["mounts"][1].update(source=UNKNOWN_STRING_VALUE))
    messages = check("container-mounts-confined", props)
    assert len(messages) == 1 and "cannot verify `mounts`" in messages[0]


def test_a_container_with_no_cage_labels_may_bind_no_host_path() -> None:
    props = with_(set_("labels", []))
    messages = check("container-mounts-confined", props)
    assert len(messages) == 2 and all("valid `clawstaff.claw` label" in m for m in messages)


def test_a_proxy_may_not_mount_the_cage_volume() -> None:
    props = fx.proxy_container()
    props["mounts"] = [{"type": "bind", "source": "/srv/clawstaff/volumes/acme-support/data", "target": "/data"}]
    messages = check("container-mounts-confined", props)
    assert any("only the claw container mounts the cage's volume" in m for m in messages)


def test_a_proxy_may_not_mount_the_cage_key() -> None:
    props = fx.proxy_container()
    props["mounts"].append(
        {"type": "bind", "source": "/run/clawstaff/cages/acme-support", "target": "/run/clawcage", "readOnly": True}
    )
    assert check("container-mounts-confined", props) == [
        "`mounts` /run/clawstaff/cages/acme-support -> /run/clawcage: only the claw container mounts the cage's "
        "key directory, not its proxy container."
    ]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (lambda m: m.update(readOnly=False), "the cage's proxy configuration must be mounted read-only"),
        (lambda m: m.update(target="/etc/squid"), "the cage's proxy configuration is mounted at /etc/clawcage"),
        (lambda m: m.update(source="/etc/clawstaff/proxies/acme-support/squid.conf"), "itself, not a path inside it"),
        (lambda m: m.update(source="/etc/clawstaff/proxies"), "outside the cage's own"),
    ],
)
def test_the_proxy_mounts_its_own_configuration_read_only_at_etc_clawcage(
    change: Callable[[Props], None], expected: str
) -> None:
    props = fx.proxy_container()
    change(props["mounts"][0])
    messages = check("container-mounts-confined", props)
    assert any(expected in m for m in messages), messages


def test_the_real_sealed_format_is_accepted_and_only_it() -> None:
    assert container_rules.sealed_format_problem(fx.sealed_blob("acme-support")) is None
    assert container_rules.sealed_format_problem("clawcage-v1:" + base64.b64encode(bytes(17)).decode()) is None
    assert container_rules.sealed_format_problem("clawcage-v1:" + SEALED_BODY + "\n") is not None
