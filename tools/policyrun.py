"""Run a CrossGuard policy pack over a list of resources the way the Pulumi CLI does, without the CLI.

The CLI starts a Python pack through its `pulumi-analyzer-policy-python` shim: in the pack's directory it
runs `python -u -m pulumi.policy <engine address> .`, which executes the pack's `__main__.py`; building
the `PolicyPack` there starts the analyzer gRPC server and prints its port on stdout. The CLI passes the
stack through PULUMI_PROJECT / PULUMI_STACK / PULUMI_ORGANIZATION / PULUMI_DRY_RUN, then speaks
`pulumirpc.Analyzer`: Handshake (the Python SDK does not implement it; UNIMPLEMENTED is fine),
ConfigureStack, GetAnalyzerInfo, Configure (every policy's config: schema defaults, overlaid by the
user's config), Analyze for each resource, AnalyzeStack once. This module does exactly that.

Values: a `Secret(value)` in `properties` is sent as a Pulumi secret (the secret signature the engine
uses), `UNKNOWN` as the engine's "unknown during preview" sentinel. The pack process is stopped in every
case; a pack that crashes, prints no port or does not answer raises `PolicyPackError`; bad policy config
raises `PolicyConfigError` (the CLI refuses it too).
"""

from __future__ import annotations

import os
import queue
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from google.protobuf import empty_pb2, json_format, struct_pb2
from pulumi.runtime.proto import analyzer_pb2, analyzer_pb2_grpc

# The engine's wire encoding (sdk/go/common/resource/plugin/rpc.go).
SPECIAL_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
UNKNOWN_SENTINEL = "04da6b54-80e4-46f7-96ec-b56ff0331ba9"

# The CLI passes its own gRPC address; the Python policy runtime parses it and never dials it.
ENGINE_ADDRESS_PLACEHOLDER = "127.0.0.1:0"
STOP_GRACE_SECONDS = 5.0


class _Unknown:
    _instance: "_Unknown | None" = None

    def __new__(cls) -> "_Unknown":
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "UNKNOWN"


UNKNOWN = _Unknown()
"""Put this where a property's value is not known until the update runs (a preview's computed value)."""


@dataclass(frozen=True)
class Secret:
    """A property value that the engine would send as a Pulumi secret."""

    value: Any


@dataclass(frozen=True)
class Violation:
    policy: str
    level: str  # "mandatory" | "advisory" | "remediate" | "disabled"
    urn: str  # "" for a violation of the stack as a whole
    message: str


@dataclass(frozen=True)
class PolicyResource:
    """A resource as the engine hands it to an analyzer: camelCase inputs, Secret/UNKNOWN values."""

    urn: str
    type: str
    name: str
    properties: Mapping[str, Any]
    parent: str = ""
    provider_urn: str = ""
    dependencies: tuple[str, ...] = ()
    property_dependencies: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class PolicyPackError(RuntimeError):
    """The pack could not be run: it crashed, printed no port, or did not answer in time."""


class PolicyConfigError(ValueError):
    """The policy config names an unknown policy or property, or has a value of the wrong type."""


def to_wire(value: Any) -> Any:
    """A property value in the engine's JSON-like encoding: secrets signed, unknowns as the sentinel."""
    if value is UNKNOWN:
        return UNKNOWN_SENTINEL
    if isinstance(value, Secret):
        return {SPECIAL_SIG_KEY: SECRET_SIG, "value": to_wire(value.value)}
    if isinstance(value, Mapping):
        return {str(k): to_wire(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_wire(v) for v in value]
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise TypeError(f"cannot send a {type(value).__name__} as a resource property: {value!r}")


def _struct(properties: Mapping[str, Any]) -> struct_pb2.Struct:
    struct = struct_pb2.Struct()
    struct.update(to_wire(properties))
    return struct


def _level_name(level: int) -> str:
    return analyzer_pb2.EnforcementLevel.Name(level).lower()


def _provider(urn: str) -> analyzer_pb2.AnalyzerProviderResource | None:
    if not urn:
        return None
    parts = urn.split("::")
    if len(parts) < 4:
        raise ValueError(f"provider URN {urn!r} is not urn:pulumi:<stack>::<project>::<type>::<name>")
    return analyzer_pb2.AnalyzerProviderResource(
        urn=urn, type=parts[2].split("$")[-1], name=parts[3], properties=struct_pb2.Struct()
    )


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "boolean": (bool,),
    "integer": (int,),
    "number": (int, float),
    "array": (list, tuple),
    "object": (dict,),
}


def _check_type(policy: str, key: str, value: Any, schema: Mapping[str, Any]) -> None:
    expected = schema.get("type")
    if expected is None:
        return
    ok = isinstance(value, _JSON_TYPES.get(expected, (object,))) and not (
        isinstance(value, bool) and expected in ("integer", "number")
    )
    if expected == "integer" and isinstance(value, float) and value.is_integer():
        ok = True
    if not ok:
        raise PolicyConfigError(f"policy config {policy}.{key}: {value!r} is not of type {expected}")
    if expected == "array" and isinstance(schema.get("items"), Mapping):
        for item in value:
            _check_type(policy, f"{key}[]", item, schema["items"])


def reconcile_config(
    info: analyzer_pb2.AnalyzerInfo, config: Mapping[str, Any] | None
) -> dict[str, analyzer_pb2.PolicyConfig]:
    """Every policy's level and properties as the CLI sends them: schema defaults, then the user's config
    (`{"policy": "advisory"}` or `{"policy": {"enforcementLevel": ..., "<property>": ...}}`, "all" for
    every policy)."""
    schemas = {p.name: json_format.MessageToDict(p.configSchema.properties) for p in info.policies}
    levels = {p.name: _level_name(p.enforcementLevel) for p in info.policies}
    properties = {
        name: {k: s["default"] for k, s in schema.items() if "default" in s} for name, schema in schemas.items()
    }
    given = dict(config or {})
    all_level = given.pop("all", None)
    if all_level is not None:
        level = all_level if isinstance(all_level, str) else all_level.get("enforcementLevel")
        levels = {name: level for name in levels}
    for policy, value in given.items():
        if policy not in schemas:
            raise PolicyConfigError(f"policy config names {policy!r}, which is not a policy of {info.name}")
        settings = {"enforcementLevel": value} if isinstance(value, str) else dict(value)
        if "enforcementLevel" in settings:
            levels[policy] = settings.pop("enforcementLevel")
        for key, item in settings.items():
            if key not in schemas[policy]:
                raise PolicyConfigError(
                    f"policy config {policy}.{key}: {policy} has no such setting "
                    f"(it has {sorted(schemas[policy]) or 'none'})"
                )
            _check_type(policy, key, item, schemas[policy][key])
            properties[policy][key] = item
    result = {}
    for policy, level in levels.items():
        try:
            enum = analyzer_pb2.EnforcementLevel.Value(str(level).upper())
        except ValueError:
            raise PolicyConfigError(f"policy config {policy}: {level!r} is not an enforcement level") from None
        result[policy] = analyzer_pb2.PolicyConfig(enforcementLevel=enum, properties=_struct(properties[policy]))
    return result


class _PackProcess:
    """The pack's process; reads its port from stdout and keeps its stderr for error messages."""

    def __init__(self, pack_dir: Path, python: str, env: Mapping[str, str]) -> None:
        self.process = subprocess.Popen(
            [python, "-u", "-m", "pulumi.policy", ENGINE_ADDRESS_PLACEHOLDER, "."],
            cwd=pack_dir,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self._lines: queue.Queue[str | None] = queue.Queue()
        self._stderr: list[str] = []
        threading.Thread(target=self._pump_stdout, daemon=True).start()
        threading.Thread(target=self._pump_stderr, daemon=True).start()

    def _pump_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self._lines.put(line)
        self._lines.put(None)

    def _pump_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self._stderr.append(line)

    def stderr_tail(self, lines: int = 30) -> str:
        return "".join(self._stderr[-lines:]).strip() or "(no output on stderr)"

    def read_port(self, deadline: float) -> int:
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PolicyPackError(
                    f"the policy pack printed no port within the timeout; stderr:\n{self.stderr_tail()}"
                )
            try:
                line = self._lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
                time.sleep(0.1)  # let the stderr pump catch up with the crash report
                raise PolicyPackError(
                    f"the policy pack exited with status {self.process.returncode} before "
                    f"printing its port; stderr:\n{self.stderr_tail()}"
                )
            if line.strip().isdigit():
                return int(line.strip())

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=STOP_GRACE_SECONDS)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        for stream in (self.process.stdout, self.process.stderr):
            if stream is not None:
                stream.close()


def _diagnostics(response: analyzer_pb2.AnalyzeResponse, default_urn: str) -> list[Violation]:
    return [
        Violation(
            policy=d.policyName, level=_level_name(d.enforcementLevel), urn=d.urn or default_urn, message=d.message
        )
        for d in response.diagnostics
    ]


def run_policy_pack(
    resources: Sequence[PolicyResource],
    *,
    pack_dir: str | os.PathLike[str] = "policies",
    config: Mapping[str, Any] | None = None,
    python: str = sys.executable,
    timeout: float = 60,
    project: str = "clawstaff",
    stack: str = "dev",
    organization: str = "organization",
    dry_run: bool = True,
) -> list[Violation]:
    """Every violation the pack reports for `resources` (Analyze per resource, then AnalyzeStack)."""
    pack = Path(pack_dir).resolve()
    if not (pack / "PulumiPolicy.yaml").is_file():
        raise PolicyPackError(f"{pack} is not a policy pack: it has no PulumiPolicy.yaml")
    env = {
        **os.environ,
        "PULUMI_PROJECT": project,
        "PULUMI_STACK": stack,
        "PULUMI_ORGANIZATION": organization,
        "PULUMI_DRY_RUN": "true" if dry_run else "false",
    }
    env.pop("PULUMI_CONFIG", None)
    deadline = time.monotonic() + timeout
    process = _PackProcess(pack, python, env)
    channel: grpc.Channel | None = None
    try:
        port = process.read_port(deadline)
        channel = grpc.insecure_channel(f"127.0.0.1:{port}")
        grpc.channel_ready_future(channel).result(timeout=max(0.1, deadline - time.monotonic()))
        client = analyzer_pb2_grpc.AnalyzerStub(channel)

        def left() -> float:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise PolicyPackError("the policy pack did not finish within the timeout")
            return remaining

        try:
            client.Handshake(
                analyzer_pb2.AnalyzerHandshakeRequest(
                    engine_address=ENGINE_ADDRESS_PLACEHOLDER, root_directory=str(pack), program_directory=str(pack)
                ),
                timeout=left(),
            )
        except grpc.RpcError as error:
            if error.code() != grpc.StatusCode.UNIMPLEMENTED:  # type: ignore[attr-defined]
                raise
        client.ConfigureStack(
            analyzer_pb2.AnalyzerStackConfigureRequest(
                stack=stack, project=project, organization=organization, dry_run=dry_run
            ),
            timeout=left(),
        )
        info = client.GetAnalyzerInfo(empty_pb2.Empty(), timeout=left())
        client.Configure(
            analyzer_pb2.ConfigureAnalyzerRequest(policyConfig=reconcile_config(info, config)), timeout=left()
        )

        violations: list[Violation] = []
        for resource in resources:
            response = client.Analyze(
                analyzer_pb2.AnalyzeRequest(
                    urn=resource.urn,
                    type=resource.type,
                    name=resource.name,
                    properties=_struct(resource.properties),
                    options=analyzer_pb2.AnalyzerResourceOptions(parent=resource.parent),
                    provider=_provider(resource.provider_urn),
                ),
                timeout=left(),
            )
            violations += _diagnostics(response, resource.urn)
        stack_response = client.AnalyzeStack(
            analyzer_pb2.AnalyzeStackRequest(
                resources=[
                    analyzer_pb2.AnalyzerResource(
                        urn=r.urn,
                        type=r.type,
                        name=r.name,
                        properties=_struct(r.properties),
                        options=analyzer_pb2.AnalyzerResourceOptions(parent=r.parent),
                        provider=_provider(r.provider_urn),
                        parent=r.parent,
                        dependencies=list(r.dependencies),
                        propertyDependencies={
                            k: analyzer_pb2.AnalyzerPropertyDependencies(urns=list(v))
                            for k, v in r.property_dependencies.items()
                        },
                    )
                    for r in resources
                ]
            ),
            timeout=left(),
        )
        violations += _diagnostics(stack_response, "")
        return violations
    except grpc.FutureTimeoutError:
        raise PolicyPackError(
            f"the policy pack's analyzer did not accept connections; stderr:\n{process.stderr_tail()}"
        ) from None
    except grpc.RpcError as error:
        code, details = error.code().name, error.details()  # type: ignore[attr-defined]
        raise PolicyPackError(f"the policy pack failed: {code}: {details}; stderr:\n{process.stderr_tail()}") from None
    finally:
        if channel is not None:
            channel.close()
        process.stop()
