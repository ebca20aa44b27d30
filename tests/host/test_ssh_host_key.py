"""The derived SSH host key, read by OpenSSH's own tools."""

from __future__ import annotations

from pathlib import Path

import pytest

from components.hostkeys import derive_ssh_host_key
from tests.host.conftest import require_tool, run

pytestmark = pytest.mark.host


@pytest.fixture
def key_file(tmp_path: Path) -> tuple[Path, object]:
    key = derive_ssh_host_key("stack sealing secret", "fsn1-cage-01")
    path = tmp_path / "ssh_host_ed25519_key"
    path.write_text(key.private_openssh)
    path.chmod(0o600)
    return path, key


def test_ssh_keygen_reproduces_the_public_key(key_file) -> None:
    path, key = key_file
    out = run([require_tool("ssh-keygen"), "-y", "-f", str(path)]).stdout.strip()
    assert out == key.public_openssh  # OpenSSH >= 8.x prints the comment stored in the private key


def test_ssh_keygen_fingerprint_matches(key_file) -> None:
    path, key = key_file
    out = run([require_tool("ssh-keygen"), "-l", "-E", "sha256", "-f", str(path)]).stdout.split()
    assert out[0] == "256"
    assert out[1] == key.fingerprint
    assert out[-1] == "(ED25519)"


def test_ssh_keygen_accepts_the_key_for_signing(key_file, tmp_path: Path) -> None:
    """The key really works as a private key: sign with it, verify against the pinned public line."""
    path, key = key_file
    keygen = require_tool("ssh-keygen")
    message = tmp_path / "message"
    message.write_text("pin me\n")
    run([keygen, "-Y", "sign", "-f", str(path), "-n", "clawstaff-test", str(message)])
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"host@clawstaff {key.public_openssh}\n")
    with open(message) as stdin:
        run(
            [
                keygen,
                "-Y",
                "verify",
                "-f",
                str(allowed),
                "-I",
                "host@clawstaff",
                "-n",
                "clawstaff-test",
                "-s",
                f"{message}.sig",
            ],
            stdin=stdin,
        )
