"""The control map covers the pack exactly, cites what exists, and docs/controls.md is what it prints."""

from __future__ import annotations

import ast
import re
import subprocess
import sys

import config_schema
import controls
import rules
from tests.conftest import ROOT
from tests.policies.conftest import PACK_DIR

DOC = ROOT / "docs" / "controls.md"


def test_every_policy_of_the_pack_has_a_control_entry_and_nothing_else_does() -> None:
    names = [name for name, _ in controls.pack_policies()]
    assert len(names) == len(set(names))
    assert set(names) == set(controls.CONTROLS)


def test_the_map_reads_the_rule_modules_the_pack_runs() -> None:
    """One list of rule modules (policies/rules.py): the pack runs it, the map and the config schema read
    it, and it holds every *_rules.py of the pack."""
    tree = ast.parse((PACK_DIR / "__main__.py").read_text())
    passed = [kw.value for node in ast.walk(tree) if isinstance(node, ast.Call) for kw in node.keywords
              if kw.arg == "policies"]  # fmt: skip
    assert len(passed) == 1 and ast.unparse(passed[0]) == "rules.POLICIES"
    assert controls.RULE_MODULES is rules.RULE_MODULES is config_schema.RULE_MODULES
    on_disk = {p.stem for p in PACK_DIR.glob("*_rules.py") if "\nPOLICIES = [" in p.read_text()}
    assert {module.__name__ for module in rules.RULE_MODULES} == on_disk
    assert [p.name for p in rules.POLICIES] == [n for n, _ in controls.pack_policies()]


def test_every_entry_cites_known_controls_and_existing_proofs() -> None:
    for name, control in controls.CONTROLS.items():
        assert control.refuses and control.rationale, name
        assert set(control.cis) <= set(controls.CIS), name
        assert control.claims and set(control.claims) <= set(controls.CLAIMS), name
        assert control.proof, name
        for path in control.proof:
            assert (ROOT / path).is_file(), (name, path)
    for item in controls.CIS:
        assert re.fullmatch(r"[1-7]\.[0-9]{1,2}", item), item
        assert any(item in c.cis for c in controls.CONTROLS.values()), f"CIS {item} is listed but no rule cites it"


def test_every_claim_of_the_contract_has_a_rule() -> None:
    for claim in controls.CLAIMS:
        assert any(claim in c.claims for c in controls.CONTROLS.values()), claim


def test_docs_controls_md_is_current() -> None:
    printed = subprocess.run(
        [sys.executable, str(PACK_DIR / "controls.py"), "--markdown"], capture_output=True, text=True, check=True
    ).stdout
    assert DOC.read_text() == printed, "docs/controls.md is stale: run `make controls`"
    for name in controls.CONTROLS:
        assert f"| `{name}` |" in printed
