"""One measurement in a fresh process (so that one run's heap never slows the next):

    python -m benchmarks.child ours  CONFIG.json [--plan PLAN.json] [--gc off]
    python -m benchmarks.child floor CONFIG.json --resources N [--gc off]

`ours` evaluates the project's __main__.py under the preview's mocks (tools.mockrun) with the
generated config and, with --plan, writes the preview's JSON plan (tools.preview.build_plan, written
exactly as `--json` writes it; the policy pack is not run here). `floor` evaluates a program that only
registers N bare resources under the same mocks and config: the least the Pulumi SDK costs for N.
Prints one JSON line: seconds, peak RSS and the number of registered resources.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import sys
import time
from pathlib import Path

from benchmarks.fleetgen import SECRET_KEYS
from tools import mockrun

FLOOR_PROGRAM = Path(__file__).resolve().parent / "floor_program.py"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.child")
    parser.add_argument("mode", choices=["ours", "floor"])
    parser.add_argument("config", type=Path)
    parser.add_argument("--plan", type=Path)
    parser.add_argument("--resources", type=int, default=0)
    parser.add_argument("--gc", choices=["on", "off"], default="on")
    args = parser.parse_args(argv)
    raw = json.loads(args.config.read_text())
    if args.gc == "off":
        gc.disable()
    program = None
    if args.mode == "floor":
        os.environ["BENCH_RESOURCES"] = str(args.resources)
        program = FLOOR_PROGRAM
    start = time.perf_counter()
    evaluation = mockrun.evaluate("bench", raw, set(SECRET_KEYS), program=program)
    seconds = time.perf_counter() - start
    if args.plan:
        from tools.preview import build_plan

        args.plan.write_text(json.dumps(build_plan(evaluation, []), indent=2, sort_keys=True) + "\n")
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"seconds": seconds, "peak_rss_mib": peak, "resources": len(evaluation.resources)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
