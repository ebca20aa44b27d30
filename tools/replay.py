"""Replay a stack's registered resources onto a real Docker engine (the integration bench).

`tools.mockrun.evaluate` records every resource the program registers, with its inputs, exactly as
the Pulumi engine would receive them. This module creates those resources for real, as that engine
does: each once what it depends on exists, independent ones at the same time (PARALLEL). The Docker
provider is checked against the engine we talk to, networks are created, host commands run their
`create` scripts (`/bin/sh -c`, the secret stdin, the given environment), and containers are
created, connected and started. `teardown` undoes it in reverse order and runs every
command's `delete` script.

What runs must be what the program asked for: every input key of every resource is interpreted
explicitly. A key this replayer does not understand, or a value it cannot map faithfully, raises
ReplayError naming the resource and the key; nothing is skipped silently. Pulumi-only fields
(`mustRun`, ...) are interpreted too: `mustRun` means the container must be running after start.

    deployment = deploy(evaluation)       # docker-py client from the environment by default
    ...
    teardown(deployment)
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Mapping

import docker
import docker.errors
import requests.exceptions
from docker.types import LogConfig, Mount

from tools.mockrun import Evaluation, Registered, unwrap_secrets

NETWORK = "docker:index/network:Network"
CONTAINER = "docker:index/container:Container"
LOCAL_COMMAND = "command:local:Command"
REMOTE_COMMAND = "command:remote:Command"
DOCKER_PROVIDER = "pulumi:providers:docker"
MiB = 1024**2
COMMAND_TIMEOUT_S = 300
MUST_RUN_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10
# Resources of these types are grouping only (ComponentResources): nothing to create.
_COMPONENT_PREFIX = "clawstaff:"
# Tie-break among resources whose dependencies allow any order: the order of the contract.
_RANK = {DOCKER_PROVIDER: 0, NETWORK: 1, LOCAL_COMMAND: 2, REMOTE_COMMAND: 2, CONTAINER: 3}
# pulumi-command's connection inputs that the replay maps (its defaults included).
_CONNECTION_KEYS = {"host", "user", "hostKey", "port", "dialErrorLimit", "perDialTimeout"}


class ReplayError(Exception):
    """The replay cannot do what the program asked for; the message names the resource and why."""


@dataclass
class Created:
    """One resource that exists on the engine or host because of the replay."""

    urn: str
    type: str
    name: str  # the Pulumi resource name
    engine_id: str = ""  # container or network id
    delete: str | None = None  # command: the delete script
    environment: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    stdout: str = ""
    connection: Mapping[str, Any] | None = None  # remote commands: where the delete runs


@dataclass
class Remote:
    """Remote hosts, for a stack whose hosts are reached over SSH (the VM tier): the real address each
    registered address stands for (the mock engine invents server addresses), and the operator's key."""

    addresses: Mapping[str, str]
    identity: Path

    def address(self, resource: Registered, registered: str) -> str:
        if registered not in self.addresses:
            raise _fail(resource, f"host {registered!r} is not one this replay knows the real address of")
        return self.addresses[registered]


@dataclass
class Deployment:
    evaluation: Evaluation
    client: docker.DockerClient | None
    created: list[Created] = field(default_factory=list)
    remote: Remote | None = None
    tunnels: list[DialStdio] = field(default_factory=list)

    def container(self, name: str):
        """The docker-py container the replay created under this Docker name."""
        return self.client.containers.get(name)


def _fail(resource: Registered, message: str) -> ReplayError:
    return ReplayError(f"{resource.type} {resource.name!r}: {message}")


class _Inputs:
    """The inputs of one resource; every key must be taken exactly once, or the replay refuses."""

    def __init__(self, resource: Registered):
        self.resource = resource
        self.values = dict(unwrap_secrets(dict(resource.inputs)))
        self.taken: set[str] = set()

    def take(self, key: str, default: Any = None) -> Any:
        self.taken.add(key)
        return self.values.get(key, default)

    def require(self, key: str) -> Any:
        if key not in self.values:
            raise _fail(self.resource, f"input {key!r} is required by the replayer but missing")
        return self.take(key)

    def done(self) -> None:
        unknown = sorted(set(self.values) - self.taken)
        if unknown:
            raise _fail(
                self.resource,
                f"input {unknown[0]!r} is not understood by the replayer "
                f"(all unknown: {unknown}); refusing to replay it partially",
            )


def _keys(resource: Registered, value: Any, where: str, allowed: set[str], required: set[str] = frozenset()) -> dict:
    if not isinstance(value, Mapping):
        raise _fail(resource, f"input {where!r} must be an object, got {value!r}")
    unknown = sorted(set(value) - allowed)
    if unknown:
        raise _fail(resource, f"input {where}.{unknown[0]} is not understood by the replayer")
    missing = sorted(required - set(value))
    if missing:
        raise _fail(resource, f"input {where}.{missing[0]} is required by the replayer but missing")
    return dict(value)


def _int(resource: Registered, key: str, value: Any) -> int:
    """Pulumi numbers arrive as floats; only integral ones are meaningful here."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or int(value) != value:
        raise _fail(resource, f"input {key!r} must be an integer, got {value!r}")
    return int(value)


def _duration_ns(resource: Registered, key: str, value: Any) -> int:
    """pulumi-docker durations: '30s', '500ms', '1m', '1h' (Go duration subset the program uses)."""
    units = (("ms", 10**6), ("s", 10**9), ("m", 60 * 10**9), ("h", 3600 * 10**9))
    if isinstance(value, str):
        for suffix, scale in units:
            number = value[: -len(suffix)]
            if value.endswith(suffix) and number.replace(".", "", 1).isdigit():
                if suffix == "s" and value.endswith("ms"):
                    continue
                return int(Decimal(number) * scale)
    raise _fail(resource, f"input {key!r}: {value!r} is not a duration the replayer knows (e.g. 30s, 500ms, 1m)")


# --- order -----------------------------------------------------------------------------------------


def replay_order(resources: list[Registered]) -> list[Registered]:
    """Dependencies (explicit, provider, parent) first; ties by kind (provider, network, command,
    container), then registration order. A cycle is a ReplayError."""
    by_urn = {r.urn: r for r in resources}
    index = {r.urn: i for i, r in enumerate(resources)}
    needs = {
        r.urn: {u for u in (*r.dependencies, r.provider, r.parent) if u in by_urn and u != r.urn} for r in resources
    }
    done: list[Registered] = []
    placed: set[str] = set()
    while len(done) < len(resources):
        ready = [r for r in resources if r.urn not in placed and needs[r.urn] <= placed]
        if not ready:
            stuck = sorted(r.name for r in resources if r.urn not in placed)
            raise ReplayError(f"dependency cycle among {stuck}")
        ready.sort(key=lambda r: (_RANK.get(r.type, -1), index[r.urn]))
        done.append(ready[0])
        placed.add(ready[0].urn)
    return done


# --- per type --------------------------------------------------------------------------------------


def _check_provider(resource: Registered, client: docker.DockerClient) -> None:
    """The program's Docker provider must be the engine this replay talks to (the local socket)."""
    inputs = _Inputs(resource)
    host = inputs.require("host")
    inputs.done()
    engine = os.environ.get("DOCKER_HOST", "unix:///var/run/docker.sock")
    if not (isinstance(host, str) and host.startswith("unix://") and engine.startswith("unix://")):
        raise _fail(resource, f"input 'host' = {host!r}: only a local engine (unix://) is replayed here")
    if os.path.realpath(host[len("unix://") :]) != os.path.realpath(engine[len("unix://") :]):
        raise _fail(resource, f"the program targets {host} but the replay talks to {engine}")


def _create_network(resource: Registered, client: docker.DockerClient) -> Created:
    return _make_network(resource, client, _network_spec(resource))


def _network_spec(resource: Registered) -> dict[str, Any]:
    """The Network's inputs as docker-py's networks.create arguments (a refusal raises here)."""
    inputs = _Inputs(resource)
    name = inputs.require("name")
    driver = inputs.take("driver", "bridge")
    internal = bool(inputs.take("internal", False))
    ipv6 = bool(inputs.take("ipv6", False))
    options = inputs.take("options", {}) or {}
    labels = {}
    for i, entry in enumerate(inputs.take("labels", []) or []):
        entry = _keys(resource, entry, f"labels[{i}]", {"label", "value"}, {"label", "value"})
        labels[entry["label"]] = entry["value"]
    pools = []
    for i, entry in enumerate(inputs.take("ipamConfigs", []) or []):
        entry = _keys(resource, entry, f"ipamConfigs[{i}]", {"subnet", "gateway"}, {"subnet"})
        pools.append(docker.types.IPAMPool(subnet=entry["subnet"], gateway=entry.get("gateway")))
    inputs.done()
    ipam = docker.types.IPAMConfig(pool_configs=pools) if pools else None
    return {"name": name, "driver": driver, "options": dict(options), "internal": internal, "enable_ipv6": ipv6,
            "labels": labels, "ipam": ipam, "check_duplicate": True}  # fmt: skip


def _make_network(resource: Registered, client: docker.DockerClient, spec: Mapping[str, Any]) -> Created:
    spec = dict(spec)
    network = client.networks.create(spec.pop("name"), **spec)
    return Created(resource.urn, resource.type, resource.name, engine_id=network.id)


def _run_shell(
    resource: Registered, script: str, *, stdin: str | None, environment: Mapping[str, str], cwd: str | None, step: str
) -> str:
    """pulumi-command's local interpreter: `/bin/sh -c SCRIPT`, the environment merged over ours."""
    env = dict(os.environ)
    env.update(environment)
    try:
        result = subprocess.run(
            ["/bin/sh", "-c", script],
            input=stdin,
            capture_output=True,
            text=True,
            env=env,
            cwd=cwd,
            timeout=COMMAND_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        raise _fail(resource, f"{step} did not finish within {COMMAND_TIMEOUT_S}s") from None
    if result.returncode != 0:
        # The scripts never print a secret (components/cagehost.py); stderr is safe to show.
        raise _fail(resource, f"{step} failed with status {result.returncode}: {result.stderr.strip()[-2000:]}")
    return result.stdout


def _run_command(resource: Registered) -> Created:
    return _start_command(resource, _command_spec(resource))


def _command_spec(resource: Registered) -> dict[str, Any]:
    """A local Command's inputs, checked (a refusal raises here)."""
    inputs = _Inputs(resource)
    create = inputs.require("create")
    delete = inputs.take("delete")
    stdin = inputs.take("stdin")
    environment = inputs.take("environment", {}) or {}
    cwd = inputs.take("dir")
    inputs.done()
    for key, value in (("create", create), ("delete", delete), ("stdin", stdin), ("dir", cwd)):
        if value is not None and not isinstance(value, str):
            raise _fail(resource, f"input {key!r} must be a string")
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in dict(environment).items()):
        raise _fail(resource, "input 'environment' must map strings to strings")
    return {"create": create, "delete": delete, "stdin": stdin, "environment": dict(environment), "cwd": cwd}


def _start_command(resource: Registered, spec: Mapping[str, Any]) -> Created:
    stdout = _run_shell(resource, spec["create"], stdin=spec["stdin"], environment=spec["environment"],
                        cwd=spec["cwd"], step="create")  # fmt: skip
    return Created(resource.urn, resource.type, resource.name, delete=spec["delete"],
                   environment=spec["environment"], cwd=spec["cwd"], stdout=stdout)  # fmt: skip


class HostKeyRefused(ReplayError):
    """The host did not present the key the program pins: nothing ran there."""


def ssh_exec(
    resource: Registered, connection: Mapping[str, Any], address: str, identity: Path, script: str,
    stdin: str | None, step: str, timeout: float = COMMAND_TIMEOUT_S,
) -> str:  # fmt: skip
    """pulumi-command's remote.Command: one SSH session as the connection's user, the script as its
    command, stdin piped; only the host key the connection pins is trusted (a known_hosts line made
    from it, never StrictHostKeyChecking=no); a dial failure is retried dialErrorLimit times."""
    _keys(resource, connection, "connection", _CONNECTION_KEYS, {"host", "hostKey"})
    host_key = connection["hostKey"]
    port = _int(resource, "connection.port", connection.get("port", 22))
    with tempfile.NamedTemporaryFile("w", prefix="known_hosts.", delete=False) as known:
        known.write((f"{address}" if port == 22 else f"[{address}]:{port}") + f" {host_key}\n")
    argv = ["ssh", "-i", str(identity), "-o", "IdentitiesOnly=yes", "-o", "BatchMode=yes",
            "-o", "StrictHostKeyChecking=yes", "-o", f"UserKnownHostsFile={known.name}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", f"ConnectTimeout={_int(resource, 'connection.perDialTimeout', connection.get('perDialTimeout', 15))}",
            "-p", str(port), f"{connection.get('user', 'root')}@{address}", script]  # fmt: skip
    attempts = max(1, _int(resource, "connection.dialErrorLimit", connection.get("dialErrorLimit", 10)))
    try:
        for attempt in range(attempts):
            try:
                done = subprocess.run(argv, input=stdin or "", capture_output=True, text=True, timeout=timeout)
            except subprocess.TimeoutExpired:
                raise _fail(resource, f"{step} did not finish within {timeout:.0f}s on {address}") from None
            refused = done.returncode == 255 and "Host key verification failed" in done.stderr
            dial = done.returncode == 255 and not refused and any(
                m in done.stderr for m in ("Connection refused", "timed out", "No route to host"))  # fmt: skip
            if not dial or attempt == attempts - 1:
                break
            time.sleep(2)
    finally:
        Path(known.name).unlink(missing_ok=True)
    if refused:
        raise HostKeyRefused(
            f"{resource.type} {resource.name!r}: {address} did not present the pinned host key "
            f"{host_key.split()[-1]}; refusing to go on"
        )
    if done.returncode != 0:
        raise _fail(
            resource, f"{step} failed on {address} with status {done.returncode}: {done.stderr.strip()[-2000:]}"
        )
    return done.stdout


def _run_remote_command(resource: Registered, remote: Remote | None) -> Created:
    return _start_remote_command(resource, remote, _remote_command_spec(resource, remote))


def _remote_command_spec(resource: Registered, remote: Remote | None) -> dict[str, Any]:
    """A remote Command's inputs, checked, and the real address of its host (a refusal raises here)."""
    if remote is None:
        raise _fail(resource, "a remote command, but this replay was given no remote hosts")
    inputs = _Inputs(resource)
    connection = dict(inputs.require("connection"))
    create = inputs.require("create")
    delete = inputs.take("delete")
    stdin = inputs.take("stdin")
    inputs.take("triggers")  # when Pulumi re-runs `create`; a replay runs it once
    inputs.done()
    for key, value in (("create", create), ("delete", delete), ("stdin", stdin)):
        if value is not None and not isinstance(value, str):
            raise _fail(resource, f"input {key!r} must be a string")
    address = remote.address(resource, connection.get("host"))
    return {"connection": connection, "address": address, "create": create, "delete": delete, "stdin": stdin}


def _start_remote_command(resource: Registered, remote: Remote, spec: Mapping[str, Any]) -> Created:
    stdout = ssh_exec(resource, spec["connection"], spec["address"], remote.identity, spec["create"], spec["stdin"],
                      "create")  # fmt: skip
    return Created(resource.urn, resource.type, resource.name, delete=spec["delete"], stdout=stdout,
                   connection={**spec["connection"], "host": spec["address"]})  # fmt: skip


def _ssh_engine(resource: Registered, deployment: Deployment) -> docker.DockerClient:
    """The Docker provider's ssh:// transport: ssh with the provider's own sshOpts (its pinned key),
    forwarding the engine's socket; docker-py talks to the forwarded socket."""
    inputs = _Inputs(resource)
    host = inputs.require("host")
    ssh_opts = inputs.take("sshOpts", []) or []
    inputs.done()
    if isinstance(ssh_opts, str):  # provider inputs reach the engine JSON-encoded
        try:
            ssh_opts = json.loads(ssh_opts)
        except ValueError:
            raise _fail(resource, f"input 'sshOpts' is not a JSON list: {ssh_opts[:80]!r}") from None
    if not isinstance(ssh_opts, list) or not all(isinstance(o, str) for o in ssh_opts):
        raise _fail(resource, "input 'sshOpts' must be a list of strings")
    url = urlsplit(host)
    if url.scheme != "ssh" or not url.hostname:
        raise _fail(resource, f"input 'host' = {host!r} is not ssh://user@host[:port]")
    if "StrictHostKeyChecking=yes" not in ssh_opts:
        raise _fail(resource, "sshOpts do not set StrictHostKeyChecking=yes: the engine's host key is not pinned")
    assert deployment.remote is not None
    address = deployment.remote.address(resource, url.hostname)
    argv = ["ssh", *ssh_opts, "-i", str(deployment.remote.identity), "-o", "IdentitiesOnly=yes",
            "-p", str(url.port or 22), f"{url.username or 'root'}@{address}"]  # fmt: skip
    probe = subprocess.run([*argv, "docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                           text=True, timeout=120)  # fmt: skip
    if probe.returncode == 255 and "Host key verification failed" in probe.stderr:
        raise HostKeyRefused(f"{resource.name}: {address} did not present the key its sshOpts pin; refusing to go on")
    if probe.returncode != 0:
        raise _fail(resource, f"the engine at {address} does not answer over ssh: {probe.stderr.strip()[-1000:]}")
    bridge = DialStdio(argv)
    deployment.tunnels.append(bridge)
    client = docker.DockerClient(base_url=f"unix://{bridge.socket_path}", timeout=300)
    client.ping()
    return client


class DialStdio:
    """What the Docker CLI (and so pulumi-docker) does for ssh:// engines: every connection is one
    `ssh <sshOpts> user@host docker system dial-stdio`, its stdin and stdout the connection's bytes.
    No port forwarding (the hosts' sshd refuses it). docker-py talks to a local socket whose every
    accepted connection is bridged so."""

    def __init__(self, ssh_argv: list[str]) -> None:
        self.ssh_argv = ssh_argv
        self.dir = Path(tempfile.mkdtemp(prefix="clawstaff-dial-"))
        self.socket_path = self.dir / "docker.sock"
        self.server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.server.bind(str(self.socket_path))
        self.server.listen(16)
        self.processes: list[subprocess.Popen] = []
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            proc = subprocess.Popen([*self.ssh_argv, "docker", "system", "dial-stdio"], stdin=subprocess.PIPE,
                                    stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)  # fmt: skip
            self.processes.append(proc)
            threading.Thread(target=self._upstream, args=(conn, proc), daemon=True).start()
            threading.Thread(target=self._downstream, args=(conn, proc), daemon=True).start()

    @staticmethod
    def _upstream(conn: socket.socket, proc: subprocess.Popen) -> None:
        try:
            while data := conn.recv(65536):
                proc.stdin.write(data)
                proc.stdin.flush()
        except OSError:
            pass
        finally:
            try:
                proc.stdin.close()
            except OSError:
                pass

    @staticmethod
    def _downstream(conn: socket.socket, proc: subprocess.Popen) -> None:
        try:
            while data := proc.stdout.read1(65536):
                conn.sendall(data)
        except OSError:
            pass
        finally:
            conn.close()

    def close(self) -> None:
        self.closed = True
        self.server.close()
        for proc in self.processes:
            if proc.poll() is None:
                proc.terminate()
        shutil.rmtree(self.dir, ignore_errors=True)


def close_tunnels(deployment: Deployment) -> None:
    for bridge in deployment.tunnels:
        bridge.close()
    deployment.tunnels.clear()


def _container_config(resource: Registered, client: docker.DockerClient) -> tuple[dict, dict, list[dict], bool]:
    """(create_container kwargs, host_config kwargs, networks, must_run) for one Container."""
    inputs = _Inputs(resource)
    create: dict[str, Any] = {"name": inputs.require("name"), "image": inputs.require("image"), "detach": True}
    host: dict[str, Any] = {}
    if (command := inputs.take("command")) is not None:
        create["command"] = list(command)
    if (entrypoint := inputs.take("entrypoints")) is not None:
        create["entrypoint"] = list(entrypoint)
    if (user := inputs.take("user")) is not None:
        create["user"] = user
    if (envs := inputs.take("envs")) is not None:
        create["environment"] = list(envs)
    if (working_dir := inputs.take("workingDir")) is not None:
        create["working_dir"] = working_dir
    labels = {}
    for i, entry in enumerate(inputs.take("labels", []) or []):
        entry = _keys(resource, entry, f"labels[{i}]", {"label", "value"}, {"label", "value"})
        labels[entry["label"]] = entry["value"]
    create["labels"] = labels
    if (hc := inputs.take("healthcheck")) is not None:
        hc = _keys(resource, hc, "healthcheck", {"tests", "interval", "timeout", "startPeriod", "retries"}, {"tests"})
        create["healthcheck"] = {
            "test": list(hc["tests"]),
            **(
                {"interval": _duration_ns(resource, "healthcheck.interval", hc["interval"])} if "interval" in hc else {}
            ),
            **({"timeout": _duration_ns(resource, "healthcheck.timeout", hc["timeout"])} if "timeout" in hc else {}),
            **(
                {"start_period": _duration_ns(resource, "healthcheck.startPeriod", hc["startPeriod"])}
                if "startPeriod" in hc
                else {}
            ),
            **({"retries": _int(resource, "healthcheck.retries", hc["retries"])} if "retries" in hc else {}),
        }

    host["read_only"] = bool(inputs.take("readOnly", False))
    host["privileged"] = bool(inputs.take("privileged", False))
    host["init"] = bool(inputs.take("init", False))
    if (tmpfs := inputs.take("tmpfs")) is not None:
        host["tmpfs"] = dict(tmpfs)
    if (caps := inputs.take("capabilities")) is not None:
        caps = _keys(resource, caps, "capabilities", {"adds", "drops"})
        host["cap_drop"] = list(caps.get("drops") or [])
        host["cap_add"] = list(caps.get("adds") or [])
    if (security := inputs.take("securityOpts")) is not None:
        host["security_opt"] = list(security)
    restart = inputs.take("restart", "no")
    retries = inputs.take("maxRetryCount")
    if restart not in ("no", "on-failure", "always", "unless-stopped"):
        raise _fail(resource, f"input 'restart' = {restart!r} is not a Docker restart policy")
    if retries is not None and restart != "on-failure":
        raise _fail(resource, "input 'maxRetryCount' only means something with restart=on-failure")
    host["restart_policy"] = {
        "Name": "" if restart == "no" else restart,
        "MaximumRetryCount": _int(resource, "maxRetryCount", retries or 0),
    }
    if (memory := inputs.take("memory")) is not None:
        host["mem_limit"] = _int(resource, "memory", memory) * MiB  # pulumi-docker: MiB
    if (swap := inputs.take("memorySwap")) is not None:
        host["memswap_limit"] = _int(resource, "memorySwap", swap) * MiB
    if (cpus := inputs.take("cpus")) is not None:
        try:
            host["nano_cpus"] = int(Decimal(str(cpus)) * 10**9)
        except InvalidOperation:
            raise _fail(resource, f"input 'cpus' = {cpus!r} is not a decimal") from None
    if (parent := inputs.take("cgroupParent")) is not None:
        host["cgroup_parent"] = parent
    if (ipc := inputs.take("ipcMode")) is not None:
        host["ipc_mode"] = ipc
    if (runtime := inputs.take("runtime")) is not None:
        host["runtime"] = runtime  # a runtime the engine registered (daemon.json "runtimes"), else Docker refuses
    if (sysctls := inputs.take("sysctls")) is not None:
        host["sysctls"] = dict(sysctls)
    if (dns := inputs.take("dns")) is not None:
        host["dns"] = list(dns)
    log_driver = inputs.take("logDriver")
    log_opts = inputs.take("logOpts")
    if log_driver is not None or log_opts is not None:
        host["log_config"] = LogConfig(type=log_driver or "json-file", config=dict(log_opts or {}))
    mounts = []
    for i, m in enumerate(inputs.take("mounts", []) or []):
        m = _keys(resource, m, f"mounts[{i}]", {"type", "source", "target", "readOnly"}, {"type", "source", "target"})
        if m["type"] != "bind":
            raise _fail(resource, f"input mounts[{i}].type = {m['type']!r}: only bind mounts are replayed")
        mounts.append(Mount(target=m["target"], source=m["source"], type="bind", read_only=bool(m.get("readOnly"))))
    if mounts:
        host["mounts"] = mounts
    hosts = []  # a list, as pulumi-docker's: a name may be given several addresses
    for i, h in enumerate(inputs.take("hosts", []) or []):
        h = _keys(resource, h, f"hosts[{i}]", {"host", "ip"}, {"host", "ip"})
        hosts.append(f"{h['host']}:{h['ip']}")
    if hosts:
        host["extra_hosts"] = hosts
    networks = []
    for i, n in enumerate(inputs.take("networksAdvanced", []) or []):
        n = _keys(resource, n, f"networksAdvanced[{i}]", {"name", "aliases"}, {"name"})
        networks.append({"name": n["name"], "aliases": list(n.get("aliases") or [])})
    if (mode := inputs.take("networkMode")) is not None:
        raise _fail(resource, f"input 'networkMode' = {mode!r}: cages use networksAdvanced only")
    must_run = inputs.take("mustRun", True)  # pulumi-docker's default is true
    inputs.done()
    return create, host, networks, bool(must_run)


def _create_container(resource: Registered, client: docker.DockerClient) -> Created:
    return _start_container(resource, client, _container_config(resource, client))


def _start_container(resource: Registered, client: docker.DockerClient, config: tuple) -> Created:
    create, host, networks, must_run = config
    api = client.api
    networking = None
    if networks:
        first = networks[0]
        networking = api.create_networking_config(
            {first["name"]: api.create_endpoint_config(aliases=first["aliases"] or None)}
        )
        host["network_mode"] = first["name"]
    else:
        host["network_mode"] = "none"
    create.pop("detach")
    container = api.create_container(host_config=api.create_host_config(**host), networking_config=networking, **create)
    container_id = container["Id"]
    created = Created(resource.urn, resource.type, resource.name, engine_id=container_id)
    try:
        for n in networks[1:]:
            api.connect_container_to_network(container_id, n["name"], aliases=n["aliases"] or None)
        api.start(container_id)
        if must_run:
            _wait_running(resource, client, container_id)
    except Exception:
        api.remove_container(container_id, force=True)
        raise
    return created


def _wait_running(resource: Registered, client: docker.DockerClient, container_id: str) -> None:
    """mustRun: the container has to be running (and stay up a moment) after start."""
    deadline = time.monotonic() + MUST_RUN_TIMEOUT_S
    seen_running = 0
    while time.monotonic() < deadline:
        state = client.api.inspect_container(container_id)["State"]
        if state["Running"] and not state["Restarting"]:
            seen_running += 1
            if seen_running >= 3:
                return
        else:
            seen_running = 0
        time.sleep(0.3)
    logs = client.api.logs(container_id, tail=20).decode(errors="replace")
    raise _fail(
        resource,
        f"mustRun: the container is not running after {MUST_RUN_TIMEOUT_S:.0f}s "
        f"(state {state.get('Status')}, exit {state.get('ExitCode')}); last log lines:\n{logs}",
    )


def _check_component(resource: Registered) -> None:
    if resource.custom or not resource.type.startswith(_COMPONENT_PREFIX):
        raise _fail(resource, "this resource type is not understood by the replayer")
    if resource.inputs:
        raise _fail(resource, f"a component with inputs {sorted(resource.inputs)} is not understood")


# --- deploy / teardown -----------------------------------------------------------------------------


# Pulumi's engine runs a resource's create as soon as everything it depends on exists, many at once
# (`pulumi up --parallel`, unbounded by default). The replay does the same, up to this many at once,
# so a missing dependency between two resources shows here as it would in production.
PARALLEL = 8


def _needs(resources: list[Registered]) -> dict[str, set[str]]:
    by_urn = {r.urn for r in resources}
    return {
        r.urn: {u for u in (*r.dependencies, r.provider, r.parent) if u in by_urn and u != r.urn} for r in resources
    }


def _plan(resource: Registered, deployment: Deployment) -> Callable[[], Created] | None:
    """Check one resource's inputs and return what creates it (None: nothing to create, or the Docker
    provider, which deploy sets up itself). Every refusal raises here, before anything is created."""
    evaluation, remote = deployment.evaluation, deployment.remote
    if resource.type == DOCKER_PROVIDER:
        if remote is None:
            _check_provider(resource, deployment.client)
        return None
    if resource.type == NETWORK:
        spec = _network_spec(resource)
        return lambda: _make_network(resource, deployment.client, spec)
    if resource.type == LOCAL_COMMAND:
        spec = _command_spec(resource)
        return lambda: _start_command(resource, spec)
    if resource.type == REMOTE_COMMAND:
        spec = _remote_command_spec(resource, remote)
        return lambda: _start_remote_command(resource, remote, spec)
    if resource.type == CONTAINER:
        if resource.provider and resource.provider not in evaluation.by_urn():
            raise _fail(resource, f"its provider {resource.provider} was not registered")
        config = _container_config(resource, deployment.client)
        return lambda: _start_container(resource, deployment.client, config)
    _check_component(resource)
    return None


def deploy(
    evaluation: Evaluation,
    client: docker.DockerClient | None = None,
    on_created: Callable[[Created], None] | None = None,
    remote: Remote | None = None,
    existing: frozenset[str] = frozenset(),
    parallel: int = PARALLEL,
) -> Deployment:
    """Create every resource of the evaluation; on any failure, tear down what was made and raise.
    With `remote`, hosts are reached over SSH: the Docker provider's ssh:// transport and remote
    commands, each pinned to the key the program pins. `existing`: URNs already created (the stack's
    state: Pulumi does not create them again), skipped; teardown leaves them too.

    Every resource's inputs are checked first: a refusal creates nothing. Then, like Pulumi's engine,
    a resource is created once every resource it depends on exists, up to `parallel` at once (1: one
    by one, in replay_order). `Deployment.created` is in the order the creates finished, so the
    teardown, in reverse, deletes a resource before what it depends on. Of several failures, the
    first in replay_order is raised, once everything in flight has finished."""
    if parallel < 1:
        raise ValueError(f"parallel {parallel!r}: at least 1")
    client = client or (None if remote else docker.from_env(timeout=120))
    deployment = Deployment(evaluation, client, remote=remote)
    order = [r for r in replay_order(evaluation.resources) if r.urn not in existing]  # a cycle raises here
    plans = {r.urn: _plan(r, deployment) for r in order}
    needs = _needs(evaluation.resources)
    position = {r.urn: i for i, r in enumerate(order)}
    done: set[str] = set(existing)
    pending = list(order)
    running: dict[concurrent.futures.Future, Registered] = {}
    failures: dict[int, BaseException] = {}  # by replay order

    def finished(future: concurrent.futures.Future) -> None:
        resource = running.pop(future)
        try:
            created = future.result()
        except BaseException as error:  # noqa: BLE001 - raised once everything in flight is in
            failures[position[resource.urn]] = error
            return
        deployment.created.append(created)
        done.add(resource.urn)
        if on_created:
            on_created(created)

    pool = concurrent.futures.ThreadPoolExecutor(max_workers=parallel, thread_name_prefix="replay")
    try:
        while not failures and (pending or running):
            for resource in [r for r in pending if needs[r.urn] <= done]:
                if len(running) >= parallel:
                    break
                pending.remove(resource)
                plan = plans[resource.urn]
                if plan is not None:
                    running[pool.submit(plan)] = resource
                    continue
                if resource.type == DOCKER_PROVIDER and remote is not None:
                    # The engine of every later resource: set up here, before anything uses it.
                    if deployment.client is not None:
                        raise _fail(resource, "a second Docker provider: the remote replay drives one host")
                    deployment.client = _ssh_engine(resource, deployment)
                done.add(resource.urn)
                break  # what it unblocks is ready on the next pass
            else:
                if not running:
                    if pending:
                        raise ReplayError(
                            f"nothing can be created: {sorted(r.name for r in pending)} never became ready"
                        )
                    break
                first, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in first:
                    finished(future)
                continue
            if len(running) >= parallel:
                first, _ = concurrent.futures.wait(running, return_when=concurrent.futures.FIRST_COMPLETED)
                for future in first:
                    finished(future)
        # After a failure, let what is in flight finish, so that the teardown knows everything made.
        for future in list(concurrent.futures.as_completed(list(running))):
            finished(future)
        if failures:
            raise failures[min(failures)]
    except BaseException as error:
        pool.shutdown(wait=True, cancel_futures=True)
        for future in [f for f in running if f.done()]:
            finished(future)
        errors = teardown(deployment)
        if errors:
            raise ReplayError("deploy failed and its rollback left: " + "; ".join(errors)) from error
        raise
    pool.shutdown(wait=True)
    return deployment


def _engine(call: Callable[..., Any], *args: Any, attempts: int = 3, **kwargs: Any) -> Any:
    """An engine call that a dropped connection does not fail: a pooled connection to a host that
    has since rebooted (or an SSH session that ended) is refused once, and the Docker provider would
    dial again. Deletes are idempotent, so repeating one is safe."""
    for attempt in range(attempts):
        try:
            return call(*args, **kwargs)
        except requests.exceptions.ConnectionError:
            if attempt == attempts - 1:
                raise
            time.sleep(1)


def teardown(deployment: Deployment) -> list[str]:
    """Delete in reverse creation order; run every command's delete script. Keeps going after an
    error so that one stuck resource does not orphan the rest; returns the errors (empty: clean)."""
    errors: list[str] = []
    client = deployment.client
    while deployment.created:
        created = deployment.created.pop()
        try:
            if created.type == CONTAINER:
                try:
                    _engine(client.api.stop, created.engine_id, timeout=STOP_TIMEOUT_S)
                    _engine(client.api.remove_container, created.engine_id, force=True)
                except docker.errors.NotFound:
                    pass
            elif created.type == NETWORK:
                try:
                    _engine(client.api.remove_network, created.engine_id)
                except docker.errors.NotFound:
                    pass
            elif created.type == REMOTE_COMMAND and created.delete:
                resource = deployment.evaluation.by_urn()[created.urn]
                assert deployment.remote is not None and created.connection is not None
                ssh_exec(resource, created.connection, created.connection["host"], deployment.remote.identity,
                         created.delete, None, "delete")  # fmt: skip
            elif created.type == LOCAL_COMMAND and created.delete:
                resource = deployment.evaluation.by_urn()[created.urn]
                _run_shell(
                    resource,
                    created.delete,
                    stdin=None,
                    environment=created.environment,
                    cwd=created.cwd,
                    step="delete",
                )
        except Exception as error:  # noqa: BLE001 - collected and reported, never swallowed
            errors.append(f"{created.type} {created.name!r}: {error}")
    close_tunnels(deployment)
    return errors


def purge(evaluation: Evaluation, client: docker.DockerClient | None = None) -> list[str]:
    """Remove whatever a crashed earlier replay of this evaluation may have left: containers and
    networks by name, then every command's (idempotent) delete. Returns the errors."""
    client = client or docker.from_env(timeout=120)
    errors = []
    for resource in reversed(replay_order(evaluation.resources)):
        values = unwrap_secrets(dict(resource.inputs))
        try:
            if resource.type == CONTAINER:
                try:
                    client.api.remove_container(values["name"], force=True)
                except docker.errors.NotFound:
                    pass
            elif resource.type == NETWORK:
                for network in client.networks.list(names=[values["name"]]):
                    if network.name == values["name"]:
                        network.remove()
            elif resource.type == LOCAL_COMMAND and values.get("delete"):
                _run_shell(
                    resource,
                    values["delete"],
                    stdin=None,
                    environment=values.get("environment") or {},
                    cwd=values.get("dir"),
                    step="delete",
                )
        except Exception as error:  # noqa: BLE001
            errors.append(f"{resource.type} {resource.name!r}: {error}")
    return errors
