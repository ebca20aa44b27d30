"""The audit trail's transport on this machine's real daemons (components/trailship.py, trailpki.py):
Debian's systemd-journal-upload with a host's client certificate, stunnel ending the mutual TLS with
the stack's trail CA alone, systemd-journal-remote behind it on loopback.

The uploaded journal is a file (`journal-upload --file`): this machine runs no journald. Its entries
are written by journal-remote itself from the export format, with the fields a cage host's entries
carry (CLAWSTAFF_CLAW, CLAWSTAFF_ORG).
"""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from components import trailpki, trailship
from components.units import GiB
from tests.conftest import ROOT
from tests.host.conftest import require_root, require_tool

pytestmark = pytest.mark.host
JOURNAL_REMOTE = "/usr/lib/systemd/systemd-journal-remote"
JOURNAL_UPLOAD = "/usr/lib/systemd/systemd-journal-upload"
NOW = datetime.now(timezone.utc).replace(microsecond=0)
VALID = trailpki.Validity(NOW - timedelta(days=1), NOW + timedelta(days=30))
ENTRIES = [
    {"MESSAGE": "type=SYSCALL msg=audit(1.0:1): key=\"clawcage-t-probe\"", "CLAWSTAFF_CLAW": "t-probe", "CLAWSTAFF_ORG": "acme"},
    {"MESSAGE": '{"claw":"t-probe","status":403}', "CLAWSTAFF_CLAW": "t-probe", "CLAWSTAFF_ORG": "acme"},
]  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for_port(port: int, proc: subprocess.Popen, what: str) -> None:
    for _ in range(100):
        if proc.poll() is not None:
            pytest.fail(f"{what} ended ({proc.returncode}): {proc.stderr.read() if proc.stderr else ''}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    pytest.fail(f"{what} did not listen on 127.0.0.1:{port}")


def _write(directory: Path, issued: trailpki.Issued, stem: str) -> tuple[str, str]:
    cert, key = directory / f"{stem}.pem", directory / f"{stem}.key"
    cert.write_text(issued.certificate_pem)
    key.write_text(issued.key_pem)
    key.chmod(0o600)
    return str(cert), str(key)


def _source_journal(directory: Path) -> Path:
    """A journal file holding ENTRIES (journal-remote writes it from the export format)."""
    export = "".join(
        f"__REALTIME_TIMESTAMP={int(NOW.timestamp() * 1e6) + i}\n__MONOTONIC_TIMESTAMP={i + 1}\n"
        f"_BOOT_ID={'0123456789abcdef' * 2}\n_HOSTNAME=cage-host-1\n"
        + "".join(f"{k}={v}\n" for k, v in entry.items())
        + "\n"
        for i, entry in enumerate(ENTRIES)
    )
    (directory / "entries.export").write_text(export)
    journal = directory / "source.journal"
    subprocess.run([JOURNAL_REMOTE, f"--output={journal}", str(directory / "entries.export")], check=True,
                   capture_output=True, timeout=60)  # fmt: skip
    return journal


def _installed(root: Path, files: dict[str, trailship.HostFile]) -> None:
    for path, file in files.items():
        target = root / path.lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(file.text)
        target.chmod(file.mode)


def _exec_start(unit: str) -> list[str]:
    """The command a drop-in leaves: its last ExecStart= (the first one resets Debian's)."""
    return [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("ExecStart=")][-1].split()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[dict]:
    """A sink on loopback from the files the program renders for it (trailship.sink_files, under a
    root of the test's, with free ports): stunnel with the stack's CA in front of Debian's
    journal-remote, started as its socket unit and its service drop-in start it (the listening socket
    passed as fd 3, plain HTTP on it)."""
    require_root()
    stunnel = require_tool("stunnel4")
    activate = require_tool("systemd-socket-activate")
    for binary in (JOURNAL_REMOTE, JOURNAL_UPLOAD):
        if not Path(binary).exists():
            require_tool(Path(binary).name)  # fails in CI, skips elsewhere
    root, received = tmp_path / "root", tmp_path / "received"
    remote_port, tls_port = _free_port(), _free_port()
    files = trailship.sink_files(listen=f"127.0.0.1:{tls_port}", retention_days=400, max_use=GiB)
    units = trailship.remote_units(str(received), remote_port)
    _installed(root, files)
    ca = trailpki.certificate_authority("stack secret", "t", VALID)
    trail = root / trailship.TRAIL_DIR.lstrip("/")
    trail.mkdir(parents=True)
    (trail / "ca.pem").write_text(ca.certificate_pem)
    _write(trail, trailpki.sink_certificate("stack secret", ca, "t-sink", ["127.0.0.1"], VALID), "sink")
    host_cert, host_key = _write(
        tmp_path, trailpki.upload_certificate("stack secret", ca, "cage-host-1", VALID), "host"
    )
    received.mkdir()
    socket_unit, service_unit = units.values()
    listen = next(line.split("=", 1)[1] for line in socket_unit.splitlines() if line.startswith("ListenStream=1"))
    remote = subprocess.Popen(
        [activate, "-l", listen, *_exec_start(service_unit)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        text=True,
    )  # fmt: skip
    # The rendered stunnel configuration, its paths under the test's root, forwarding to that socket.
    config = root / f"etc/stunnel/{trailship.TUNNEL_SERVICE}.conf"
    rendered = files[f"/etc/stunnel/{trailship.TUNNEL_SERVICE}.conf"].text
    config.write_text(
        rendered.replace(trailship.TRAIL_DIR, str(trail)).replace(
            f"127.0.0.1:{trailship.REMOTE_PORT}", f"127.0.0.1:{remote_port}"
        )
    )
    log = tmp_path / "stunnel.log"
    with log.open("w") as out:
        tunnel = subprocess.Popen([stunnel, str(config)], stdout=out, stderr=subprocess.STDOUT)
    try:
        _wait_for_port(remote_port, remote, "journal-remote")
        _wait_for_port(tls_port, tunnel, "stunnel")
        yield {
            "url": f"https://127.0.0.1:{tls_port}",
            "ca": ca,
            "ca_file": str(trail / "ca.pem"),
            "host": (host_cert, host_key),
            "received": received,
            "log": log,
            "dir": tmp_path,
            "source": _source_journal(tmp_path),
        }
    finally:
        for proc in (tunnel, remote):
            proc.terminate()
            proc.wait(timeout=30)


def upload(sink: dict, cert: str, key: str, trust: str | None = None) -> subprocess.CompletedProcess:
    state = sink["dir"] / f"state-{time.monotonic_ns()}"
    # The host's configuration as the program renders it, on journal-upload's command line.
    conf = trailship.upload_config(sink["url"], key=key, certificate=cert, trust=trust or sink["ca_file"])
    values = dict(line.split("=", 1) for line in conf.splitlines() if "=" in line and not line.startswith("#"))
    argv = [JOURNAL_UPLOAD, "--follow=no", f"--file={sink['source']}", f"--save-state={state}",
            f"--url={values['URL']}", f"--key={values['ServerKeyFile']}", f"--cert={values['ServerCertificateFile']}",
            f"--trust={values['TrustedCertificateFile']}"]  # fmt: skip
    return subprocess.run(argv, capture_output=True, text=True, timeout=60)


def received(sink: dict) -> list[dict]:
    files = sorted(sink["received"].glob("*.journal"))
    if not files:
        return []
    shown = subprocess.run(["journalctl", "--no-pager", "-o", "json", *(f"--file={f}" for f in files)],
                           capture_output=True, text=True, timeout=60)  # fmt: skip
    return [json.loads(line) for line in shown.stdout.splitlines() if line.strip()]


def test_a_host_with_the_stacks_certificate_ships_its_entries_with_the_claws_fields(sink) -> None:
    done = upload(sink, *sink["host"])
    assert done.returncode == 0, done.stderr
    got = received(sink)
    assert [(e["MESSAGE"], e["CLAWSTAFF_CLAW"], e["CLAWSTAFF_ORG"]) for e in got] == [
        (e["MESSAGE"], e["CLAWSTAFF_CLAW"], e["CLAWSTAFF_ORG"]) for e in ENTRIES
    ]
    assert "Certificate accepted at depth=0: O=ClawStaff audit trail, CN=cage-host-1" in sink["log"].read_text()


def test_a_certificate_of_another_ca_is_refused_and_nothing_reaches_the_sink(sink) -> None:
    stranger_ca = trailpki.certificate_authority("another stack's secret", "t", VALID)
    stranger = trailpki.upload_certificate("another stack's secret", stranger_ca, "cage-host-1", VALID)
    done = upload(sink, *_write(sink["dir"], stranger, "stranger"))
    assert done.returncode != 0
    assert received(sink) == []
    assert "Rejected by CERT at depth=0: O=ClawStaff audit trail, CN=cage-host-1" in sink["log"].read_text()


def test_a_host_without_a_client_certificate_is_refused(sink) -> None:
    done = subprocess.run(
        ["openssl", "s_client", "-connect", sink["url"].removeprefix("https://"), "-CAfile", sink["ca_file"],
         "-tls1_3", "-quiet"], input="POST /upload HTTP/1.1\r\nHost: sink\r\n\r\n", capture_output=True, text=True,
        timeout=60,
    )  # fmt: skip
    assert "HTTP/1.1" not in done.stdout  # journal-remote never answered
    assert received(sink) == []
    assert "peer did not return a certificate" in sink["log"].read_text()


def test_the_host_uploads_to_no_sink_whose_certificate_is_not_of_the_stacks_ca(sink) -> None:
    # The host trusts only its stack's CA: a sink certificate of another CA (an impostor at the
    # sink's address) fails the host's check before any entry leaves it.
    other_ca = trailpki.certificate_authority("an impostor's secret", "t", VALID)
    other_file = sink["dir"] / "other-ca.pem"
    other_file.write_text(other_ca.certificate_pem)
    done = upload(sink, *sink["host"], trust=str(other_file))
    assert done.returncode != 0
    assert received(sink) == []


def test_the_upload_configuration_takes_one_https_line_per_value() -> None:
    with pytest.raises(ValueError, match="must be https://"):
        trailship.upload_config("http://sink:19532", key="k", certificate="c", trust="t")
    with pytest.raises(ValueError, match="must be one non-empty line"):
        trailship.tunnel_config("0.0.0.0:19532\nconnect = evil:1", key="k", certificate="c", trust="t")


# --- the sink's retention by age --------------------------------------------------------------------------

VACUUM = ROOT / "components/hostscripts/files/clawstaff-trail-vacuum"
DAY_US = 86400 * 10**6


def _times(path: Path) -> list[int]:
    """Every entry's time (µs) in a journal file or directory, as journalctl reads it."""
    where = f"--directory={path}" if path.is_dir() else f"--file={path}"
    done = subprocess.run(["journalctl", where, "-o", "json", "--output-fields=MESSAGE", "--no-pager", "-q"],
                          capture_output=True, text=True, check=True, timeout=120)  # fmt: skip
    return [int(json.loads(line)["__REALTIME_TIMESTAMP"]) for line in done.stdout.splitlines()]


@pytest.fixture
def aged_trail(tmp_path: Path) -> Iterator[tuple[Path, int]]:
    """A sink's trail directory as journal-remote writes it: 5000 entries, the first 2000 from 500 days
    ago, the rest from the last hour, on a 64 MiB tmpfs, where journal-remote's own file sizing rotates
    its file every 1500 or so entries (archived files, named with the time of their oldest entry)."""
    require_root()
    remote = require_tool(JOURNAL_REMOTE)
    directory = tmp_path / "remote"
    directory.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(directory)], check=True, timeout=30)
    try:
        now = int(time.time() * 10**6)
        export = "".join(
            f"__REALTIME_TIMESTAMP={now - 500 * DAY_US + i * 10**6 if i < 2000 else now - (5000 - i) * 10**5}\n"
            f"__MONOTONIC_TIMESTAMP={i + 1}\n_BOOT_ID={'0123456789abcdef' * 2}\n_HOSTNAME=cage-host-1\n"
            f"CLAWSTAFF_CLAW=t-probe\nMESSAGE=entry {i} {'x' * 2000}\n\n"
            for i in range(5000)
        )
        (tmp_path / "aged.export").write_text(export)
        subprocess.run([remote, f"--output={directory}/remote.journal", str(tmp_path / "aged.export")],
                       check=True, capture_output=True, timeout=120)  # fmt: skip
        yield directory, now
    finally:
        subprocess.run(["umount", str(directory)], check=False, timeout=30)


def test_the_sinks_retention_keeps_every_entry_younger_than_it_where_journalctls_vacuum_drops_some(
    aged_trail, tmp_path: Path
) -> None:
    directory, now = aged_trail
    limit = now - 400 * DAY_US
    archived = sorted(directory.glob("*@*.journal"))
    newest = {f.name: max(_times(f)) for f in archived}
    old = sorted(name for name, t in newest.items() if t < limit)
    mixed = sorted(f.name for f in archived if min(_times(f)) < limit <= max(_times(f)))
    assert old and mixed, f"journal-remote's rotation did not give an old and a mixed file: {newest}"
    recent = sum(t >= limit for t in _times(directory))
    assert recent == 3000
    # Control: journalctl --vacuum-time=400d removes the mixed file by its name's (oldest) time, and
    # with it entries from the last hour.
    control = tmp_path / "control"
    subprocess.run(["cp", "-a", str(directory), str(control)], check=True, timeout=60)
    subprocess.run(["journalctl", f"--directory={control}", "--vacuum-time=400d"], check=True, capture_output=True,
                   timeout=60)  # fmt: skip
    assert not any((control / name).exists() for name in mixed)
    assert sum(t >= limit for t in _times(control)) < recent
    # Ours: only the files whose every entry is past the retention go; every younger entry stays.
    done = subprocess.run(["bash", str(VACUUM), str(directory), "400"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert sorted(f.name for f in directory.glob("*@*.journal")) == sorted(set(newest) - set(old))
    assert (directory / "remote.journal").exists()
    assert sum(t >= limit for t in _times(directory)) == recent
    assert all(f"removed {directory}/{name}" in done.stdout for name in old), done.stdout
    # A second run finds nothing more to remove.
    again = subprocess.run(["bash", str(VACUUM), str(directory), "400"], capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and again.stdout == "", (again.stdout, again.stderr)


def test_the_retention_refuses_what_it_cannot_judge(aged_trail, tmp_path: Path) -> None:
    directory, _ = aged_trail
    for argv, message in (
        ([str(directory)], "usage"),
        ([str(directory), "0"], "DAYS must be a whole number"),
        ([str(directory), "400d"], "DAYS must be a whole number"),
        ([str(tmp_path / "none"), "400"], "no directory"),
    ):
        done = subprocess.run(["bash", str(VACUUM), *argv], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and message in done.stderr, (argv, done.stderr)
    # A file journalctl cannot read is kept, said, and the run fails (systemd marks the unit failed).
    broken = directory / "remote@0123456789abcdef0123456789abcdef-0000000000000001-0000000000000001.journal"
    broken.write_bytes(b"not a journal file")
    done = subprocess.run(["bash", str(VACUUM), str(directory), "400"], capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and f"kept {broken}" in done.stderr, (done.stdout, done.stderr)
    assert broken.exists()


def test_systemd_accepts_the_sinks_retention_units(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    units = trailship.vacuum_units(400)
    for name, text in units.items():
        # The script at its place in this repository: systemd-analyze checks that ExecStart= exists.
        (tmp_path / name).write_text(text.replace(trailship.VACUUM_SCRIPT, str(VACUUM)))
    done = subprocess.run([analyze, "verify", *(str(tmp_path / n) for n in units)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert (
        f"ExecStart={trailship.VACUUM_SCRIPT} {trailship.REMOTE_DIRECTORY} 400\n"
        in units[f"{trailship.VACUUM_UNIT}.service"]
    )
