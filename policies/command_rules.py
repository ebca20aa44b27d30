"""Resource rule for pulumi-command resources: key material goes in through stdin or environment only.

The scripts of a command (`create`, `update`, `delete`) are stored in the state in the clear, shown in
diffs and may end up in process listings and shell history on the host; `stdin` and `environment` carry
secrets as Pulumi secrets. A limit of what a policy can see: the Python policy SDK (pulumi-policy 1.21.0,
`Analyze`) unwraps secret values before the rule runs, so the rule cannot tell a secret `stdin` from a
plain one. It checks what it can see instead:

* no private key (PEM armour) in a script;
* no value of the command's own `stdin`, or of an `environment` entry named like a credential, in a
  script (someone interpolated the secret rather than passing it);
* no key-like literal in a script: a run of 40+ hex characters, or of 40+ base64 characters mixing upper
  and lower case and digits with high entropy, that is not a path, an image digest or an OpenSSH public
  key. This also rejects a container *id* in a script: pass the container's name through `environment`
  and keep every script a fixed text.

An OpenSSH public key line (`ssh-ed25519 AAAA...`, `ssh-rsa AAAA...`, `ecdsa-sha2-nistp256 AAAA...`) is
not key material: a script that installs or pins a host key may carry it. It counts as a public key only
if its base64 decodes to the wire form of a public key of the named type (the type string, then the
key's fields, nothing more); a private key, a PEM block or random base64 behind a key-type word is
still refused.
"""

from __future__ import annotations

import base64
import binascii
import math
import re
import struct
from collections import Counter
from collections.abc import Iterator, Mapping
from typing import Any

from cage_conventions import COMMANDS
from policy_support import field, resource_policy

Props = Mapping[str, Any]
Config = Mapping[str, Any]

SCRIPT_FIELDS = ("create", "update", "delete")
_PEM = re.compile(r"-----BEGIN [A-Z0-9 ]*(PRIVATE KEY|SECRET KEY|KEY BLOCK)-----")
_TOKEN = re.compile(r"(?<![A-Za-z0-9+/=_:.-])[A-Za-z0-9+/_-]{40,}={0,2}")
_HEX = re.compile(r"^[0-9a-fA-F]+$")
_CREDENTIAL_NAME = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|PASSPHRASE|CREDENTIAL", re.IGNORECASE)
MIN_SECRET_LENGTH = 8


_PUBLIC_KEY = re.compile(
    r"(?<![A-Za-z0-9@._-])(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp(?:256|384|521))[ \t]+"
    r"(AAAA[A-Za-z0-9+/]+={0,2})(?![A-Za-z0-9+/=])"
)
# The fields after the type string in each public key blob (RFC 4253, 5656, 8709).
_PUBLIC_KEY_FIELDS = {
    "ssh-ed25519": 1,
    "ssh-rsa": 2,
    "ecdsa-sha2-nistp256": 2,
    "ecdsa-sha2-nistp384": 2,
    "ecdsa-sha2-nistp521": 2,
}


def _ssh_strings(blob: bytes) -> list[bytes] | None:
    """The length-prefixed strings that make up `blob` exactly, None if it is not such a sequence."""
    strings, offset = [], 0
    while offset < len(blob):
        if offset + 4 > len(blob):
            return None
        (length,) = struct.unpack_from(">I", blob, offset)
        offset += 4
        if offset + length > len(blob):
            return None
        strings.append(blob[offset : offset + length])
        offset += length
    return strings


def is_openssh_public_key(key_type: str, body: str) -> bool:
    """True if `body` is the base64 of a `key_type` public key blob in OpenSSH's wire format."""
    try:
        blob = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return False
    strings = _ssh_strings(blob)
    if not strings or strings[0] != key_type.encode() or len(strings) != 1 + _PUBLIC_KEY_FIELDS[key_type]:
        return False
    if key_type == "ssh-ed25519":
        return len(strings[1]) == 32
    if key_type.startswith("ecdsa-sha2-"):
        return strings[1] == key_type.removeprefix("ecdsa-sha2-").encode() and len(strings[2]) > 0
    return all(strings[1:])  # ssh-rsa: exponent and modulus


def public_keys_in(text: str) -> set[tuple[str, str]]:
    """Every OpenSSH public key in `text`, as (type, base64): how the stack rules tell hosts apart."""
    return {
        (m.group(1), m.group(2)) for m in _PUBLIC_KEY.finditer(text) if is_openssh_public_key(m.group(1), m.group(2))
    }


def without_public_keys(script: str) -> str:
    """`script` with every OpenSSH public key's base64 blanked out, so it is not taken for key material."""

    def blank(match: re.Match[str]) -> str:
        if is_openssh_public_key(match.group(1), match.group(2)):
            return match.group(1) + " <public key>"
        return match.group(0)

    return _PUBLIC_KEY.sub(blank, script)


def _entropy(text: str) -> float:
    counts = Counter(text)
    return -sum(n / len(text) * math.log2(n / len(text)) for n in counts.values())


def key_like_literals(script: str) -> list[str]:
    """Runs of hex or base64 characters long and random enough to be key material."""
    found = []
    script = without_public_keys(script)
    for match in _TOKEN.finditer(script):
        token = match.group(0)
        if token.startswith("/") or script[max(0, match.start() - 7) : match.start()] == "sha256:":
            continue
        if _HEX.match(token) or (
            any(c.isdigit() for c in token)
            and any(c.islower() for c in token)
            and any(c.isupper() for c in token)
            and _entropy(token) >= 4.0
        ):
            found.append(token)
    return found


def _secret_values(props: Props) -> list[str]:
    values = []
    stdin = field(props, "stdin")
    if isinstance(stdin, str):
        values.append(stdin.strip())
    for name, value in (field(props, "environment", {}) or {}).items():
        if _CREDENTIAL_NAME.search(name) and isinstance(value, str):
            values.append(value.strip())
    return [v for v in values if len(v) >= MIN_SECRET_LENGTH]


def _redact(value: str) -> str:
    return value[:4] + "…" if len(value) > 4 else "…"


def check_key_material_not_in_script(props: Props, config: Config) -> Iterator[str]:
    secrets = _secret_values(props)
    for name in SCRIPT_FIELDS:
        script = field(props, name)
        if not isinstance(script, str) or not script:
            continue
        if _PEM.search(script):
            yield f"`{name}` contains a private key: pass it as a secret `stdin`."
        for secret in secrets:
            if secret in script:
                yield (
                    f"`{name}` contains the value of the command's stdin or credential environment "
                    f"({_redact(secret)}): reference it as $VARIABLE instead of interpolating it."
                )
        for token in key_like_literals(script):
            yield (
                f"`{name}` contains a key-like literal ({_redact(token)}, {len(token)} characters): pass key "
                f"material as a secret `stdin` or `environment`, and ids/names through `environment`."
            )


POLICIES = [
    resource_policy(
        "command-key-material-via-secrets",
        "Give key material to commands only as a secret `stdin` or `environment` value and refer "
        "to it from a fixed script; never interpolate it into `create`/`update`/`delete` (an "
        "OpenSSH public key line may appear there).",
        COMMANDS,
        check_key_material_not_in_script,
    ),
]
