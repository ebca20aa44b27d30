"""The pure parts of building images from what the archive serves: apt's resolution, drift, dates.

The build and the drift check themselves run against the real archive in
tests/integration/test_images_archive.py.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "images"))
import archive  # noqa: E402

SIMULATION = """\
NOTE: This is only a simulation!
Inst gcc-14-base (14.2.0-19 Debian:13.8/stable [amd64])
Inst libc6 (2.41-12+deb13u5 Debian:13.8/stable [amd64]) []
Inst libssl3t64 (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64])
Inst libzstd1 (1.5.7+dfsg-1+deb13u1 Debian:13.8/stable, Debian-Security:13/stable-security [amd64])
Inst tzdata (2026a-0+deb13u1 Debian:13.8/stable-updates [all])
Conf libc6 (2.41-12+deb13u5 Debian:13.8/stable [amd64])
"""


def test_simulation_lists_every_package_with_version_and_archive():
    found = archive.parse_simulation(SIMULATION)
    assert {n: p.version for n, p in found.items()} == {
        "gcc-14-base": "14.2.0-19",
        "libc6": "2.41-12+deb13u5",
        "libssl3t64": "3.5.1-1+deb13u1",
        "libzstd1": "1.5.7+dfsg-1+deb13u1",
        "tzdata": "2026a-0+deb13u1",
    }
    assert [n for n, p in found.items() if p.security] == ["libssl3t64", "libzstd1"]


def test_drift_lists_moved_new_and_gone_packages_and_marks_security():
    recorded = {"libc6": "2.41-12+deb13u5", "libssl3t64": "3.5.1-1", "libdbi-perl": "1.643-4+deb12u3"}
    current = archive.parse_simulation(SIMULATION)
    moved = {m.name: m for m in archive.drift(recorded, current)}
    assert "libc6" not in moved  # unchanged
    assert moved["libssl3t64"].describe() == "libssl3t64: 3.5.1-1 -> 3.5.1-1+deb13u1  [security]"
    assert moved["libdbi-perl"].describe() == "libdbi-perl: 1.643-4+deb12u3, no longer installed"
    assert moved["tzdata"].describe() == "tzdata: new, 2026a-0+deb13u1"
    assert not moved["tzdata"].security
    assert archive.drift({n: p.version for n, p in current.items()}, current) == []


def test_release_fields_stop_at_the_signature():
    text = (
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Debian\nSuite: stable-security\n"
        "Codename: trixie-security\nDate: Mon, 30 Nov 2026 00:22:33 UTC\nSHA256:\n abc 12 main/x\n"
        "-----BEGIN PGP SIGNATURE-----\nDate: forged\n"
    )
    fields = archive.parse_release(text)
    assert fields["Codename"] == "trixie-security" and fields["Date"] == "Mon, 30 Nov 2026 00:22:33 UTC"


def _ar(path: Path, mtime: int) -> Path:
    member = (
        b"debian-binary".ljust(16)
        + str(mtime).encode().ljust(12)
        + b"0".ljust(6)
        + b"0".ljust(6)
        + b"100644".ljust(8)
        + b"4".ljust(10)
        + b"`\n"
    )
    path.write_bytes(b"!<arch>\n" + member + b"2.0\n")
    return path


def test_deb_build_epoch_is_the_ar_timestamp(tmp_path):
    assert archive.deb_build_epoch(_ar(tmp_path / "a_1_all.deb", 1747699200)) == 1747699200


def test_deb_build_epoch_refuses_what_is_not_a_deb(tmp_path):
    (tmp_path / "x.deb").write_bytes(b"PK\x03\x04 not an ar archive")
    with pytest.raises(ValueError, match="not a Debian package"):
        archive.deb_build_epoch(tmp_path / "x.deb")
