"""The fifth host-side piece of a ClawCage: the kernel audit rules that record what its claw does.

Rendered like the other pieces (components.cagehost, whose validators and renderer it uses): a create
and a delete script, `audit-create.sh` and `audit-delete.sh`, run as the cage's `audit` command. The
records go to the host's audit daemon (auditd, which the bootstrap installs), tagged with the cage's
key (components.conventions.audit_key); tools/audittrail.py reads them back as the claw's timeline.
docs/audit.md says what is recorded, what is not, and what it costs.
"""

from __future__ import annotations

from components.cagehost import _claw_name, _container_uid, _render, volume_mount_path
from components.conventions import audit_key


# What the rules record, by syscall, per host architecture (the rules are `-F arch=b64`; the cages'
# seccomp profile allows no 32-bit ABI). aarch64 has only the *at forms of the file calls. Every name
# here is one the cages' profile allows (components.seccomp; fchmodat2 is refused there), so no
# allowed way to make, change or remove a file escapes the rules: tests/unit/test_cagehost.py.
_AUDIT_EXEC = ("execve", "execveat")
_AUDIT_CHANGE_AT = (
    *("openat", "openat2", "truncate", "ftruncate", "renameat", "renameat2", "unlinkat", "mkdirat", "linkat"),
    *("symlinkat", "mknodat", "fchmod", "fchmodat", "fchown", "fchownat", "setxattr", "lsetxattr", "fsetxattr"),
    *("removexattr", "lremovexattr", "fremovexattr"),
)
_AUDIT_CHANGE_LEGACY = ("creat", "open", "rename", "unlink", "mkdir", "rmdir", "link", "symlink", "chmod", "chown", "lchown", "mknod")  # fmt: skip
AUDIT_SYSCALLS: dict[str, dict[str, tuple[str, ...]]] = {
    "x86_64": {
        "exec": _AUDIT_EXEC,
        "change": (*_AUDIT_CHANGE_LEGACY, *_AUDIT_CHANGE_AT),
        "read": ("open", "openat", "openat2"),
    },
    "aarch64": {"exec": _AUDIT_EXEC, "change": _AUDIT_CHANGE_AT, "read": ("openat", "openat2")},
}


# Where the rules a host loads say the host uid: only the host knows its dockremap range, so its
# script puts the uid there (audit-create.sh).
AUDIT_UID_TOKEN = "@HOST_UID@"


def audit_rules(claw: str, *, host_uid: int | str, arch: str, volume: str | None) -> list[str]:
    """The auditctl rules of a cage, one string of auditctl arguments each.

    By the host uid the cage's user maps to: every exec; every call of the `change` set that creates,
    opens for writing, renames, deletes or changes the mode, owner or attributes of a file anywhere
    (perm=wa: an open for reading is not a change); with a volume, every open for reading below it.
    Failed calls are recorded too (the record says the result). The one source of the rules: the
    create script loads exactly these, with its host's uid for AUDIT_UID_TOKEN."""
    if arch not in AUDIT_SYSCALLS:
        raise ValueError(f"no audit syscall list for architecture {arch!r}: allowed {sorted(AUDIT_SYSCALLS)}")
    lists, key = AUDIT_SYSCALLS[arch], audit_key(_claw_name(claw))

    def rule(kind: str, *fields: str) -> str:
        return " ".join(
            ["-a always,exit -F arch=b64 -S", ",".join(lists[kind]), *fields, f"-F uid={host_uid} -k {key}"]
        )

    rules = [rule("exec"), rule("change", "-F perm=wa")]
    if volume:
        rules.append(rule("read", f"-F dir={volume}", "-F perm=r"))
    return rules


def render_audit_create(claw: str, *, uid: int, volume: bool, subuid_file: str = "/etc/subuid") -> str:
    """Load the cage's kernel audit rules (`audit_rules`, for the host's architecture), replacing any
    it had; all tagged audit_key(claw).

    Why the kernel: the trail must come from below the claw, which can lie about itself. Why by host
    uid: under userns-remap each cage's user is its own host uid, so the rules see that cage and no
    other. It refuses rather than run a cage unaudited: no auditctl, no audit daemon (records would
    reach no log), rules locked until reboot, or (with a volume) the volume not mounted. The rules
    live in the kernel only: a reboot drops them along with the cage's key, and the same re-run that
    puts the key back (tools/recover.py) loads them before the claw starts."""
    claw = _claw_name(claw)
    uid = _container_uid(uid)
    mount = volume_mount_path(claw) if volume else None
    rules = {
        f"RULES_{arch.upper()}": "\n".join(audit_rules(claw, host_uid=AUDIT_UID_TOKEN, arch=arch, volume=mount))
        for arch in AUDIT_SYSCALLS
    }
    return _render(
        "audit",
        "audit-create.sh",
        claw,
        {"key": audit_key(claw), "volume": bool(volume)},
        KEY=audit_key(claw),
        CAGE_UID=uid,
        SUBUID_FILE=subuid_file,
        VOLUME=mount or "",
        UID_TOKEN=AUDIT_UID_TOKEN,
        **rules,
    )


def render_audit_delete(claw: str) -> str:
    """Remove the cage's audit rules; the records they made stay in the host's audit log (the trail
    outlives the cage). Absent rules are fine."""
    claw = _claw_name(claw)
    return _render("audit", "audit-delete.sh", claw, {"key": audit_key(claw)}, KEY=audit_key(claw))
