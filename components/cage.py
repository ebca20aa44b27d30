"""ClawCage: one Claw's sandbox. Its own internal network, its own egress proxy, its host-side state
(whole-cage limits, the key on tmpfs, the encrypted volume) and the claw container, all on the Docker
provider of the host that placement chose.

Everything here is wiring: the scripts, the proxy config, the sealing and the uids are plain functions
elsewhere (components.cagehost, components.egress, components.sealing, components.placement), each
tested on its own; the proxy's limits are components.model's. The isolation contract these resources
implement is the README's "The isolation contract" (docs/architecture.md shows where each part lives).
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass
from decimal import Decimal
from typing import TYPE_CHECKING, Mapping, Optional

import pulumi
import pulumi_command as command
import pulumi_docker as docker

from components import cageaudit, cagehost, seccomp
from components.conventions import (
    proxy_container,
    CAGE_KEY_DIR_MOUNT,
    CAGE_VOLUME_MOUNT,
    LABEL_CLAW,
    LABEL_HOST,
    LABEL_ORG,
    LABEL_ROLE,
    LABEL_RUNTIME,
    PROXY_ALIAS,
    PROXY_CONFIG_MOUNT,
    ROLE_BROKER,
    ROLE_CAGE_NETWORK,
    ROLE_CLAW,
    ROLE_PROXY,
    SEALED_ENV,
    cage_bridge_name,
    host_broker_ca_dir,
    host_broker_key_dir,
    host_key_dir,
)
from components.egress import PROXY_PORT, egress_allowlist, render_proxy_config
from components.model import PROXY_CPUS, PROXY_MEMORY, PROXY_PIDS, PROXY_TMPFS, Claw, Endpoint, cage_demand, cage_pids  # noqa: F401  (PROXY_PIDS: the tests' fixture reads the proxy's share here)
from components.broker import (
    BROKER_ALIAS,
    BROKER_ENV,
    BROKER_PORT,
    CA_ENV,
    CA_MOUNT,
    ENV_SECRETS_ENV,
    PLACEHOLDERS_ENV,
    UPSTREAM_ENV,
    broker_spec,
    derive_broker_key,
    placeholder,
)
from components.runtimes import GVISOR, docker_runtime
from components.model import BROKER_CPUS, BROKER_MEMORY, BROKER_TMPFS
from components.sealing import CLAW_ENV, cage_key_file_text, derive_cage_key, seal_credentials
from components.units import MiB

if TYPE_CHECKING:  # a cage only uses its host's provider, networks and connection; fleet makes the host
    from components.host import ClawHost

# The proxy's own share of the cage (PROXY_CPUS, PROXY_MEMORY, PROXY_PIDS, PROXY_TMPFS) comes from
# components.model, where placement counts it too.
MAX_RESTARTS = 5
LOG_OPTS = {"max-size": "10m", "max-file": "5"}
# The claw has no resolver that reaches out: with an explicit upstream, Docker's embedded DNS forwards
# from the cage's own namespace (not the host's, CVE-2024-29018), where 127.0.0.1:53 answers nothing.
# Names on the cage network (the proxy's alias) still resolve; everything else goes through the proxy.
CAGE_DNS = ["127.0.0.1"]
# No writable HOME or working directory that Python trusts: with HOME=/tmp (writable by the claw), a
# usercustomize.py planted under /tmp/.local ran in every later python3 of the cage (health checks,
# an operator's `docker exec`, the isolation probes); with the working directory /tmp, a planted
# module shadowed the standard library for `python3 -c`. Both point at read-only, root-owned places.
CLAW_HOME = "/nonexistent"
CLAW_WORKDIR = "/"
# The health check runs Python isolated (-I: no environment variables, no user site, no script or
# working directory on sys.path), so nothing the claw writes can run in it.
HEALTHCHECK_PYTHON = ["/usr/bin/python3", "-I"]


@dataclass
class ClawCageArgs:
    claw: Claw
    host: ClawHost
    host_name: str
    control_plane: Endpoint
    sealing_key: str
    secrets: Mapping[str, str]  # NAME -> value (plaintext; only ciphertext leaves this component)
    claw_uid: int
    proxy_uid: int
    proxy_image: str
    broker_image: str | None = None  # required when the claw has brokered secrets


def memory_mb(size: int) -> int:
    """pulumi-docker takes memory in MiB; round up so a limit is never below what was asked."""
    return math.ceil(size / MiB)


def labels(claw: Claw, host_name: str, role: str) -> list[docker.ContainerLabelArgs]:
    return [
        docker.ContainerLabelArgs(label=LABEL_CLAW, value=claw.name),
        docker.ContainerLabelArgs(label=LABEL_ORG, value=claw.org),
        docker.ContainerLabelArgs(label=LABEL_HOST, value=host_name),
        docker.ContainerLabelArgs(label=LABEL_ROLE, value=role),
    ]


def hardening(uid: int, memory: int, cpus: Decimal, tmpfs_size: int, cgroup_parent: str, *, init: bool) -> dict:
    """What the claw and its proxy share: no privilege, no host namespace, bounded everything.

    The cgroup parent holds the whole cage's pids, memory and cpu limits (the Docker provider has no
    pids field); the per-container limits below keep the claw from starving its own proxy.

    `init`: Docker's init as pid 1 (the proxy), or none because the image's entrypoint is pid 1 (the
    claw: cage-init reaps, forwards signals, and relays the claw's output at a bounded rate from a
    process the claw cannot open, read or trace; images/claw-runtime/cage-init).
    """
    return dict(
        user=f"{uid}:{uid}",
        read_only=True,
        tmpfs={"/tmp": f"rw,noexec,nosuid,nodev,size={tmpfs_size}"},
        capabilities=docker.ContainerCapabilitiesArgs(drops=["ALL"], adds=[]),
        # The project's own seccomp profile (components.seccomp): the same filter on every engine.
        security_opts=["no-new-privileges:true", seccomp.security_opt()],
        privileged=False,
        init=init,
        restart="on-failure",
        max_retry_count=MAX_RESTARTS,
        memory=memory_mb(memory),
        memory_swap=memory_mb(memory),  # memory+swap = memory: no swap
        cpus=str(cpus),
        cgroup_parent=cgroup_parent,
        ipc_mode="private",
        # IPv6 stays off inside the cage: Docker 20.10 filters IPv6 only with experimental ip6tables.
        sysctls={"net.ipv6.conf.all.disable_ipv6": "1"},
        log_driver="json-file",
        log_opts=LOG_OPTS,
        must_run=True,
    )


class ClawCage(pulumi.ComponentResource):
    """One claw's sandbox: network, proxy, host-side state and the claw container."""

    def __init__(self, name: str, args: ClawCageArgs, opts: Optional[pulumi.ResourceOptions] = None):
        super().__init__("clawstaff:fleet:ClawCage", name, {}, opts)
        claw, host = args.claw, args.host
        self._host = host
        on_host = pulumi.ResourceOptions(parent=self, provider=host.provider)

        network = docker.Network(
            f"{name}-network",
            name=f"cage-{claw.name}",
            driver="bridge",
            internal=True,  # no route out: the proxy is the cage's only door
            ipv6=False,
            options={
                # Two members, the claw and its proxy: ICC must stay on between them (off would cut the claw from its proxy).
                "com.docker.network.bridge.enable_icc": "true",
                "com.docker.network.bridge.name": cage_bridge_name(claw.name),
            },
            labels=[
                docker.NetworkLabelArgs(label=l.label, value=l.value)
                for l in labels(claw, args.host_name, ROLE_CAGE_NETWORK)
            ],
            opts=on_host,
        )

        # Host-side state, each a command with idempotent create and delete scripts.
        demand = cage_demand(claw)  # the claw, its proxy and (brokered secrets) its broker
        driver = host.cgroup_driver
        cgroup_parent = cagehost.cgroup_parent(claw.name, driver)
        limits = self._host_command(
            f"{name}-limits",
            create=cagehost.render_limits_create(
                claw.name, cpus=demand.cpus, memory=demand.memory, pids=cage_pids(claw), driver=driver
            ),
            delete=cagehost.render_limits_delete(claw.name, driver=driver),
        )
        cage_key = derive_cage_key(args.sealing_key, claw.name)
        key = self._host_command(
            f"{name}-key",
            create=cagehost.render_key_create(claw.name, uid=args.claw_uid),
            delete=cagehost.render_key_delete(claw.name),
            stdin=pulumi.Output.secret(cage_key_file_text(cage_key)),
        )
        proxy_config = render_proxy_config(
            claw=claw.name,
            org=claw.org,
            allowlist=egress_allowlist(claw.egress, args.control_plane),
        )
        proxy_config_file = self._host_command(
            f"{name}-proxy-config",
            create=cagehost.render_proxy_config_create(claw.name),
            delete=cagehost.render_proxy_config_delete(claw.name),
            stdin=proxy_config,
        )
        claw_mounts = [
            docker.ContainerMountArgs(
                type="bind", source=host_key_dir(claw.name), target=CAGE_KEY_DIR_MOUNT, read_only=True
            )
        ]
        host_state = [limits, key]
        if claw.volume:
            volume = self._host_command(
                f"{name}-volume",
                create=cagehost.render_volume_create(
                    claw.name, size=claw.volume, uid=args.claw_uid, sandbox_walk=claw.runtime == GVISOR
                ),
                delete=cagehost.render_volume_delete(claw.name),
                stdin=pulumi.Output.secret(
                    cagehost.volume_kek_stdin(cagehost.derive_volume_kek(args.sealing_key, claw.name))
                ),
            )
            host_state.append(volume)
            claw_mounts.append(
                docker.ContainerMountArgs(
                    type="bind", source=cagehost.volume_mount_path(claw.name), target=CAGE_VOLUME_MOUNT, read_only=False
                )
            )
        # The kernel's record of what the claw runs and which files it changes (and, with a volume,
        # reads): loaded after the volume is mounted, before the claw starts, removed with the cage.
        audit = self._host_command(
            f"{name}-audit",
            create=cageaudit.render_audit_create(claw.name, uid=args.claw_uid, volume=bool(claw.volume)),
            delete=cageaudit.render_audit_delete(claw.name),
            after=[volume] if claw.volume else [],
        )
        host_state.append(audit)

        proxy = docker.Container(
            f"{name}-proxy",
            name=proxy_container(claw.name),
            image=args.proxy_image,
            networks_advanced=[
                docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=[PROXY_ALIAS]),
                docker.ContainerNetworksAdvancedArgs(name=host.egress_network.name),
            ],
            mounts=[
                docker.ContainerMountArgs(
                    type="bind",
                    source=cagehost.proxy_config_dir(claw.name),
                    target=PROXY_CONFIG_MOUNT,
                    read_only=True,
                )
            ],
            # A changed config replaces the proxy, so it never runs with a stale allowlist.
            labels=labels(claw, args.host_name, ROLE_PROXY)
            + [
                docker.ContainerLabelArgs(
                    label="clawstaff.config-sha256", value=hashlib.sha256(proxy_config.encode()).hexdigest()
                )
            ],
            **hardening(args.proxy_uid, PROXY_MEMORY, PROXY_CPUS, PROXY_TMPFS, cgroup_parent, init=True),
            opts=pulumi.ResourceOptions(parent=self, provider=host.provider, depends_on=[limits, proxy_config_file]),
        )

        proxy_url = f"http://{PROXY_ALIAS}:{PROXY_PORT}"
        claw_env, claw_secrets, claw_deps = [], dict(args.secrets), [proxy]
        if claw.broker:
            # Brokered secrets reach the broker only; the claw gets their placeholders and the cage CA.
            broker, proxy_url, claw_secrets, claw_env = self._broker(
                name, args, network, limits, cgroup_parent, claw_mounts
            )
            claw_deps.append(broker)
        sealed = seal_credentials(cage_key, claw.name, claw_secrets)
        self.container = docker.Container(
            f"{name}-claw",
            name=f"claw-{claw.name}",
            image=claw.image,
            command=list(claw.command) if claw.command else None,  # run by the image's cage-init
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name)],
            dns=CAGE_DNS,
            envs=[
                f"{SEALED_ENV}={sealed}",  # ciphertext only; cage-init opens it in memory
                f"{CLAW_ENV}={claw.name}",
                f"HOME={CLAW_HOME}",
                f"HTTPS_PROXY={proxy_url}",
                f"HTTP_PROXY={proxy_url}",
                f"https_proxy={proxy_url}",
                f"http_proxy={proxy_url}",
                *claw_env,
            ],
            mounts=claw_mounts,
            working_dir=CLAW_WORKDIR,
            # Which runtime the claw was given, beside the one it runs under: the policy pack refuses
            # a claw marked for gVisor whose container would run under runc.
            labels=labels(claw, args.host_name, ROLE_CLAW)
            + [docker.ContainerLabelArgs(label=LABEL_RUNTIME, value=claw.runtime)],
            **({"runtime": runsc} if (runsc := docker_runtime(claw.runtime)) else {}),
            # Healthy when the claw can reach its proxy: the cage's one way out works.
            healthcheck=docker.ContainerHealthcheckArgs(
                tests=[
                    "CMD",
                    *HEALTHCHECK_PYTHON,
                    "-c",
                    f"import socket; socket.create_connection(('{PROXY_ALIAS}', {PROXY_PORT}), 3).close()",
                ],
                interval="30s",
                timeout="5s",
                retries=3,
                start_period="10s",
            ),
            **hardening(args.claw_uid, claw.memory, claw.cpus, claw.tmpfs, cgroup_parent, init=False),
            opts=pulumi.ResourceOptions(parent=self, provider=host.provider, depends_on=[*claw_deps, *host_state]),
        )
        self.network = network
        self.proxy = proxy
        self.register_outputs({"claw": claw.name, "host": args.host_name})

    def _broker(self, name, args, network, limits, cgroup_parent, claw_mounts):
        """The cage's credential broker (components.broker): its host state, its container, and what the
        claw gets instead of the brokered values. Returns (broker, the claw's proxy URL, the secrets
        sealed for the claw, the claw's extra env)."""
        claw, host = args.claw, args.host
        if not args.broker_image:
            raise ValueError(f"claw {claw.name} has brokered secrets but the stack names no brokerImage")
        values = dict(args.secrets)
        brokered = {b.name for b in claw.broker}
        placeholders = {n: placeholder(args.sealing_key, claw.name, n, values[n]) for n in sorted(brokered)}
        broker_key = derive_broker_key(args.sealing_key, claw.name)
        state = self._host_command(
            f"{name}-broker-state",
            create=cagehost.render_broker_state_create(claw.name, uid=args.proxy_uid),
            delete=cagehost.render_broker_state_delete(claw.name),
            stdin=pulumi.Output.secret(cage_key_file_text(broker_key)),
        )
        spec = broker_spec(claw.name, claw.org, claw.broker, placeholders)
        broker = docker.Container(
            f"{name}-broker",
            name=f"broker-{claw.name}",
            image=args.broker_image,
            networks_advanced=[docker.ContainerNetworksAdvancedArgs(name=network.name, aliases=[BROKER_ALIAS])],
            dns=CAGE_DNS,  # it resolves nothing outside: its one way out is the cage's Squid
            envs=[
                f"{SEALED_ENV}={seal_credentials(broker_key, claw.name, {n: values[n] for n in sorted(brokered)})}",
                f"{CLAW_ENV}={claw.name}",
                f"{BROKER_ENV}={spec}",
                f"{UPSTREAM_ENV}=http://{PROXY_ALIAS}:{PROXY_PORT}",
                f"HOME={CLAW_HOME}",
            ],
            mounts=[
                docker.ContainerMountArgs(
                    type="bind", source=host_broker_key_dir(claw.name), target=CAGE_KEY_DIR_MOUNT, read_only=True
                ),
                docker.ContainerMountArgs(
                    type="bind", source=host_broker_ca_dir(claw.name), target=CA_MOUNT, read_only=False
                ),
            ],
            working_dir=CLAW_WORKDIR,
            labels=labels(claw, args.host_name, ROLE_BROKER),
            **hardening(args.proxy_uid, BROKER_MEMORY, BROKER_CPUS, BROKER_TMPFS, cgroup_parent, init=True),
            opts=pulumi.ResourceOptions(parent=self, provider=host.provider, depends_on=[limits, state]),
        )
        claw_mounts.append(
            docker.ContainerMountArgs(
                type="bind", source=host_broker_ca_dir(claw.name), target=CA_MOUNT, read_only=True
            )
        )
        env_names = sorted(set(values) - brokered)
        claw_secrets = {n: values[n] for n in env_names} | placeholders
        claw_env = [f"{k}={v}" for k, v in sorted(CA_ENV.items())] + [
            f"{ENV_SECRETS_ENV}={','.join(env_names)}",
            f"{PLACEHOLDERS_ENV}={','.join(sorted(brokered))}",
        ]
        return broker, f"http://{BROKER_ALIAS}:{BROKER_PORT}", claw_secrets, claw_env

    def _host_command(self, name: str, *, create: str, delete: str, stdin: pulumi.Input[str] | None = None, after=()):
        """Run a cage's host-side script where the host is: locally, or over the host's pinned SSH.

        No `update` step: a change re-runs create, which converges. Delete before replace: the state
        is keyed by the claw's name, so a new create must not precede the old delete."""
        opts = pulumi.ResourceOptions(parent=self, delete_before_replace=True, depends_on=[*self._host.ready, *after])
        create, delete = cagehost.shell_command(create), cagehost.shell_command(delete)
        if self._host.connection is None:
            return command.local.Command(name, create=create, delete=delete, stdin=stdin, opts=opts)
        return command.remote.Command(
            name, connection=self._host.connection, create=create, delete=delete, stdin=stdin, opts=opts
        )
