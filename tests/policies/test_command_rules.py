"""Command policy: key material reaches a command only through stdin or environment, never its scripts."""

from __future__ import annotations

import base64
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from pulumi_policy.proxy import UNKNOWN_STRING_VALUE

import command_rules
from components.hostconfig import render_host_key_install
from components.hostkeys import derive_ssh_host_key
from tests.policies import fixtures as fx
from tests.policies.harness import policy_named, validate_resource

POLICY = "command-key-material-via-secrets"
KEY = base64.b64encode(bytes(range(7, 71))).decode()  # 64 random-looking bytes, as a sealing key would be


def check(props: dict[str, Any], type_: str = fx.COMMAND) -> list[str]:
    return validate_resource(policy_named(command_rules.POLICIES, POLICY), type_, props)


def openssh_public(key: Any) -> str:
    return key.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
@pytest.mark.parametrize(
    "make",
    [fx.limits_command, fx.key_command, fx.proxy_config_command, fx.volume_command],
    ids=["limits", "key", "proxy-config", "volume"],
)
def test_the_compliant_cage_commands_pass(make: Any, remote: bool) -> None:
    assert check(make(remote=remote), fx.REMOTE_COMMAND if remote else fx.COMMAND) == []


def test_the_dedicated_hosts_host_key_install_passes_although_it_pins_the_public_key() -> None:
    # components/host.py: the script embeds the derived *public* key; the private key arrives on stdin.
    host_key = derive_ssh_host_key(fx.SEALING_KEY, "hel1-metal-01")
    props = {
        "create": render_host_key_install(host_key),
        "stdin": host_key.private_openssh,
        "triggers": [host_key.fingerprint],
        "connection": fx.connection("hel1-metal-01"),
    }
    assert check(props, fx.REMOTE_COMMAND) == []


@pytest.mark.parametrize(
    "key",
    [
        ed25519.Ed25519PrivateKey.generate(),
        rsa.generate_private_key(public_exponent=65537, key_size=2048),
        ec.generate_private_key(ec.SECP256R1()),
        ec.generate_private_key(ec.SECP384R1()),
    ],
    ids=["ed25519", "rsa", "ecdsa-p256", "ecdsa-p384"],
)
def test_openssh_public_key_lines_are_not_key_material(key: Any) -> None:
    line = openssh_public(key)
    assert command_rules.key_like_literals(f"printf '%s\\n' '{line} admin@example' >> authorized_keys") == []
    assert command_rules.public_keys_in(line) == {tuple(line.split()[:2])}


def test_image_digests_paths_and_names_are_not_key_material() -> None:
    props = {
        "create": "docker pull ghcr.io/clawstaff/claw-runtime@sha256:"
        + "ab" * 32
        + " && mkdir -p /srv/clawstaff/volumes/acme-support-with-a-rather-long-name/data"
    }
    assert check(props) == []


PUBLIC = openssh_public(ed25519.Ed25519PrivateKey.generate())
PRIVATE_OPENSSH = derive_ssh_host_key(fx.SEALING_KEY, "some-host").private_openssh
PRIVATE_BODY = "".join(PRIVATE_OPENSSH.splitlines()[1:-1])
RANDOM_BLOB = base64.b64encode(bytes(range(100, 168))).decode()


@pytest.mark.parametrize(
    ("props", "expected"),
    [
        ({"create": f"echo '{KEY}' > /run/clawstaff/cages/acme-support/key"}, "key-like literal"),
        ({"create": "install -m 0400 /dev/stdin key", "delete": f"echo {KEY[:48]} | shred"}, "`delete` contains"),
        ({"create": "docker update --pids-limit 256 " + "0123456789abcdef" * 4}, "key-like literal"),
        (
            {
                "create": "cat > key <<EOF\n-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n-----END OPENSSH PRIVATE KEY-----\nEOF"
            },
            "contains a private key",
        ),
        ({"create": f"cat > /etc/ssh/ssh_host_ed25519_key <<EOF\n{PRIVATE_OPENSSH}EOF"}, "contains a private key"),
        # The private key's base64 without its armour, even next to a key-type word, is still key material.
        ({"create": f"echo ssh-ed25519 {PRIVATE_BODY[:200]} | base64 -d > key"}, "key-like literal"),
        # Random base64 dressed up as a public key line: the blob is not an ssh-ed25519 public key.
        ({"create": f"echo 'ssh-ed25519 AAAA{RANDOM_BLOB}' > key"}, "key-like literal"),
        # A real public key does not launder a secret that follows it.
        ({"create": f"echo '{PUBLIC}' > k.pub && echo {KEY} > k"}, "key-like literal"),
        (
            {"create": "printf %s hunter2hunter2 | fscrypt unlock", "stdin": "hunter2hunter2"},
            "contains the value of the command's stdin",
        ),
        (
            {
                "create": "curl -H 'Authorization: Bearer tok-1234567890' https://x",
                "environment": {"API_TOKEN": "tok-1234567890"},
            },
            "credential environment",
        ),
    ],
)
def test_key_material_in_a_script_is_refused(props: dict[str, Any], expected: str) -> None:
    messages = check(props)
    assert any(expected in m for m in messages), messages
    assert all(KEY not in m and "hunter2hunter2" not in m for m in messages), "messages must not echo secrets"


def test_an_unknown_script_fails_closed() -> None:
    messages = check({**fx.key_command(), "create": UNKNOWN_STRING_VALUE})
    assert len(messages) == 1 and "cannot verify `create`" in messages[0]


def test_other_resource_types_are_not_judged() -> None:
    assert check({"create": f"echo {KEY}"}, "docker:index/container:Container") == []
