"""Derived keys are formats: the salts and info strings of every HKDF derivation must not change.

The bytes below were computed before the derivations moved to one helper (components.kdf); a change
here would re-key every cage, re-wrap every volume and replace every host's SSH host key."""

from __future__ import annotations

from components import cagehost, hostkeys, kdf, sealing

SECRET = "TOPSECRET-sealing-7e0c1c0b5f8d4f6a9a1b2c3d4e5f6a7b"

CAGE_KEY = (
    "5a6907cf7cbfd05ef8096a9c6878f2ebc73613eb78cbc997bfeb4971616af4ee"
    "95d2cf774c3b602e7d16ed7ee1e80df58cc458f3dac65f99547a1a5aa6096128"
)
SSH_SEED = "16c6d5f22279983ed7d88561a5b5936e03a9e948318c318eb5a76f2bd645880a"
VOLUME_KEK = "5ba932994a3a11318aa9d75b4751641e81ba935ceba5626e424b764c8dee8d9d"
SSH_PUBLIC = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIIVjP2TKN3KlLmRWIxNytbKjHtn8t1DRtFNC0DBXWn/R clawstaff-fsn1-cage-01"


def test_the_cage_key_is_the_one_derived_before() -> None:
    assert sealing.derive_cage_key(SECRET, "acme-support").hex() == CAGE_KEY


def test_the_ssh_host_key_is_the_one_derived_before() -> None:
    assert hostkeys.derive_key(SECRET, "ssh-host-key/ed25519/fsn1-cage-01").hex() == SSH_SEED
    assert hostkeys.derive_ssh_host_key(SECRET, "fsn1-cage-01").public_openssh == SSH_PUBLIC


def test_the_volume_kek_is_the_one_derived_before() -> None:
    assert cagehost.derive_volume_kek(SECRET, "acme-support").hex() == VOLUME_KEK


def test_one_helper_gives_each_of_them_from_its_salt_and_info() -> None:
    assert (
        kdf.hkdf_sha256(
            SECRET,
            salt=sealing.HKDF_SALT,
            info=sealing.HKDF_INFO_PREFIX + b"acme-support",
            length=sealing.CAGE_KEY_BYTES,
        ).hex()
        == CAGE_KEY
    )
    assert (
        kdf.hkdf_sha256(SECRET, salt=hostkeys.HKDF_SALT, info=b"ssh-host-key/ed25519/fsn1-cage-01", length=32).hex()
        == SSH_SEED
    )
    assert (
        kdf.hkdf_sha256(
            SECRET,
            salt=kdf.VOLUME_KEK_SALT,
            info=kdf.VOLUME_KEK_INFO_PREFIX + b"acme-support",
            length=cagehost.VOLUME_KEK_BYTES,
        ).hex()
        == VOLUME_KEK
    )
