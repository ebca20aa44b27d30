"""Sealed credentials: determinism, fail-closed opening, and the format cage-init shares."""

from __future__ import annotations

import base64
import hashlib
import hmac
import importlib.machinery
import importlib.util
import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from components import conventions
from components.sealing import (
    AD_LABEL,
    CAGE_KEY_BYTES,
    FORMAT_PREFIX,
    HKDF_INFO_PREFIX,
    HKDF_SALT,
    SealError,
    cage_key_file_text,
    canonical_plaintext,
    derive_cage_key,
    open_credentials,
    seal_credentials,
)

CAGE_INIT = Path(__file__).resolve().parents[2] / "images" / "claw-runtime" / "cage-init"
SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-do-not-leak-1234", "SLACK_BOT_TOKEN": "xoxb-äöü-ünïcode"}


def load_cage_init():
    """cage-init as a module: it has no .py suffix, so give the loader explicitly."""
    loader = importlib.machinery.SourceFileLoader("cage_init", str(CAGE_INIT))
    spec = importlib.util.spec_from_loader("cage_init", loader)
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def hkdf_sha256(ikm: bytes, salt: bytes, info: bytes, length: int) -> bytes:
    """RFC 5869 from the standard library, to check the derivation independently."""
    prk = hmac.new(salt, ikm, hashlib.sha256).digest()
    out, block = b"", b""
    for counter in range(1, -(-length // 32) + 1):
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        out += block
    return out[:length]


def test_cage_key_is_rfc5869_hkdf_bound_to_the_claw():
    key = derive_cage_key("stack-sealing-secret", "acme-support")
    assert len(key) == CAGE_KEY_BYTES == 64
    assert key == hkdf_sha256(b"stack-sealing-secret", HKDF_SALT, HKDF_INFO_PREFIX + b"acme-support", 64)
    assert key == derive_cage_key("stack-sealing-secret", "acme-support")
    assert key != derive_cage_key("stack-sealing-secret", "acme-billing")
    assert key != derive_cage_key("other-secret", "acme-support")


def test_format_is_pinned_by_a_known_answer():
    # Deployed cage-inits open what this produces: a change here is a format change (new prefix).
    key = derive_cage_key("correct horse battery staple", "acme-support")
    assert key.hex().startswith("e1be37e06798cb66a48df574ae483ced")
    assert seal_credentials(key, "acme-support", {"ANTHROPIC_API_KEY": "sk-test"}) == (
        "clawcage-v1:trlQ3SglzW+AEb6sXnLvXNwhGiAUYjp+SlLSYFd1YbaJR1wxzbgoyNnH2n6FDXs="
    )


@pytest.mark.parametrize("sealing_key, claw", [("", "acme"), ("k", "")])
def test_derive_refuses_empty_inputs(sealing_key, claw):
    with pytest.raises(ValueError):
        derive_cage_key(sealing_key, claw)


def test_sealing_is_deterministic_so_an_unchanged_claw_has_no_diff():
    key = derive_cage_key("s", "acme-support")
    reordered = dict(reversed(list(SECRETS.items())))
    assert seal_credentials(key, "acme-support", SECRETS) == seal_credentials(key, "acme-support", reordered)
    assert seal_credentials(key, "acme-support", SECRETS) != seal_credentials(
        key, "acme-support", {**SECRETS, "SLACK_BOT_TOKEN": "changed"}
    )


def test_sealed_text_is_ascii_with_prefix_and_holds_no_plaintext():
    sealed = seal_credentials(derive_cage_key("s", "acme-support"), "acme-support", SECRETS)
    assert sealed.startswith(FORMAT_PREFIX) and sealed.isascii()
    blob = base64.b64decode(sealed[len(FORMAT_PREFIX) :])
    for value in SECRETS.values():
        assert value.encode() not in blob and value not in sealed


@settings(max_examples=60, deadline=None)
@given(
    st.dictionaries(
        st.from_regex(r"[A-Z_][A-Z0-9_]{0,20}", fullmatch=True),
        st.text(st.characters(blacklist_characters="\x00", blacklist_categories=("Cs",)), max_size=80),
        max_size=6,
    )
)
def test_round_trip_any_secret_map(env):
    env = {
        k: v
        for k, v in env.items()
        if k
        not in {
            "PATH",
            "HOME",
            "CLAWCAGE_SEALED",
            "PYTHONPATH",
            "PYTHONHOME",
            "PYTHONSTARTUP",
            "LD_PRELOAD",
            "LD_LIBRARY_PATH",
        }
    }
    key = derive_cage_key("s", "c1")
    assert open_credentials(key, "c1", seal_credentials(key, "c1", env)) == env


def test_canonical_plaintext_is_sorted_compact_utf8():
    assert canonical_plaintext({"B": "2", "A": "ä"}) == '{"A":"ä","B":"2"}'.encode()


def _tamper(sealed: str, index: int) -> str:
    blob = bytearray(base64.b64decode(sealed[len(FORMAT_PREFIX) :]))
    blob[index] ^= 0x01
    return FORMAT_PREFIX + base64.b64encode(bytes(blob)).decode()


@pytest.mark.parametrize(
    "case",
    [
        "wrong key",
        "other claw",
        "flipped tag",
        "flipped body",
        "truncated",
        "no prefix",
        "not base64",
        "short key",
        "empty",
    ],
)
def test_open_fails_closed_and_says_nothing_secret(case):
    key = derive_cage_key("s", "acme-support")
    sealed = seal_credentials(key, "acme-support", SECRETS)
    args = {
        "wrong key": (derive_cage_key("other", "acme-support"), "acme-support", sealed),
        "other claw": (key, "acme-billing", sealed),
        "flipped tag": (key, "acme-support", _tamper(sealed, 0)),
        "flipped body": (key, "acme-support", _tamper(sealed, 20)),
        "truncated": (key, "acme-support", sealed[:-8]),
        "no prefix": (key, "acme-support", sealed[len(FORMAT_PREFIX) :]),
        "not base64": (key, "acme-support", FORMAT_PREFIX + "!!!!"),
        "short key": (key[:32], "acme-support", sealed),
        "empty": (key, "acme-support", ""),
    }[case]
    with pytest.raises(SealError) as err:
        open_credentials(*args)
    message = str(err.value)
    assert all(v not in message for v in SECRETS.values())
    assert base64.b64encode(key).decode() not in message and key.hex() not in message


def test_open_refuses_a_validly_sealed_reserved_name():
    # Only a holder of the key can produce this; cage-init must still not let it override PATH.
    from cryptography.hazmat.primitives.ciphers.aead import AESSIV

    key = derive_cage_key("s", "c1")
    blob = AESSIV(key).encrypt(b'{"PATH":"/evil"}', [AD_LABEL, b"c1"])
    with pytest.raises(SealError):
        open_credentials(key, "c1", FORMAT_PREFIX + base64.b64encode(blob).decode())


@pytest.mark.parametrize(
    "env",
    [
        {"lower": "x"},
        {"1ABC": "x"},
        {"A-B": "x"},
        {"A=B": "x"},
        {"PATH": "x"},
        {"CLAWCAGE_SEALED": "x"},
        {"A": "nul\x00byte"},
        {"A": 42},
    ],
)
def test_seal_refuses_what_an_environment_cannot_carry(env):
    with pytest.raises(ValueError) as err:
        seal_credentials(derive_cage_key("s", "c1"), "c1", env)
    assert "nul\x00byte" not in str(err.value)


def test_key_file_text_is_what_cage_init_reads(tmp_path):
    key = derive_cage_key("s", "acme-support")
    text = cage_key_file_text(key)
    assert text.endswith("\n") and text.isascii() and base64.b64decode(text) == key
    cage_init = load_cage_init()
    (tmp_path / "key").write_text(text)
    cage_init.KEY_PATH = str(tmp_path / "key")
    assert cage_init.read_key() == key


def test_cage_init_shares_the_format_constants():
    cage_init = load_cage_init()
    assert cage_init.KEY_PATH == conventions.CAGE_KEY_MOUNT
    assert cage_init.SEALED_ENV == conventions.SEALED_ENV
    assert cage_init.FORMAT_PREFIX == FORMAT_PREFIX and cage_init.AD_LABEL == AD_LABEL
    assert cage_init.CAGE_KEY_BYTES == CAGE_KEY_BYTES
    from components import sealing

    assert cage_init.CLAW_ENV == sealing.CLAW_ENV and cage_init.RESERVED_NAMES == sealing.RESERVED_NAMES
    assert cage_init.LOG_RATE_BYTES == conventions.CLAW_LOG_RATE_BYTES
    assert cage_init.LOG_BURST_BYTES == conventions.CLAW_LOG_BURST_BYTES
    assert cage_init.THROTTLE_NOTE_SECONDS == conventions.CLAW_LOG_THROTTLE_NOTE_SECONDS


def test_cage_init_opens_what_components_seal_and_refuses_other_claws():
    cage_init = load_cage_init()
    key = derive_cage_key("s", "acme-support")
    sealed = seal_credentials(key, "acme-support", SECRETS)
    assert cage_init.open_sealed(key, "acme-support", sealed) == SECRETS
    with pytest.raises(cage_init.Refused) as err:
        cage_init.open_sealed(key, "acme-billing", sealed)
    assert all(v not in str(err.value) for v in SECRETS.values())


@pytest.mark.parametrize("content", [b"", b"not base64!", base64.b64encode(b"x" * 32), b"A" * 5000])
def test_cage_init_refuses_bad_key_files_without_echoing_them(tmp_path, content):
    cage_init = load_cage_init()
    (tmp_path / "key").write_bytes(content)
    cage_init.KEY_PATH = str(tmp_path / "key")
    with pytest.raises(cage_init.Refused) as err:
        cage_init.read_key()
    if content:
        assert content.decode(errors="replace")[:16] not in str(err.value)


def test_cage_init_plaintext_json_matches_canonical_encoding():
    # The container parses what canonical_plaintext wrote: JSON object of strings, nothing else.
    assert json.loads(canonical_plaintext(SECRETS)) == SECRETS
