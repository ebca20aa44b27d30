"""Images built from what the archive serves, against the real Debian archive.

Debian keeps only the newest version of each package, so any record of exact versions goes stale
the day a security update lands. These tests plant exactly that: a record and a lock naming a version
the archive no longer serves. The drift check must say a rebuild is due, and the build must succeed
with the current version, report the drift, and still give the same image as the build `make images`
made from the same package set.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from components import local_images

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
BUILD = [sys.executable, str(ROOT / "images" / "build.py")]
GONE_VERSION = "1.643-4+deb12u3"  # libdbi-perl's bookworm version that the archive dropped


def _need_root():
    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("building the images needs root (mmdebstrap --mode=root); CI runs as root")
        pytest.skip("building the images needs root (mmdebstrap --mode=root)")


@pytest.fixture(scope="module")
def recorded() -> dict:
    path = local_images.record_path()
    if not path.exists():
        pytest.fail(f"{path} is missing: `make images` must run before the integration tier")
    return json.loads(path.read_text())


def _check(build_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*BUILD, "--check", "--build-dir", str(build_dir), *extra], capture_output=True, text=True, timeout=600
    )


def _archive_moved_since(record: dict, output: str) -> bool:
    return any(f"archive {s['codename']}: unchanged" not in output for s in record["archive"])


def test_check_right_after_the_build_finds_nothing_moved(recorded, tmp_path):
    (tmp_path / "images.json").write_text(json.dumps(recorded))
    done = _check(tmp_path)
    assert done.returncode in (0, 1), done.stderr
    if done.returncode == 1:
        # Only legitimate if Debian published between `make images` and now: then it says so.
        assert _archive_moved_since(recorded["egress-proxy"], done.stdout), done.stdout
        assert "a rebuild is due" in done.stdout
    else:
        assert done.stdout.count("nothing moved") == len(recorded), done.stdout  # one line per recorded image
    assert not (tmp_path / "apt-check").exists()  # the scratch apt roots are removed
    assert not (tmp_path / "apt-check-bookworm").exists()


def test_check_lists_a_version_the_archive_no_longer_serves(recorded, tmp_path):
    stale = json.loads(json.dumps(recorded))
    proxy = stale["egress-proxy"]["packages"]
    current_libc = proxy["libc6"]["version"]
    served_dbi = proxy.get("libdbi-perl", {}).get("version")
    proxy["libc6"]["version"] = "2.36-9+deb12u13"
    proxy["libdbi-perl"] = {"version": GONE_VERSION, "origin": "Debian-Security:12/oldstable-security"}
    (tmp_path / "images.json").write_text(json.dumps(stale))
    done = _check(tmp_path, "egress-proxy")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "libc6: 2.36-9+deb12u13 -> " in done.stdout  # the version served now (recorded: current_libc)
    assert current_libc != "2.36-9+deb12u13"
    assert "a rebuild is due (make images)" in done.stdout
    if served_dbi:
        assert f"libdbi-perl: {GONE_VERSION} -> {served_dbi}" in done.stdout
    else:
        assert f"libdbi-perl: {GONE_VERSION}, no longer installed" in done.stdout


def test_a_stale_lock_never_fails_the_build(recorded, tmp_path):
    """The build installs what the archive serves, reports where the reviewed lock differs, and
    gives the same image ID as `make images` when the package set is the same."""
    _need_root()
    lock_dir = tmp_path / "locks"
    (lock_dir / "egress-proxy").mkdir(parents=True)
    versions = {n: m["version"] for n, m in recorded["egress-proxy"]["packages"].items()}
    versions["libdbi-perl"] = GONE_VERSION  # the version that broke the old, pinned build
    (lock_dir / "egress-proxy" / "packages.lock").write_text("".join(f"{n}={v}\n" for n, v in sorted(versions.items())))
    done = subprocess.run(
        [*BUILD, "--build-dir", str(tmp_path / "build"), "--lock-dir", str(lock_dir), "--no-load", "egress-proxy"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads((tmp_path / "build" / "images.json").read_text())["egress-proxy"]
    served = built["packages"].get("libdbi-perl", {}).get("version")
    expected = f"libdbi-perl: {GONE_VERSION} -> {served}" if served else f"libdbi-perl: {GONE_VERSION}, no longer"
    assert expected in done.stderr
    assert any(line.startswith("libdbi-perl") for line in built["lock_drift"])
    same_set = {n: m["version"] for n, m in built["packages"].items()} == {
        n: m["version"] for n, m in recorded["egress-proxy"]["packages"].items()
    }
    if same_set:
        assert built["id"] == recorded["egress-proxy"]["id"]  # same packages, same image, any day
        assert built["source_date_epoch"] == recorded["egress-proxy"]["source_date_epoch"]
    else:  # Debian published in between: a new package set gives a new image, on purpose
        assert built["id"] != recorded["egress-proxy"]["id"]
