"""tools.placement_lock: the command line that prints or writes a stack's placement lock."""

from __future__ import annotations

import shutil

import pytest

from components.config import load_stack_file, parse_stack_config
from components.placement import place_fleet
from tests.conftest import ROOT
from tools import placement_lock


@pytest.mark.parametrize("stack", ["prod", "local"])
def test_the_project_stacks_hold_the_lock_of_their_current_placement(stack):
    path = ROOT / f"Pulumi.{stack}.yaml"
    raw, secret_keys = load_stack_file(path)
    placement = place_fleet(parse_stack_config(raw, stack=stack, secret_keys=secret_keys))
    assert placement_lock.write_lock(path.read_text(), placement.claws) == path.read_text()


def test_it_prints_the_lock_block(capsys):
    assert placement_lock.main(["--stack", "local"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"  {placement_lock.LOCK_KEY}:\n") and out in (ROOT / "Pulumi.local.yaml").read_text()


def test_write_rewrites_only_the_lock_block(tmp_path, monkeypatch, capsys):
    shutil.copy(ROOT / "Pulumi.local.yaml", tmp_path / "Pulumi.local.yaml")
    text = (tmp_path / "Pulumi.local.yaml").read_text()
    stale = text.replace("acme-support: laptop", "acme-support: elsewhere")
    assert stale != text
    (tmp_path / "Pulumi.local.yaml").write_text(stale)
    monkeypatch.setattr(placement_lock, "ROOT", tmp_path)
    assert placement_lock.main(["--stack", "local", "--write"]) == 0
    assert (tmp_path / "Pulumi.local.yaml").read_text() == text
    assert "written to Pulumi.local.yaml" in capsys.readouterr().out


def test_a_config_error_is_one_line_and_exit_2(tmp_path, monkeypatch, capsys):
    (tmp_path / "Pulumi.local.yaml").write_text("config:\n  clawstaff:colour: blue\n")
    monkeypatch.setattr(placement_lock, "ROOT", tmp_path)
    assert placement_lock.main(["--stack", "local"]) == 2
    out = capsys.readouterr().out
    assert out.startswith("error: Pulumi.local.yaml: ") and out.count("\n") == 1
