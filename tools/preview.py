"""Offline preview of a stack: the program under Pulumi mocks, the policy pack, and a readable plan.

    python -m tools.preview --stack prod [--json plan.json]

Exit 0: clean; 1: a mandatory policy is violated; 2: bad config or usage. Secret values are opaque
placeholders here (the stack file's ciphertext is never decrypted) and are masked in every output.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections import Counter
from pathlib import Path
from typing import Any, Sequence

import pulumi
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.tree import Tree

from components.config import load_stack_file, parse_stack_config
from pulumi.runtime import rpc

from tools import mockrun
from tools.policyrun import (
    UNKNOWN,
    PolicyConfigError,
    PolicyPackError,
    PolicyResource,
    Secret,
    Violation,
    run_policy_pack,
)

EXIT_OK, EXIT_VIOLATION, EXIT_USAGE = 0, 1, 2
POLICY_PACK = mockrun.ROOT / "policies"


def policy_config_file(stack: str, root: Path = mockrun.ROOT) -> Path:
    """The pack's config for a stack; the same file `pulumi preview --policy-pack-config` takes."""
    return root / "policies" / "config" / f"{stack}.json"


def _for_analyzer(value: Any) -> Any:
    """Registered inputs as the engine sends them to an analyzer: secrets and unknowns marked."""
    if rpc.is_rpc_secret(value):
        return Secret(_for_analyzer(rpc.unwrap_rpc_secret(value)))
    if isinstance(value, dict):
        return {k: _for_analyzer(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_for_analyzer(v) for v in value]
    if value == rpc.UNKNOWN:
        return UNKNOWN
    return value


def check_policies(evaluation: mockrun.Evaluation, config: dict[str, Any] | None) -> list[Violation]:
    """Run the CrossGuard pack through its own analyzer entry point, as the Pulumi CLI does."""
    resources = [
        PolicyResource(
            urn=r.urn,
            type=r.type,
            name=r.name,
            properties=_for_analyzer(dict(r.inputs)),
            parent=r.parent,
            provider_urn=r.provider,
            dependencies=r.dependencies,
        )
        for r in sorted(evaluation.resources, key=lambda r: r.urn)
        if r.custom
    ]
    return run_policy_pack(
        resources, pack_dir=POLICY_PACK, config=config, project=mockrun.PROJECT, stack=evaluation.stack
    )


def stack_file(stack: str, root: Path = mockrun.ROOT) -> Path:
    return root / f"Pulumi.{stack}.yaml"


def build_plan(evaluation: mockrun.Evaluation, violations: Sequence[Any]) -> dict[str, Any]:
    """The JSON plan: stack, resources, placement, violations and summary; resources in URN order so
    that two runs are identical."""
    resources = [
        {
            "urn": r.urn,
            "type": r.type,
            "name": r.name,
            "parent": r.parent,
            "provider": r.provider,
            "dependencies": list(r.dependencies),
            "inputs": mockrun.mask_secrets(r.inputs),
        }
        for r in sorted(evaluation.resources, key=lambda r: r.urn)
    ]
    claws = evaluation.outputs.get("claws", {})
    placement = {name: info["host"] for name, info in sorted(claws.items())}
    levels = Counter(v.level for v in violations)
    return {
        "stack": evaluation.stack,
        "resources": resources,
        "placement": placement,
        "violations": [{"policy": v.policy, "level": v.level, "urn": v.urn, "message": v.message} for v in violations],
        "summary": {
            "resources": len(resources),
            "byType": dict(sorted(Counter(r["type"] for r in resources).items())),
            "hosts": len(evaluation.outputs.get("hosts", {})),
            "claws": len(claws),
            "violations": {"mandatory": levels.get("mandatory", 0), "advisory": levels.get("advisory", 0)},
        },
    }


def _tree(plan: dict[str, Any]) -> Tree:
    children: dict[str, list[dict]] = {}
    for r in plan["resources"]:
        children.setdefault(r["parent"], []).append(r)
    root = Tree(f"[bold]stack {plan['stack']}[/]")

    def add(node: Tree, parent_urn: str) -> None:
        for r in children.get(parent_urn, []):
            add(node.add(f"{r['name']} [dim]{r['type']}[/]"), r["urn"])

    roots = [urn for urn in children if urn not in {r["urn"] for r in plan["resources"]}]
    for urn in sorted(roots):
        add(root, urn)
    return root


def render(plan: dict[str, Any], outputs: dict[str, Any], console: Console, warnings: Sequence[str] = ()) -> None:
    """The tree, the hosts, the placement, the audit sink, the program's warnings (as `pulumi preview`
    shows them), the verdicts."""
    console.print(_tree(plan))

    hosts = Table(title="Hosts")
    for col in ("host", "kind", "where", "claws"):
        hosts.add_column(col)
    for name, h in outputs.get("hosts", {}).items():
        where = f"{h.get('serverType') or ''} {h.get('location') or ''}".strip() or "-"
        hosts.add_row(name, h["kind"], where, ", ".join(h["claws"]) or "-")
    console.print(hosts)

    claws = Table(title="Placement")
    for col in ("claw", "org", "host", "runtime", "cpus", "memory", "pids", "tmpfs", "volume", "egress"):
        claws.add_column(col)
    for name, c in outputs.get("claws", {}).items():
        claws.add_row(
            name,
            c["org"],
            c["host"],
            c.get("runtime", "runc"),
            c["cpus"],
            c["memory"],
            str(c["pids"]),
            c["tmpfs"],
            c["volume"] or "-",
            ", ".join(c["egress"]),
        )
    console.print(claws)

    sink = outputs.get("auditSink")
    if sink:
        table = Table(title="Audit sink")
        for col in ("host", "kind", "where", "url", "retention", "maxUse", "provisioned", "cage hosts upload"):
            table.add_column(col)
        where = f"{sink.get('serverType') or ''} {sink.get('location') or ''}".strip() or "-"
        table.add_row(sink["host"], sink["kind"], where, sink["url"], f"{sink['retentionDays']} days", sink["maxUse"],
                      "yes" if sink["provisioned"] else "no", "yes" if sink["cageHostsUpload"] else "not yet")  # fmt: skip
        console.print(table)

    for warning in warnings:
        console.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False, soft_wrap=True)

    if plan["violations"]:
        table = Table(title="Policy violations", style="red")
        for col in ("policy", "level", "resource", "message"):
            table.add_column(col)
        for v in plan["violations"]:
            table.add_row(v["policy"], v["level"], v["urn"].rsplit("::", 1)[-1], escape(v["message"]))
        console.print(table)
    s = plan["summary"]
    verdict = "[red]REFUSED[/]" if s["violations"]["mandatory"] else "[green]clean[/]"
    console.print(
        f"{s['resources']} resources, {s['hosts']} hosts, {s['claws']} claws; policy: {verdict} "
        f"({s['violations']['mandatory']} mandatory, {s['violations']['advisory']} advisory violations)"
    )


def render_markdown(plan: dict[str, Any]) -> str:
    """The plan as a pull-request comment: verdict first, then each violation, then the placement."""
    s = plan["summary"]
    mandatory = s["violations"]["mandatory"]
    lines = [
        f"### Offline preview of stack `{plan['stack']}`: "
        + (f"REFUSED, {mandatory} mandatory violation(s)" if mandatory else "clean"),
        "",
        f"{s['resources']} resources, {s['hosts']} hosts, {s['claws']} claws; "
        f"{mandatory} mandatory and {s['violations']['advisory']} advisory violations.",
        "",
    ]
    if plan["violations"]:
        lines += ["| policy | level | resource | message |", "|---|---|---|---|"]
        for v in plan["violations"]:
            message = v["message"].replace("|", "\\|").replace("\n", " ")
            lines.append(
                f"| `{v['policy']}` | {v['level']} | `{v['urn'].rsplit('::', 1)[-1] or '(stack)'}` | {message} |"
            )
        lines.append("")
    lines += ["| claw | host |", "|---|---|"]
    lines += [f"| {claw} | {host} |" for claw, host in plan["placement"].items()]
    return "\n".join(lines) + "\n"


def preview(
    stack: str,
    json_path: Path | None,
    console: Console,
    root: Path = mockrun.ROOT,
    config_path: Path | None = None,
    program: Path | None = None,
    markdown_path: Path | None = None,
) -> int:
    path = config_path or stack_file(stack, root)
    raw, secret_keys = load_stack_file(path)
    # Fail fast, before any resource; the program itself checks again, as `pulumi up` would.
    parse_stack_config(raw, stack=stack, secret_keys=secret_keys, stack_file=path.name)
    evaluation = mockrun.evaluate(stack, raw, secret_keys, program=program)
    config_file = policy_config_file(stack, root)
    policy_config = None
    if config_file.is_file():
        try:
            policy_config = json.loads(config_file.read_text())
        except json.JSONDecodeError as error:
            raise PolicyConfigError(
                f"{config_file}: not valid JSON ({error}); allowed: a JSON object of "
                "policy name -> settings, as `pulumi preview --policy-pack-config` takes"
            ) from None
    violations = check_policies(evaluation, policy_config)
    plan = build_plan(evaluation, violations)
    render(plan, evaluation.outputs, console, evaluation.warnings)
    if json_path:
        json_path.write_text(json.dumps(plan, indent=2, sort_keys=True) + "\n")
        console.print(f"plan written to {json_path}")
    if markdown_path:
        markdown_path.write_text(render_markdown(plan))
    return EXIT_VIOLATION if plan["summary"]["violations"]["mandatory"] else EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.preview", description=__doc__.split("\n\n")[0])
    parser.add_argument("--stack", required=True, help="stack name: reads Pulumi.<stack>.yaml")
    parser.add_argument("--json", type=Path, help="also write the plan as JSON to this file")
    parser.add_argument("--markdown", type=Path, help="also write a summary for a pull-request comment")
    parser.add_argument("--stack-file", type=Path, help="read this file instead of Pulumi.<stack>.yaml")
    parser.add_argument("--program", type=Path, help="evaluate this Pulumi program instead of __main__.py")
    args = parser.parse_args(argv)
    console = Console(width=None if sys.stdout.isatty() else 160)
    try:
        return preview(
            args.stack,
            args.json,
            console,
            config_path=args.stack_file,
            program=args.program,
            markdown_path=args.markdown,
        )
    except (pulumi.RunError, PolicyConfigError, PolicyPackError) as error:
        # ConfigError, PlacementError, a bad policies/config/<stack>.json, a pack that cannot run:
        # the user's to fix, said in one paragraph, no traceback of ours.
        # escape: the message quotes user input, which must not be read as rich markup
        Console(stderr=True).print(f"[red]error:[/] {escape(str(error))}", highlight=False, soft_wrap=True)
        return EXIT_USAGE


if __name__ == "__main__":
    sys.exit(main())
