"""cage-init as the claw container's pid 1: the log relay's bucket, exit codes, and the relay itself run
against a real writer process (its clock sped up, so the test waits a second, not a minute)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.unit.test_sealing import CAGE_INIT, load_cage_init

cage_init = load_cage_init()

RATE, BURST = cage_init.LOG_RATE_BYTES, cage_init.LOG_BURST_BYTES


def test_the_bucket_starts_full_refills_at_the_rate_and_never_holds_more_than_the_burst():
    bucket = cage_init.Bucket(RATE, BURST, now=100.0)
    assert bucket.available(100.0) == BURST
    bucket.spend(BURST, 100.0)
    assert bucket.available(100.0) == 0
    assert bucket.wait(100.0, 8192) == pytest.approx(8192 / RATE)
    assert bucket.available(101.0) == RATE
    assert bucket.wait(101.0, 8192) == 0.0
    assert bucket.available(10_000.0) == BURST


def test_the_exit_code_is_the_claws_or_128_plus_its_signal():
    assert cage_init.exit_code(7 << 8) == 7
    assert cage_init.exit_code(signal.SIGTERM) == 128 + signal.SIGTERM
    assert cage_init.exit_code(signal.SIGKILL) == 137


def test_the_throttle_record_is_one_json_line():
    line = cage_init.throttle_note(RATE, BURST, relayed=123, held_seconds=4.56)
    assert line.startswith("cage-init: ") and line.endswith("\n") and line.count("\n") == 1
    record = json.loads(line.removeprefix("cage-init: "))
    assert record == {
        "event": "log-throttled",
        "rate_bytes_per_s": RATE,
        "burst_bytes": BURST,
        "relayed_bytes": 123,
        "held_seconds": 4.6,
    }


# The driver runs relay() in a process of its own (it installs signal handlers, as pid 1 does), with a
# writer child on two pipes, exactly as main() wires them, and the bucket's clock sped up SPEED times.
DRIVER = r"""
import importlib.machinery, importlib.util, os, sys, time
loader = importlib.machinery.SourceFileLoader("cage_init", sys.argv[1])
spec = importlib.util.spec_from_loader("cage_init", loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
speed = float(sys.argv[2])
out = os.open(sys.argv[3], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
err = os.open(sys.argv[4], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
out_r, out_w = os.pipe()
err_r, err_w = os.pipe()
pid = os.fork()
if pid == 0:
    os.dup2(out_w, 1)
    os.dup2(err_w, 2)
    for fd in (out_r, out_w, err_r, err_w):
        os.close(fd)
    os.execv(sys.executable, [sys.executable, "-I", "-c", sys.argv[5]])
os.close(out_w)
os.close(err_w)
print(pid, flush=True)
start = time.monotonic()
sys.exit(module.relay(pid, {out_r: out, err_r: err}, notes=err, clock=lambda: start + (time.monotonic() - start) * speed))
"""

SPEED = 64  # 64 KiB/s becomes 4 MiB/s of real time


def run_relay(tmp_path: Path, writer: str, *, term_after: float | None = None) -> tuple[int, bytes, bytes]:
    out, err = tmp_path / "stdout", tmp_path / "stderr"
    cmd = [sys.executable, "-I", "-c", DRIVER, str(CAGE_INIT), str(SPEED), str(out), str(err), writer]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    proc.stdout.readline()  # the writer's pid: the relay is running
    if term_after is not None:
        try:
            proc.wait(timeout=term_after)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
    code = proc.wait(timeout=120)
    return code, out.read_bytes(), err.read_bytes()


def test_a_flood_is_relayed_whole_and_in_order_at_the_rate_and_the_hold_is_recorded(tmp_path):
    # 3 MiB: the burst goes at once, the rest only at the rate, so the writer is held back.
    writer = (
        "import os, sys\n"
        "for i in range(192):\n"
        "    os.write(1, (b'%05d' % i) + b'x' * 16378 + b'\\n')\n"
        "os.write(2, b'done on stderr\\n')\n"
        "sys.exit(7)\n"
    )
    code, out, err = run_relay(tmp_path, writer)
    assert code == 7
    lines = out.split(b"\n")[:-1]
    assert len(lines) == 192 and all(line.startswith(b"%05d" % i) for i, line in enumerate(lines))
    assert len(out) == 192 * 16384
    notes = [json.loads(line.removeprefix(b"cage-init: ")) for line in err.splitlines() if line.startswith(b"cage")]
    assert notes and notes[0]["event"] == "log-throttled" and notes[0]["rate_bytes_per_s"] == RATE
    assert b"done on stderr\n" in err


def test_a_stop_signal_reaches_the_claw_and_its_status_is_the_exit_code(tmp_path):
    writer = (
        "import os, signal, sys\n"
        "signal.signal(signal.SIGTERM, lambda *_: (os.write(1, b'got TERM\\n'), sys.exit(3)))\n"
        "os.write(1, b'ready\\n')\n"
        "signal.pause()\n"
    )
    code, out, _ = run_relay(tmp_path, writer, term_after=1.0)
    assert code == 3 and out == b"ready\ngot TERM\n"


def test_a_claw_killed_by_a_signal_gives_128_plus_it(tmp_path):
    code, _, _ = run_relay(tmp_path, "import os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n")
    assert code == 137


def test_an_orphan_holding_the_pipes_does_not_keep_pid_1_alive(tmp_path):
    # The claw exits; a child it left behind keeps stdout open and idles. The relay ends after the drain.
    writer = "import os, time\nif os.fork() == 0:\n    time.sleep(30); os._exit(0)\nos.write(1, b'parent gone\\n')\n"
    code, out, _ = run_relay(tmp_path, writer)
    assert code == 0 and out == b"parent gone\n"


def test_pid_1_makes_itself_non_dumpable_before_anything_else():
    source = CAGE_INIT.read_text()
    main = source[source.index("def main(argv):") :]
    assert main.index("make_undumpable()") < main.index("os.fork()")
    code = subprocess.run(
        [sys.executable, "-I", "-c", _UNDUMPABLE, str(CAGE_INIT)], capture_output=True, text=True, check=True
    )
    assert code.stdout.split() == ["1", "0"]


_UNDUMPABLE = r"""
import ctypes, importlib.machinery, importlib.util, sys
loader = importlib.machinery.SourceFileLoader("cage_init", sys.argv[1])
spec = importlib.util.spec_from_loader("cage_init", loader)
module = importlib.util.module_from_spec(spec)
loader.exec_module(module)
libc = ctypes.CDLL(None)
print(libc.prctl(3, 0, 0, 0, 0))
module.make_undumpable()
print(libc.prctl(3, 0, 0, 0, 0))
"""
