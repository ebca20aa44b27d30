"""The stack config contract (components/config, the README's stack config table): every user mistake is
one clear ConfigError naming the stack file, the key path, the value as written and what is allowed;
never a traceback, never a secret."""

from __future__ import annotations

import contextvars
import copy
import ipaddress
import json
import re
from decimal import Decimal
from pathlib import Path
from typing import Any

import pulumi
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pulumi.runtime import config as runtime_config

from components import config as config_module
from components.catalog import LOCATIONS, SERVER_TYPES
from components.config import (
    ConfigError,
    Endpoint,
    load_stack_file,
    parse_stack_config,
    read_runtime_config,
)
from components.units import GiB, MiB

IMAGE = "ghcr.io/clawstaff/claw-runtime@sha256:" + "ab" * 32
OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIO039s/514aAKRBSxFU7cYzKes4aQL6DGOH8+WmfzeE2 ops@example"
PROXY_IMAGE = "sha256:" + "ab" * 32  # a local image by ID
HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIJvwWEP6UecWtArTPY7gDywFZrAVocMQihvrvvYgNeDk"
RSA_1024 = (
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAAAgQDDTQgSSH6keVvBHQVWU26GvjV2YsPjeU2gYzAGxGSB6oklXm3L94Y8ohB55gx/WPOb6O+G18"
    "Ve7rt6UAKDulr0BQIbQ471vOGP6t2HF3/rkNhAxQAZvldmpoqoXQNpKUslQSbgx6IbhuRTWie/qpulasrdhQdmbq1puy6s6fDJvQ== root@vm"
)
SEALING_KEY = "TOPSECRET-sealing-7e0c1c0b5f8d4f6a9a1b2c3d4e5f6a7b"
SECRET_KEYS = {"clawstaff:sealingKey", "clawstaff:clawSecrets"}


def prod_raw() -> dict[str, Any]:
    """A valid prod-like stack: a cloud and a dedicated host, three claws (one pinned, one with a volume)."""
    return {
        "pulumi:tags": {"team": "platform"},  # other namespaces belong to others
        "hcloud:token": "not-ours",
        "clawstaff:controlPlane": "control.clawstaff.example:443",
        "clawstaff:proxyImage": PROXY_IMAGE,
        "clawstaff:admin": {"sshAllowedCidrs": ["203.0.113.0/24", "2001:db8::/48"], "sshPublicKeys": [OPERATOR_KEY]},
        "clawstaff:hosts": [
            {"name": "fsn1-cage-01", "kind": "cloud", "serverType": "ccx33", "location": "fsn1"},
            {
                "name": "hel1-metal-01",
                "kind": "dedicated",
                "address": "198.51.100.7",
                "cpus": 16,
                "memory": "128GiB",
                "disk": "900GB",
                "hostKey": HOST_KEY,
            },
        ],
        "clawstaff:claws": [
            {
                "name": "acme-support",
                "org": "acme",
                "image": IMAGE,
                "cpus": 1,
                "memory": "1GiB",
                "pids": 256,
                "tmpfs": "256MiB",
                "egress": ["api.anthropic.com:443", "slack.com:443"],
                "secrets": ["ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN"],
            },
            {
                "name": "globex-triage",
                "org": "globex",
                "image": IMAGE,
                "cpus": 0.5,
                "memory": "512MiB",
                "pids": 128,
                "tmpfs": "64MiB",
                "volume": "5GiB",
                "egress": ["api.openai.com:443"],
                "secrets": ["OPENAI_API_KEY"],
                "host": "hel1-metal-01",
            },
            {
                "name": "initech-oncall",
                "org": "initech",
                "image": IMAGE,
                "cpus": "1.5",
                "memory": "2GiB",
                "pids": 256,
                "tmpfs": "128MiB",
            },
        ],
        "clawstaff:sealingKey": SEALING_KEY,
        "clawstaff:clawSecrets": {
            "acme-support": {"ANTHROPIC_API_KEY": "sk-ant-TOPSECRET-1", "SLACK_BOT_TOKEN": "xoxb-TOPSECRET-2"},
            "globex-triage": {"OPENAI_API_KEY": "sk-TOPSECRET-3"},
        },
    }


def local_raw() -> dict[str, Any]:
    return {
        "clawstaff:controlPlane": "control.clawstaff.example:443",
        "clawstaff:proxyImage": PROXY_IMAGE,
        "clawstaff:hosts": [{"name": "laptop", "kind": "local"}],
        "clawstaff:claws": [
            {
                "name": "acme-support",
                "org": "acme",
                "image": "clawstaff/claw-runtime@sha256:" + "0" * 64,
                "cpus": 0.5,
                "memory": "256MiB",
                "pids": 128,
                "tmpfs": "64MiB",
                "secrets": ["ANTHROPIC_API_KEY"],
            },
        ],  # fmt: skip
        "clawstaff:sealingKey": SEALING_KEY,
        "clawstaff:clawSecrets": {"acme-support": {"ANTHROPIC_API_KEY": "sk-ant-TOPSECRET-1"}},
    }


# --- editing a raw config by key path ---------------------------------------------------------------

DELETE = object()
_PART = re.compile(r"\.?([^.\[\]]+)|\[(\d+)\]")


def _parts(path: str) -> list[str | int]:
    """'claws[2].memory' -> ['clawstaff:claws', 2, 'memory']; 'clawstaff:x' names a top-level key as is."""
    parts: list[str | int] = [int(i) if i else name for name, i in _PART.findall(path)]
    if not str(parts[0]).startswith("clawstaff:"):
        parts[0] = f"clawstaff:{parts[0]}"
    return parts


def edited(raw: dict[str, Any], *changes: tuple[str, Any]) -> dict[str, Any]:
    raw = copy.deepcopy(raw)
    for path, value in changes:
        *parents, last = _parts(path)
        node: Any = raw
        for part in parents:
            node = node[part]
        if value is DELETE:
            del node[last]
        elif isinstance(node, list) and last == len(node):
            node.append(value)
        else:
            node[last] = value
    return raw


def config_error(raw: dict[str, Any], *, stack: str = "prod", secret_keys=SECRET_KEYS) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(raw, stack=stack, secret_keys=secret_keys)
    message = str(caught.value)
    # Never a secret value, whatever the mistake.
    assert "TOPSECRET" not in message
    assert "\n" not in message
    return caught.value


def assert_names(error: ConfigError, key: str, value: str | None, reason: str, allowed: str) -> None:
    """The message names the file, the key path, the value as written (or says it is missing), the reason
    and what is allowed."""
    message = str(error)
    assert message.startswith(f"Pulumi.{error.stack_file.split('.')[1]}.yaml: "), message
    assert error.key == key, message
    if value is None:
        assert f"{key} is missing" in message, message
    else:
        assert f"{key} = {value}: " in message, message
    assert reason in message, message
    assert "; allowed: " in message and allowed in message.split("; allowed: ", 1)[1], message


# (changes, key, value as shown, reason, allowed)
MISTAKES: dict[str, tuple[list[tuple[str, Any]], str, str | None, str, str]] = {
    # unknown keys
    "unknown top-level key": ([("clawstaff:hostz", [])], "clawstaff:hostz", "[]", "an unknown key", "clawstaff:hosts"),
    "unknown claw key": (
        [("claws[0].memroy", "1GiB")],
        "clawstaff:claws[0].memroy",
        '"1GiB"',
        "an unknown key",
        "memory",
    ),
    "unknown admin key": ([("admin.sshKeys", [])], "clawstaff:admin.sshKeys", "[]", "an unknown key", "sshPublicKeys"),
    # missing keys
    "missing claw memory": (
        [("claws[2].memory", DELETE)],
        "clawstaff:claws[2].memory",
        None,
        "missing",
        "at least 16MiB",
    ),
    "missing proxy image": ([("proxyImage", DELETE)], "clawstaff:proxyImage", None, "missing", "a local image's ID"),
    "proxy image by tag": (
        [("proxyImage", "clawstaff/egress-proxy:latest")],
        "clawstaff:proxyImage",
        '"clawstaff/egress-proxy:latest"',
        "not pinned by digest",
        "@sha256:",
    ),
    "missing control plane": (
        [("controlPlane", DELETE)],
        "clawstaff:controlPlane",
        None,
        "missing",
        "control.clawstaff.example:443",
    ),
    "missing sealing key": (
        [("sealingKey", DELETE)],
        "clawstaff:sealingKey",
        None,
        "missing",
        "pulumi config set --secret",
    ),
    "missing claws": ([("claws", DELETE)], "clawstaff:claws", None, "missing", "a non-empty list of claws"),
    "missing host kind": (
        [("hosts[0].kind", DELETE)],
        "clawstaff:hosts[0].kind",
        None,
        "missing",
        "cloud, dedicated or local",
    ),
    "missing server type": (
        [("hosts[0].serverType", DELETE)],
        "clawstaff:hosts[0].serverType",
        None,
        "missing",
        "ccx33",
    ),
    "missing claw image": ([("claws[1].image", DELETE)], "clawstaff:claws[1].image", None, "missing", "@sha256:"),
    # wrong types
    "name not a string": ([("claws[0].name", 123)], "clawstaff:claws[0].name", "123", "not a string", "DNS label"),
    "claws not a list": ([("claws", {"name": "x"})], "clawstaff:claws", '{"name": "x"}', "not a list", "list of claws"),
    "egress not a list": (
        [("claws[0].egress", "slack.com:443")],
        "clawstaff:claws[0].egress",
        '"slack.com:443"',
        "not a list",
        "host:port",
    ),
    "host not a mapping": (
        [("hosts[0]", "fsn1-cage-01")],
        "clawstaff:hosts[0]",
        '"fsn1-cage-01"',
        "not a mapping",
        "name and kind",
    ),
    "admin not a mapping": (
        [("admin", "203.0.113.0/24")],
        "clawstaff:admin",
        '"203.0.113.0/24"',
        "not a mapping",
        "sshAllowedCidrs",
    ),
    "pids as text": (
        [("claws[0].pids", "256")],
        "clawstaff:claws[0].pids",
        '"256"',
        "not a whole number",
        "16 to 65536",
    ),
    "cpus not a number": (
        [("claws[0].cpus", "two")],
        "clawstaff:claws[0].cpus",
        '"two"',
        "not a number",
        "at most 2 decimals",
    ),
    "empty command": (
        [("claws[0].command", [])],
        "clawstaff:claws[0].command",
        "[]",
        "an empty list",
        "non-empty list of strings",
    ),
    "command word not a string": (
        [("claws[0].command", ["/usr/bin/python3", 3])],
        "clawstaff:claws[0].command[1]",
        "3",
        "not a string",
        "without NUL",
    ),
    "secret value not a string": (
        [("clawSecrets.acme-support.SLACK_BOT_TOKEN", 12345)],
        "clawstaff:clawSecrets.acme-support.SLACK_BOT_TOKEN",
        "[secret]",
        "not a string",
        "pulumi config set --secret",
    ),
    # bad units
    "size with junk": (
        [("claws[2].memory", "1 GB x")],
        "clawstaff:claws[2].memory",
        '"1 GB x"',
        "not a size",
        "512MiB",
    ),
    "docker-style unit": (
        [("claws[0].tmpfs", "256m")],
        "clawstaff:claws[0].tmpfs",
        '"256m"',
        'unknown unit "m"',
        "64MiB",
    ),
    "host memory not a size": (
        [("hosts[1].memory", "lots")],
        "clawstaff:hosts[1].memory",
        '"lots"',
        "not a size",
        "512MiB, 2GiB or 10GB",
    ),
    "cpus too precise": (
        [("claws[0].cpus", 0.125)],
        "clawstaff:claws[0].cpus",
        "0.125",
        "more than two decimals",
        "at most 2 decimals",
    ),
    # zero, negative, too small or too large limits
    "zero cpus": ([("claws[0].cpus", 0)], "clawstaff:claws[0].cpus", "0", "greater than zero", "greater than 0"),
    "negative memory": (
        [("claws[0].memory", -1)],
        "clawstaff:claws[0].memory",
        "-1",
        "greater than zero",
        "at least 16MiB",
    ),
    "memory below 16MiB": (
        [("claws[0].memory", "8MiB")],
        "clawstaff:claws[0].memory",
        '"8MiB"',
        "less than 16MiB",
        "at least 16MiB",
    ),
    "tmpfs below 1MiB": (
        [("claws[0].tmpfs", "512KiB")],
        "clawstaff:claws[0].tmpfs",
        '"512KiB"',
        "less than 1MiB",
        "at least 1MiB",
    ),
    "zero pids": ([("claws[0].pids", 0)], "clawstaff:claws[0].pids", "0", "not from 16 to 65536", "from 16 to 65536"),
    "too many pids": (
        [("claws[0].pids", 100000)],
        "clawstaff:claws[0].pids",
        "100000",
        "not from 16 to 65536",
        "from 16 to 65536",
    ),
    "volume below 64MiB": (
        [("claws[1].volume", "32MiB")],
        "clawstaff:claws[1].volume",
        '"32MiB"',
        "less than 64MiB",
        "at least 64MiB",
    ),
    "zero host disk": ([("hosts[1].disk", 0)], "clawstaff:hosts[1].disk", "0", "greater than zero", "a size"),
    "tmpfs above memory": (
        [("claws[0].tmpfs", "2GiB")],
        "clawstaff:claws[0].tmpfs",
        '"2GiB"',
        "more than the claw's memory (1GiB)",
        "at most 1GiB",
    ),
    # duplicates
    "duplicate claw name": (
        [("claws[2].name", "acme-support")],
        "clawstaff:claws[2].name",
        '"acme-support"',
        "a duplicate: claws[0]",
        "unique among the claws",
    ),
    "duplicate host name": (
        [("hosts[1].name", "fsn1-cage-01")],
        "clawstaff:hosts[1].name",
        '"fsn1-cage-01"',
        "a duplicate: hosts[0]",
        "unique among the hosts",
    ),
    "duplicate egress": (
        [("claws[0].egress[2]", "Slack.com:443")],
        "clawstaff:claws[0].egress[2]",
        '"Slack.com:443"',
        "listed twice (also egress[1])",
        "host:port",
    ),
    "duplicate secret name": (
        [("claws[0].secrets[2]", "ANTHROPIC_API_KEY")],
        "clawstaff:claws[0].secrets[2]",
        '"ANTHROPIC_API_KEY"',
        "listed twice (also secrets[0])",
        "unique in the list",
    ),
    "duplicate dedicated address": (
        [
            (
                "hosts[2]",
                {
                    "name": "hel1-metal-02",
                    "kind": "dedicated",
                    "address": "198.51.100.7",
                    "cpus": 8,
                    "memory": "64GiB",
                    "disk": "500GB",
                    "hostKey": HOST_KEY,
                },
            )
        ],
        "clawstaff:hosts[2].address",
        '"198.51.100.7"',
        "a duplicate: hosts[1]",
        "public IPv4 or IPv6",
    ),  # fmt: skip
    # names that are not DNS labels
    "upper-case claw name": (
        [("claws[0].name", "Acme-Support")],
        "clawstaff:claws[0].name",
        '"Acme-Support"',
        "upper-case",
        "lower-case letters",
    ),
    "underscore in claw name": (
        [("claws[0].name", "acme_support")],
        "clawstaff:claws[0].name",
        '"acme_support"',
        "not a DNS label",
        "DNS label",
    ),
    "host name starting with a hyphen": (
        [("hosts[0].name", "-fsn1")],
        "clawstaff:hosts[0].name",
        '"-fsn1"',
        "not a DNS label",
        "hyphen",
    ),
    "org longer than 63": (
        [("claws[0].org", "a" * 64)],
        "clawstaff:claws[0].org",
        json.dumps("a" * 64),
        "longer than 63 characters",
        "1-63",
    ),
    # images
    "image by tag": (
        [("claws[0].image", "ghcr.io/clawstaff/claw-runtime:latest")],
        "clawstaff:claws[0].image",
        '"ghcr.io/clawstaff/claw-runtime:latest"',
        "not pinned by digest",
        "@sha256:<64 lower-case hex",
    ),
    "image digest upper-case": (
        [("claws[0].image", "ghcr.io/x/y@sha256:" + "AB" * 32)],
        "clawstaff:claws[0].image",
        json.dumps("ghcr.io/x/y@sha256:" + "AB" * 32),
        "not 64 lower-case hex",
        "name[:tag]@sha256:",
    ),
    "image digest short": (
        [("claws[0].image", "ghcr.io/x/y@sha256:abc")],
        "clawstaff:claws[0].image",
        '"ghcr.io/x/y@sha256:abc"',
        "not 64 lower-case hex",
        "name[:tag]@sha256:",
    ),
    "image sha512": (
        [("claws[0].image", "ghcr.io/x/y@sha512:" + "a" * 128)],
        "clawstaff:claws[0].image",
        json.dumps("ghcr.io/x/y@sha512:" + "a" * 128),
        "not a sha256 digest",
        "@sha256:",
    ),
    "image bad name": (
        [("claws[0].image", "Ghcr.io/X Y@sha256:" + "a" * 64)],
        "clawstaff:claws[0].image",
        json.dumps("Ghcr.io/X Y@sha256:" + "a" * 64),
        "not a valid image name",
        "name[:tag]",
    ),
    # egress entries that are not host:port
    "egress URL": (
        [("claws[0].egress[0]", "https://api.anthropic.com")],
        "clawstaff:claws[0].egress[0]",
        '"https://api.anthropic.com"',
        "a URL",
        "no scheme",
    ),
    "egress path": (
        [("claws[0].egress[0]", "api.anthropic.com:443/v1")],
        "clawstaff:claws[0].egress[0]",
        '"api.anthropic.com:443/v1"',
        "has a path",
        "host:port",
    ),
    "egress private IP": (
        [("claws[0].egress[0]", "10.0.0.5:443")],
        "clawstaff:claws[0].egress[0]",
        '"10.0.0.5:443"',
        "a private IP address",
        "public DNS name",
    ),
    "egress metadata IP": (
        [("claws[0].egress[0]", "169.254.169.254:80")],
        "clawstaff:claws[0].egress[0]",
        '"169.254.169.254:80"',
        "a private IP address",
        "IP address",
    ),
    "egress public IP": (
        [("claws[0].egress[0]", "1.1.1.1:443")],
        "clawstaff:claws[0].egress[0]",
        '"1.1.1.1:443"',
        "an IP address",
        "public DNS name",
    ),
    "egress IPv6": (
        [("claws[0].egress[0]", "[2606:4700::1111]:443")],
        "clawstaff:claws[0].egress[0]",
        '"[2606:4700::1111]:443"',
        "an IPv6 address",
        "host:port",
    ),
    "egress wildcard": (
        [("claws[0].egress[0]", "*.slack.com:443")],
        "clawstaff:claws[0].egress[0]",
        '"*.slack.com:443"',
        "a wildcard",
        "no scheme, path, wildcard",
    ),
    "egress without port": (
        [("claws[0].egress[0]", "api.anthropic.com")],
        "clawstaff:claws[0].egress[0]",
        '"api.anthropic.com"',
        "no port",
        "port 1-65535",
    ),
    "egress port zero": (
        [("claws[0].egress[0]", "api.anthropic.com:0")],
        "clawstaff:claws[0].egress[0]",
        '"api.anthropic.com:0"',
        "port is not a number from 1 to 65535",
        "1-65535",
    ),
    "egress port too high": (
        [("claws[0].egress[0]", "api.anthropic.com:70000")],
        "clawstaff:claws[0].egress[0]",
        '"api.anthropic.com:70000"',
        "from 1 to 65535",
        "1-65535",
    ),
    "egress named port": (
        [("claws[0].egress[0]", "api.anthropic.com:https")],
        "clawstaff:claws[0].egress[0]",
        '"api.anthropic.com:https"',
        "not a number",
        "1-65535",
    ),
    "egress trailing dot": (
        [("claws[0].egress[0]", "api.anthropic.com.:443")],
        "clawstaff:claws[0].egress[0]",
        '"api.anthropic.com.:443"',
        "ends with a dot",
        "trailing dot",
    ),
    "egress localhost": (
        [("claws[0].egress[0]", "localhost:8080")],
        "clawstaff:claws[0].egress[0]",
        '"localhost:8080"',
        "a local or internal name",
        "localhost",
    ),
    "egress .internal": (
        [("claws[0].egress[0]", "metadata.google.internal:80")],
        "clawstaff:claws[0].egress[0]",
        '"metadata.google.internal:80"',
        "a local or internal name",
        ".internal",
    ),
    "egress .local": (
        [("claws[0].egress[0]", "printer.local:631")],
        "clawstaff:claws[0].egress[0]",
        '"printer.local:631"',
        "a local or internal name",
        ".local",
    ),
    "egress single label": (
        [("claws[0].egress[0]", "metadata:80")],
        "clawstaff:claws[0].egress[0]",
        '"metadata:80"',
        "not a fully qualified name",
        "public DNS name",
    ),
    "egress short IP form": (
        [("claws[0].egress[0]", "127.1:80")],
        "clawstaff:claws[0].egress[0]",
        '"127.1:80"',
        "looks like an IP address",
        "public DNS name",
    ),
    "egress underscore": (
        [("claws[0].egress[0]", "my_api.example.com:443")],
        "clawstaff:claws[0].egress[0]",
        '"my_api.example.com:443"',
        "not a DNS name",
        "public DNS name",
    ),
    "control plane URL": (
        [("controlPlane", "https://control.clawstaff.example")],
        "clawstaff:controlPlane",
        '"https://control.clawstaff.example"',
        "a URL",
        "control.clawstaff.example:443",
    ),
    "control plane IP": (
        [("controlPlane", "192.168.1.10:443")],
        "clawstaff:controlPlane",
        '"192.168.1.10:443"',
        "a private IP address",
        "public DNS name",
    ),
    # secret names and values
    "secret name lower-case": (
        [("claws[0].secrets[0]", "anthropic-key")],
        "clawstaff:claws[0].secrets[0]",
        '"anthropic-key"',
        "not an environment variable name",
        "[A-Z_][A-Z0-9_]*",
    ),
    "secret name starting with a digit": (
        [("claws[0].secrets[0]", "1TOKEN")],
        "clawstaff:claws[0].secrets[0]",
        '"1TOKEN"',
        "not an environment variable name",
        "[A-Z_][A-Z0-9_]*",
    ),
    "secret name reserved": (
        [("claws[0].secrets[0]", "LD_PRELOAD")],
        "clawstaff:claws[0].secrets[0]",
        '"LD_PRELOAD"',
        "reserved by the cage runtime",
        "LD_PRELOAD",
    ),
    "secret name of the runtime": (
        [("claws[0].secrets[0]", "CLAWCAGE_SEALED")],
        "clawstaff:claws[0].secrets[0]",
        '"CLAWCAGE_SEALED"',
        "reserved by the cage runtime",
        "CLAWCAGE_",
    ),
    "secret listed without a value": (
        [("clawSecrets.acme-support.SLACK_BOT_TOKEN", DELETE)],
        "clawstaff:clawSecrets.acme-support.SLACK_BOT_TOKEN",
        None,
        "missing",
        "pulumi config set --secret --path 'clawSecrets.acme-support.SLACK_BOT_TOKEN'",
    ),  # fmt: skip
    "secrets of a claw all missing": (
        [("clawSecrets.globex-triage", DELETE)],
        "clawstaff:clawSecrets.globex-triage.OPENAI_API_KEY",
        None,
        "missing",
        "clawSecrets.globex-triage.OPENAI_API_KEY",
    ),  # fmt: skip
    "secret value empty": (
        [("clawSecrets.acme-support.SLACK_BOT_TOKEN", "")],
        "clawstaff:clawSecrets.acme-support.SLACK_BOT_TOKEN",
        "[secret]",
        "empty",
        "non-empty string",
    ),
    "stale claw in clawSecrets": (
        [("clawSecrets.ghost-claw", {"TOKEN": "TOPSECRET-stale"})],
        "clawstaff:clawSecrets.ghost-claw",
        "[secret]",
        "a stale credential: no claw has this name",
        "pulumi config rm --path 'clawSecrets.ghost-claw'",
    ),  # fmt: skip
    "stale secret name": (
        [("clawSecrets.acme-support.OLD_TOKEN", "TOPSECRET-old")],
        "clawstaff:clawSecrets.acme-support.OLD_TOKEN",
        "[secret]",
        'claw "acme-support" does not list OLD_TOKEN',
        "ANTHROPIC_API_KEY, SLACK_BOT_TOKEN",
    ),  # fmt: skip
    "sealing key too short": (
        [("sealingKey", "TOPSECRET")],
        "clawstaff:sealingKey",
        "[secret]",
        "shorter than 32 characters",
        "openssl rand",
    ),
    # pins and capacity
    "pin to unknown host": (
        [("claws[1].host", "nbg1-cage-09")],
        "clawstaff:claws[1].host",
        '"nbg1-cage-09"',
        "not a host of this stack",
        "fsn1-cage-01, hel1-metal-01",
    ),
    "claw memory above every host": (
        [("claws[0].memory", "256GiB"), ("claws[0].tmpfs", "1GiB")],
        "clawstaff:claws[0].memory",
        '"256GiB"',
        'claw "acme-support" needs memory 256GiB but the largest host, hel1-metal-01, has 128GiB',
        "at most 128GiB",
    ),  # fmt: skip
    "claw cpus above its pinned host": (
        [("claws[1].host", "fsn1-cage-01"), ("claws[1].cpus", 12)],
        "clawstaff:claws[1].cpus",
        "12",
        'claw "globex-triage" needs cpus 12 but its pinned host, fsn1-cage-01, has 8',
        "at most 8",
    ),  # fmt: skip
    "claw volume above every disk": (
        [("claws[1].volume", "1TB")],
        "clawstaff:claws[1].volume",
        '"1TB"',
        'claw "globex-triage" needs disk 1TB but its pinned host, hel1-metal-01, has 900GB',
        "at most 900GB",
    ),  # fmt: skip
    "claw fits no single host": (
        [("hosts[1].disk", "200GB"), ("claws[0].cpus", 10), ("claws[0].volume", "220GB")],
        "clawstaff:claws[0]",
        "cpus 10, memory 1GiB, volume 220GB",
        'claw "acme-support" fits no single host (fsn1-cage-01 lacks cpus (has 8); hel1-metal-01 lacks disk (has 200GB))',
        "one host can hold at once",
    ),  # fmt: skip
    # host kinds with the wrong fields
    "unknown host kind": (
        [("hosts[0].kind", "hetzner")],
        "clawstaff:hosts[0].kind",
        '"hetzner"',
        "not a host kind",
        "cloud, dedicated or local",
    ),
    "cloud host with an address": (
        [("hosts[0].address", "198.51.100.9")],
        "clawstaff:hosts[0].address",
        '"198.51.100.9"',
        "not a key of a cloud host",
        "serverType, location",
    ),
    "cloud host with capacity": (
        [("hosts[0].cpus", 8)],
        "clawstaff:hosts[0].cpus",
        "8",
        "not a key of a cloud host",
        "name, kind, serverType",
    ),
    "dedicated host without capacity": (
        [("hosts[1].cpus", DELETE)],
        "clawstaff:hosts[1].cpus",
        None,
        "missing",
        "number of CPUs",
    ),
    "dedicated host without memory": (
        [("hosts[1].memory", DELETE)],
        "clawstaff:hosts[1].memory",
        None,
        "missing",
        "a size",
    ),
    "dedicated host without host key": (
        [("hosts[1].hostKey", DELETE)],
        "clawstaff:hosts[1].hostKey",
        None,
        "missing",
        "ssh-keyscan",
    ),
    "dedicated host with a server type": (
        [("hosts[1].serverType", "ccx33")],
        "clawstaff:hosts[1].serverType",
        '"ccx33"',
        "not a key of a dedicated host",
        "address, hostKey",
    ),
    "dedicated private address": (
        [("hosts[1].address", "10.0.0.7")],
        "clawstaff:hosts[1].address",
        '"10.0.0.7"',
        "not a public address",
        "not private, loopback, link-local",
    ),
    "dedicated loopback address": (
        [("hosts[1].address", "127.0.0.1")],
        "clawstaff:hosts[1].address",
        '"127.0.0.1"',
        "not a public address",
        "public IPv4",
    ),
    "dedicated link-local address": (
        [("hosts[1].address", "fe80::1")],
        "clawstaff:hosts[1].address",
        '"fe80::1"',
        "not a public address",
        "public IPv4",
    ),
    "dedicated CGNAT address": (
        [("hosts[1].address", "100.64.0.1")],
        "clawstaff:hosts[1].address",
        '"100.64.0.1"',
        "not a public address",
        "shared",
    ),
    "dedicated host name as address": (
        [("hosts[1].address", "metal.example.com")],
        "clawstaff:hosts[1].address",
        '"metal.example.com"',
        "not an IP address",
        "public IPv4",
    ),
    "dedicated host key garbage": (
        [("hosts[1].hostKey", "ssh-ed25519 nonsense")],
        "clawstaff:hosts[1].hostKey",
        '"ssh-ed25519 nonsense"',
        "not an OpenSSH public key",
        "ssh-keyscan",
    ),
    "unknown server type": (
        [("hosts[0].serverType", "cx21")],
        "clawstaff:hosts[0].serverType",
        '"cx21"',
        "not a known Hetzner Cloud server type",
        "cx22",
    ),
    "unknown location": (
        [("hosts[0].location", "fra1")],
        "clawstaff:hosts[0].location",
        '"fra1"',
        "not a Hetzner location",
        "fsn1, nbg1, hel1, ash, hil, sin",
    ),
    "server type not offered there": (
        [("hosts[0].serverType", "cax11"), ("hosts[0].location", "ash")],
        "clawstaff:hosts[0].location",
        '"ash"',
        "Hetzner does not offer cax11 there",
        "for cax11: fsn1, nbg1, hel1",
    ),  # fmt: skip
    "unsupported host image": (
        [("hosts[0].image", "ubuntu-24.04")],
        "clawstaff:hosts[0].image",
        '"ubuntu-24.04"',
        "not a supported host image",
        "debian-12",
    ),
    "local host beside cloud hosts": (
        [("hosts[2]", {"name": "laptop", "kind": "local"})],
        "clawstaff:hosts[2].kind",
        '"local"',
        "a local host in a stack with a cloud host (hosts[0])",
        "a local host alone",
    ),
    # empty lists
    "no hosts": ([("hosts", [])], "clawstaff:hosts", "[]", "an empty list", "a non-empty list of hosts"),
    "no claws": ([("claws", [])], "clawstaff:claws", "[]", "an empty list", "a non-empty list of claws"),
    # operators' access
    "no admin for cloud hosts": ([("admin", DELETE)], "clawstaff:admin", None, "missing", "for cloud hosts"),
    "no operator keys": (
        [("admin.sshPublicKeys", [])],
        "clawstaff:admin.sshPublicKeys",
        "[]",
        "missing or empty",
        "at least one OpenSSH public key",
    ),
    "no SSH networks": (
        [("admin.sshAllowedCidrs", DELETE)],
        "clawstaff:admin.sshAllowedCidrs",
        None,
        "missing",
        "at least one network",
    ),
    "SSH from everywhere": (
        [("admin.sshAllowedCidrs[0]", "0.0.0.0/0")],
        "clawstaff:admin.sshAllowedCidrs[0]",
        '"0.0.0.0/0"',
        "opens SSH to the whole internet",
        "never 0.0.0.0/0 or ::/0",
    ),
    "SSH from everywhere, IPv6": (
        [("admin.sshAllowedCidrs[1]", "::/0")],
        "clawstaff:admin.sshAllowedCidrs[1]",
        '"::/0"',
        "opens SSH to the whole internet",
        "never 0.0.0.0/0 or ::/0",
    ),
    "CIDR with host bits": (
        [("admin.sshAllowedCidrs[0]", "203.0.113.5/24")],
        "clawstaff:admin.sshAllowedCidrs[0]",
        '"203.0.113.5/24"',
        "did you mean 203.0.113.0/24?",
        "IPv4 or IPv6 network",
    ),
    "not a CIDR": (
        [("admin.sshAllowedCidrs[0]", "office")],
        "clawstaff:admin.sshAllowedCidrs[0]",
        '"office"',
        "not a network in CIDR notation",
        "IPv4 or IPv6 network",
    ),
    "operator key garbage": (
        [("admin.sshPublicKeys[0]", "ssh-ed25519 AAAA")],
        "clawstaff:admin.sshPublicKeys[0]",
        '"ssh-ed25519 AAAA"',
        "not an OpenSSH public key",
        "ssh-ed25519 AAAAC3Nza",
    ),
    "operator key weak RSA": (
        [("admin.sshPublicKeys[0]", RSA_1024)],
        "clawstaff:admin.sshPublicKeys[0]",
        json.dumps(RSA_1024),
        "an RSA key of only 1024 bits",
        "at least 2048 bits",
    ),
}


@pytest.mark.parametrize(("changes", "key", "value", "reason", "allowed"), MISTAKES.values(), ids=MISTAKES.keys())
def test_each_mistake_names_file_key_value_and_what_is_allowed(changes, key, value, reason, allowed):
    error = config_error(edited(prod_raw(), *changes))
    assert error.stack_file == "Pulumi.prod.yaml"
    assert_names(error, key, value, reason, allowed)


def test_message_shape_is_one_paragraph():
    error = config_error(edited(prod_raw(), ("claws[2].memory", "1 GB x")))
    assert str(error) == (
        'Pulumi.prod.yaml: clawstaff:claws[2].memory = "1 GB x": not a size; '
        "allowed: a size of at least 16MiB, such as 512MiB or 2GiB."
    )
    assert (error.key, error.value, error.reason) == ("clawstaff:claws[2].memory", '"1 GB x"', "not a size")


def test_a_pasted_private_key_is_named_but_never_echoed():
    private = "-----BEGIN OPENSSH PRIVATE KEY-----\nTOPSECRET\n-----END OPENSSH PRIVATE KEY-----"
    error = config_error(edited(prod_raw(), ("admin.sshPublicKeys[0]", private)))
    assert_names(error, "clawstaff:admin.sshPublicKeys[0]", "[secret]", "a PRIVATE key", "OpenSSH public key")


@pytest.mark.parametrize("key", ["clawstaff:sealingKey", "clawstaff:clawSecrets"])
def test_secrets_stored_in_plain_text_are_refused(key):
    error = config_error(prod_raw(), secret_keys=SECRET_KEYS - {key})
    assert_names(
        error, key, "[secret]", "stored in plain text; it must be set with `pulumi config set --secret`", "--secret"
    )
    assert SEALING_KEY not in str(error)


def test_a_key_without_namespace_is_a_typo():
    raw = prod_raw()
    raw["hosts"] = raw.pop("clawstaff:hosts")
    error = config_error(raw)
    assert str(error) == "Pulumi.prod.yaml: hosts is a key without a namespace; allowed: clawstaff:hosts."


def test_two_local_hosts_are_refused():
    error = config_error(edited(local_raw(), ("hosts[1]", {"name": "desk", "kind": "local"})), stack="local")
    assert_names(
        error,
        "clawstaff:hosts[1].kind",
        '"local"',
        "a second local host (hosts[0] is local too)",
        "at most one local host",
    )
    assert str(error).startswith("Pulumi.local.yaml: ")


def test_the_first_mistake_is_reported_in_file_order():
    error = config_error(edited(prod_raw(), ("hosts[0].serverType", "nope"), ("claws[0].memory", "nope")))
    assert error.key == "clawstaff:hosts[0].serverType"


def test_config_error_is_a_pulumi_run_error():
    """`pulumi up` prints a RunError's message without a traceback."""
    error = config_error(edited(prod_raw(), ("claws[0].pids", 1)))
    assert isinstance(error, pulumi.RunError)


# --- valid configs -------------------------------------------------------------------------------


def test_a_prod_config_parses_into_typed_objects():
    config = parse_stack_config(prod_raw(), stack="prod", secret_keys=SECRET_KEYS)

    assert (config.stack, config.stack_file) == ("prod", "Pulumi.prod.yaml")
    assert config.control_plane == Endpoint("control.clawstaff.example", 443)
    assert str(config.control_plane) == "control.clawstaff.example:443"
    assert config.admin.ssh_allowed_cidrs == ("203.0.113.0/24", "2001:db8::/48")
    assert config.admin.ssh_public_keys == (OPERATOR_KEY,)

    cloud = config.host("fsn1-cage-01")
    assert (cloud.kind, cloud.server_type, cloud.location, cloud.image) == ("cloud", "ccx33", "fsn1", "debian-13")
    assert (cloud.capacity.cpus, cloud.capacity.memory, cloud.capacity.disk) == (Decimal(8), 32 * GiB, 240 * 1000**3)
    assert (cloud.address, cloud.host_key) == (None, None)

    metal = config.host("hel1-metal-01")
    assert (metal.kind, metal.address, metal.host_key, metal.server_type) == (
        "dedicated",
        "198.51.100.7",
        HOST_KEY,
        None,
    )
    assert (metal.capacity.cpus, metal.capacity.memory, metal.capacity.disk) == (Decimal(16), 128 * GiB, 900 * 1000**3)

    support = config.claw("acme-support")
    assert (
        support.org,
        support.image,
        support.cpus,
        support.memory,
        support.pids,
        support.tmpfs,
        support.volume,
        support.host,
    ) == ("acme", IMAGE, Decimal(1), GiB, 256, 256 * MiB, None, None)
    assert support.egress == (Endpoint("api.anthropic.com", 443), Endpoint("slack.com", 443))
    assert support.secrets == ("ANTHROPIC_API_KEY", "SLACK_BOT_TOKEN")
    triage = config.claw("globex-triage")
    assert (triage.cpus, triage.volume, triage.host) == (Decimal("0.5"), 5 * GiB, "hel1-metal-01")
    oncall = config.claw("initech-oncall")
    assert (oncall.cpus, oncall.egress, oncall.secrets) == (Decimal("1.5"), (), ())

    assert config.sealing_key == SEALING_KEY
    assert config.claw_secrets == prod_raw()["clawstaff:clawSecrets"]
    assert [c.name for c in config.claws] == ["acme-support", "globex-triage", "initech-oncall"]


def test_repr_of_a_config_carries_no_secret():
    config = parse_stack_config(prod_raw(), stack="prod", secret_keys=SECRET_KEYS)
    assert "TOPSECRET" not in repr(config)


def test_a_local_config_needs_no_admin_and_gets_default_capacity():
    config = parse_stack_config(local_raw(), stack="local", secret_keys=SECRET_KEYS)
    (laptop,) = config.hosts
    assert (laptop.name, laptop.kind) == ("laptop", "local")
    assert (laptop.capacity.cpus, laptop.capacity.memory, laptop.capacity.disk) == (Decimal(2), 4 * GiB, 20 * 1000**3)
    assert config.admin.ssh_allowed_cidrs == () and config.admin.ssh_public_keys == ()


def test_a_claw_without_secrets_needs_no_claw_secrets():
    raw = edited(local_raw(), ("claws[0].secrets", []), ("clawSecrets", DELETE))
    assert parse_stack_config(raw, stack="local", secret_keys={"clawstaff:sealingKey"}).claw_secrets == {}


def test_names_and_cidrs_are_normalised():
    raw = edited(
        prod_raw(),
        ("claws[0].egress[0]", "API.Anthropic.com:0443"),
        ("admin.sshAllowedCidrs", ["203.0.113.7", "2001:DB8::/48", "203.0.113.7/32"]),
    )
    config = parse_stack_config(raw, stack="prod", secret_keys=SECRET_KEYS)
    assert config.claw("acme-support").egress[0] == Endpoint("api.anthropic.com", 443)
    assert config.admin.ssh_allowed_cidrs == ("203.0.113.7/32", "2001:db8::/48")


@pytest.mark.parametrize(
    ("server_type", "location", "cpus", "memory_gib", "disk_gb"),
    [
        ("cx22", "nbg1", 2, 4, 40),
        ("cx52", "hel1", 16, 32, 320),
        ("cpx11", "ash", 2, 2, 40),
        ("cpx51", "sin", 16, 32, 360),
        ("ccx13", "hil", 2, 8, 80),
        ("ccx63", "fsn1", 48, 192, 960),
        ("cax11", "fsn1", 2, 4, 40),
        ("cax41", "hel1", 16, 32, 320),
    ],
)
def test_cloud_capacity_comes_from_the_catalogue(server_type, location, cpus, memory_gib, disk_gb):
    raw = edited(prod_raw(), ("hosts[0].serverType", server_type), ("hosts[0].location", location))
    host = parse_stack_config(raw, stack="prod", secret_keys=SECRET_KEYS).host("fsn1-cage-01")
    assert host.capacity == config_module.Capacity(Decimal(cpus), memory_gib * GiB, disk_gb * 1000**3)


def test_catalogue_holds_the_documented_types_and_locations():
    assert set(LOCATIONS) == {"fsn1", "nbg1", "hel1", "ash", "hil", "sin"}
    expected = {"cx22", "cx32", "cx42", "cx52", "cpx11", "cpx21", "cpx31", "cpx41", "cpx51",
                "ccx13", "ccx23", "ccx33", "ccx43", "ccx53", "ccx63", "cax11", "cax21", "cax31", "cax41"}  # fmt: skip
    assert expected <= set(SERVER_TYPES)
    for server_type in SERVER_TYPES.values():
        assert (
            server_type.cpus > 0
            and server_type.memory > 0
            and server_type.disk > 0
            and server_type.locations <= set(LOCATIONS)
        )


def test_objects_given_as_json_text_are_decoded():
    """The Pulumi runtime hands object values to the program as JSON text."""
    raw = prod_raw()
    for key in ("clawstaff:admin", "clawstaff:hosts", "clawstaff:claws", "clawstaff:clawSecrets"):
        raw[key] = json.dumps(raw[key])
    assert parse_stack_config(raw, stack="prod", secret_keys=SECRET_KEYS) == parse_stack_config(
        prod_raw(), stack="prod", secret_keys=SECRET_KEYS
    )


def test_text_that_is_not_json_is_reported_as_the_wrong_type():
    error = config_error(edited(prod_raw(), ("hosts", "fsn1-cage-01")))
    assert_names(error, "clawstaff:hosts", '"fsn1-cage-01"', "not a list", "list of hosts")


# --- load_stack_file -----------------------------------------------------------------------------

STACK_FILE = """\
encryptionsalt: v1:abc
config:
  hcloud:token:
    secure: v1:AAAA
  clawstaff:controlPlane: control.clawstaff.example:443
  clawstaff:proxyImage: {proxy_image}
  clawstaff:admin:
    sshAllowedCidrs: [203.0.113.0/24]
    sshPublicKeys: ["{key}"]
  clawstaff:hosts:
    - {{name: fsn1-cage-01, kind: cloud, serverType: cpx31, location: fsn1}}
  clawstaff:claws:
    - name: acme-support
      org: acme
      image: {image}
      cpus: 1
      memory: 1GiB
      pids: 256
      tmpfs: 256MiB
      egress: [api.anthropic.com:443]
      secrets: [ANTHROPIC_API_KEY, SLACK_BOT_TOKEN]
  clawstaff:sealingKey:
    secure: v1:BBBB
  clawstaff:clawSecrets:
    acme-support:
      ANTHROPIC_API_KEY:
        secure: v1:CCCC
      SLACK_BOT_TOKEN:
        {slack}
"""


def write_stack(tmp_path: Path, slack: str = "secure: v1:DDDD", name: str = "Pulumi.dev.yaml") -> Path:
    path = tmp_path / name
    path.write_text(STACK_FILE.format(key=OPERATOR_KEY, image=IMAGE, proxy_image=PROXY_IMAGE, slack=slack))
    return path


def test_load_stack_file_replaces_secure_values_at_any_depth(tmp_path):
    raw, secret_keys = load_stack_file(write_stack(tmp_path))
    assert raw["clawstaff:sealingKey"] == "[secret:clawstaff:sealingKey]"
    assert raw["hcloud:token"] == "[secret:hcloud:token]"
    assert raw["clawstaff:clawSecrets"] == {
        "acme-support": {
            "ANTHROPIC_API_KEY": "[secret:clawstaff:clawSecrets.acme-support.ANTHROPIC_API_KEY]",
            "SLACK_BOT_TOKEN": "[secret:clawstaff:clawSecrets.acme-support.SLACK_BOT_TOKEN]",
        }
    }
    assert {"clawstaff:sealingKey", "clawstaff:clawSecrets", "hcloud:token"} <= secret_keys
    assert "clawstaff:hosts" not in secret_keys
    assert "v1:" not in json.dumps(raw)

    config = parse_stack_config(raw, stack="dev", secret_keys=secret_keys)
    assert config.sealing_key == "[secret:clawstaff:sealingKey]"
    assert config.host("fsn1-cage-01").capacity.cpus == Decimal(4)


def test_a_plaintext_secret_beside_secure_ones_is_caught(tmp_path):
    raw, secret_keys = load_stack_file(write_stack(tmp_path, slack="xoxb-TOPSECRET-plain"))
    error = config_error(raw, stack="dev", secret_keys=secret_keys)
    assert_names(
        error, "clawstaff:clawSecrets.acme-support.SLACK_BOT_TOKEN", "[secret]",
        "stored in plain text; it must be set with `pulumi config set --secret`", "--secret",
    )  # fmt: skip
    assert str(error).startswith("Pulumi.dev.yaml: ")


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (None, "no such file"),
        ("config: [unclosed\n", "not valid YAML at line"),
        ("encryptionsalt: v1:abc\n", "has no config map"),
        ("- just\n- a list\n", "has no config map"),
    ],
)
def test_load_stack_file_errors_are_config_errors(tmp_path, content, reason):
    path = tmp_path / "Pulumi.dev.yaml"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=re.escape(reason)) as caught:
        load_stack_file(path)
    assert str(caught.value).startswith("Pulumi.dev.yaml: ")
    assert "; allowed: " in str(caught.value)


def test_the_project_stack_files_are_valid():
    root = Path(__file__).resolve().parents[2]
    for stack in ("prod", "local"):
        raw, secret_keys = load_stack_file(root / f"Pulumi.{stack}.yaml")
        assert parse_stack_config(raw, stack=stack, secret_keys=secret_keys).claws


# --- the Pulumi runtime's config -----------------------------------------------------------------


def _as_runtime_values(raw: dict[str, Any]) -> dict[str, str]:
    """What the engine hands the program: every value a string, objects as JSON text."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def test_read_runtime_config_reads_the_engine_config_and_its_secret_keys(monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)

    def run() -> tuple[dict[str, Any], set[str], config_module.StackConfig]:
        runtime_config.set_all_config(
            _as_runtime_values(prod_raw()), ["clawstaff:sealingKey", "clawstaff:clawSecrets", "hcloud:token"]
        )
        raw, secret_keys = read_runtime_config()
        monkeypatch.setattr(pulumi, "get_stack", lambda: "prod")
        return raw, secret_keys, config_module.load()

    # A copied context keeps the global config of other tests untouched.
    raw, secret_keys, loaded = contextvars.copy_context().run(run)
    assert set(raw) == {k for k in prod_raw() if k.startswith("clawstaff:")}
    assert secret_keys == {"clawstaff:sealingKey", "clawstaff:clawSecrets"}
    assert loaded == parse_stack_config(prod_raw(), stack="prod", secret_keys=SECRET_KEYS)


def test_read_runtime_config_reads_the_pulumi_config_environment(monkeypatch):
    monkeypatch.setenv("PULUMI_CONFIG", json.dumps(_as_runtime_values(local_raw())))
    monkeypatch.setenv("PULUMI_CONFIG_SECRET_KEYS", json.dumps(["clawstaff:sealingKey", "clawstaff:clawSecrets"]))

    def run() -> tuple[dict[str, Any], set[str]]:
        runtime_config.set_all_config({}, [])
        return read_runtime_config()

    raw, secret_keys = contextvars.copy_context().run(run)
    assert secret_keys == SECRET_KEYS
    config = parse_stack_config(raw, stack="local", secret_keys=secret_keys)
    assert config.claw("acme-support").secrets == ("ANTHROPIC_API_KEY",)


def test_runtime_plaintext_secret_is_refused(monkeypatch):
    monkeypatch.delenv("PULUMI_CONFIG", raising=False)
    monkeypatch.delenv("PULUMI_CONFIG_SECRET_KEYS", raising=False)

    def run() -> tuple[dict[str, Any], set[str]]:
        runtime_config.set_all_config(_as_runtime_values(local_raw()), ["clawstaff:clawSecrets"])
        return read_runtime_config()

    raw, secret_keys = contextvars.copy_context().run(run)
    error = config_error(raw, stack="local", secret_keys=secret_keys)
    assert_names(error, "clawstaff:sealingKey", "[secret]", "must be set with `pulumi config set --secret`", "--secret")


# --- whatever the input, a ConfigError and never a traceback ---------------------------------------

_json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8) | st.integers(), inner, max_size=3),
    max_leaves=8,
)


def _paths(node: Any, prefix: str) -> list[str]:
    """Every key path in a raw config, for the fuzz test to aim at."""
    paths = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            paths += _paths(v, f"{prefix}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            paths += _paths(v, f"{prefix}[{i}]")
    return paths


FUZZ_PATHS = [p for k, v in prod_raw().items() if k.startswith("clawstaff:") for p in _paths(v, k)]


@settings(max_examples=400, deadline=None)
@given(path=st.sampled_from(FUZZ_PATHS), value=_json_values)
def test_any_value_anywhere_gives_a_config_error_or_a_config(path, value):
    raw = edited(prod_raw(), (path, value))
    try:
        parse_stack_config(raw, stack="prod", secret_keys=SECRET_KEYS)
    except ConfigError as error:
        message = str(error)
        assert message.startswith("Pulumi.prod.yaml: clawstaff:") and "; allowed: " in message
        assert "TOPSECRET" not in message and SEALING_KEY not in message


@given(st.text(max_size=40))
def test_an_accepted_endpoint_is_a_public_dns_name(text):
    try:
        endpoint = config_module.parse_endpoint(text)
    except ValueError:
        return
    labels = endpoint.host.split(".")
    assert len(labels) >= 2 and endpoint.host == endpoint.host.lower() and 1 <= endpoint.port <= 65535
    assert not any(endpoint.host.endswith(s) for s in ("localhost", ".local", ".internal"))
    with pytest.raises(ValueError):
        ipaddress.ip_address(endpoint.host)


# --- built:<image>: the local stack's images, resolved from the last build's record -----------------


def test_built_images_resolve_to_the_recorded_ids(tmp_path, monkeypatch):
    record = tmp_path / "images.json"
    record.write_text(
        json.dumps({"claw-runtime": {"id": "sha256:" + "5c" * 32}, "egress-proxy": {"id": "sha256:" + "e7" * 32}})
    )
    monkeypatch.setenv("CLAWSTAFF_IMAGES_RECORD", str(record))
    raw = edited(local_raw(), ("proxyImage", "built:egress-proxy"), ("claws[0].image", "built:claw-runtime"))
    config = parse_stack_config(raw, stack="local", secret_keys=SECRET_KEYS)
    assert config.proxy_image == "sha256:" + "e7" * 32
    assert config.claws[0].image == "sha256:" + "5c" * 32


def test_built_image_without_a_recorded_build_says_run_make_images(tmp_path, monkeypatch):
    monkeypatch.setenv("CLAWSTAFF_IMAGES_RECORD", str(tmp_path / "missing" / "images.json"))
    raw = edited(local_raw(), ("claws[0].image", "built:claw-runtime"))
    error = config_error(raw, stack="local")
    assert_names(
        error,
        "clawstaff:claws[0].image",
        '"built:claw-runtime"',
        "does not exist: run `make images`",
        "built:claw-runtime / built:egress-proxy",
    )


def test_built_image_missing_from_the_record_or_unknown(tmp_path, monkeypatch):
    record = tmp_path / "images.json"
    record.write_text(json.dumps({"claw-runtime": {"id": "sha256:" + "5c" * 32}}))
    monkeypatch.setenv("CLAWSTAFF_IMAGES_RECORD", str(record))
    error = config_error(edited(local_raw(), ("proxyImage", "built:egress-proxy")), stack="local")
    assert_names(
        error, "clawstaff:proxyImage", '"built:egress-proxy"', "records no build of egress-proxy", "built:claw-runtime"
    )
    error = config_error(edited(local_raw(), ("proxyImage", "built:squid")), stack="local")
    assert_names(
        error, "clawstaff:proxyImage", '"built:squid"', "names no image this repository builds", "built:egress-proxy"
    )
    record.write_text("{not json")
    error = config_error(edited(local_raw(), ("proxyImage", "built:egress-proxy")), stack="local")
    assert "cannot be read" in str(error)


def test_no_committed_stack_file_or_test_pins_a_local_image_id():
    """A local image ID goes stale with the next Debian update: stacks name `built:<image>` instead."""
    import subprocess
    from tests.conftest import ROOT

    found = subprocess.run(
        [
            "git",
            "grep",
            "-nE",
            r"(^|[^@0-9a-f])sha256:[0-9a-f]{64}",
            "--",
            "Pulumi.*.yaml",
            "tests/*.py",
            "tests/**/*.py",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    real = [
        line
        for line in found.stdout.splitlines()
        if not re.search(r'sha256:" \+|sha256:([0-9a-f]{2})\1{31}|sha256:(c1a0){16}|sha256:(e9){32}', line)
    ]
    assert found.returncode in (0, 1) and real == []
