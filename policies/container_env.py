"""Container rule about the environment: credentials only sealed, in the components' wire format (the
policy is in container_rules.py)."""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterator, Mapping
from typing import Any

from cage_conventions import (
    SEALED_ENV,
    SEALED_MIN_BYTES,
    SEALED_PREFIX,
)
from policy_support import env_of

Props = Mapping[str, Any]
Config = Mapping[str, Any]


_CREDENTIAL_NAME = re.compile(r"(_KEY|_TOKEN|_SECRET|PASSWORD|PASSWD|_CREDENTIALS?)$|PASSWORD|SECRET", re.IGNORECASE)


def is_credential_name(name: str) -> bool:
    """Heuristic: an env name that usually carries a credential (`*_KEY`, `*_TOKEN`, `*SECRET*`, `*PASSWORD*`)."""
    return name != SEALED_ENV and bool(_CREDENTIAL_NAME.search(name))


_STANDARD_BASE64 = re.compile(r"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")


def sealed_format_problem(value: str) -> str | None:
    """Why `value` is not sealed credentials in the components' wire format, None if it is.

    The format (components/sealing.py): "clawcage-v1:" + standard, padded base64 of the AES-SIV output,
    which is a 16-byte tag followed by the ciphertext of a non-empty JSON object, so at least 17 bytes.
    """
    if not value.startswith(SEALED_PREFIX):
        return f"it does not start with {SEALED_PREFIX!r}"
    body = value[len(SEALED_PREFIX) :]
    if not _STANDARD_BASE64.fullmatch(body):
        return f"what follows {SEALED_PREFIX!r} is not standard, padded base64"
    try:
        sealed = base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        return f"what follows {SEALED_PREFIX!r} is not standard, padded base64"
    if len(sealed) < SEALED_MIN_BYTES:
        return f"it decodes to {len(sealed)} bytes, fewer than an AES-SIV tag (16 bytes) and data"
    return None


def check_env_sealed(props: Props, config: Config) -> Iterator[str]:
    env = env_of(props)
    for name in sorted(env):
        if is_credential_name(name):
            yield (
                f"env {name} looks like a plaintext credential: credentials reach a cage only sealed, in {SEALED_ENV}."
            )
    sealed = env.get(SEALED_ENV)
    if sealed is not None and (problem := sealed_format_problem(sealed)) is not None:
        yield (
            f"env {SEALED_ENV} is not sealed credentials: {problem}. Expected {SEALED_PREFIX!r} followed by "
            f"the standard base64 of AES-SIV output (tag and ciphertext)."
        )
