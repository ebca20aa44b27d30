"""A claw's trail from the kernel's audit records: parse what auditd wrote, and say it as events.

The records are those of the cage's audit rules (components/cageaudit.py), as `ausearch --input-logs --raw -k
<the cage's key>` prints them from the host's audit log: one line per record,

    type=SYSCALL msg=audit(1796217124.172:13): arch=c000003e syscall=59 success=no exit=-2 ... key="clawcage-a"\x1dARCH=x86_64 SYSCALL=execve ...

where a part after the group separator (\x1d) is auditd's own reading of the numbers, when it writes
`log_format = ENRICHED`. The hosts write RAW (components/hostscripts/files/auditd.conf: ENRICHED
costs auditd a user-database lookup per uid field, and a cage's uid is in no database, which made
file-heavy claws ten times slower), so the syscall's name comes from SYSCALL_NAMES, by the record's
architecture and number. Strings the claw controls (paths, arguments, the program's name) arrive
quoted or hex-encoded, never bare, so a file named ` key=other` cannot forge a field: they are decoded
here, after the line is split.

Each event is one syscall of the cage's user that a rule matched, or one change of the cage's rules,
and becomes one JSON object of the schema SCHEMA (docs/audit.md, "The trail's schema"):

    {"schema": "clawstaff.audit/1", "time": "2026-12-02T13:40:01.123Z", "serial": 456,
     "claw": "acme-support", "org": "acme", "kind": "process" | "file" | "network" | "rules" | "limit" | "api",
     "action": "exec" | "create" | "write" | "read" | "open" | "truncate" | "rename" | "delete" |
               "mkdir" | "mknod" | "link" | "chmod" | "chown" | "xattr" | "bind" | "admin" |
               "loaded" | "removed" | "oom-kill" | "fork-refused" | "allowed" | "refused",
     "result": "ok" | "<errno name>", "syscall": "openat", "pid": 1234, "ppid": 1200, "uid": 165532,
     "exe": "/usr/bin/python3.13", "argv": [...] (exec only), "cwd": "/", "paths": ["/data/notes"]}

A limit hit (kind "limit": action "oom-kill" or "fork-refused") comes from the kernel's log instead
(limit_events): no serial, and `comm` and `cgroup` in place of the program's path. An API call (kind
"api": "allowed" or "refused") comes from the cage's proxy log (api_events): no serial, and `method`,
`request`, `status` and `reason`.

Paths are as the claw named them, inside its own mount namespace (so `/data/...` is its volume).
"""

from __future__ import annotations

import errno
import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from components.conventions import AUDIT_KEY_PREFIX
from components.egress import ALLOWED_REASON, parse_access_line

SCHEMA = "clawstaff.audit/1"
ENRICHED_SEPARATOR = "\x1d"

_LINE = re.compile(r"type=(?P<type>\S+) msg=audit\((?P<sec>\d+)\.(?P<ms>\d+):(?P<serial>\d+)\): ?(?P<rest>.*)")
_FIELD = re.compile(r'([A-Za-z0-9_-]+)=("[^"]*"|\{[^}]*\}|\S*)')
_HEX = re.compile(r"(?:[0-9A-F]{2})+")
# Fields the kernel writes with audit_log_untrustedstring: quoted when plain, hex when not, "(null)"
# when absent. Every other field is the kernel's own number or word.
_UNTRUSTED = frozenset({"name", "cwd", "exe", "comm", "key", "proctitle", "cmd"})
_EXEC_ARG = re.compile(r"a\d+")

ACTIONS: dict[str, str] = {
    **dict.fromkeys(("execve", "execveat"), "exec"),
    **dict.fromkeys(("creat",), "create"),
    **dict.fromkeys(("truncate", "ftruncate"), "truncate"),
    **dict.fromkeys(("rename", "renameat", "renameat2"), "rename"),
    **dict.fromkeys(("unlink", "unlinkat", "rmdir"), "delete"),
    **dict.fromkeys(("mkdir", "mkdirat"), "mkdir"),
    **dict.fromkeys(("mknod", "mknodat"), "mknod"),
    **dict.fromkeys(("link", "linkat", "symlink", "symlinkat"), "link"),
    **dict.fromkeys(("chmod", "fchmod", "fchmodat"), "chmod"),
    **dict.fromkeys(("chown", "fchown", "lchown", "fchownat"), "chown"),
    **dict.fromkeys(("setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr"), "xattr"),
    "fallocate": "write",
    **dict.fromkeys(("readlink", "readlinkat", "getxattr", "lgetxattr", "fgetxattr", "listxattr"), "read"),
    **dict.fromkeys(("llistxattr", "flistxattr"), "read"),
    "bind": "bind",  # kind "network": a socket bound (a UNIX socket's name is a file)
    **dict.fromkeys(("acct", "swapon", "quotactl"), "admin"),  # root's calls: a claw's attempt fails
}
_NETWORK = frozenset({"bind"})
# Which argument holds an open's flags (a hex number): open(path, flags), openat(dirfd, path, flags).
# openat2 passes them in a struct the record does not show: its action is "open" unless it created.
_OPEN_FLAGS_ARG = {"open": "a1", "openat": "a2"}
O_ACCMODE, O_CREAT, O_TRUNC = 0o3, 0o100, 0o1000
_RULE_OPS = {"add_rule": "loaded", "remove_rule": "removed"}
# What audit 4 (Debian 13) adds to a `perm=` rule: it lists every syscall of the kernel's class, not
# only those named (the VM's `auditctl -l` shows them). Their records are named and read like the rest.
CLASS_EXTRAS_X86_64 = {
    49: "bind", 89: "readlink", 163: "acct", 167: "swapon", 179: "quotactl", 191: "getxattr", 192: "lgetxattr",
    193: "fgetxattr", 194: "listxattr", 195: "llistxattr", 196: "flistxattr", 267: "readlinkat", 285: "fallocate",
}  # fmt: skip
CLASS_EXTRAS_AARCH64 = {
    8: "getxattr", 9: "lgetxattr", 10: "fgetxattr", 11: "listxattr", 12: "llistxattr", 13: "flistxattr",
    47: "fallocate", 60: "quotactl", 78: "readlinkat", 89: "acct", 200: "bind", 224: "swapon",
}  # fmt: skip
# The names of the syscalls the cages' rules record (components.cageaudit.AUDIT_SYSCALLS), by the
# record's `arch` (AUDIT_ARCH_X86_64, AUDIT_ARCH_AARCH64) and number; tests/host/test_cageaudit_real.py
# holds them to `ausyscall <arch> --dump`.
SYSCALL_NAMES: dict[str, dict[int, str]] = {
    "c000003e": {
        2: "open", 59: "execve", 76: "truncate", 77: "ftruncate", 82: "rename", 83: "mkdir", 84: "rmdir",
        85: "creat", 86: "link", 87: "unlink", 88: "symlink", 90: "chmod", 91: "fchmod", 92: "chown",
        93: "fchown", 94: "lchown", 133: "mknod", 188: "setxattr", 189: "lsetxattr", 190: "fsetxattr",
        197: "removexattr", 198: "lremovexattr", 199: "fremovexattr", 257: "openat", 258: "mkdirat",
        259: "mknodat", 260: "fchownat", 263: "unlinkat", 264: "renameat", 265: "linkat", 266: "symlinkat",
        268: "fchmodat", 316: "renameat2", 322: "execveat", 437: "openat2",
        **CLASS_EXTRAS_X86_64,
    },
    "c00000b7": {
        5: "setxattr", 6: "lsetxattr", 7: "fsetxattr", 14: "removexattr", 15: "lremovexattr",
        16: "fremovexattr", 33: "mknodat", 34: "mkdirat", 35: "unlinkat", 36: "symlinkat", 37: "linkat",
        38: "renameat", 45: "truncate", 46: "ftruncate", 52: "fchmod", 53: "fchmodat", 54: "fchownat",
        55: "fchown", 56: "openat", 221: "execve", 276: "renameat2", 281: "execveat", 437: "openat2",
        **CLASS_EXTRAS_AARCH64,
    },
}  # fmt: skip
ARCH_NAMES = {"c000003e": "x86_64", "c00000b7": "aarch64"}


class TrailError(ValueError):
    """The records cannot be read as a trail; the message says which line and why."""


@dataclass(frozen=True)
class Record:
    type: str
    time: float
    serial: int
    fields: dict[str, str]
    enriched: dict[str, str]


@dataclass
class Event:
    time: str
    serial: int | None  # the audit record's; None for a line of the kernel's log (a limit hit)
    claw: str
    kind: str
    action: str
    result: str
    org: str | None = None
    syscall: str | None = None
    pid: int | None = None
    ppid: int | None = None
    uid: int | None = None
    exe: str | None = None
    argv: list[str] | None = None
    cwd: str | None = None
    paths: list[str] = field(default_factory=list)
    method: str | None = None  # an API call: the HTTP method (CONNECT)
    request: str | None = None  # an API call: what the claw asked its proxy for (host:port, or a URL)
    status: str | None = None  # an API call: the proxy's HTTP status
    reason: str | None = None  # an API call: why the proxy allowed or refused it
    comm: str | None = None  # a limit hit: the task's name as the kernel knows it (the claw can set it)
    cgroup: str | None = None  # a limit hit: the cgroup it happened in (below the cage's)

    def to_json(self) -> str:
        return json.dumps({"schema": SCHEMA, **{k: v for k, v in asdict(self).items() if v is not None}})


def _decode(name: str, value: str) -> str:
    if value.startswith('"') and value.endswith('"') and len(value) >= 2:
        return value[1:-1]
    if (name in _UNTRUSTED or _EXEC_ARG.fullmatch(name)) and value != "(null)" and _HEX.fullmatch(value):
        return bytes.fromhex(value).decode("utf-8", "backslashreplace")
    return value


def _fields(text: str, *, decode: bool) -> dict[str, str]:
    return {k: (_decode(k, v) if decode else v.strip('"')) for k, v in _FIELD.findall(text)}


def parse_records(text: str) -> list[Record]:
    """Every record of `ausearch --raw` output (lines `----` between events, and blank ones, skipped)."""
    records = []
    # Not splitlines(): it also splits at the enriched part's separator \x1d.
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip() or line.startswith("----") or line.startswith("<no matches>"):
            continue
        match = _LINE.fullmatch(line)
        if match is None:
            raise TrailError(f"line {number} is not an audit record: {line[:120]!r}")
        raw, _, enriched = match["rest"].partition(ENRICHED_SEPARATOR)
        records.append(
            Record(
                type=match["type"],
                time=int(match["sec"]) + int(match["ms"]) / 1000,
                serial=int(match["serial"]),
                fields=_fields(raw, decode=True),
                enriched=_fields(enriched, decode=False),
            )
        )
    return records


def iso_time(seconds: float) -> str:
    """An event's `time`: UTC, milliseconds, `Z`."""
    return datetime.fromtimestamp(seconds, timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _claw_of(key: str | None) -> str | None:
    return key[len(AUDIT_KEY_PREFIX) :] if key and key.startswith(AUDIT_KEY_PREFIX) else None


def _result(syscall: Mapping[str, str]) -> str:
    if syscall.get("success") == "yes":
        return "ok"
    code = syscall.get("exit", "")
    number = -int(code) if code.lstrip("-").isdigit() else 0
    return errno.errorcode.get(number, f"error {code}")


def _file_action(name: str, syscall: Mapping[str, str], paths: list[dict[str, str]]) -> str:
    """The action of an open-family call (every other syscall's is in ACTIONS)."""
    if any(p.get("nametype") == "CREATE" for p in paths):
        return "create"
    flags_arg = _OPEN_FLAGS_ARG.get(name)
    if flags_arg is None:
        return "open"
    flags = int(syscall.get(flags_arg, "0"), 16)
    if flags & O_ACCMODE:
        return "write"
    return "truncate" if flags & O_TRUNC else "read"


def _syscall_name(fields: Mapping[str, str]) -> str:
    number = fields.get("syscall", "")
    known = SYSCALL_NAMES.get(fields.get("arch", ""), {})
    return known.get(int(number), f"syscall {number}") if number.isdigit() else f"syscall {number or '?'}"


def _names(paths: list[dict[str, str]]) -> list[str]:
    """The objects' names; the directory alone when the call failed before its object existed (a
    refused create records only the parent: `/etc/`)."""
    named = [p for p in paths if p.get("name") not in (None, "(null)")]
    objects = [p["name"] for p in named if p.get("nametype") != "PARENT"]
    return objects or [p["name"] for p in named]


def _group(records: Iterable[Record]) -> Iterator[list[Record]]:
    groups: dict[tuple[float, int], list[Record]] = {}
    for record in records:
        groups.setdefault((record.time, record.serial), []).append(record)
    for key in sorted(groups):
        yield groups[key]


def events(records: Iterable[Record], orgs: Mapping[str, str] | None = None) -> list[Event]:
    """The cage events among `records`, in the kernel's order; records of no cage's key are left out."""
    found: list[Event] = []
    for group in _group(records):
        first = group[0]
        by_type: dict[str, list[Record]] = {}
        for record in group:
            by_type.setdefault(record.type, []).append(record)
        for change in by_type.get("CONFIG_CHANGE", []):
            claw = _claw_of(change.fields.get("key"))
            op = _RULE_OPS.get(change.fields.get("op", ""))
            if claw and op:
                result = "ok" if change.fields.get("res") == "1" else "failed"
                event = Event(iso_time(first.time), first.serial, claw, "rules", op, result, (orgs or {}).get(claw))
                last = found[-1] if found else None
                # One load (or removal) of a cage's rules is one event, however many rules it holds.
                if not (last and last.kind == "rules" and (last.claw, last.action) == (claw, op) and last.time[:19] == event.time[:19]):  # fmt: skip
                    found.append(event)
        syscalls = by_type.get("SYSCALL", [])
        if not syscalls:
            continue
        syscall = syscalls[0]
        claw = _claw_of(syscall.fields.get("key"))
        if claw is None:
            continue
        name = syscall.enriched.get("SYSCALL") or _syscall_name(syscall.fields)
        paths = [p.fields for p in sorted(by_type.get("PATH", []), key=lambda r: int(r.fields.get("item", "0")))]
        cwd = by_type["CWD"][0].fields.get("cwd") if by_type.get("CWD") else None
        action = ACTIONS.get(name) or _file_action(name, syscall.fields, paths)
        event = Event(
            iso_time(first.time),
            first.serial,
            claw,
            "process" if action == "exec" else "network" if name in _NETWORK else "file",
            action,
            _result(syscall.fields),
            (orgs or {}).get(claw),
            name,
            int(syscall.fields["pid"]) if syscall.fields.get("pid", "").isdigit() else None,
            int(syscall.fields["ppid"]) if syscall.fields.get("ppid", "").isdigit() else None,
            int(syscall.fields["uid"]) if syscall.fields.get("uid", "").isdigit() else None,
            syscall.fields.get("exe"),
            cwd=cwd,
            paths=_names(paths),
        )
        if event.action == "exec" and by_type.get("EXECVE"):
            args = by_type["EXECVE"][0].fields
            count = int(args.get("argc", "0"))
            event.argv = [args.get(f"a{i}", "") for i in range(count)]
        found.append(event)
    return found


# Limit hits are not audit records: the kernel says them in its log. An OOM kill names the victim's
# memory cgroup, a refused fork the forking task's pids cgroup; both paths are the host's (the engine's
# and the program's names), so the cage is told by its cgroup, not by anything the claw can set.
KERNEL_PATTERN = "oom-kill:|fork rejected by pids controller"
# oom-kill:constraint=..,nodemask=..,cpuset=..,mems_allowed=..,oom_memcg=..,task_memcg=..,task=..,pid=..,uid=..
# Node masks can hold commas and the task's name anything: the kernel's fields are read from the left
# up to the first oom_memcg=, the name's end from the right.
_OOM_KILL = re.compile(
    r"oom-kill:.*?,oom_memcg=(?P<limited>[^,]*),task_memcg=(?P<cgroup>[^,]*),task=(?P<comm>.*),pid=(?P<pid>\d+),uid=(?P<uid>\d+)"
)
_FORK_REFUSED = re.compile(r"cgroup: fork rejected by pids controller in (?P<cgroup>\S+)")
# journalctl -k -o short-unix (systemd hosts) and dmesg --time-format iso (this machine's engine).
_JOURNAL_LINE = re.compile(r"(?P<sec>\d+)\.(?P<us>\d{6}) \S+ kernel: (?P<message>.*)")
_DMESG_LINE = re.compile(
    r"(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d),(?P<us>\d{6})(?P<zone>[+-]\d\d:\d\d) (?P<message>.*)"
)


def _kernel_line(line: str, number: int) -> tuple[float, str]:
    if match := _JOURNAL_LINE.fullmatch(line):
        return int(match["sec"]) + int(match["us"]) / 1e6, match["message"]
    if match := _DMESG_LINE.fullmatch(line):
        moment = datetime.fromisoformat(f"{match['stamp']}.{match['us']}{match['zone']}")
        return moment.timestamp(), match["message"]
    raise TrailError(
        f"kernel log line {number} is neither journalctl's short-unix nor dmesg's iso form: {line[:120]!r}"
    )


def limit_events(text: str, claw: str, cgroup: str, org: str | None = None) -> list[Event]:
    """The limit hits of the cage whose cgroup is `cgroup` (absolute: /clawstaff.slice/clawstaff-a.slice
    or /clawstaff/a) among kernel log lines: an OOM kill of a task below it (action "oom-kill", result
    "killed"), a fork refused by a pids limit below it (action "fork-refused", result "EAGAIN"; the
    kernel says that once per cgroup, at its first refusal). Other lines are left out."""
    inside = lambda path: path == cgroup or path.startswith(cgroup.rstrip("/") + "/")  # noqa: E731
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        seconds, message = _kernel_line(line, number)
        if (oom := _OOM_KILL.search(message)) and inside(oom["cgroup"]):
            found.append(
                Event(iso_time(seconds), None, claw, "limit", "oom-kill", "killed", org, pid=int(oom["pid"]),
                      uid=int(oom["uid"]), comm=oom["comm"], cgroup=oom["cgroup"])
            )  # fmt: skip
        elif (refused := _FORK_REFUSED.search(message)) and inside(refused["cgroup"]):
            found.append(
                Event(iso_time(seconds), None, claw, "limit", "fork-refused", "EAGAIN", org, cgroup=refused["cgroup"])
            )
    return found


# docker logs --timestamps: RFC 3339 with nanoseconds, then the line as the container wrote it.
_DOCKER_LOG_LINE = re.compile(r"(?P<stamp>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(?P<frac>\d+))?Z (?P<line>.*)")


def api_events(text: str, claw: str, org: str | None = None) -> list[Event]:
    """The claw's API calls among its egress proxy's log lines (`docker logs --timestamps`): every
    request the proxy allowed (action "allowed") or refused ("refused"), with what was asked, the
    status and the proxy's reason. The time is when the proxy wrote the line: for a CONNECT, when its
    tunnel closed. Squid's own messages are left out; a line that claims to be an access line and
    does not parse, or names another claw, is refused (components.egress.parse_access_line)."""
    found = []
    for number, line in enumerate(text.split("\n"), 1):
        if not line.strip():
            continue
        match = _DOCKER_LOG_LINE.fullmatch(line)
        if match is None:
            raise TrailError(f"proxy log line {number} has no docker timestamp: {line[:120]!r}")
        try:
            entry = parse_access_line(match["line"])
        except ValueError as error:
            raise TrailError(f"proxy log line {number}: {error}") from None
        if entry is None:
            continue
        if entry.get("claw") != claw:
            raise TrailError(f"proxy log line {number} names claw {entry.get('claw')!r}, not {claw!r}")
        micros = (match["frac"] or "0")[:6].ljust(6, "0")
        seconds = datetime.fromisoformat(f"{match['stamp']}.{micros}+00:00").timestamp()
        status = entry.get("status", "")
        found.append(
            Event(
                iso_time(seconds), None, claw, "api", "allowed" if entry.get("reason") == ALLOWED_REASON else "refused",
                "ok" if status.startswith("2") else status, entry.get("org", org), method=entry.get("method"),
                request=entry.get("request"), status=status, reason=entry.get("reason"),
            )
        )  # fmt: skip
    return found


def merged(*streams: Iterable[Event]) -> list[Event]:
    """One timeline from several sources, by time (the kernel's order kept within a time)."""
    return sorted((e for stream in streams for e in stream), key=lambda e: e.time)


def within(found: Iterable[Event], since: datetime | None = None, until: datetime | None = None) -> list[Event]:
    """The events from `since` to `until` (inclusive, both optional, aware datetimes)."""

    def at(event: Event) -> datetime:
        return datetime.fromisoformat(event.time.replace("Z", "+00:00"))

    return [e for e in found if (since is None or at(e) >= since) and (until is None or at(e) <= until)]


def describe(event: Event) -> str:
    """One line a reader can follow: what, on what, with which result."""
    if event.kind == "rules":
        return f"audit rules {event.action}"
    if event.kind == "api":
        return f"{event.action} {event.method} {event.request} ({event.status} {event.reason})"
    if event.kind == "limit":
        task = f" {event.comm} (pid {event.pid})" if event.comm is not None else ""
        return f"{event.action}{task} in {event.cgroup}"
    what = " ".join(event.argv) if event.argv else ", ".join(event.paths) or "-"
    return f"{event.action} {what}"
