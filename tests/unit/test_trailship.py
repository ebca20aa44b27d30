"""The audit sink's retention as components/trailship.py renders it: journal-remote held to maxUse in
files small enough for the age retention to follow retentionDays closely, and the daily timer that
runs the retention script (whose behaviour on real journal files is tests/host/test_trail_transport.py's)."""

from __future__ import annotations

import pytest

from components import trailship
from components.hostscripts import FOLDER
from components.units import GiB, MiB
from tests.unit.test_hostscripts import shellcheck

SCRIPT = FOLDER / "files/clawstaff-trail-vacuum"


def _keys(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


@pytest.mark.parametrize(
    ("max_use", "file_size"),
    [(16 * MiB, 8 * MiB), (1 * GiB, 16 * MiB), (30 * 10**9, 30 * 10**9 // 64), (200 * GiB, 1 * GiB)],
)
def test_a_trail_file_is_a_64th_of_max_use_between_8_mib_and_1_gib(max_use: int, file_size: int) -> None:
    assert trailship.trail_file_size(max_use) == file_size
    keys = _keys(trailship.remote_config(max_use))
    assert keys == {"MaxUse": str(max_use), "MaxFileSize": str(file_size), "MaxFiles": keys["MaxFiles"]}
    # Enough files for maxUse to decide, never journald's default count of 100.
    assert (int(keys["MaxFiles"]) - 1) * file_size >= max_use
    assert (int(keys["MaxFiles"]) - 2) * file_size < max_use


def test_the_remote_config_is_one_remote_section() -> None:
    text = trailship.remote_config(1 * GiB)
    assert [line for line in text.splitlines() if line.startswith("[")] == ["[Remote]"]


def test_a_max_use_below_two_files_is_refused() -> None:
    with pytest.raises(ValueError, match="less than two trail files"):
        trailship.remote_config(16 * MiB - 1)


def test_the_timer_runs_the_retention_script_daily_and_catches_up_after_downtime() -> None:
    units = trailship.vacuum_units(400)
    assert set(units) == {"clawstaff-trail-vacuum.service", "clawstaff-trail-vacuum.timer"}
    service, timer = _keys(units["clawstaff-trail-vacuum.service"]), _keys(units["clawstaff-trail-vacuum.timer"])
    assert service["Type"] == "oneshot"
    assert service["ExecStart"] == f"{trailship.VACUUM_SCRIPT} /var/log/journal/remote 400"
    assert timer == {"Description": timer["Description"], "OnCalendar": "daily", "Persistent": "true",
                     "WantedBy": "timers.target"}  # fmt: skip
    assert "journalctl --vacuum-time" not in units["clawstaff-trail-vacuum.service"]


@pytest.mark.parametrize("days", [0, -1, 100000, 1.5, "400", True])
def test_a_retention_that_is_not_whole_days_is_refused(days) -> None:
    with pytest.raises(ValueError, match="must be a whole number of days"):
        trailship.vacuum_units(days)


@pytest.mark.parametrize("directory", ["relative/dir", "/var/log/journal/re mote", "/a\nExecStart=/bin/sh"])
def test_a_directory_that_would_break_the_unit_is_refused(directory: str) -> None:
    with pytest.raises(ValueError):
        trailship.vacuum_units(400, directory)


def test_the_retention_script_is_a_linted_executable_file() -> None:
    assert SCRIPT.stat().st_mode & 0o111, "the bootstrap installs it as it is: it must be executable"
    assert SCRIPT.read_text().startswith("#!/bin/bash\n")
    shellcheck([SCRIPT])


def test_the_sink_holds_the_tunnel_journal_remote_on_loopback_and_both_retentions() -> None:
    files = trailship.sink_files(listen="0.0.0.0:19532", retention_days=400, max_use=30 * 10**9)
    assert set(files) == {
        "/etc/stunnel/clawstaff-trail.conf",
        "/etc/systemd/system/stunnel@clawstaff-trail.service.d/clawstaff.conf",
        "/etc/systemd/journal-remote.conf.d/clawstaff.conf",
        "/etc/systemd/system/systemd-journal-remote.socket.d/clawstaff.conf",
        "/etc/systemd/system/systemd-journal-remote.service.d/clawstaff.conf",
        "/etc/systemd/system/clawstaff-trail-vacuum.service",
        "/etc/systemd/system/clawstaff-trail-vacuum.timer",
        "/usr/local/sbin/clawstaff-trail-vacuum",
    }
    assert {p: f.mode for p, f in files.items() if f.mode != 0o644} == {"/usr/local/sbin/clawstaff-trail-vacuum": 0o755}
    assert files["/usr/local/sbin/clawstaff-trail-vacuum"].text == SCRIPT.read_text()
    tunnel = _keys(files["/etc/stunnel/clawstaff-trail.conf"].text.replace(" = ", "="))
    assert tunnel["accept"] == "0.0.0.0:19532" and tunnel["connect"] == "127.0.0.1:19531"
    assert (tunnel["cert"], tunnel["key"], tunnel["CAfile"]) == (
        "/etc/clawstaff/trail/sink.pem", "/etc/clawstaff/trail/sink.key", "/etc/clawstaff/trail/ca.pem"
    )  # fmt: skip
    socket_unit = files["/etc/systemd/system/systemd-journal-remote.socket.d/clawstaff.conf"].text
    # Debian's ListenStream=19532 (every address) reset, then loopback only.
    assert [line for line in socket_unit.splitlines() if line.startswith("ListenStream")] == [
        "ListenStream=", "ListenStream=127.0.0.1:19531"
    ]  # fmt: skip
    service = files["/etc/systemd/system/systemd-journal-remote.service.d/clawstaff.conf"].text
    assert [line for line in service.splitlines() if line.startswith("ExecStart")] == [
        "ExecStart=",
        "ExecStart=/usr/lib/systemd/systemd-journal-remote --listen-http=-3 --output=/var/log/journal/remote/",
    ]
    assert trailship.SINK_UNITS == (
        "systemd-journal-remote.socket", "stunnel@clawstaff-trail.service", "clawstaff-trail-vacuum.timer"
    )  # fmt: skip


def test_the_sinks_tunnel_waits_for_the_network_and_comes_back_after_a_failure() -> None:
    # stunnel listens on the one address the cage hosts reach (a private address on a cloud sink),
    # which must exist when it binds; it also restarts if it stops.
    files = trailship.sink_files(listen="10.0.2.10:19532", retention_days=400, max_use=30 * 10**9)
    dropin = files[f"/etc/systemd/system/{trailship.TUNNEL_UNIT}.d/clawstaff.conf"]
    assert dropin.mode == 0o644
    assert _keys(dropin.text) == {
        "Wants": "network-online.target", "After": "network-online.target", "Restart": "on-failure",
        "RestartSec": "5s",
    }  # fmt: skip
    assert trailship.TUNNEL_UNIT in trailship.SINK_UNITS


@pytest.mark.parametrize(
    ("address", "listen", "url"),
    [
        ("10.0.2.10", "10.0.2.10:19532", "https://10.0.2.10:19532"),
        ("2001:db8::9", "2001:db8::9:19532", "https://[2001:db8::9]:19532"),
        ("2001:0db8:0::0009", "2001:db8::9:19532", "https://[2001:db8::9]:19532"),  # one spelling of each
    ],
)
def test_the_sinks_endpoint_is_its_address_and_the_upload_port(address: str, listen: str, url: str) -> None:
    assert trailship.tunnel_listen(address) == listen
    assert trailship.sink_url(address) == url


@pytest.mark.parametrize("address", ["sink.example.net", "10.0.2.10:19532", "", "10.0.2.256"])
def test_the_sinks_endpoint_is_an_ip_address(address: str) -> None:
    with pytest.raises(ValueError):
        trailship.tunnel_listen(address)
    with pytest.raises(ValueError):
        trailship.sink_url(address)
