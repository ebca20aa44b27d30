"""The shape docs/architecture.md describes: the model and placement import nothing of Pulumi, the
imports of components/ have no cycle, and no module of components/ grows past about 400 lines."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest

from tests.conftest import ROOT

COMPONENTS = ROOT / "components"
# Shrunk by moving their scripts into files of their own; until then they are allowed their length.
LONG_FOR_NOW: set[str] = set()  # none any more: the host scripts are files, the firewall its own module
MAX_LINES = 400


def module_name(path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path, modules: set[str]) -> set[str]:
    """The components modules `path` imports at run time (not those under `if TYPE_CHECKING:`)."""
    tree = ast.parse(path.read_text())
    skipped = {
        id(n)
        for node in ast.walk(tree)
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test)
        for child in node.body
        for n in ast.walk(child)
    }
    out = set()
    for node in ast.walk(tree):
        if id(node) in skipped:
            continue
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names if a.name in modules}
        elif isinstance(node, ast.ImportFrom) and node.module:
            subs = {f"{node.module}.{a.name}" for a in node.names} & modules
            out |= subs or ({node.module} & modules)
    return out - {module_name(path)}


def graph() -> dict[str, set[str]]:
    paths = {module_name(p): p for p in COMPONENTS.rglob("*.py")}
    return {m: imports_of(p, set(paths)) for m, p in paths.items()}


@pytest.mark.parametrize("module", ["components.model", "components.placement"])
def test_the_model_and_placement_import_nothing_of_pulumi(module):
    code = f"import sys, {module}; print(sorted(m for m in sys.modules if m.split('.')[0].startswith('pulumi')))"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_nothing_below_the_components_imports_the_validator():
    g = graph()
    for module in (
        "components.model",
        "components.placement",
        "components.cage",
        "components.host",
        "components.server",
        "components.sink",
        "components.sinkconfig",
        "components.outputs",
        "components.fleet",
    ):
        assert not any(d == "components.config" or d.startswith("components.config.") for d in g[module]), module


def test_the_imports_of_components_have_no_cycle():
    g, done, path = graph(), set(), []

    def visit(module):
        assert module not in path, " -> ".join(path + [module])
        if module in done:
            return
        path.append(module)
        for dep in sorted(g[module]):
            # A submodule import runs its package's __init__ first; that is not a cycle of the code.
            if not module.startswith(dep + "."):
                visit(dep)
        path.pop()
        done.add(module)

    for module in sorted(g):
        visit(module)


def test_no_module_of_components_is_over_about_400_lines():
    long = {
        str(p.relative_to(ROOT)): n
        for p in COMPONENTS.rglob("*.py")
        if p.name not in LONG_FOR_NOW and (n := len(p.read_text().splitlines())) > MAX_LINES
    }
    assert long == {}
