"""The isolation scorecard: run the integration isolation probes and print what they recorded.

    python -m tools.isolation_report            # run tests/integration/test_isolation_*.py, then print
    python -m tools.isolation_report --no-run   # print build/isolation-report.json as it is

The probes (tests/integration/test_isolation_*.py) record one row per check (probe, expected,
observed, verdict) and the neighbour's latency at rest and during each fault into
build/isolation-report.json as they run; this tool prints that file as tables. Exit status: pytest's
when it ran the suite, else 0 if every row passed and 1 if not (2: no report).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "build" / "isolation-report.json"
TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "integration").glob("test_isolation_*.py"))


def render(document: dict, console: Console) -> bool:
    """Print the tables; True when every row passed."""
    rows = document.get("rows", [])
    table = Table(
        title=f"ClawCage isolation scorecard ({document.get('generated', '?')})", show_lines=False, expand=True
    )
    for column, style in (("group", "cyan"), ("probe", ""), ("expected", "dim"), ("observed", ""), ("verdict", "")):
        table.add_column(column, style=style, overflow="fold")
    for row in rows:
        verdict = row["verdict"]
        table.add_row(
            escape(row["group"]),
            escape(row["probe"]),
            escape(row["expected"]),
            escape(row["observed"][:300]),
            f"[green]{verdict}[/]" if verdict == "PASS" else f"[bold red]{verdict}[/]",
        )
    console.print(table)
    latency = document.get("latency", [])
    if latency:
        lat = Table(title="Neighbour latency (B measures itself: CPU work + round trip to its proxy)")
        for column in ("fault", "neighbour", "samples", "fails", "p50 ms", "p95 ms", "max ms"):
            lat.add_column(column)
        for row in latency:
            lat.add_row(
                row["fault"],
                row["neighbour"],
                str(row["n"]),
                str(row["fails"]),
                str(row["p50_ms"]),
                str(row["p95_ms"]),
                str(row["max_ms"]),
            )
        console.print(lat)
    for note in document.get("bench_changes", []):
        console.print(f"[yellow]bench change:[/] {escape(note)}")
    failed = [r for r in rows if r["verdict"] != "PASS"]
    console.print(f"{len(rows) - len(failed)} passed, {len(failed)} failed, report: {REPORT.relative_to(ROOT)}")
    return bool(rows) and not failed


def render_markdown(document: dict) -> str:
    """The scorecard as Markdown, for the repository (docs/isolation-report.md)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = document.get("rows", [])
    failed = sum(r["verdict"] != "PASS" for r in rows)
    lines = [
        "# ClawCage isolation scorecard",
        "",
        f"Generated {document.get('generated', '?')} by `make isolation-report` on the real Docker engine: "
        f"{len(rows) - failed} passed, {failed} failed.",
        "",
        "Bench changes (the bench's outside world; production defaults untouched):",
        "",
    ]
    lines += [f"- {cell(note)}" for note in document.get("bench_changes", [])]
    lines += ["", "| group | probe | expected | observed | verdict |", "|---|---|---|---|---|"]
    lines += [
        f"| {cell(r['group'])} | {cell(r['probe'])} | {cell(r['expected'])} | {cell(r['observed'][:400])} | "
        f"{r['verdict']} |"
        for r in rows
    ]
    latency = document.get("latency", [])
    if latency:
        lines += [
            "",
            "Neighbour B's latency while a fault runs in cage A (CPU work + round trip to its proxy):",
            "",
            "| fault | neighbour | samples | fails | p50 ms | p95 ms | max ms |",
            "|---|---|---|---|---|---|---|",
        ]
        lines += [
            f"| {r['fault']} | {r['neighbour']} | {r['n']} | {r['fails']} | {r['p50_ms']} | {r['p95_ms']} | "
            f"{r['max_ms']} |"
            for r in latency
        ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.isolation_report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-run", action="store_true", help="only print the last report")
    parser.add_argument("--markdown", type=Path, help="also write the scorecard as Markdown to this file")
    args = parser.parse_args(argv)
    console = Console(width=max(160, Console().width))
    status = None
    if not args.no_run:
        REPORT.unlink(missing_ok=True)
        status = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *TESTS],
            cwd=ROOT,
            env={**os.environ, "CI": os.environ.get("CI", "true")},
        )
    if not REPORT.exists():
        console.print(f"[red]no report at {REPORT}: the isolation probes did not run[/]")
        return 2
    document = json.loads(REPORT.read_text())
    all_passed = render(document, console)
    if args.markdown:
        args.markdown.write_text(render_markdown(document))
    if status is not None:
        return status
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
