"""The isolation scorecard: run the isolation probes and print what they recorded.

    python -m tools.isolation_report            # run tests/integration/test_isolation_*.py, then print
    python -m tools.isolation_report --no-run   # print build/isolation-report.json as it is
    python -m tools.isolation_report --vm       # the VM host's: run tests/vm, print build/vm-isolation-report.json

The probes (tests/integration/test_isolation_*.py on this machine's engine, tests/vm on the Debian 13
VM host) record one row per check (probe, expected, observed, verdict) and the neighbour's latency at
rest and during each fault into their report (a `Scorecard`, below) as they run; this tool prints
that file as tables. Exit status: pytest's when it ran the suite, else 0 if every row passed and 1 if
not (2: no report).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

ROOT = Path(__file__).resolve().parent.parent
REPORT = ROOT / "build" / "isolation-report.json"
TESTS = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "tests" / "integration").glob("test_isolation_*.py"))
VM_REPORT = ROOT / "build" / "vm-isolation-report.json"
VM_TESTS = ["tests/vm"]  # the whole VM tier: one boot, one deployment, the probes among the other tests

ENGINE_TITLE = "ClawCage isolation scorecard"
ENGINE_WHERE = "by `make isolation-report` on the real Docker engine"
ENGINE_NOTES = "Bench changes (the bench's outside world; production defaults untouched):"


@dataclass
class Scorecard:
    """What the probes record, written to `path` after every row (a crash keeps what ran)."""

    path: Path = REPORT
    title: str = ENGINE_TITLE
    where: str = ENGINE_WHERE
    notes_heading: str = ENGINE_NOTES
    rows: list[dict] = field(default_factory=list)
    latency: list[dict] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def record(self, group: str, probe: str, expected: str, observed: Any, ok: bool) -> bool:
        self.rows.append(
            {
                "group": group,
                "probe": probe,
                "expected": expected,
                "observed": observed if isinstance(observed, str) else json.dumps(observed, default=str),
                "verdict": "PASS" if ok else "FAIL",
            }
        )
        self.write()
        return ok

    def write(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        document = {
            "generated": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "title": self.title,
            "where": self.where,
            "notes_heading": self.notes_heading,
            "bench_changes": self.notes,
            "rows": self.rows,
            "latency": self.latency,
        }
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(document, indent=2) + "\n")
        tmp.replace(self.path)


def render(document: dict, console: Console, report: Path = REPORT) -> bool:
    """Print the tables; True when every row passed."""
    rows = document.get("rows", [])
    table = Table(
        title=f"{document.get('title', ENGINE_TITLE)} ({document.get('generated', '?')})", show_lines=False, expand=True
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
    console.print(f"{len(rows) - len(failed)} passed, {len(failed)} failed, report: {report.relative_to(ROOT)}")
    return bool(rows) and not failed


def render_markdown(document: dict) -> str:
    """The scorecard as Markdown, for the repository (docs/isolation-report.md, docs/vm-isolation-report.md)."""

    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    rows = document.get("rows", [])
    failed = sum(r["verdict"] != "PASS" for r in rows)
    lines = [
        f"# {document.get('title', ENGINE_TITLE)}",
        "",
        f"Generated {document.get('generated', '?')} {document.get('where', ENGINE_WHERE)}: "
        f"{len(rows) - failed} passed, {failed} failed.",
        "",
        document.get("notes_heading", ENGINE_NOTES),
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
    parser.add_argument("--vm", action="store_true", help="the VM host's scorecard (tests/vm) instead of the engine's")
    args = parser.parse_args(argv)
    report, tests = (VM_REPORT, VM_TESTS) if args.vm else (REPORT, TESTS)
    console = Console(width=max(160, Console().width))
    status = None
    if not args.no_run:
        report.unlink(missing_ok=True)
        status = subprocess.call(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests],
            cwd=ROOT,
            env={**os.environ, "CI": os.environ.get("CI", "true")},
        )
    if not report.exists():
        console.print(f"[red]no report at {report}: the isolation probes did not run[/]")
        return 2
    document = json.loads(report.read_text())
    all_passed = render(document, console, report)
    if args.markdown:
        args.markdown.write_text(render_markdown(document))
    if status is not None:
        return status
    return 0 if all_passed else 1


if __name__ == "__main__":
    sys.exit(main())
