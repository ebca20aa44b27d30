"""The audit sink's rendered host as the real tools read it: cloud-init's schema for its user-data,
`nft -c` for its firewall, bash's parser for its bootstrap, and its certificate install run against a
throwaway directory with the real openssl (systemctl and ss stubbed out)."""

from __future__ import annotations

import subprocess
from datetime import datetime, timezone
from pathlib import Path

import pytest

from components import trailpki
from components.firewall import render_sink_nftables
from components.hostconfig import cloud_init_with_bootstrap
from components.hostkeys import derive_first_contact_key
from components.sinkconfig import render_sink_bootstrap, render_sink_certs_install, sink_certificates
from components.trailship import TRAIL_DIR, UPLOAD_PORT
from tests.host.conftest import require_root, require_tool, run

pytestmark = pytest.mark.host

OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMlBtDA0i5ihElhG3/PErDdYCsd0LYDdWGvMgnr6swy5 ops@clawstaff"
ADMIN = ["203.0.113.0/24", "2001:db8::/48"]
ADDRESS = "10.0.2.10"
SINK_ARGS = {
    "host_name": "fsn1-trail",
    "ssh_authorized_keys": [OPERATOR_KEY],
    "ssh_allowed_cidrs": ADMIN,
    "address": ADDRESS,
    "upload_sources": ["10.0.0.0/16"],
    "retention_days": 400,
    "max_use": 30 * 10**9,
}
# The host's clock decides whether openssl accepts a certificate: valid from 1 January of this year.
VALIDITY = trailpki.yearly_validity(datetime.now(timezone.utc))


def test_cloud_init_schema_accepts_the_sinks_user_data(tmp_path: Path) -> None:
    cloud_init = require_tool("cloud-init")
    path = tmp_path / "user-data"
    path.write_text(
        cloud_init_with_bootstrap(
            host_name="fsn1-trail",
            ssh_authorized_keys=[OPERATOR_KEY],
            first_contact_key=derive_first_contact_key("stack sealing secret", "fsn1-trail"),
            script=render_sink_bootstrap(**SINK_ARGS),
        )
    )
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode == 0 and "Valid cloud-config" in result.stdout, result.stderr


@pytest.mark.parametrize(
    "sources",
    [["10.0.0.0/16"], ["198.51.100.7", "203.0.113.124", "2001:db8:5e3b::/64"]],
    ids=["cloud sink: the private network", "dedicated sink: the cage hosts"],
)
def test_nft_check_accepts_the_sinks_rules(tmp_path: Path, sources: list[str]) -> None:
    nft = require_tool("nft")
    rules = tmp_path / "firewall.nft"
    rules.write_text(render_sink_nftables(ssh_allowed_cidrs=ADMIN, upload_sources=sources, upload_port=UPLOAD_PORT))
    run([nft, "-c", "-f", str(rules)])


def test_the_sink_bootstrap_parses_in_bash(tmp_path: Path) -> None:
    script = tmp_path / "sink-bootstrap"
    script.write_text(render_sink_bootstrap(**SINK_ARGS))
    run([require_tool("bash"), "-n", str(script)])


def _certs_sandbox(tmp_path: Path, address: str = ADDRESS) -> tuple[Path, dict[str, str], Path]:
    """The certificate install with TRAIL_DIR moved into tmp_path, systemctl recording its calls and
    ss answering as a sink whose stunnel and journal-remote listen where they should."""
    bindir, calls = tmp_path / "bin", tmp_path / "calls"
    bindir.mkdir()
    (bindir / "systemctl").write_text(f'#!/bin/sh\necho "systemctl $*" >>{calls}\n')
    (bindir / "ss").write_text(
        "#!/bin/sh\n"
        'case "$*" in\n'
        f'  *":{UPLOAD_PORT}"*) echo "LISTEN 0 4096 {address}:{UPLOAD_PORT} 0.0.0.0:*" ;;\n'
        '  *":19531"*) echo "LISTEN 0 4096 127.0.0.1:19531 0.0.0.0:*" ;;\n'
        "esac\n"
    )
    for stub in bindir.iterdir():
        stub.chmod(0o755)
    trail = tmp_path / "trail"
    script = tmp_path / "install-certificates"
    script.write_text(render_sink_certs_install(address).replace(f"TRAIL_DIR={TRAIL_DIR}\n", f"TRAIL_DIR={trail}\n"))
    return script, {"PATH": f"{bindir}:/usr/bin:/bin:/usr/sbin:/sbin"}, trail


def test_the_certificate_install_checks_installs_and_starts_the_trail(tmp_path: Path) -> None:
    require_root()  # it installs the files root's, as on the sink
    require_tool("openssl")
    ca, sink = sink_certificates("stack secret", "prod", "fsn1-trail", ADDRESS, VALIDITY)
    script, env, trail = _certs_sandbox(tmp_path)
    stdin = ca.certificate_pem + sink.certificate_pem + sink.key_pem
    done = subprocess.run(["bash", str(script)], input=stdin, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    expected = {"ca.pem": (ca.certificate_pem, 0o644), "sink.pem": (sink.certificate_pem, 0o644),
                "sink.key": (sink.key_pem, 0o600)}  # fmt: skip
    for name, (text, mode) in expected.items():
        assert (trail / name).read_text() == text
        assert (trail / name).stat().st_mode & 0o777 == mode
    units = "systemd-journal-remote.socket stunnel@clawstaff-trail.service clawstaff-trail-vacuum.timer"
    calls = (tmp_path / "calls").read_text().splitlines()
    assert calls[:4] == ["systemctl daemon-reload", f"systemctl enable {units}",
                         "systemctl stop systemd-journal-remote.service", f"systemctl restart {units}"]  # fmt: skip
    assert all(call.startswith("systemctl is-active --quiet") for call in calls[4:]) and len(calls) == 7


@pytest.mark.parametrize(
    ("what", "said"),
    [
        ("another CA", "not the CA's, or not a server certificate for 10.0.2.10"),
        ("another address", "not the CA's, or not a server certificate for 10.0.2.10"),
        ("another key", "the key on stdin is not the certificate's"),
        ("no key", "other than three PEM blocks"),
        ("a fourth block", "other than three PEM blocks"),
    ],
)
def test_the_certificate_install_refuses_what_is_not_the_sinks(tmp_path: Path, what: str, said: str) -> None:
    require_root()
    require_tool("openssl")
    ca, sink = sink_certificates("stack secret", "prod", "fsn1-trail", ADDRESS, VALIDITY)
    other_ca, other_sink = sink_certificates("another secret", "prod", "fsn1-trail", ADDRESS, VALIDITY)
    _, elsewhere = sink_certificates("stack secret", "prod", "fsn1-trail", "10.0.2.11", VALIDITY)
    stdin = {
        "another CA": other_ca.certificate_pem + sink.certificate_pem + sink.key_pem,
        "another address": ca.certificate_pem + elsewhere.certificate_pem + elsewhere.key_pem,
        "another key": ca.certificate_pem + sink.certificate_pem + other_sink.key_pem,
        "no key": ca.certificate_pem + sink.certificate_pem,
        "a fourth block": ca.certificate_pem + sink.certificate_pem + sink.key_pem + ca.certificate_pem,
    }[what]
    script, env, trail = _certs_sandbox(tmp_path)
    done = subprocess.run(["bash", str(script)], input=stdin, env=env, capture_output=True, text=True)
    assert done.returncode != 0 and said in done.stderr, done.stderr
    assert not trail.exists() and not (tmp_path / "calls").exists()  # nothing installed, nothing started
