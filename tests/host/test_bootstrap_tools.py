"""The rendered bootstrap as the real tools read it: cloud-init's schema, bash's parser, sshd's
config parser, and the host-key install step run against a throwaway key directory."""

from __future__ import annotations

import shlex
import subprocess
from pathlib import Path

import pytest
import yaml

from components.hostconfig import (
    DOCKER_REPO_KEY_FINGERPRINT,
    FIREWALL_UNIT,
    HOST_KEY_PATH,
    render_bootstrap_script,
    render_cloud_init,
    render_host_key_install,
    render_sshd_config,
)
from components.hostkeys import derive_first_contact_key, derive_ssh_host_key
from tests.host.conftest import require_tool, run

pytestmark = pytest.mark.host

OPERATOR_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIMlBtDA0i5ihElhG3/PErDdYCsd0LYDdWGvMgnr6swy5 ops@clawstaff"
HOST = "fsn1-cage-01"
KEY = derive_ssh_host_key("stack sealing secret", HOST)


def _user_data() -> str:
    return render_cloud_init(
        host_name=HOST,
        ssh_authorized_keys=[OPERATOR_KEY],
        ssh_allowed_cidrs=["203.0.113.0/24"],
        first_contact_key=derive_first_contact_key("stack sealing secret", HOST),
    )


def test_cloud_init_schema_accepts_the_user_data(tmp_path: Path) -> None:
    cloud_init = require_tool("cloud-init")
    path = tmp_path / "user-data"
    path.write_text(_user_data())
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    if result.returncode != 0:
        annotated = subprocess.run(
            [cloud_init, "schema", "--config-file", str(path), "--annotate"], capture_output=True, text=True
        )
        pytest.fail(f"cloud-init schema rejects the user-data:\n{result.stderr}\n{annotated.stdout[-3000:]}")
    assert "Valid cloud-config" in result.stdout


def test_cloud_init_schema_is_a_real_check(tmp_path: Path) -> None:
    """Control: the same validator rejects a broken variant, so the passing test above means something."""
    cloud_init = require_tool("cloud-init")
    document = yaml.safe_load(_user_data())
    document["ssh_keys"] = {"ed25519_private": 42}
    document["runcmd"] = "not a list"
    path = tmp_path / "user-data"
    path.write_text("#cloud-config\n" + yaml.safe_dump(document))
    result = subprocess.run([cloud_init, "schema", "--config-file", str(path)], capture_output=True, text=True)
    assert result.returncode != 0


def test_bootstrap_script_parses_in_bash(tmp_path: Path) -> None:
    script = tmp_path / "bootstrap"
    script.write_text(
        render_bootstrap_script(
            host_name=HOST, ssh_authorized_keys=[OPERATOR_KEY], ssh_allowed_cidrs=["203.0.113.0/24"]
        )
    )
    run([require_tool("bash"), "-n", str(script)])


def test_bootstrap_inside_user_data_is_the_dedicated_host_script() -> None:
    """Cloud and dedicated hosts run the same steps: the script cloud-init writes is byte-identical."""
    document = yaml.safe_load(_user_data())
    (written,) = document["write_files"]
    assert written["content"] == render_bootstrap_script(
        host_name=HOST, ssh_authorized_keys=[OPERATOR_KEY], ssh_allowed_cidrs=["203.0.113.0/24"]
    )


def test_sshd_accepts_the_drop_in_and_it_wins(tmp_path: Path) -> None:
    """sshd parses the drop-in; included first, it beats a later "PasswordAuthentication yes"
    (as cloud-init's 50-cloud-init.conf may write)."""
    sshd = require_tool("sshd")
    Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd -T insists on its privsep directory
    dropin = tmp_path / "00-clawstaff.conf"
    dropin.write_text(render_sshd_config().replace(HOST_KEY_PATH, str(tmp_path / "host_key")))
    (tmp_path / "host_key").write_text(KEY.private_openssh)
    (tmp_path / "host_key").chmod(0o600)
    main = tmp_path / "sshd_config"
    main.write_text(f"Include {dropin}\nPasswordAuthentication yes\nPermitRootLogin yes\nX11Forwarding yes\n")
    run([sshd, "-t", "-f", str(main)])
    effective = run([sshd, "-T", "-f", str(main), "-C", "user=root,host=admin,addr=203.0.113.9"]).stdout
    settings = {line.split(" ", 1)[0]: line.split(" ", 1)[1] for line in effective.splitlines() if " " in line}
    assert settings["passwordauthentication"] == "no"
    assert settings["kbdinteractiveauthentication"] == "no"
    assert settings["permitrootlogin"] in ("prohibit-password", "without-password")
    assert settings["authenticationmethods"] == "publickey"
    assert settings["x11forwarding"] == "no"
    assert settings["allowtcpforwarding"] == "no"
    assert settings["hostkeyalgorithms"] == "ssh-ed25519"
    assert settings["hostkey"] == str(tmp_path / "host_key")


def _host_key_install_sandbox(tmp_path: Path) -> tuple[Path, Path]:
    """The install script with its fixed paths moved into tmp_path and sshd/systemctl stubbed out,
    so its real logic (verify the key on stdin, install it, skip when current) runs here."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    calls = tmp_path / "calls"
    for name in ("sshd", "systemctl"):
        stub = bindir / name
        stub.write_text(f'#!/bin/sh\necho "{name} $*" >>{calls}\n')
        stub.chmod(0o755)
    keydir = tmp_path / "etc-ssh"
    keydir.mkdir()
    script = tmp_path / "install-host-key"
    script.write_text(render_host_key_install(KEY).replace("/etc/ssh/", f"{keydir}/"))
    return script, bindir


def test_host_key_install_verifies_installs_and_is_idempotent(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    script, bindir = _host_key_install_sandbox(tmp_path)
    env = {"PATH": f"{bindir}:/usr/bin:/bin:/usr/sbin:/sbin"}
    first = subprocess.run(["bash", str(script)], input=KEY.private_openssh, env=env, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    installed = tmp_path / "etc-ssh" / "ssh_host_ed25519_key"
    assert installed.read_text() == KEY.private_openssh
    assert installed.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "etc-ssh" / "ssh_host_ed25519_key.pub").read_text().strip() == KEY.public_openssh
    assert (tmp_path / "calls").read_text().splitlines() == ["sshd -t", "systemctl reload-or-restart ssh.service"]

    second = subprocess.run(["bash", str(script)], input=KEY.private_openssh, env=env, capture_output=True, text=True)
    assert second.returncode == 0 and "already installed" in second.stderr
    assert len((tmp_path / "calls").read_text().splitlines()) == 2  # no second reload


def test_host_key_install_refuses_a_different_key(tmp_path: Path) -> None:
    require_tool("ssh-keygen")
    script, bindir = _host_key_install_sandbox(tmp_path)
    other = derive_ssh_host_key("stack sealing secret", "another-host")
    env = {"PATH": f"{bindir}:/usr/bin:/bin:/usr/sbin:/sbin"}
    result = subprocess.run(["bash", str(script)], input=other.private_openssh, env=env, capture_output=True, text=True)
    assert result.returncode != 0
    assert KEY.fingerprint in result.stderr
    assert not (tmp_path / "etc-ssh" / "ssh_host_ed25519_key").exists()
    assert not (tmp_path / "calls").exists()


def _bootstrap_functions() -> str:
    """The helper functions of the rendered bootstrap (lib/host-common.sh's and its own: everything
    before its first real action, the check of the system)."""
    script = render_bootstrap_script(
        host_name=HOST, ssh_authorized_keys=[OPERATOR_KEY], ssh_allowed_cidrs=["203.0.113.0/24"]
    )
    functions, found, _ = script.partition("\nrequire_system\n")
    assert found and "docker_key_ok() {" in functions and "put() {" in functions
    return functions + "\n"


def test_bootstrap_put_writes_only_on_change(tmp_path: Path) -> None:
    target = tmp_path / "etc" / "example.conf"
    program = (
        _bootstrap_functions()
        + f"""
put {target} 0640 <<'X'
one
X
changed {target} && echo first-changed
CHANGED=' '
put {target} 0640 <<'X'
one
X
changed {target} || echo second-unchanged
put {target} 0640 <<'X'
two
X
changed {target} && echo third-changed
"""
    )
    out = run(["bash", "-c", program]).stdout.split()
    assert out == ["first-changed", "second-unchanged", "third-changed"]
    assert target.read_text() == "two\n"
    assert target.stat().st_mode & 0o777 == 0o640


def _gpg_key(home: Path, uid: str, out: Path) -> str:
    gpg = require_tool("gpg")
    env = {"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
    run([gpg, "--batch", "--passphrase", "", "--quick-gen-key", uid, "ed25519", "sign", "never"], env=env)
    listing = run([gpg, "--batch", "--with-colons", "--list-keys", uid], env=env).stdout
    fingerprint = next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr"))
    out.write_text(run([gpg, "--batch", "--armor", "--export", uid], env=env).stdout)
    return fingerprint


def test_docker_key_check_wants_exactly_the_pinned_key(tmp_path: Path) -> None:
    """The repository-key check of the bootstrap, with real gpg: the pinned key passes; another key,
    or the pinned key with an extra key appended (apt would trust both), fails."""
    home = tmp_path / "gnupg"
    home.mkdir(mode=0o700)
    try:
        _check_docker_key(home, tmp_path)
    finally:  # gpg started an agent for this home: stop it
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"],
            env={"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"},
            capture_output=True,
        )


def _check_docker_key(home: Path, tmp_path: Path) -> None:
    pinned, other = tmp_path / "pinned.asc", tmp_path / "other.asc"
    fingerprint = _gpg_key(home, "pinned@clawstaff.test", pinned)
    _gpg_key(home, "intruder@clawstaff.test", other)
    both = tmp_path / "both.asc"
    both.write_text(pinned.read_text() + other.read_text())
    pinned_line = f"readonly DOCKER_KEY_FINGERPRINT={shlex.quote(DOCKER_REPO_KEY_FINGERPRINT)}\n"
    assert _bootstrap_functions().count(pinned_line) == 1
    functions = _bootstrap_functions().replace(pinned_line, f"readonly DOCKER_KEY_FINGERPRINT='{fingerprint}'\n")
    results = {}
    for name, path in (("pinned", pinned), ("other", other), ("both", both), ("missing", tmp_path / "nope")):
        program = functions + f"\ndocker_key_ok {path} && echo ok || echo refused\n"
        results[name] = run(
            ["bash", "-c", program], env={"GNUPGHOME": str(home), "PATH": "/usr/bin:/bin"}
        ).stdout.strip()
    assert results == {"pinned": "ok", "other": "refused", "both": "refused", "missing": "refused"}


def test_systemd_accepts_the_firewall_unit(tmp_path: Path) -> None:
    analyze = require_tool("systemd-analyze")
    unit = tmp_path / "clawstaff-firewall.service"
    unit.write_text(FIREWALL_UNIT)
    run([analyze, "verify", str(unit)])
    # Control: systemd-analyze does reject a broken unit.
    unit.write_text(FIREWALL_UNIT.replace("ExecStart=/usr/sbin/nft", "ExecStart=nft-relative"))
    assert subprocess.run([analyze, "verify", str(unit)], capture_output=True).returncode != 0
