"""Keys derived from the stack's sealing secret: per-purpose symmetric keys and SSH host keys.

SSH host keys are derived, not generated, so that Pulumi knows a host's public key before the host
exists: the private key goes into the bootstrap (cloud-init `ssh_keys`, or the dedicated-host install
step) and the public key is pinned on every connection, so no connection trusts on first use.

The private key text must be byte-for-byte stable, because it ends up in user-data and any change
there replaces the server. `cryptography`'s OpenSSH serializer writes a random "check-int", so this
module writes the openssh-key-v1 container itself, with the check-int derived from the key.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from components.kdf import hkdf_sha256

HKDF_SALT = b"clawstaff/v1"
SSH_KEY_TYPE = b"ssh-ed25519"
_OPENSSH_MAGIC = b"openssh-key-v1\x00"
_OPENSSH_BLOCK_SIZE = 8  # cipher "none"
_OPENSSH_LINE = 70  # ssh-keygen wraps the base64 body at 70 characters


def derive_key(secret: str, purpose: str, length: int = 32) -> bytes:
    """HKDF-SHA256 of the stack secret; `purpose` separates keys so that one never stands in for another."""
    if not secret:
        raise ValueError("derive_key: the secret is empty; set clawstaff:sealingKey (as a secret)")
    if not purpose:
        raise ValueError("derive_key: purpose must name what the key is for")
    return hkdf_sha256(secret, salt=HKDF_SALT, info=purpose.encode(), length=length)


@dataclass(frozen=True)
class SshHostKey:
    """An Ed25519 host key: OpenSSH private text (secret), authorized_keys-style public line, fingerprint."""

    private_openssh: str
    public_openssh: str  # "ssh-ed25519 AAAA... clawstaff-<host>"
    fingerprint: str  # "SHA256:<base64 without padding>", as `ssh-keygen -l` prints it

    def __repr__(self) -> str:  # never print the private key by accident
        return f"SshHostKey(public_openssh={self.public_openssh!r}, fingerprint={self.fingerprint!r})"


def _ssh_string(data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + data


def _public_blob(public: bytes) -> bytes:
    return _ssh_string(SSH_KEY_TYPE) + _ssh_string(public)


def ssh_fingerprint(public_blob: bytes) -> str:
    """The SHA256 fingerprint OpenSSH prints for a public key blob."""
    digest = base64.b64encode(hashlib.sha256(public_blob).digest()).decode().rstrip("=")
    return f"SHA256:{digest}"


def openssh_private_text(seed: bytes, public: bytes, comment: str) -> str:
    """Serialize an unencrypted Ed25519 key in the openssh-key-v1 format (PROTOCOL.key), deterministically.

    The two equal check-ints only let a decrypting reader detect a wrong passphrase; for an unencrypted
    key any value is valid, so it is taken from a hash of the seed instead of a random source.
    """
    if len(seed) != 32 or len(public) != 32:
        raise ValueError("an Ed25519 seed and public key are 32 bytes each")
    check_int = hashlib.sha256(b"clawstaff/openssh-checkint\x00" + seed).digest()[:4]
    private_section = (
        check_int
        + check_int
        + _ssh_string(SSH_KEY_TYPE)
        + _ssh_string(public)
        + _ssh_string(seed + public)  # OpenSSH stores the 64-byte "secret key": seed || public
        + _ssh_string(comment.encode())
    )
    padding_length = -len(private_section) % _OPENSSH_BLOCK_SIZE
    private_section += bytes(range(1, padding_length + 1))
    body = (
        _OPENSSH_MAGIC
        + _ssh_string(b"none")  # cipher
        + _ssh_string(b"none")  # kdf
        + _ssh_string(b"")  # kdf options
        + struct.pack(">I", 1)  # number of keys
        + _ssh_string(_public_blob(public))
        + _ssh_string(private_section)
    )
    encoded = base64.b64encode(body).decode()
    lines = [encoded[i : i + _OPENSSH_LINE] for i in range(0, len(encoded), _OPENSSH_LINE)]
    return "-----BEGIN OPENSSH PRIVATE KEY-----\n" + "\n".join(lines) + "\n-----END OPENSSH PRIVATE KEY-----\n"


def derive_ssh_host_key(sealing_key: str, host_name: str) -> SshHostKey:
    """The host's Ed25519 SSH host key, derived from the stack's sealing secret and the host name."""
    if not host_name:
        raise ValueError("derive_ssh_host_key: host_name is empty")
    return _ed25519_host_key(derive_key(sealing_key, f"ssh-host-key/ed25519/{host_name}"), f"clawstaff-{host_name}")


def derive_first_contact_key(sealing_key: str, host_name: str) -> SshHostKey:
    """The key a cloud server presents until its first contact, and never after.

    It travels in the server's user-data, which Hetzner's metadata service serves to any process on
    the server for the server's whole life. So it is not the host key: the first SSH connection pins
    this key, installs the derived host key (`derive_ssh_host_key`, which never leaves Pulumi except
    over that pinned connection) and removes this one. Whoever reads the user-data later holds a key
    that no client trusts any more."""
    if not host_name:
        raise ValueError("derive_first_contact_key: host_name is empty")
    seed = derive_key(sealing_key, f"ssh-first-contact-key/ed25519/{host_name}")
    return _ed25519_host_key(seed, f"clawstaff-{host_name}-first-contact")


def _ed25519_host_key(seed: bytes, comment: str) -> SshHostKey:
    private_key = Ed25519PrivateKey.from_private_bytes(seed)
    public = private_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    blob = _public_blob(public)
    return SshHostKey(
        private_openssh=openssh_private_text(seed, public, comment),
        public_openssh=f"ssh-ed25519 {base64.b64encode(blob).decode()} {comment}",
        fingerprint=ssh_fingerprint(blob),
    )
