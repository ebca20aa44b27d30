"""Evaluate the Pulumi program offline, under Pulumi's mocks, and record every resource it registers.

The Pulumi engine is replaced by a monitor that records each registration as the engine would see it:
type, name, parent, provider, dependencies and the inputs, with secrets still marked as secrets. The
preview prints and checks this record, the policy pack judges it and the integration bench replays it
onto a real Docker engine, so all three see the very graph that `pulumi up` would create.
"""

from __future__ import annotations

import hashlib
import json
import logging
import runpy
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import pulumi
from pulumi.runtime import mocks as pulumi_mocks
from pulumi.runtime import rpc
from pulumi.runtime.config import set_all_config
from pulumi.runtime.settings import get_root_resource, set_root_resource
from pulumi.runtime.sync_await import _sync_await

ROOT = Path(__file__).resolve().parent.parent
PROJECT = "clawstaff"
SECRET_MASK = "[secret]"


@dataclass(frozen=True)
class Registered:
    urn: str
    type: str
    name: str
    custom: bool
    parent: str = ""
    provider: str = ""  # URN of the explicit provider, "" for the default one
    dependencies: tuple[str, ...] = ()
    inputs: Mapping[str, Any] = field(default_factory=dict)  # secrets wrapped as rpc secret values


@dataclass
class Evaluation:
    stack: str
    resources: list[Registered]
    outputs: dict[str, Any]
    warnings: list[str] = field(default_factory=list)  # what the program warned (pulumi.log.warn), in order

    def by_type(self, type_: str) -> list[Registered]:
        return [r for r in self.resources if r.type == type_]

    def by_urn(self) -> dict[str, Registered]:
        return {r.urn: r for r in self.resources}


def mock_id(type_: str, name: str) -> str:
    """A stable, numeric id: Hetzner ids are integers and the program converts them with int()."""
    return str(int(hashlib.sha256(f"{type_}::{name}".encode()).hexdigest()[:12], 16))


def _documentation_ip(name: str, v6: bool = False) -> str:
    n = int(hashlib.sha256(name.encode()).hexdigest()[:4], 16)
    return f"2001:db8:{n:x}::1" if v6 else f"203.0.113.{n % 250 + 1}"


def _documentation_net6(name: str) -> str:
    """The /64 a server's IPv6 address is in (Hetzner gives each server one)."""
    return _documentation_ip(name, v6=True).removesuffix("1") + "/64"


# Outputs the providers compute that the program reads (the mocks stand in for the cloud).
def computed_outputs(type_: str, name: str, inputs: Mapping[str, Any]) -> dict[str, Any]:
    if type_ == "hcloud:index/server:Server":
        return {
            "ipv4Address": _documentation_ip(name),
            "ipv6Address": _documentation_ip(name, v6=True),
            "ipv6Network": _documentation_net6(name),
        }
    if type_ == "docker:index/network:Network":
        return {"name": inputs.get("name", name)}
    if type_ == "docker:index/container:Container":
        return {"name": inputs.get("name", name)}
    return {}


class _FleetMocks(pulumi_mocks.Mocks):
    def new_resource(self, args: pulumi_mocks.MockResourceArgs):
        state = dict(args.inputs)
        state.update(computed_outputs(args.typ, args.name, args.inputs))
        return mock_id(args.typ, args.name), state

    def call(self, args: pulumi_mocks.MockCallArgs):
        return {}, None


class _RecordingMonitor(pulumi_mocks.MockMonitor):
    """The mock monitor, plus the parts of each request the stock one drops (parent, provider, deps)."""

    def __init__(self, mocks: pulumi_mocks.Mocks):
        super().__init__(mocks)
        self.registered: list[Registered] = []

    def RegisterResource(self, request):
        response = super().RegisterResource(request)
        if request.type != "pulumi:pulumi:Stack":
            self.registered.append(
                Registered(
                    urn=response.urn,
                    type=request.type,
                    name=request.name,
                    custom=bool(request.custom),
                    parent=request.parent,
                    provider=request.provider.rsplit("::", 1)[0] if request.provider else "",  # "urn::id"
                    dependencies=tuple(sorted(request.dependencies)),
                    inputs=rpc.deserialize_properties(request.object, keep_unknowns=True),
                )
            )
        return response


class _Warnings(logging.Handler):
    """The program's warnings, as Pulumi's mock engine logs them (pulumi.log.warn)."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []
        self.logger = logging.Logger("clawstaff.mockrun", logging.WARNING)  # its own: never the root's handlers
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


def config_for_runtime(raw: Mapping[str, Any]) -> dict[str, str]:
    """The Pulumi runtime hands the program config values as strings; objects as JSON text."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


def evaluate(
    stack: str, raw_config: Mapping[str, Any], secret_keys: set[str], program: Path | None = None
) -> Evaluation:
    """Run the program (default: the project's __main__.py) under mocks with this stack's config."""
    program = program or ROOT / "__main__.py"
    monitor = _RecordingMonitor(_FleetMocks())
    warned = _Warnings()
    # A new root stack per evaluation: set_mocks keeps the one it finds, and with it every output an
    # earlier evaluation in this process exported.
    set_root_resource(None)
    pulumi_mocks.set_mocks(_FleetMocks(), project=PROJECT, stack=stack, preview=True, monitor=monitor,
                           logger=warned.logger)  # fmt: skip
    set_all_config(config_for_runtime(raw_config), sorted(secret_keys))
    from pulumi.runtime.settings import SETTINGS
    from pulumi.runtime.stack import run_pulumi_func

    SETTINGS.rpc_manager.clear()
    SETTINGS.outputs.clear()
    _sync_await(run_pulumi_func(lambda: runpy.run_path(str(program), run_name="__main__")))
    stack_resource = get_root_resource()
    outputs = {}
    for key, value in getattr(stack_resource, "outputs", {}).items():
        outputs[key] = _sync_await(pulumi.Output.from_input(value).future())
    return Evaluation(stack=stack, resources=list(monitor.registered), outputs=outputs, warnings=warned.messages)


def unwrap_secrets(value: Any) -> Any:
    """Inputs with secrets revealed: only for the replayer, which must hand them to the engine."""
    if rpc.is_rpc_secret(value):
        return unwrap_secrets(rpc.unwrap_rpc_secret(value))
    if isinstance(value, Mapping):
        return {k: unwrap_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [unwrap_secrets(v) for v in value]
    return value


def mask_secrets(value: Any) -> Any:
    """Inputs fit to print: every secret replaced by a mask, at any depth."""
    if rpc.is_rpc_secret(value):
        return SECRET_MASK
    if isinstance(value, Mapping):
        return {k: mask_secrets(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [mask_secrets(v) for v in value]
    if value == rpc.UNKNOWN:
        return "[unknown]"
    return value
