"""Sealed credentials: a claw's secrets encrypted for exactly one cage.

Why AES-SIV: it is deterministic (same key, claw and secrets give the same ciphertext), so an
unchanged claw shows no diff in `pulumi preview`, and it stays safe under that determinism because
SIV is misuse-resistant (a repeated plaintext reveals only that it repeated).

The wire format is shared with `images/claw-runtime/cage-init`, which cannot import this package.
It is deliberately small; change it only together with cage-init (tests seal here and open there):

    sealed    = "clawcage-v1:" + base64(AESSIV(cage_key).encrypt(plaintext, [AD_LABEL, claw]))
    plaintext = UTF-8 JSON object {NAME: value}, keys sorted, separators (",", ":"), no ASCII escaping
    cage_key  = HKDF-SHA256(sealing_key, length=64, salt=HKDF_SALT, info=HKDF_INFO_PREFIX + claw)
    key file  = base64(cage_key) + "\\n"   (what the host puts on its tmpfs, see cage_key_file_text)

The associated data binds the claw's name: a blob copied into another claw's cage does not open even
if both cages somehow held the same key. Nothing here logs or formats a secret into an error.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESSIV

from components.conventions import ENV_NAME_PATTERN, OPENER_RESERVED_NAMES
from components.kdf import hkdf_sha256

FORMAT_PREFIX = "clawcage-v1:"
AD_LABEL = b"clawcage-sealed-credentials-v1"
HKDF_SALT = b"clawstaff/clawcage/sealing-salt/v1"
HKDF_INFO_PREFIX = b"clawstaff/clawcage/cage-key/v1\x00"
CAGE_KEY_BYTES = 64  # AES-SIV with AES-256: two 256-bit keys
# The claw's name travels in this (non-secret) env var; cage-init uses it as associated data.
CLAW_ENV = "CLAWCAGE_CLAW"

# Environment variable names a claw may receive; the same rule as the stack config's `secrets`.
_ENV_NAME = re.compile(ENV_NAME_PATTERN + r"\Z")
# Names a sealed blob may not hold: cage-init's own copy of this list (part of the format) refuses them
# when it opens the blob. The stack config refuses more (components.conventions.RESERVED_ENV_NAMES).
RESERVED_NAMES = OPENER_RESERVED_NAMES


class SealError(Exception):
    """Sealed credentials could not be opened (wrong key, other claw, tampering, bad format).

    The message is fixed per cause and never contains key material or plaintext.
    """


def derive_cage_key(sealing_key: str, claw: str) -> bytes:
    """Derive the cage's own key from the stack's sealing secret.

    One key per cage means a leaked cage key opens that cage's blob only; the info string binds
    the claw's name, the salt is fixed so the derivation (and so the ciphertext) is stable.
    """
    if not sealing_key:
        raise ValueError("sealing key is empty")
    _check_claw(claw)
    return hkdf_sha256(sealing_key, salt=HKDF_SALT, info=HKDF_INFO_PREFIX + claw.encode("utf-8"), length=CAGE_KEY_BYTES)


def cage_key_file_text(cage_key: bytes) -> str:
    """The text of the key file the host writes to its tmpfs and mounts read-only at
    conventions.CAGE_KEY_MOUNT (ASCII, so it travels through string-only tooling intact)."""
    _check_key(cage_key)
    return base64.b64encode(cage_key).decode("ascii") + "\n"


def canonical_plaintext(env: Mapping[str, str]) -> bytes:
    """The one byte encoding of a secret map: sorted keys, no whitespace, UTF-8.

    Rejects names that are not environment variable names and values that exec() cannot carry
    (NUL), so that what is sealed is exactly what the claw will see.
    """
    for name, value in env.items():
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ValueError(f"secret name {name!r} is not an environment variable name (allowed: [A-Z_][A-Z0-9_]*)")
        if name in RESERVED_NAMES:
            raise ValueError(f"secret name {name!r} is reserved by the cage")
        if not isinstance(value, str):
            raise ValueError(f"secret {name} is not a string")  # never echo the value
        if "\x00" in value:
            raise ValueError(f"secret {name} contains a NUL character, which an environment variable cannot hold")
    return json.dumps(dict(env), sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def seal_credentials(cage_key: bytes, claw: str, env: Mapping[str, str]) -> str:
    """Encrypt a claw's secrets for its cage; deterministic, ASCII, safe to put in an env var."""
    _check_key(cage_key)
    _check_claw(claw)
    sealed = AESSIV(cage_key).encrypt(canonical_plaintext(env), [AD_LABEL, claw.encode("utf-8")])
    return FORMAT_PREFIX + base64.b64encode(sealed).decode("ascii")


def open_credentials(cage_key: bytes, claw: str, sealed: str) -> dict[str, str]:
    """Decrypt what seal_credentials produced; fail closed with SealError on any doubt."""
    try:
        _check_key(cage_key)
    except ValueError:
        raise SealError("cage key has the wrong length") from None
    if not isinstance(sealed, str) or not sealed.startswith(FORMAT_PREFIX):
        raise SealError("sealed credentials have an unknown format")
    try:
        blob = base64.b64decode(sealed[len(FORMAT_PREFIX) :], validate=True)
    except (binascii.Error, ValueError):
        raise SealError("sealed credentials are not valid base64") from None
    try:
        plaintext = AESSIV(cage_key).decrypt(blob, [AD_LABEL, claw.encode("utf-8")])
    except (InvalidTag, ValueError):
        raise SealError(
            "sealed credentials do not open with this cage's key for this claw (wrong key, other claw, or tampered)"
        ) from None
    try:
        env = json.loads(plaintext.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise SealError("sealed credentials hold malformed content") from None
    if not isinstance(env, dict) or not all(
        isinstance(k, str) and _ENV_NAME.match(k) and k not in RESERVED_NAMES and isinstance(v, str) and "\x00" not in v
        for k, v in env.items()
    ):
        raise SealError("sealed credentials hold malformed content")
    return env


def _check_key(cage_key: bytes) -> None:
    if not isinstance(cage_key, (bytes, bytearray)) or len(cage_key) != CAGE_KEY_BYTES:
        raise ValueError(f"cage key must be {CAGE_KEY_BYTES} bytes")


def _check_claw(claw: str) -> None:
    if not isinstance(claw, str) or not claw:
        raise ValueError("claw name is empty")
