"""The one key derivation of the program: HKDF-SHA256 of the stack's sealing secret.

Each caller owns its salt and info string; they are formats (a change re-keys cages, re-wraps volumes
or replaces hosts' SSH keys), pinned byte for byte by tests/unit/test_key_derivation.py:

- components.sealing.derive_cage_key: salt HKDF_SALT, info HKDF_INFO_PREFIX + claw, 64 bytes;
- components.hostkeys.derive_key: salt b"clawstaff/v1", info the purpose, 32 bytes by default;
- components.cagehost.derive_volume_kek: salt VOLUME_KEK_SALT, info VOLUME_KEK_INFO_PREFIX + claw, 32 bytes.
"""

from __future__ import annotations

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

# The volume key-encryption key's salt and info prefix (used by components.cagehost).
VOLUME_KEK_SALT = b"clawstaff/volume-kek/v1"
VOLUME_KEK_INFO_PREFIX = b"clawstaff/clawcage/volume-kek/v1\x00"


def hkdf_sha256(secret: str, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 of the UTF-8 secret. Callers check their own inputs (and word their own errors)."""
    return HKDF(algorithm=hashes.SHA256(), length=length, salt=salt, info=info).derive(secret.encode("utf-8"))
