"""Filesystem probes: read-only root, tmpfs and volume caps, no view of another cage, encrypted
volume at rest (issue 5). Run inside the replayed cages as the claw's user."""

from __future__ import annotations

import mmap
import secrets
import subprocess

import pytest

from components import cagehost
from components.conventions import host_volume_dir
from tests.integration.bench import CAGE_A, CAGE_B, CAGE_C

pytestmark = pytest.mark.integration
GROUP = "filesystem"
MiB = 1024**2

WRITE_ROOT = """
res = {}
for d in ("/", "/etc", "/usr/bin", "/usr/lib", "/var", "/root", "/home", "/run/clawcage"):
    try:
        with open(os.path.join(d, "probe-write"), "w") as f: f.write("x")
        res[d] = "WROTE"
    except OSError as e:
        res[d] = errno.errorcode.get(e.errno, str(e))
out(res)
"""

# Fill a directory in 1 MiB chunks until the filesystem refuses; report bytes and errno; clean up.
FILL = """
path = os.path.join(ARG["dir"], "fill-" + str(os.getpid()))
written, error = 0, None
chunk = b"\\xa5" * (1 << 20)
try:
    with open(path, "wb") as f:
        while written < ARG["limit"]:
            f.write(chunk); f.flush(); os.fsync(f.fileno()); written += len(chunk)
except OSError as e:
    error = errno.errorcode.get(e.errno, str(e))
try: os.unlink(path)
except OSError: pass
out({"written": written, "error": error})
"""

NOEXEC = """
path = "/tmp/probe-exec.py"
with open(path, "w") as f: f.write("#!/usr/bin/python3\\nprint('RAN')\\n")
os.chmod(path, 0o755)
try:
    os.execv(path, [path])
except OSError as e:
    out(errno.errorcode.get(e.errno, str(e)))
"""


def _cage(bench, name):
    return next(c for c in bench.stack.config.claws if c.name == name)


def test_root_filesystem_is_read_only(isolation_bench):
    bench = isolation_bench
    res = bench.probe(f"claw-{CAGE_A}", WRITE_ROOT)
    ok = "WROTE" not in res.values()
    bench.scorecard.record(GROUP, f"{CAGE_A}: write to the root filesystem", "EROFS/EACCES everywhere", res, ok)
    exec_result = bench.probe(f"claw-{CAGE_A}", NOEXEC)
    bench.scorecard.record(
        GROUP, f"{CAGE_A}: execute a file written to /tmp", "EACCES (noexec)", exec_result, exec_result == "EACCES"
    )
    assert ok and exec_result == "EACCES", (res, exec_result)


def test_tmpfs_cap(isolation_bench):
    bench = isolation_bench
    cap = _cage(bench, CAGE_A).tmpfs
    res = bench.probe(f"claw-{CAGE_A}", FILL, {"dir": "/tmp", "limit": cap + 64 * MiB}, timeout=60)
    ok = res["error"] == "ENOSPC" and res["written"] <= cap
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: fill /tmp (cap {cap // MiB} MiB)",
        "ENOSPC at or below the cap",
        f"{res['error']} after {res['written'] // MiB} MiB",
        ok,
    )
    assert ok, res


def test_volume_cap_hits_only_that_cage(isolation_bench):
    bench = isolation_bench
    cap = _cage(bench, CAGE_A).volume
    res = bench.probe(f"claw-{CAGE_A}", FILL, {"dir": "/data", "limit": cap + 64 * MiB}, timeout=120)
    ok = res["error"] == "ENOSPC" and res["written"] <= cap
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: fill /data (volume cap {cap // MiB} MiB)",
        "ENOSPC at or below the cap",
        f"{res['error']} after {res['written'] // MiB} MiB",
        ok,
    )
    others = {c: bench.probe(f"claw-{c}", FILL, {"dir": "/tmp", "limit": 8 * MiB}) for c in (CAGE_B, CAGE_C)}
    others_ok = all(r["error"] is None and r["written"] == 8 * MiB for r in others.values())
    bench.scorecard.record(
        GROUP, "other cages write while A's volume was full", "8 MiB written, no error", others, others_ok
    )
    assert ok and others_ok, (res, others)


SEARCH = """
import hashlib
marker, found, names = ARG["marker"].encode(), [], []
for root, dirs, files in os.walk("/"):
    if root == "/":
        dirs[:] = [d for d in dirs if d not in ("proc", "sys", "dev")]
    for f in files + dirs:
        if ARG["other"] in f or ARG["marker"] in f: names.append(os.path.join(root, f))
    for f in files:
        p = os.path.join(root, f)
        try:
            if os.path.getsize(p) < (4 << 20):
                with open(p, "rb") as fh:
                    if marker in fh.read(): found.append(p)
        except OSError:
            pass
mounts = [l.split()[3] + " " + l.split()[4] for l in open("/proc/self/mountinfo")]
key = None
try: key = hashlib.sha256(open("/run/clawcage/key", "rb").read()).hexdigest()
except OSError as e: key = errno.errorcode.get(e.errno)
out({"content_hits": found, "name_hits": names, "data_exists": os.path.exists("/data"),
     "foreign_mounts": [m for m in mounts if ARG["other"] in m], "key_sha256": key})
"""

WRITE_MARKER = """
os.makedirs("/data/notes", exist_ok=True)
with open("/data/notes/" + ARG["name"], "w") as f:
    f.write((ARG["marker"] + "\\n") * 2000); f.flush(); os.fsync(f.fileno())
os.sync()
out(open("/data/notes/" + ARG["name"]).read(len(ARG["marker"])))
"""


@pytest.fixture(scope="module")
def volume_marker(isolation_bench):
    marker = f"PLAINTEXT-{secrets.token_hex(12)}"
    name = f"diary-{secrets.token_hex(6)}.txt"
    read_back = isolation_bench.probe(f"claw-{CAGE_A}", WRITE_MARKER, {"marker": marker, "name": name})
    assert read_back == marker, "the claw could not write its own volume: the probe would prove nothing"
    isolation_bench.volume_marker = (marker, name)  # the teardown probe looks for it again
    return marker, name


def test_other_cages_find_nothing_of_a(isolation_bench, volume_marker):
    bench = isolation_bench
    marker, _name = volume_marker
    a_key = subprocess.run(
        ["sha256sum", cagehost.host_key_path(CAGE_A)], capture_output=True, text=True
    ).stdout.split()[0]
    failures = []
    for cage in (CAGE_B, CAGE_C):
        res = bench.probe(f"claw-{cage}", SEARCH, {"marker": marker, "other": CAGE_A}, timeout=90)
        ok = (
            not res["content_hits"]
            and not res["name_hits"]
            and not res["data_exists"]
            and not res["foreign_mounts"]
            and res["key_sha256"] != a_key
        )
        bench.scorecard.record(
            GROUP,
            f"{cage}: search every file for {CAGE_A}'s volume data, name, mounts, key",
            "nothing found; own key differs",
            {k: v for k, v in res.items() if k != "key_sha256"} | {"same_key_as_A": res["key_sha256"] == a_key},
            ok,
        )
        if not ok:
            failures.append((cage, res))
    assert not failures, failures


def test_volume_backing_file_holds_no_plaintext(isolation_bench, volume_marker):
    bench = isolation_bench
    marker, name = volume_marker
    subprocess.run(["sync"], check=True)
    backing = f"{host_volume_dir(CAGE_A)}/backing.img"
    with open(backing, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        content_hit = data.find(marker.encode()) != -1
        name_hit = data.find(name.encode()) != -1
    ok = not content_hit and not name_hit
    bench.scorecard.record(
        GROUP,
        f"{CAGE_A}: volume backing file on the host",
        "neither the data nor the file name the claw wrote appears in plaintext",
        f"content found: {content_hit}, file name found: {name_hit}",
        ok,
    )
    assert ok
