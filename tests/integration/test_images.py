"""The images' claims, checked on the real images in the real engine.

No shell, no package manager, no setuid/setgid file, a numeric non-root default user; Python and
cage-init work; and cage-init opens, inside a hardened container, what components.sealing sealed.
"""

from __future__ import annotations

import base64
import io
import json
import os
import stat
import tarfile
import time
from pathlib import Path

import pytest

from components import conventions, local_images
from components.sealing import CLAW_ENV, cage_key_file_text, derive_cage_key, open_credentials, seal_credentials

pytestmark = pytest.mark.integration

FORBIDDEN = {
    "bin/sh",
    "usr/bin/sh",
    "bin/bash",
    "usr/bin/bash",
    "bin/dash",
    "usr/bin/dash",
    "usr/bin/apt",
    "usr/bin/apt-get",
    "usr/bin/dpkg",
    "usr/bin/perl",
    "usr/bin/su",
    "usr/bin/busybox",
    "usr/bin/sudo",
    "usr/bin/passwd",
    "usr/bin/mount",
    "usr/sbin/sshd",
}
FORBIDDEN_BASENAMES = {"sh", "bash", "dash", "zsh", "busybox", "apt", "apt-get", "dpkg", "dpkg-deb", "sshd"}
SECRETS = {"ANTHROPIC_API_KEY": "sk-ant-integration-0123456789", "SLACK_BOT_TOKEN": "xoxb-ünïcode-42"}
CLAW = "acme-support"


def exported_files(docker_client, image: str) -> dict[str, tarfile.TarInfo]:
    """The container filesystem as Docker exports it: path -> tar header."""
    container = docker_client.containers.create(image)
    try:
        data = io.BytesIO(b"".join(container.export()))
    finally:
        container.remove(force=True)
    with tarfile.open(fileobj=data) as tar:
        return {m.name.lstrip("./"): m for m in tar.getmembers()}


@pytest.fixture(scope="module", params=["claw-runtime", "egress-proxy"])
def image(request, docker_client):
    return request.getfixturevalue(request.param.replace("-", "_") + "_image")


def test_no_shell_no_package_manager(docker_client, image):
    files = exported_files(docker_client, image)
    assert not FORBIDDEN & files.keys()
    assert not [p for p in files if p.rsplit("/", 1)[-1] in FORBIDDEN_BASENAMES and not files[p].isdir()]
    assert not [p for p in files if p.startswith(("var/lib/apt", "etc/apt", "var/cache/apt"))]
    assert "var/lib/dpkg/status" not in files  # only the status.d manifest for scanners


def test_no_setuid_or_setgid_file(docker_client, image):
    files = exported_files(docker_client, image)
    flagged = [p for p, m in files.items() if m.mode & (stat.S_ISUID | stat.S_ISGID)]
    assert flagged == []
    assert not [p for p, m in files.items() if "SCHILY.xattr.security.capability" in m.pax_headers]


def test_default_user_is_numeric_and_not_root(docker_client, image):
    user = docker_client.images.get(image).attrs["Config"]["User"]
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and gid.isdigit() and int(uid) != 0 and int(gid) != 0


def test_scanner_manifest_lists_the_kept_packages(docker_client, image):
    files = exported_files(docker_client, image)
    status = {p.rsplit("/", 1)[-1] for p in files if p.startswith("var/lib/dpkg/status.d/")}
    assert {"libc6", "libssl3t64"} <= status  # Debian 13: the 64-bit time_t ABI names


def test_image_id_is_the_pinnable_reference(docker_client, image):
    # A locally built image has no repo digest; its content-addressed ID pins it.
    found = docker_client.images.get(image)
    assert found.id.startswith("sha256:") and len(found.id) == 71
    # `created` is SOURCE_DATE_EPOCH, the newest .deb's date that the build recorded, not the build time
    name = found.attrs["Config"]["Labels"]["org.opencontainers.image.title"].split("/")[-1]
    record = json.loads(local_images.record_path().read_text())[name]
    created = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(record["source_date_epoch"]))
    assert found.attrs["Created"] == created


def test_a_shell_cannot_be_started(docker_client, claw_runtime_image):
    import docker.errors

    container = docker_client.containers.create(claw_runtime_image, entrypoint=["/bin/sh"], command=["-c", "id"])
    try:
        with pytest.raises(docker.errors.APIError, match="no such file or directory"):
            container.start()
    finally:
        container.remove(force=True)


def test_python_and_cage_init_are_there(docker_client, claw_runtime_image, run_to_completion, hardened):
    attrs = docker_client.images.get(claw_runtime_image).attrs["Config"]
    assert attrs["Entrypoint"] == ["/usr/local/bin/cage-init"]
    script = (
        "import os, ssl, json; from cryptography.hazmat.primitives.ciphers.aead import AESSIV; "
        "ctx = ssl.create_default_context(); "
        "print(json.dumps({'uid': os.getuid(), 'cas': ctx.cert_store_stats()['x509_ca'], "
        "'cage_init': os.access('/usr/local/bin/cage-init', os.X_OK)}))"
    )
    code, out, err = run_to_completion(
        claw_runtime_image, entrypoint=["/usr/bin/python3"], command=["-c", script], network_mode="none", **hardened()
    )
    assert code == 0, err
    facts = json.loads(out)
    assert facts["uid"] != 0 and facts["cas"] > 100 and facts["cage_init"]


@pytest.fixture
def key_dir(tmp_path: Path) -> Path:
    """The host key directory of one cage (a tmpfs in production; readable by the cage user)."""
    key_dir = tmp_path / "key"
    key_dir.mkdir()
    os.chmod(tmp_path, 0o755)
    os.chmod(key_dir, 0o755)
    return key_dir


def run_cage(run_to_completion, hardened, image, key_file: Path | None, env: dict[str, str], command: list[str]):
    volumes = {str(key_file): {"bind": conventions.CAGE_KEY_MOUNT, "mode": "ro"}} if key_file else {}
    return run_to_completion(
        image, command=command, environment=env, volumes=volumes, network_mode="none", **hardened()
    )


PRINT_ENV = ["/usr/bin/python3", "-c", "import os, json; print(json.dumps(dict(os.environ)))"]


def write_key(key_dir: Path, key: bytes) -> Path:
    path = key_dir / "key"
    path.write_text(cage_key_file_text(key))
    os.chmod(path, 0o444)
    return path


def test_cage_init_opens_components_sealing_and_execs_the_claw(
    claw_runtime_image, run_to_completion, hardened, key_dir
):
    key = derive_cage_key("integration-sealing-key", CLAW)
    env = {conventions.SEALED_ENV: seal_credentials(key, CLAW, SECRETS), CLAW_ENV: CLAW}
    code, out, err = run_cage(run_to_completion, hardened, claw_runtime_image, write_key(key_dir, key), env, PRINT_ENV)
    assert code == 0, err
    seen = json.loads(out)
    assert {k: seen[k] for k in SECRETS} == SECRETS
    assert conventions.SEALED_ENV not in seen  # the ciphertext is gone from the claw's env
    assert seen[CLAW_ENV] == CLAW
    assert err == ""  # cage-init says nothing on success


@pytest.mark.parametrize(
    "case", ["wrong key", "other claw", "tampered", "no key file", "no sealed env", "malformed key file"]
)
def test_cage_init_fails_closed_without_leaking(claw_runtime_image, run_to_completion, hardened, key_dir, case):
    key = derive_cage_key("integration-sealing-key", CLAW)
    sealed = seal_credentials(key, CLAW, SECRETS)
    env = {conventions.SEALED_ENV: sealed, CLAW_ENV: CLAW}
    key_file = write_key(key_dir, key)
    if case == "wrong key":
        key_file = write_key(key_dir, derive_cage_key("another-stack", CLAW))
    elif case == "other claw":
        env[CLAW_ENV] = "acme-billing"
    elif case == "tampered":
        env[conventions.SEALED_ENV] = sealed[:-6] + ("A" if sealed[-6] != "A" else "B") + sealed[-5:]
    elif case == "no key file":
        key_file = None
    elif case == "no sealed env":
        del env[conventions.SEALED_ENV]
    elif case == "malformed key file":
        os.chmod(key_file, 0o644)
        key_file.write_text("this is not a key\n")
    code, out, err = run_cage(
        run_to_completion, hardened, claw_runtime_image, key_file, env, ["/usr/bin/python3", "-c", "print('CLAW RAN')"]
    )
    assert code != 0
    assert "CLAW RAN" not in out
    assert err.startswith("cage-init: ") and "Traceback" not in err
    for secret in [*SECRETS.values(), base64.b64encode(key).decode(), key.hex()]:
        assert secret not in out + err


# The claw-runtime's own cryptography (Debian's 38.x) seals in the shared format; the host opens it.
SEAL_IN_CONTAINER = r"""
import base64, json, sys
from cryptography.hazmat.primitives.ciphers.aead import AESSIV
key = base64.b64decode(open('/run/clawcage/key').read().strip())
plain = json.dumps({"DB_PASSWORD": "pw-from-container"}, sort_keys=True, separators=(",", ":"),
                   ensure_ascii=False).encode()
blob = AESSIV(key).encrypt(plain, [b"clawcage-sealed-credentials-v1", b"acme-support"])
print("clawcage-v1:" + base64.b64encode(blob).decode())
"""


def test_the_image_cryptography_seals_what_components_open(claw_runtime_image, run_to_completion, hardened, key_dir):
    key = derive_cage_key("integration-sealing-key", CLAW)
    key_file = write_key(key_dir, key)
    code, out, err = run_to_completion(
        claw_runtime_image,
        entrypoint=["/usr/bin/python3"],
        command=["-c", SEAL_IN_CONTAINER],
        volumes={str(key_file): {"bind": conventions.CAGE_KEY_MOUNT, "mode": "ro"}},
        network_mode="none",
        **hardened(),
    )
    assert code == 0, err
    sealed = out.strip()
    assert open_credentials(key, CLAW, sealed) == {"DB_PASSWORD": "pw-from-container"}
    assert sealed == seal_credentials(key, CLAW, {"DB_PASSWORD": "pw-from-container"})  # same bytes


def test_cage_init_cannot_be_redirected_by_python_env(
    claw_runtime_image, run_to_completion, hardened, key_dir, tmp_path
):
    # cage-init runs `python3 -I`: a PYTHONPATH in the container env does not run code beside the key.
    evil = tmp_path / "evil"
    evil.mkdir()
    (evil / "sitecustomize.py").write_text("import sys; print('INJECTED', file=sys.stderr)\n")
    os.chmod(evil, 0o755)
    os.chmod(evil / "sitecustomize.py", 0o644)
    key = derive_cage_key("integration-sealing-key", CLAW)
    key_file = write_key(key_dir, key)
    env = {conventions.SEALED_ENV: seal_credentials(key, CLAW, SECRETS), CLAW_ENV: CLAW, "PYTHONPATH": "/opt/evil"}
    volumes = {
        str(key_file): {"bind": conventions.CAGE_KEY_MOUNT, "mode": "ro"},
        str(evil): {"bind": "/opt/evil", "mode": "ro"},
    }
    # Control: without -I the same env does inject (so the check below can fail).
    code, _, err = run_to_completion(
        claw_runtime_image,
        entrypoint=["/usr/bin/python3"],
        command=["-c", "pass"],
        environment=env,
        volumes=volumes,
        network_mode="none",
        **hardened(),
    )
    assert code == 0 and "INJECTED" in err
    code, out, err = run_to_completion(
        claw_runtime_image,
        command=["/usr/bin/python3", "-I", "-c", "print('ok')"],
        environment=env,
        volumes=volumes,
        network_mode="none",
        **hardened(),
    )
    assert code == 0, err
    assert out.strip() == "ok" and "INJECTED" not in err


def test_claw_runtime_rebuilds_byte_identical(docker_client, claw_runtime_image, tmp_path):
    """Build twice from the lock: the layer tar and so the image ID come out the same."""
    import subprocess
    import sys

    if os.geteuid() != 0:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("building the images needs root (mmdebstrap --mode=root); CI runs as root")
        pytest.skip("building the images needs root (mmdebstrap --mode=root)")
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run(
        [sys.executable, str(root / "images" / "build.py"), "--twice", "--build-dir", str(tmp_path), "claw-runtime"],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    built = json.loads((tmp_path / "images.json").read_text())["claw-runtime"]
    assert built["reproducible"] == "byte-identical"
    assert docker_client.images.get(built["tag"]).id == built["id"]
    assert docker_client.images.get(built["tag"]).attrs["RootFS"]["Layers"] == [built["layer"]]
