"""The cage's audit piece without a kernel: its rules, its scripts' header, and the trail parser on
records a real auditd wrote (tests/fixtures/audit-sample.log, from the rules of a cage `sample-claw`
on this kind of machine: a shell as the cage's uid made, renamed, chmodded and deleted files, ran
programs, one missing, and tried to delete /etc/hostname)."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from pathlib import Path

import pytest

from components import cageaudit, hostscripts, seccomp
from components.conventions import audit_key
from tools import audittrail

SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "audit-sample.log"
# A proxy's log as `docker logs --timestamps` prints it: Squid's own messages, then access lines in the
# cage's format (components.egress.access_log_format); the engine tier reads real ones
# (test_isolation_audit.py).
_ACCESS = (
    '{{"log":"clawcage-egress","claw":"sample-claw","org":"sample-org","client":"172.30.0.3","method":"CONNECT",'
    '"request":"{request}","status":"{status}","result":"{result}","reason":"{reason}","dst":"{dst}","bytes":"{bytes}",'
    '"duration_ms":"{ms}"}}'
)
PROXY_LINES = "\n".join(
    [
        "2026-12-02T18:19:31.693977653Z 2026/12/02 18:19:31| Accepting HTTP Socket connections at conn2 local=0.0.0.0:3128",
        "2026-12-02T18:20:02.100200300Z "
        + _ACCESS.format(request="api.example.com:443", status="200", result="TCP_TUNNEL", reason="allowlisted",
                         dst="203.0.113.7:443", bytes="5120", ms="812"),
        "2026-12-02T18:20:03.5Z "
        + _ACCESS.format(request="evil%20x.example:443", status="403", result="TCP_DENIED", reason="not-allowlisted",
                         dst="-:-", bytes="3912", ms="0"),
    ]
)  # fmt: skip
# What this machine's kernel said (dmesg --time-format iso) when containers below /clawstaff/sample-claw
# and /clawstaff/sample-claw-2 (the cgroupfs form of two cages' cgroups) forked past their pids limit
# and then allocated past their memory limit.
KERNEL_SAMPLE = Path(__file__).resolve().parents[1] / "fixtures" / "kernel-limits.log"

# The kernel's own classes (include/asm-generic/audit_write.h, audit_change_attr.h) of calls that
# create, change or remove a file or its attributes, plus the open family (opens for writing):
# every one a cage may call must be audited.
FILE_CHANGING = {
    *("rename", "renameat", "renameat2", "mkdir", "mkdirat", "rmdir", "creat", "link", "linkat", "unlink"),
    *("unlinkat", "symlink", "symlinkat", "mknod", "mknodat", "truncate", "ftruncate", "open", "openat"),
    *("openat2", "chmod", "fchmod", "fchmodat", "fchmodat2", "chown", "fchown", "lchown", "fchownat"),
    *("setxattr", "lsetxattr", "fsetxattr", "removexattr", "lremovexattr", "fremovexattr"),
}
# Not in aarch64's table: the legacy forms.
LEGACY = {"open", "creat", "rename", "unlink", "mkdir", "rmdir", "link", "symlink", "chmod", "chown", "lchown", "mknod"}


@pytest.mark.parametrize("arch", sorted(cageaudit.AUDIT_SYSCALLS))
def test_every_file_changing_call_a_cage_may_make_is_audited(arch) -> None:
    lists = cageaudit.AUDIT_SYSCALLS[arch]
    allowed = set(seccomp.ALLOWED) - (LEGACY if arch == "aarch64" else set())
    assert (FILE_CHANGING & allowed) <= set(lists["change"])
    assert {"execve", "execveat"} <= set(lists["exec"])
    # And nothing is listed that the profile refuses (auditctl would take it, but it says nothing).
    for names in lists.values():
        assert set(names) <= set(seccomp.ALLOWED), arch
    if arch == "aarch64":
        assert not (set(lists["change"]) | set(lists["read"])) & LEGACY


def test_the_rules_are_by_host_uid_and_tagged_with_the_cages_key() -> None:
    rules = cageaudit.audit_rules("acme-support", host_uid=165532, arch="x86_64", volume="/srv/v/mnt/data")
    assert len(rules) == 3
    assert all(r.startswith("-a always,exit -F arch=b64 -S ") for r in rules)
    assert all(r.endswith(" -F uid=165532 -k clawcage-acme-support") for r in rules)
    assert "-F perm=wa" in rules[1] and "-F dir=/srv/v/mnt/data -F perm=r" in rules[2]
    assert len(cageaudit.audit_rules("acme-support", host_uid=1, arch="aarch64", volume=None)) == 2
    with pytest.raises(ValueError, match="no audit syscall list for architecture 'riscv64'"):
        cageaudit.audit_rules("acme-support", host_uid=1, arch="riscv64", volume=None)


def test_the_create_script_carries_the_rules_of_every_architecture_and_says_what_it_is() -> None:
    script = cageaudit.render_audit_create("acme-support", uid=65532, volume=True)
    assert hostscripts.script_facts(script) == {
        "script": "audit-create", "claw": "acme-support", "key": "clawcage-acme-support", "volume": True,
    }  # fmt: skip
    header = hostscripts.header_variables(script)
    for arch in cageaudit.AUDIT_SYSCALLS:
        volume = header["VOLUME"]
        assert header[f"RULES_{arch.upper()}"].split("\n") == cageaudit.audit_rules(
            "acme-support", host_uid=cageaudit.AUDIT_UID_TOKEN, arch=arch, volume=volume
        )
    assert header["VOLUME"] == "/srv/clawstaff/volumes/acme-support/mnt/data"
    assert hostscripts.header_variables(cageaudit.render_audit_create("b", uid=7, volume=False))["VOLUME"] == ""
    delete = cageaudit.render_audit_delete("acme-support")
    assert hostscripts.script_facts(delete)["key"] == audit_key("acme-support")
    with pytest.raises(ValueError, match="not a DNS label"):
        cageaudit.render_audit_create("Bad_Name", uid=1, volume=False)
    with pytest.raises(ValueError, match="non-root"):
        cageaudit.render_audit_create("ok", uid=0, volume=False)


def sample_events() -> list[audittrail.Event]:
    return audittrail.events(audittrail.parse_records(SAMPLE.read_text()), {"sample-claw": "sample-org"})


def test_the_sample_reads_as_the_shells_actions_in_order() -> None:
    said = [(e.kind, e.action, e.argv[0] if e.argv else e.paths, e.result) for e in sample_events()]
    files = [(a, p, r) for k, a, p, r in said if k == "file" and p != ["/dev/null"]]
    assert files == [
        ("create", ["a"], "ok"),
        ("rename", ["a", "b c"], "ok"),
        ("chmod", ["b c"], "ok"),
        ("delete", ["b c"], "ok"),
        ("mkdir", ["d"], "ok"),
        ("delete", ["d"], "ok"),
        ("create", ['x key="clawcage-evil" name=y'], "ok"),
        ("create", ["line\nbreak"], "ok"),
        ("delete", ["/etc/hostname"], "EACCES"),
    ]
    # A failed exec has no arguments recorded (the kernel never got that far): its path says what.
    programs = [(e.argv[0] if e.argv else e.paths[0], e.result) for e in sample_events() if e.kind == "process"]
    assert programs == [
        ("/bin/sh", "ok"), ("cat", "ok"), ("mv", "ok"), ("chmod", "ok"), ("rm", "ok"), ("mkdir", "ok"),
        ("rmdir", "ok"), ("touch", "ok"), ("/bin/true", "ok"), ("/nonexistent-tool", "ENOENT"), ("rm", "ok"),
    ]  # fmt: skip
    assert said[0][:2] == ("rules", "loaded") and said[-1][:2] == ("rules", "removed")
    assert sum(1 for s in said if s[0] == "rules") == 2  # one load of two rules, one removal


def test_a_claws_own_file_names_cannot_forge_a_field_or_a_record() -> None:
    found = sample_events()
    assert {e.claw for e in found} == {"sample-claw"} and {e.org for e in found} == {"sample-org"}
    touch = next(e for e in found if e.argv and e.argv[0] == "touch")
    assert touch.argv == ["touch", 'x key="clawcage-evil" name=y', "line\nbreak"]
    assert all(e.uid == 54321 for e in found if e.kind != "rules")


def test_each_event_is_one_json_line_of_the_schema() -> None:
    for event in sample_events():
        line = event.to_json()
        assert "\n" not in line
        data = json.loads(line)
        assert data["schema"] == audittrail.SCHEMA
        assert data["time"].endswith("Z") and datetime.fromisoformat(data["time"].replace("Z", "+00:00"))
        assert {"serial", "claw", "org", "kind", "action", "result"} <= set(data)


def test_a_window_keeps_the_events_between_its_ends() -> None:
    found = sample_events()
    start = datetime.fromisoformat(found[3].time.replace("Z", "+00:00"))
    assert audittrail.within(found, since=start) == [e for e in found if e.time >= found[3].time]
    assert audittrail.within(found, until=datetime(2000, 1, 1, tzinfo=timezone.utc)) == []


def test_records_that_are_not_audit_records_are_refused_with_their_line() -> None:
    with pytest.raises(audittrail.TrailError, match="line 2 is not an audit record"):
        audittrail.parse_records("----\nsomething else\n")


def test_raw_records_read_as_enriched_ones_do() -> None:
    # The hosts' auditd writes RAW (no \x1d part): the syscall's name comes from the number table.
    lines = SAMPLE.read_text().split("\n")
    raw = "\n".join(line.split(audittrail.ENRICHED_SEPARATOR)[0] for line in lines)
    assert audittrail.ENRICHED_SEPARATOR not in raw
    assert audittrail.events(audittrail.parse_records(raw), {"sample-claw": "sample-org"}) == sample_events()


def test_the_number_table_names_every_syscall_the_rules_record() -> None:
    for code, arch in audittrail.ARCH_NAMES.items():
        recorded = {n for names in cageaudit.AUDIT_SYSCALLS[arch].values() for n in names}
        named = set(audittrail.SYSCALL_NAMES[code].values())
        assert recorded <= named, arch
        # Beyond the rules' own: only what audit 4 adds to a perm= rule, each with an action.
        extras = audittrail.CLASS_EXTRAS_X86_64 if arch == "x86_64" else audittrail.CLASS_EXTRAS_AARCH64
        assert named - recorded == set(extras.values()), arch
    assert all(name in audittrail.ACTIONS or name.startswith("open") for name in named)


def test_a_cages_limit_hits_come_from_the_kernels_log_by_its_cgroup() -> None:
    found = audittrail.limit_events(KERNEL_SAMPLE.read_text(), "sample-claw", "/clawstaff/sample-claw", "org")
    # Only this cage's: /clawstaff/sample-claw-2 shares the name's prefix and is another cage.
    assert [(e.kind, e.action, e.result, e.comm, e.claw, e.org) for e in found] == [
        ("limit", "fork-refused", "EAGAIN", None, "sample-claw", "org"),
        ("limit", "oom-kill", "killed", "python3", "sample-claw", "org"),
    ]
    oom = found[1]
    assert (oom.pid, oom.uid, oom.serial) == (3733, 165532, None)
    assert oom.cgroup.startswith("/clawstaff/sample-claw/") and oom.time == "2026-12-02T18:17:25.672Z"
    assert audittrail.describe(oom) == f"oom-kill python3 (pid 3733) in {oom.cgroup}"
    data = json.loads(oom.to_json())
    assert data["schema"] == audittrail.SCHEMA and "serial" not in data and data["comm"] == "python3"


def test_the_journals_form_of_the_kernels_log_reads_the_same() -> None:
    # journalctl -k -o short-unix: seconds since the epoch, the host's name, "kernel:".
    line = KERNEL_SAMPLE.read_text().split("\n")[1]
    stamp, message = line.split(" ", 1)
    seconds = datetime.fromisoformat(stamp.replace(",", ".")).timestamp()
    journal = f"{seconds:.6f} vm-cage-01 kernel: {message}"
    assert audittrail.limit_events(journal, "c", "/clawstaff/sample-claw") == audittrail.limit_events(
        line, "c", "/clawstaff/sample-claw"
    )


def test_a_task_name_cannot_move_an_oom_kill_into_another_cage() -> None:
    # The claw names its own tasks (prctl PR_SET_NAME, 15 bytes): the kernel's own fields are read
    # from the left, the name's end from the right.
    forged = (
        "2026-12-02T18:17:25,672072+00:00 oom-kill:constraint=CONSTRAINT_MEMCG,nodemask=0,2,cpuset=x,mems_allowed=0,2,"
        "oom_memcg=/clawstaff/a/1,task_memcg=/clawstaff/a/1,task=x,task_memcg=/clawstaff/b/1,pid=7,uid=9"
    )
    assert audittrail.limit_events(forged, "b", "/clawstaff/b") == []
    (event,) = audittrail.limit_events(forged, "a", "/clawstaff/a")
    assert (event.comm, event.pid, event.cgroup) == ("x,task_memcg=/clawstaff/b/1", 7, "/clawstaff/a/1")


def test_a_kernel_line_of_neither_form_is_refused_with_its_number() -> None:
    with pytest.raises(audittrail.TrailError, match="kernel log line 2 is neither"):
        audittrail.limit_events("\nDec 02 18:17:25 host kernel: oom-kill:...", "a", "/clawstaff/a")


def _host(answers: dict[str, str], ran: list[str] | None = None):
    """A host that answers each script by its first word (ausearch, journalctl/dmesg, docker)."""

    def run(script: str) -> str:
        if ran is not None:
            ran.append(script)
        first = script.removeprefix("TZ=UTC LC_ALL=C ").removeprefix("set -o pipefail; ").split()[0]
        return answers[first]

    return run


def test_the_timeline_merges_api_calls_and_limit_hits_by_time_and_keeps_the_kernels_order() -> None:
    from tools import audit

    ran: list[str] = []
    run = _host(
        {
            "ausearch": SAMPLE.read_text() + "\nsearch-exit=0\n",
            "if": KERNEL_SAMPLE.read_text() + "\nsearch-exit=0\n",
            "docker": PROXY_LINES + "\nsearch-exit=0\n",
        },
        ran,
    )
    cgroup = audit.cage_cgroup("sample-claw", "cgroupfs")
    found = audit.timeline("sample-claw", run, {"sample-claw": "org"}, cgroup=cgroup)
    assert cgroup == "/clawstaff/sample-claw"
    assert ran == [audit.search_script("sample-claw"), audit.kernel_script(), audit.proxy_script("sample-claw")]
    assert [e.time for e in found] == sorted(e.time for e in found)
    assert [e.action for e in found if e.kind == "api"] == ["allowed", "refused"]
    audited = [e for e in found if e.kind in ("process", "file", "network", "rules")]
    assert [e.serial for e in audited] == [e.serial for e in sample_events()]
    assert [e.action for e in found if e.kind == "limit"] == ["fork-refused", "oom-kill"]
    # Without the cage's cgroup, the audit records only: one round trip.
    ran.clear()
    orgs = {"sample-claw": "sample-org"}
    assert audit.timeline("sample-claw", run, orgs) == [e for e in sample_events() if e.claw == "sample-claw"]
    assert ran == [audit.search_script("sample-claw")]


def test_a_host_whose_search_fails_says_so_and_a_proxy_gone_is_a_note() -> None:
    from tools import audit

    cgroup = audit.cage_cgroup("sample-claw", "cgroupfs")
    gone = "Error response from daemon: No such container: proxy-sample-claw\nsearch-exit=1\n"
    notes: list[str] = []
    empty = _host({"ausearch": SAMPLE.read_text() + "\nsearch-exit=0\n", "if": "search-exit=1\n", "docker": gone})
    assert audit.timeline("sample-claw", empty, {}, cgroup=cgroup, notes=notes)
    assert notes == ["no API calls: the proxy container proxy-sample-claw is gone, and its log with it"]
    with pytest.raises(audit.AuditError, match="the kernel log search failed on the host \\(exit 2\\)"):
        audit.timeline("sample-claw", _host({"ausearch": "search-exit=1\n", "if": "dmesg: nope\nsearch-exit=2\n"}),
                       {}, cgroup=cgroup)  # fmt: skip
    failing = _host({"ausearch": "search-exit=1\n", "if": "search-exit=1\n", "docker": "oops\nsearch-exit=125\n"})
    with pytest.raises(audit.AuditError, match="docker logs proxy-sample-claw failed on the host \\(exit 125\\)"):
        audit.timeline("sample-claw", failing, {}, cgroup=cgroup)
    with pytest.raises(audit.AuditError, match="ausearch failed on the host \\(exit 10\\)"):
        audit.timeline("sample-claw", _host({"ausearch": "Error parsing start date\nsearch-exit=10\n"}), {})


def test_a_bounded_timeline_asks_each_source_for_the_seconds_around_its_bounds_and_keeps_the_exact_range() -> None:
    from tools import audit

    since = datetime(2026, 12, 2, 18, 20, 2, 500000, tzinfo=timezone.utc)
    until = datetime(2026, 12, 2, 18, 20, 3, 600000, tzinfo=timezone.utc)
    # ausearch: the C locale's mm/dd/yy and a 24-hour time, in UTC, widened to whole seconds.
    assert audit.search_script("c", since, until).startswith(
        "TZ=UTC LC_ALL=C ausearch --input-logs --raw -k clawcage-c -ts 12/02/26 18:20:02 -te 12/02/26 18:20:04 2>&1;"
    )
    assert " -ts " not in audit.search_script("c") and " -te " not in audit.search_script("c", since)
    # The journal and docker take Unix seconds; dmesg has no bounds (the ring buffer is small).
    first, last = int(since.timestamp()), int(until.timestamp()) + 1
    assert f"--no-pager --since @{first} --until @{last} --grep " in audit.kernel_script(since, until)
    assert f"docker logs --timestamps --since={first} --until={last} proxy-c 2>&1;" in audit.proxy_script(
        "c", since, until
    )
    assert "--since" not in audit.proxy_script("c") and "--until" not in audit.proxy_script("c", since)
    run = _host({"ausearch": "search-exit=1\n", "if": "search-exit=1\n", "docker": PROXY_LINES + "\nsearch-exit=0\n"})
    calls = audit.timeline("sample-claw", run, {}, since, until, cgroup="/clawstaff/sample-claw")
    assert [e.time for e in calls] == ["2026-12-02T18:20:03.500Z"]  # 18:20:02.100 is before `since`


def test_the_systemd_form_of_a_cages_cgroup_is_its_slice() -> None:
    from tools import audit

    assert audit.cage_cgroup("vm-probe", "systemd") == "/clawstaff.slice/clawstaff-vm\\x2dprobe.slice"


def test_a_claws_api_calls_come_from_its_proxys_log_with_what_it_asked() -> None:
    allowed, refused = audittrail.api_events(PROXY_LINES, "sample-claw")
    assert (allowed.kind, allowed.action, allowed.result, allowed.method) == ("api", "allowed", "ok", "CONNECT")
    assert (allowed.request, allowed.status, allowed.reason, allowed.org) == (
        "api.example.com:443",
        "200",
        "allowlisted",
        "sample-org",
    )
    assert allowed.time == "2026-12-02T18:20:02.100Z" and refused.time == "2026-12-02T18:20:03.500Z"
    # What the claw asked for is decoded (%20), the result is the status.
    assert (refused.action, refused.result, refused.request) == ("refused", "403", "evil x.example:443")
    assert audittrail.describe(refused) == "refused CONNECT evil x.example:443 (403 not-allowlisted)"
    assert json.loads(refused.to_json())["reason"] == "not-allowlisted"


def test_a_proxy_line_of_another_claw_or_unreadable_is_refused() -> None:
    with pytest.raises(audittrail.TrailError, match="names claw 'sample-claw', not 'other'"):
        audittrail.api_events(PROXY_LINES, "other")
    with pytest.raises(audittrail.TrailError, match="proxy log line 1 has no docker timestamp"):
        audittrail.api_events("Error response from daemon: boom", "sample-claw")
    with pytest.raises(audittrail.TrailError, match="proxy log line 1: unreadable access log line"):
        audittrail.api_events('2026-12-02T18:20:03Z {"log":"clawcage-egress",', "sample-claw")


def test_a_real_proxy_line_reads_as_an_allowed_call() -> None:
    # Written by the VM tier's proxy (Squid 6 in the egress-proxy image) for the control plane, which
    # the allowlist holds and the VM cannot reach.
    line = (
        '2026-12-02T18:27:52.596272471Z {"log":"clawcage-egress","claw":"vm-neighbour","org":"globex",'
        '"client":"198.18.0.19","method":"CONNECT","request":"control.clawstaff.example:443","status":"503",'
        '"result":"TCP_TUNNEL","reason":"allowlisted","dst":"-:-","bytes":"87","duration_ms":"16319"}'
    )
    (event,) = audittrail.api_events(line, "vm-neighbour")
    assert (event.time, event.action, event.result, event.org) == (
        "2026-12-02T18:27:52.596Z",
        "allowed",
        "503",
        "globex",
    )


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--stack", "local", "--claw", "x", "--since", "yesterday"], "--since 'yesterday' is not an ISO 8601 time"),
        (["--stack", "local", "--claw", "x", "--until", "2026-13-01"], "--until '2026-13-01' is not an ISO 8601 time"),
        (["--stack", "prod", "--claw", "x"], "stack 'prod': its hosts' trails are on the hosts"),
        (["--stack", "local", "--claw", "nobody"], "claw 'nobody' is not in Pulumi.local.yaml (claws: "),
    ],
)
def test_the_query_command_says_what_was_wrong_with_its_arguments(argv, said, capsys) -> None:
    from tools import audit

    assert audit.main(argv) == audit.EXIT_USAGE
    err = " ".join(capsys.readouterr().err.split())
    assert said in err and "Traceback" not in err


def test_a_search_that_runs_past_its_time_is_a_clear_error_naming_the_search_and_the_remedy() -> None:
    from tools import audit

    with pytest.raises(audit.AuditError) as caught:
        audit.local_run("sleep 5", timeout=0.2)
    assert str(caught.value) == (
        "the search ran past 0.2 s on this machine (sleep 5): "
        "bound it with --since (the host's older logs are then skipped by their time)"
    )
    assert audit.local_run('echo "search-exit=0"') == "search-exit=0\n"
