"""tools.engine_cpu: where the engine's cgroup goes and what weight it gets (attack-findings finding 3)."""

from __future__ import annotations

from pathlib import Path

from tools import engine_cpu


def _v1(root: Path) -> Path:
    (root / "cpu").mkdir(parents=True)
    return root


def test_v1_puts_the_engine_in_the_cpu_hierarchy_at_an_eighth_of_a_cage(tmp_path):
    where = engine_cpu.placement(_v1(tmp_path))
    assert where == engine_cpu.Placement(tmp_path / "cpu" / "clawstaff-engine", "cpu.shares", 128)
    assert engine_cpu.ENGINE_CPU_SHARES * 8 == 1024  # a cage's parent weighs the default


def test_v2_uses_the_unified_hierarchy_and_the_same_ratio(tmp_path):
    (tmp_path / "cgroup.controllers").write_text("cpu memory pids\n")
    where = engine_cpu.placement(tmp_path)
    assert where == engine_cpu.Placement(tmp_path / "clawstaff-engine", "cpu.weight", 12)
    assert round(100 * engine_cpu.ENGINE_CPU_SHARES / 1024) == engine_cpu.ENGINE_CPU_WEIGHT


def test_place_engine_writes_the_weight_and_each_pid(tmp_path):
    root = _v1(tmp_path)
    directory = root / "cpu" / "clawstaff-engine"
    directory.mkdir()
    (directory / "cpu.shares").write_text("1024\n")
    summary = engine_cpu.place_engine(root, pids=[], systemd=False)
    assert (directory / "cpu.shares").read_text() == "128\n"
    assert summary == f"engine cpu: 0 processes in {directory} (cpu.shares=128)"
    engine_cpu.place_engine(root, pids=[4242], systemd=False)  # a plain file here: the last pid written
    assert (directory / "cgroup.procs").read_text() == "4242\n"


def test_place_engine_moves_nothing_under_systemd(tmp_path):
    assert "not moved" in engine_cpu.place_engine(_v1(tmp_path), pids=[1], systemd=True)
    assert not (tmp_path / "cpu" / "clawstaff-engine").exists()


def test_cpu_cgroup_of_reads_v1_and_v2_lines(tmp_path):
    (tmp_path / "7").mkdir()
    (tmp_path / "7" / "cgroup").write_text("4:memory:/x\n2:cpuacct:/\n1:cpu:/clawstaff-engine\n0::/\n")
    assert engine_cpu.cpu_cgroup_of(7, proc=tmp_path) == "/clawstaff-engine"
    (tmp_path / "8").mkdir()
    (tmp_path / "8" / "cgroup").write_text("0::/clawstaff-engine\n")
    assert engine_cpu.cpu_cgroup_of(8, proc=tmp_path) == "/clawstaff-engine"
    (tmp_path / "9").mkdir()
    (tmp_path / "9" / "cgroup").write_text("3:cpu,cpuacct:/docker\n")
    assert engine_cpu.cpu_cgroup_of(9, proc=tmp_path) == "/docker"
