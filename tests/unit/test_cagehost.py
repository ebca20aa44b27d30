"""The rendered host scripts of a cage: properties of the text that keep them safe and idempotent.

The proof that the scripts do what they say is tests/host/test_cagehost_real.py, which runs them as
root; these tests pin what must hold for every input: names validated, secrets only on stdin, the
guards that make a second run harmless.
"""

from __future__ import annotations

import base64
import re
import subprocess
from collections.abc import Callable
from decimal import Decimal

import pytest

from components import cagehost, hostscripts, sealing
from components.conventions import CAGE_VOLUME_MOUNT, HOST_KEY_ROOT, HOST_VOLUME_ROOT, cage_cgroup

MiB = 1024 * 1024
CLAW = "acme-support"

RENDERERS: dict[str, Callable[[str], str]] = {
    "limits_create": lambda claw: cagehost.render_limits_create(
        claw, cpus=Decimal("1.5"), memory=512 * MiB, pids=256, driver="cgroupfs"
    ),
    "limits_create_systemd": lambda claw: cagehost.render_limits_create(
        claw, cpus=Decimal("1.5"), memory=512 * MiB, pids=256, driver="systemd"
    ),
    "limits_delete": lambda claw: cagehost.render_limits_delete(claw, driver="cgroupfs"),
    "limits_delete_systemd": lambda claw: cagehost.render_limits_delete(claw, driver="systemd"),
    "key_create": lambda claw: cagehost.render_key_create(claw, uid=65532),
    "key_delete": cagehost.render_key_delete,
    "volume_create": lambda claw: cagehost.render_volume_create(claw, size=5 * 1024 * MiB, uid=65532),
    "volume_delete": cagehost.render_volume_delete,
}
PATHS: list[Callable[[str], str]] = [
    lambda claw: cagehost.cgroup_parent(claw, "cgroupfs"),
    lambda claw: cagehost.cgroup_parent(claw, "systemd"),
    cagehost.host_key_path,
    cagehost.volume_mount_path,
]


@pytest.mark.parametrize("render", RENDERERS.values(), ids=RENDERERS.keys())
def test_scripts_are_strict_bash_that_parses(render: Callable[[str], str]) -> None:
    script = render(CLAW)
    assert script.startswith("#!/bin/bash\n")
    assert "\nset -euo pipefail\n" in script
    assert "set -x" not in script  # tracing would print secrets
    subprocess.run(["bash", "-n", "-c", script], check=True)


def test_shell_command_runs_the_script_under_bash_from_any_shell() -> None:
    script = cagehost.render_key_delete(CLAW)
    command = cagehost.shell_command(script)
    assert command.startswith("/bin/bash -c '")
    out = subprocess.run(
        ["/bin/sh", "-c", cagehost.shell_command('echo "$BASH_VERSION" "$(cat)"')],
        input="from-stdin",
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.split()[1] == "from-stdin" and out.stdout.split()[0][0].isdigit()


BAD_NAMES = [
    "",
    "Acme",
    "acme_support",
    "-acme",
    "acme-",
    "a" * 64,
    "acme support",
    "acme;rm -rf /",
    "../etc",
    "acme/x",
    "acme$(id)",
    "acme\n",
    None,
    7,
]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("render", [*RENDERERS.values(), *PATHS])
def test_a_name_that_is_not_a_dns_label_is_refused_before_rendering(render, name) -> None:
    with pytest.raises(ValueError, match="not a DNS label"):
        render(name)


@pytest.mark.parametrize("render", RENDERERS.values(), ids=RENDERERS.keys())
def test_the_name_enters_the_script_quoted_in_one_assignment(render: Callable[[str], str]) -> None:
    script = render("a1-b2")
    assert "\nCLAW=a1-b2\n" in script
    # Paths built from the name are assigned once, quoted, and used as "$VAR" afterwards.
    for line in script.splitlines():
        if "a1-b2" in line and not line.startswith("#"):
            assert re.match(r"^(CLAW|CG|DIR|KEY|VDIR|DATA|SLICE)=\S+$", line), line


def test_paths_follow_the_shared_conventions() -> None:
    assert cagehost.cgroup_parent(CLAW, "cgroupfs") == "/clawstaff/acme-support"
    # systemd reads `-` as a level of slices: escaped, acme-support is not a child of acme's slice.
    assert cagehost.cgroup_parent(CLAW, "systemd") == "clawstaff-acme\\x2dsupport.slice"
    assert cage_cgroup(CLAW, "systemd") == "clawstaff.slice/clawstaff-acme\\x2dsupport.slice"
    assert cage_cgroup("acme", "systemd") == "clawstaff.slice/clawstaff-acme.slice"
    with pytest.raises(ValueError, match="cgroup driver 'cgroupv1' is not one of systemd, cgroupfs"):
        cagehost.cgroup_parent(CLAW, "cgroupv1")
    assert cagehost.host_key_path(CLAW) == f"{HOST_KEY_ROOT}/acme-support/key"
    assert cagehost.volume_mount_path(CLAW) == f"{HOST_VOLUME_ROOT}/acme-support/mnt/data"
    assert CAGE_VOLUME_MOUNT == "/data"
    assert cagehost.KEY_TMPFS == "/run/clawstaff" and HOST_KEY_ROOT.startswith(cagehost.KEY_TMPFS + "/")


# --- secrets only on stdin ---------------------------------------------------------------------------

SECRET_VARS = ("cage_key", "kek", "volume_key")


@pytest.mark.parametrize("render", RENDERERS.values(), ids=RENDERERS.keys())
def test_secret_variables_only_reach_builtins_never_a_command_line(render: Callable[[str], str]) -> None:
    """Every use of a secret variable is `printf` (a bash builtin: no exec, no argv) into a pipe, a
    redirection or a process substitution; it is never exported or passed to a program."""
    script = render(CLAW)
    for var in SECRET_VARS:
        assert f"export {var}" not in script and f"{var}=$(cat" not in script
        for match in re.finditer(rf"\$\{{?{var}\b", script):
            line = script[script.rfind("\n", 0, match.start()) + 1 : script.find("\n", match.end())]
            assert re.search(rf"printf '%s(\\n)?' \"\${var}\" *(\||>|\))", line), line


def test_secrets_are_read_from_stdin_only() -> None:
    for name in ("key_create", "volume_create"):
        script = RENDERERS[name](CLAW)
        assert "IFS= read -r -d '' out" in script  # the one place a secret is read
        assert "/proc/" not in script.split("read_secret()")[0]
    for name in ("limits_create", "limits_delete", "key_delete", "volume_delete"):
        assert "read_secret" not in RENDERERS[name](CLAW)  # they need no secret, so read none


def test_no_key_material_in_the_text() -> None:
    kek = cagehost.derive_volume_kek("stack sealing secret", CLAW)
    cage_key = sealing.derive_cage_key("stack sealing secret", CLAW)
    texts = "".join(render(CLAW) for render in RENDERERS.values())
    for secret in (kek, cage_key):
        assert base64.b64encode(secret).decode() not in texts and secret.hex() not in texts


def test_volume_kek_is_per_claw_stable_and_not_the_cage_key() -> None:
    a = cagehost.derive_volume_kek("stack sealing secret", "acme-a")
    assert a == cagehost.derive_volume_kek("stack sealing secret", "acme-a")
    assert len(a) == cagehost.VOLUME_KEK_BYTES
    assert a != cagehost.derive_volume_kek("stack sealing secret", "acme-b")
    assert a != cagehost.derive_volume_kek("another sealing secret", "acme-a")
    assert a not in sealing.derive_cage_key("stack sealing secret", "acme-a")
    assert cagehost.volume_kek_stdin(a) == base64.b64encode(a).decode() + "\n"
    with pytest.raises(ValueError):
        cagehost.volume_kek_stdin(a[:16])
    with pytest.raises(ValueError):
        cagehost.derive_volume_kek("", "acme-a")


def test_key_file_format_matches_sealing() -> None:
    assert cagehost.CAGE_KEY_BYTES == sealing.CAGE_KEY_BYTES
    script = cagehost.render_key_create(CLAW, uid=65532)
    assert f"read_secret cage_key {sealing.CAGE_KEY_BYTES}" in script
    assert 'printf \'%s\\n\' "$cage_key" > "$tmp"' in script  # = sealing.cage_key_file_text


# --- idempotency and safety guards -------------------------------------------------------------------


def test_limits_create_handles_both_cgroup_versions_and_converges() -> None:
    script = RENDERERS["limits_create"](CLAW)
    assert "cgroup2fs" in script
    for v2 in ("pids.max", "memory.max", "memory.swap.max", "cpu.max", "cgroup.subtree_control"):
        assert v2 in script
    for v1 in ("memory.limit_in_bytes", "memory.memsw.limit_in_bytes", "cpu.cfs_quota_us", "cpu.cfs_period_us"):
        assert v1 in script
    assert "mkdir -p" in script and "rmdir" not in script
    assert "PIDS=256\n" in script and f"MEMORY={512 * MiB}\n" in script and "CPU_QUOTA=150000\n" in script


def test_limits_delete_refuses_busy_cgroups_and_leaves_the_shared_parent() -> None:
    script = RENDERERS["limits_delete"](CLAW)
    assert "still running" in script and "cgroup.procs" in script
    assert "rmdir" in script and "rm -rf" not in script  # cgroupfs: only rmdir, and only when empty


def test_key_create_never_lets_the_key_hit_disk_or_wider_modes() -> None:
    script = RENDERERS["key_create"](CLAW)
    assert 'mountpoint -q "$TMPFS" ||' not in script  # the guard is an if, checked below
    assert 'if ! mountpoint -q "$TMPFS"; then' in script
    assert "mount -t tmpfs -o mode=0711,size=4m,nosuid,nodev,noexec" in script
    assert "is not a tmpfs: refusing" in script
    assert "set -o noclobber" in script and "umask 0377" in script
    assert 'mv -f -T -- "$tmp" "$KEY"' in script  # atomic rename into place
    assert "dockremap" in script and "userns-remap is not configured" in script


def test_volume_create_guards_each_step() -> None:
    script = RENDERERS["volume_create"](CLAW)
    assert f"SIZE={5 * 1024 * MiB}\n" in script
    assert "if [[ -e $IMG ]]; then" in script and "resizing is not supported" in script
    assert 'losetup -j "$IMG"' in script and "losetup --find --show" in script
    assert 'if ! mountpoint -q "$MNT"; then' in script and "-o nosuid,nodev,noexec" in script
    assert "if [[ -e $WRAPPED ]]; then" in script and "refusing to create an unencrypted volume" in script
    assert "-O encrypt" in script and "-m 0" in script
    assert "fscrypt set_policy" in script and 'mv -T -- "$DATA.new" "$DATA"' in script


def test_volume_delete_shreds_the_key_before_the_data() -> None:
    script = RENDERERS["volume_delete"](CLAW)
    order = [
        script.index(step)
        for step in ("fscrypt remove_key", 'umount "$MNT"', "losetup -d", "shred", 'rm -rf -- "$VDIR"')
    ]
    assert order == sorted(order)
    assert "another mount namespace" in script


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"cpus": Decimal("0.001"), "memory": 64 * MiB, "pids": 10}, "cpus must be at least 0.01"),
        ({"cpus": 1.5, "memory": 64 * MiB, "pids": 10}, "cpus must be a Decimal"),
        ({"cpus": Decimal("NaN"), "memory": 64 * MiB, "pids": 10}, "cpus must be a Decimal"),
        ({"cpus": Decimal(1), "memory": 1024, "pids": 10}, "memory must be an integer"),
        ({"cpus": Decimal(1), "memory": 64 * MiB, "pids": 1}, "pids must be an integer of at least 2"),
        ({"cpus": Decimal(1), "memory": 64 * MiB, "pids": True}, "pids must be an integer"),
    ],
)
def test_bad_limits_are_refused(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        cagehost.render_limits_create(CLAW, **kwargs, driver="cgroupfs")


def test_cpu_quota() -> None:
    assert cagehost.cpu_quota_us(Decimal("0.5")) == 50_000
    assert cagehost.cpu_quota_us(Decimal("2")) == 200_000
    assert cagehost.cpu_quota_us(Decimal("0.01")) == 1_000


@pytest.mark.parametrize("uid", [0, -1, 65536, True, "65532"])
def test_container_uid_must_be_a_non_root_id(uid) -> None:
    with pytest.raises(ValueError, match="non-root"):
        cagehost.render_key_create(CLAW, uid=uid)
    with pytest.raises(ValueError, match="non-root"):
        cagehost.render_volume_create(CLAW, size=64 * MiB, uid=uid)


def test_volume_size_has_a_floor() -> None:
    with pytest.raises(ValueError, match="volume size"):
        cagehost.render_volume_create(CLAW, size=1 * MiB, uid=65532)


# --- the fscrypt helper (stdlib Python that the volume scripts run on the host) ---------------------


def test_fscrypt_helper_computes_the_kernels_key_identifier() -> None:
    """The vector was read from this project's kernel (FS_IOC_ADD_ENCRYPTION_KEY) for bytes 0..63."""
    key = base64.b64encode(bytes(range(64))).decode()
    out = subprocess.run(
        ["python3", "-c", hostscripts.fscrypt_helper(), "identifier"],
        input=key,
        capture_output=True,
        text=True,
        check=True,
    )
    assert out.stdout.strip() == "8699c2c53707405da5aba5ae4d8583c0"


@pytest.mark.parametrize("stdin, message", [("!!", "not base64"), (base64.b64encode(b"x" * 32).decode(), "64 bytes")])
def test_fscrypt_helper_refuses_bad_keys_without_echoing_them(stdin: str, message: str) -> None:
    out = subprocess.run(
        ["python3", "-c", hostscripts.fscrypt_helper(), "identifier"], input=stdin, capture_output=True, text=True
    )
    assert out.returncode == 1 and message in out.stderr and stdin not in out.stderr


def test_the_loop_device_is_attached_through_an_opaque_alias_that_goes_with_the_volume() -> None:
    # Finding 8 of the attack-findings issue: /sys/block/loop*/loop/backing_file is readable in every
    # container, so the path a loop device is set up from must not name the tenant.
    create, delete = RENDERERS["volume_create"](CLAW), RENDERERS["volume_delete"](CLAW)
    assert 'ALIAS_DIR="${VDIR%/*}/.loop"' in create and "head -c 16 /dev/urandom" in create
    assert 'losetup --find --show -- "$alias_path"' in create and 'losetup --find --show -- "$IMG"' not in create
    assert CLAW not in create.split('ALIAS_DIR="', 1)[1].split("\n", 1)[0]
    assert delete.index("losetup -d") < delete.index('rm -f -- "$ALIAS_DIR/$alias_name"') < delete.index("rm -rf --")
