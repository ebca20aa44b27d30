"""The scale, churn, placement-quality, overhead and density benchmarks of issue 6, in one command:

    .venv/bin/python -m benchmarks.run [--only scale,churn,quality,overhead,density] [--out benchmarks/results.json]

Writes the figures as JSON and prints a table of each figure with its goal. Not a test: it takes
minutes, needs the Docker engine for `overhead` and `density`, and reports misses rather than failing.
Every preview measurement runs in its own process (benchmarks/child.py); ratios compare figures taken
in this one run, back to back, on this machine.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import copy
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

from rich.console import Console
from rich.table import Table

from benchmarks import fleetgen

ROOT = Path(__file__).resolve().parent.parent
SECTIONS = ("scale", "churn", "quality", "overhead", "density")
SCALE_SIZES = (100, 1000, 2000)
CHURN_SIZE = 1000


# --- preview in a child process --------------------------------------------------------------------


def child(
    mode: str, config: dict[str, Any], workdir: Path, *, plan: bool = False, resources: int = 0, gc: str = "on"
) -> dict[str, Any]:
    config_file = Path(tempfile.mkstemp(suffix=".json", dir=workdir)[1])
    config_file.write_text(json.dumps(config))
    args = [sys.executable, "-m", "benchmarks.child", mode, str(config_file), "--gc", gc]
    plan_file = config_file.with_suffix(".plan.json")
    if plan:
        args += ["--plan", str(plan_file)]
    if resources:
        args += ["--resources", str(resources)]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{done.stderr[-3000:]}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    if plan:
        result["plan_file"] = str(plan_file)
    return result


def scale(workdir: Path) -> dict[str, Any]:
    """Preview time and peak memory for each size, and the floor: as many bare registrations."""
    out: dict[str, Any] = {"sizes": {}}
    for n in SCALE_SIZES:
        config = fleetgen.fleet_config(n)
        ours = child("ours", config, workdir)
        floor = child("floor", config, workdir, resources=ours["resources"])
        out["sizes"][str(n)] = {"ours": ours, "floor": floor, "ratio": ours["seconds"] / floor["seconds"]}
    config = fleetgen.fleet_config(CHURN_SIZE)
    ours_off = child("ours", config, workdir, gc="off")
    floor_off = child("floor", config, workdir, resources=ours_off["resources"], gc="off")
    out["gc_off_1000"] = {"ours": ours_off, "floor": floor_off, "ratio": ours_off["seconds"] / floor_off["seconds"]}
    t = {n: out["sizes"][str(n)]["ours"]["seconds"] for n in SCALE_SIZES}
    out["ratio_to_floor_1000"] = out["sizes"]["1000"]["ratio"]
    out["time_2000_over_1000"] = t[2000] / t[1000]
    return out


# --- churn -----------------------------------------------------------------------------------------

CAGE, HOST = "clawstaff:fleet:ClawCage", "clawstaff:fleet:ClawHost"


def owners(plan: dict[str, Any]) -> dict[str, str]:
    """URN -> 'claw:<name>', 'host:<name>' or 'fleet': the cage or host a resource belongs to."""
    by_urn = {r["urn"]: r for r in plan["resources"]}
    out: dict[str, str] = {}
    for urn in by_urn:
        node, owner = by_urn.get(urn), "fleet"
        while node is not None:
            if node["type"] == CAGE:
                owner = f"claw:{node['name']}"
                break
            if node["type"] == HOST:
                owner = f"host:{node['name']}"
                break
            node = by_urn.get(node["parent"])
        out[urn] = owner
    return out


def diff(before: dict[str, Any], after: dict[str, Any], concerned: set[str]) -> dict[str, Any]:
    """Resources added, removed or changed (any field of the plan's entry), and those of them that
    belong to no claw or host concerned by the change: the collateral."""
    old = {r["urn"]: r for r in before["resources"]}
    new = {r["urn"]: r for r in after["resources"]}
    own = {**owners(before), **owners(after)}
    changed = {u for u in old.keys() & new.keys() if old[u] != new[u]}
    added, removed = new.keys() - old.keys(), old.keys() - new.keys()
    # A host that appears or disappears with the change (a new pool host) is part of it.
    hosts_in = {own[u] for u in added if own[u].startswith("host:")} | {
        own[u] for u in removed if own[u].startswith("host:")
    }
    concerned = concerned | hosts_in
    touched = changed | added | removed
    collateral = sorted(u for u in touched if own[u] not in concerned and not (own[u] == "fleet" and u in added))
    moved = sorted(c for c, h in before["placement"].items() if c in after["placement"] and after["placement"][c] != h)
    return {
        "changed": len(changed),
        "added": len(added),
        "removed": len(removed),
        "collateral": len(collateral),
        "collateral_examples": collateral[:5],
        "claws_moved": len(moved),
        "claws_moved_examples": moved[:5],
        "fleet_resources_added": sorted(u.rsplit("::", 1)[-1] for u in added if own[u] == "fleet"),
    }


def churn(workdir: Path) -> dict[str, Any]:
    base = fleetgen.fleet_config(CHURN_SIZE)
    first = child("ours", base, workdir, plan=True)
    plan0 = json.loads(Path(first["plan_file"]).read_text())
    locked = copy.deepcopy(base)
    locked["clawstaff:placementLock"] = dict(
        plan0["placement"]
    )  # what `python -m tools.placement_lock --write` records

    newcomer = fleetgen.extra_claw(base)
    added, added_unlocked = copy.deepcopy(locked), copy.deepcopy(base)
    for config in (added, added_unlocked):
        config["clawstaff:claws"].append(newcomer)
        config["clawstaff:clawSecrets"][newcomer["name"]] = {"MODEL_API_KEY": "sk-bench-newcomer"}
    gone_host = "hel1-metal-01"
    no_host = copy.deepcopy(locked)
    no_host["clawstaff:hosts"] = [h for h in no_host["clawstaff:hosts"] if h["name"] != gone_host]
    egress_claw = sorted(plan0["placement"])[500]
    egress = copy.deepcopy(locked)
    for entry in egress["clawstaff:claws"]:
        if entry["name"] == egress_claw:
            entry["egress"] = ["api.anthropic.com:443", "hooks.slack.com:443", "api.linear.app:443"]

    runs = {"locked": locked, "locked_again": locked, "add": added, "remove_host": no_host, "egress": egress,
            "add_without_lock": added_unlocked}  # fmt: skip
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        futures = {k: pool.submit(child, "ours", v, workdir, plan=True) for k, v in runs.items()}
        files = {k: f.result()["plan_file"] for k, f in futures.items()}
    text = {k: Path(v).read_text() for k, v in files.items()}
    plans = {k: json.loads(v) for k, v in text.items()}
    on_gone = {f"claw:{c}" for c, h in plans["locked"]["placement"].items() if h == gone_host}
    return {
        "claws": CHURN_SIZE,
        "identical_json_two_runs": text["locked"] == text["locked_again"],
        "lock_changes_nothing": diff(plan0, plans["locked"], set())["changed"] == 0
        and plan0["placement"] == plans["locked"]["placement"],  # fmt: skip
        "add_one_claw": diff(plans["locked"], plans["add"], {f"claw:{newcomer['name']}"}),
        "remove_one_host": {
            **diff(plans["locked"], plans["remove_host"], {f"host:{gone_host}"} | on_gone),
            "host": gone_host,
            "claws_on_it": len(on_gone),
        },
        "change_one_egress": {**diff(plans["locked"], plans["egress"], {f"claw:{egress_claw}"}), "claw": egress_claw},
        "add_one_claw_without_lock": diff(plan0, plans["add_without_lock"], {f"claw:{newcomer['name']}"}),
    }


# --- placement quality -----------------------------------------------------------------------------


def quality(workdir: Path) -> dict[str, Any]:
    """Hosts a pool uses for a mixed workload, against the lower bound for the binding resource."""
    from components.config import parse_stack_config
    from components.placement import lower_bound_hosts, place_fleet

    out = {}
    for claws, server_type in ((1000, "ccx33"), (2000, "ccx33"), (1000, "ccx53"), (1000, "ccx23"), (1000, "cx52")):
        raw = fleetgen.fleet_config(claws, listed_hosts=0, server_type=server_type, seed=claws + len(server_type))
        config = parse_stack_config(raw, stack="bench", secret_keys=fleetgen.SECRET_KEYS)
        start = time.perf_counter()
        used = len(place_fleet(config).hosts)
        seconds = time.perf_counter() - start
        bound, binding = lower_bound_hosts(config.claws, config.pools[0].host(1), config.placement)
        out[f"{claws}x{server_type}"] = {"hosts": used, "lower_bound": bound, "binding": binding,
                                         "over_bound": used - bound, "placement_seconds": seconds}  # fmt: skip
    out["worst_over_bound"] = max(v["over_bound"] for v in out.values())
    return out


# --- the engine ------------------------------------------------------------------------------------


def overhead(workdir: Path) -> dict[str, Any]:
    from benchmarks import engine

    return engine.overhead(samples=5)


def density(workdir: Path) -> dict[str, Any]:
    from benchmarks import engine

    return engine.density(cages=50)


# --- the table -------------------------------------------------------------------------------------


def figures(results: dict[str, Any]) -> list[tuple[str, str, str, bool | None]]:
    """(figure, value, goal, met) rows; met None: reported without a goal."""
    rows: list[tuple[str, str, str, bool | None]] = []
    results = {k: v for k, v in results.items() if isinstance(v, dict) and "error" not in v}
    s = results.get("scale")
    if s:
        for n, v in s["sizes"].items():
            rows.append(
                (
                    f"preview {n} claws ({v['ours']['resources']} resources): time, peak RSS",
                    f"{v['ours']['seconds']:.1f} s, {v['ours']['peak_rss_mib']:.0f} MiB",
                    "-",
                    None,
                )
            )
            rows.append((f"floor: {v['floor']['resources']} bare registrations", f"{v['floor']['seconds']:.1f} s, "
                         f"{v['floor']['peak_rss_mib']:.0f} MiB", "-", None))  # fmt: skip
        r = s["ratio_to_floor_1000"]
        rows.append(("time / floor at 1,000 claws", f"{r:.2f}", "<= 1.3", r <= 1.3))
        g = s["gc_off_1000"]["ratio"]
        rows.append(("  same with Python's cyclic GC off (both sides)", f"{g:.2f}", "<= 1.3", g <= 1.3))
        q = s["time_2000_over_1000"]
        rows.append(("time(2,000) / time(1,000)", f"{q:.2f}", "<= 2.2", q <= 2.2))
    c = results.get("churn")
    if c:
        rows.append(("two runs, same config: byte-identical plan JSON", str(c["identical_json_two_runs"]), "True",
                     c["identical_json_two_runs"]))  # fmt: skip
        for key, label in (("add_one_claw", "add 1 claw to 1,000 (locked)"), ("remove_one_host", "remove 1 host (locked)"),
                           ("change_one_egress", "change 1 claw's egress"),
                           ("add_one_claw_without_lock", "add 1 claw to 1,000, no lock")):  # fmt: skip
            d = c[key]
            rows.append((f"churn: {label}: collateral resources (claws moved)",
                         f"{d['collateral']} ({d['claws_moved']}); {d['changed']} changed, {d['added']} added, {d['removed']} removed",
                         "0", d["collateral"] == 0))  # fmt: skip
    q = results.get("quality")
    if q:
        for k, v in q.items():
            if isinstance(v, dict):
                rows.append((f"placement {k}: hosts vs lower bound ({v['binding']})", f"{v['hosts']} vs {v['lower_bound']}",
                             "<= bound + 1", v["over_bound"] <= 1))  # fmt: skip
    o = results.get("overhead")
    if o:
        rows.append(("per cage: proxy RSS + cage-init RSS", f"{o['proxy_rss_mib']:.1f} + {o['cage_init_rss_mib']:.1f} MiB",
                     "<= 16 MiB", o["overhead_per_cage_mib"] <= 16))  # fmt: skip
        rows.append(("create to healthy: cage vs bare docker run", f"{o['cage_create_to_healthy_s']:.2f} s vs "
                     f"{o['bare_create_to_healthy_s']:.2f} s = {o['ratio']:.2f}x", "<= 2x", o["ratio"] <= 2))  # fmt: skip
    d = results.get("density")
    if d:
        rows.append(
            (
                f"density: {d['cages']} local cages, memory per cage (cgroup RSS / host used)",
                f"{d['cgroup_rss_per_cage_mib']:.1f} / {d['host_used_per_cage_mib']:.1f} MiB",
                "-",
                None,
            )
        )
    return rows


def markdown_table(rows) -> str:
    lines = ["| figure | value | goal | met |", "|---|---|---|---|"]
    for figure, value, goal, met in rows:
        lines.append(f"| {figure} | {value} | {goal} | {'-' if met is None else ('yes' if met else '**no**')} |")
    return "\n".join(lines)


def print_table(rows, console: Console) -> None:
    table = Table(title="ClawStaff benchmarks (issue 6)")
    for col in ("figure", "value", "goal", "met"):
        table.add_column(col)
    for figure, value, goal, met in rows:
        table.add_row(figure, value, goal, "-" if met is None else ("[green]yes[/]" if met else "[red]no[/]"))
    console.print(table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", default=",".join(SECTIONS), help="comma-separated sections: " + ", ".join(SECTIONS))
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results.json")
    parser.add_argument(
        "--markdown", action="store_true", help="print the last results as a Markdown table; run nothing"
    )
    args = parser.parse_args(argv)
    if args.markdown:
        print(markdown_table(figures(json.loads(args.out.read_text()))))
        return 0
    chosen = [s for s in args.only.split(",") if s]
    unknown = set(chosen) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown section(s): {', '.join(sorted(unknown))}")
    console = Console(width=None if sys.stdout.isatty() else 160)
    runners: dict[str, Callable[[Path], dict[str, Any]]] = {
        "scale": scale, "churn": churn, "quality": quality, "overhead": overhead, "density": density,
    }  # fmt: skip
    # Sections not run this time keep their last figures (--only reruns some).
    results: dict[str, Any] = json.loads(args.out.read_text()) if args.out.is_file() else {}
    results["machine"] = {"python": platform.python_version(), "cpus": _cpus(), "platform": platform.platform()}
    failed = []
    with tempfile.TemporaryDirectory(prefix="clawbench-") as tmp:
        for name in chosen:
            console.print(f"[bold]{name}[/] ...")
            start = time.perf_counter()
            try:
                results[name] = runners[name](Path(tmp))
            except Exception as error:  # a section that cannot run (no engine) must not lose the others
                results[name] = {"error": f"{type(error).__name__}: {error}"}
                failed.append(name)
                console.print(f"[red]{name} failed:[/] {error}")
            results[name]["bench_seconds"] = round(time.perf_counter() - start, 1)
            results[name]["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
            args.out.write_text(json.dumps(results, indent=2, sort_keys=True, default=str) + "\n")
    print_table(figures(results), console)
    console.print(f"results written to {args.out}")
    return 1 if failed else 0


def _cpus() -> int:
    import os

    return len(os.sched_getaffinity(0))


if __name__ == "__main__":
    sys.exit(main())
