"""The runtime of a claw (runc or gVisor): the config keys, where placement may put a gVisor claw, what its
host is given (runsc installed and registered) and what its container says. The proof that gVisor holds is
on the VM host (tests/vm/test_vm_gvisor.py)."""

from __future__ import annotations

import json

import pytest

from components import hostscripts, runtimes
from components.config import ConfigError, parse_stack_config
from components.hostconfig import daemon_config, render_bootstrap_script, render_cloud_init
from components.hostkeys import derive_first_contact_key
from components.model import Capacity, Claw, Host, cage_demand
from components.placement import PlacementError, place
from components.units import GiB, MiB
from tests.unit.test_config import DELETE, OPERATOR_KEY, SECRET_KEYS, edited, local_raw, prod_raw


def parsed(raw):
    return parse_stack_config(raw, stack="prod", secret_keys=SECRET_KEYS)


def error_of(raw) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        parsed(raw)
    message = str(caught.value)
    assert "TOPSECRET" not in message and "\n" not in message
    return caught.value


# --- the keys --------------------------------------------------------------------------------------


def test_a_claw_runs_under_runc_unless_its_config_or_the_stack_says_otherwise():
    config = parsed(prod_raw())
    assert {c.runtime for c in config.claws} == {"runc"}
    config = parsed(edited(prod_raw(), ("claws[2].runtime", "gvisor")))
    assert {c.name: c.runtime for c in config.claws} == {
        "acme-support": "runc", "globex-triage": "runc", "initech-oncall": "gvisor"
    }  # fmt: skip
    # The stack's default reaches every claw without a key; a claw's own key wins.
    config = parsed(edited(prod_raw(), ("runtime", "gvisor"), ("claws[0].runtime", "runc")))
    assert {c.name: c.runtime for c in config.claws} == {
        "acme-support": "runc", "globex-triage": "gvisor", "initech-oncall": "gvisor"
    }  # fmt: skip


@pytest.mark.parametrize(("path", "key"), [("claws[1].runtime", "clawstaff:claws[1].runtime"),
                                           ("runtime", "clawstaff:runtime")])  # fmt: skip
def test_an_unknown_runtime_names_the_key_the_value_and_the_runtimes(path, key):
    error = error_of(edited(prod_raw(), (path, "kata")))
    message = str(error)
    assert error.key == key, message
    assert f'{key} = "kata": not a runtime the program provisions' in message
    assert "runc" in message and "gvisor" in message


def test_a_gvisor_claw_pinned_to_a_host_that_cannot_run_it_is_refused():
    raw = edited(prod_raw(), ("hosts[1].image", "debian-12"), ("claws[1].runtime", "gvisor"))
    error = error_of(raw)
    message = str(error)
    assert error.key == "clawstaff:claws[1].runtime", message
    assert "pinned to hel1-metal-01 (hosts[1]), which cannot run it" in message
    assert "gVisor runs on debian-13 hosts only, not debian-12" in message


def test_a_gvisor_claw_in_a_stack_without_a_gvisor_host_is_refused():
    error = error_of(edited(local_raw(), ("runtime", "gvisor")))
    message = str(error)
    assert error.key == "clawstaff:runtime", message
    assert "which no host of this stack runs" in message
    assert "a local host runs this machine's engine, which registers no gVisor" in message


# --- placement --------------------------------------------------------------------------------------


def _host(name: str, image: str, kind: str = "cloud") -> Host:
    return Host(name, kind, Capacity(cpus=8, memory=32 * GiB, disk=200 * GiB), server_type="ccx33",  # type: ignore[arg-type]
                location="fsn1", image=image)  # fmt: skip


def _claw(name: str, runtime: str, host: str | None = None) -> Claw:
    return Claw(name=name, org="acme", image="img", cpus=1, memory=512 * MiB, pids=64, tmpfs=16 * MiB,  # type: ignore[arg-type]
                volume=None, egress=(), secrets=(), host=host, runtime=runtime)  # fmt: skip


def test_placement_puts_gvisor_claws_only_on_hosts_that_run_gvisor():
    hosts = [_host("old-01", "debian-12"), _host("new-01", "debian-13"), _host("old-02", "debian-12")]
    claws = [_claw(f"claw-{i}", "gvisor" if i % 2 else "runc") for i in range(8)]
    placed = place(hosts, claws).claws
    assert {placed[c.name] for c in claws if c.runtime == "gvisor"} == {"new-01"}
    assert len({placed[c.name] for c in claws if c.runtime == "runc"}) > 1  # runc claws still spread
    assert cage_demand(claws[1]).runtime == "gvisor"


def test_placement_says_when_no_host_can_run_a_gvisor_claw():
    with pytest.raises(PlacementError) as caught:
        place([_host("old-01", "debian-12")], [_claw("sandboxed", "gvisor")])
    assert "sandboxed" in str(caught.value)
    assert "cannot run gvisor (gVisor runs on debian-13 hosts only, not debian-12)" in str(caught.value)


def test_a_gvisor_claw_locked_to_a_host_that_can_no_longer_run_it_moves():
    hosts = [_host("old-01", "debian-12"), _host("new-01", "debian-13")]
    placed = place(hosts, [_claw("sandboxed", "gvisor")], lock={"sandboxed": "old-01"}).claws
    assert placed == {"sandboxed": "new-01"}


# --- the host ---------------------------------------------------------------------------------------


def test_runsc_is_registered_only_on_a_host_that_holds_a_gvisor_claw():
    assert "runtimes" not in daemon_config()
    registered = daemon_config(runtimes=("runc", "gvisor"))["runtimes"]
    assert registered == {
        "runsc": {
            "path": "/usr/bin/runsc",
            "runtimeArgs": ["--platform=systrap", "--network=host", "--oci-seccomp", "--systemd-cgroup"],
        }
    }
    # The engine's default stays runc: a container that names no runtime never runs under gVisor by accident.
    assert "default-runtime" not in daemon_config(runtimes=("runc", "gvisor"))
    assert daemon_config(runtimes=("gvisor",), cgroup_driver="cgroupfs")["runtimes"]["runsc"]["runtimeArgs"] == [
        "--platform=systrap", "--network=host", "--oci-seccomp"
    ]  # fmt: skip


def _bootstrap(**kw) -> str:
    return render_bootstrap_script(host_name="fsn1-cage-01", ssh_authorized_keys=[OPERATOR_KEY],
                                   ssh_allowed_cidrs=["203.0.113.0/24"], **kw)  # fmt: skip


def _header(script: str, name: str) -> str:
    return hostscripts.header_variables(script)[name]


def test_the_bootstrap_installs_runsc_only_where_a_gvisor_claw_runs():
    plain, gvisor = _bootstrap(), _bootstrap(runtimes=("runc", "gvisor"))
    assert _header(plain, "RUNSC_PACKAGE") == ""
    assert _header(gvisor, "RUNSC_PACKAGE") == "runsc"
    assert json.loads(_header(gvisor, "DAEMON_JSON"))["runtimes"]["runsc"]["path"] == runtimes.RUNSC_PATH
    assert "runtimes" not in json.loads(_header(plain, "DAEMON_JSON"))
    with pytest.raises(ValueError, match="gVisor runs on debian-13 hosts only, not debian-12"):
        _bootstrap(runtimes=("gvisor",), debian="debian-12")
    # A cloud host's user-data carries the same bootstrap.
    user_data = render_cloud_init(host_name="fsn1-cage-01", ssh_authorized_keys=[OPERATOR_KEY],
                                  ssh_allowed_cidrs=["203.0.113.0/24"], runtimes=("runc", "gvisor"),
                                  first_contact_key=derive_first_contact_key("k" * 40, "fsn1-cage-01"))  # fmt: skip
    assert "readonly RUNSC_PACKAGE=runsc" in user_data


def test_host_runtimes_follow_kind_and_image():
    assert runtimes.host_runtimes("cloud", "debian-13") == ("runc", "gvisor")
    assert runtimes.host_runtimes("dedicated", "debian-13") == ("runc", "gvisor")
    assert runtimes.host_runtimes("cloud", "debian-12") == ("runc",)
    assert runtimes.host_runtimes("local", None) == ("runc",)
    assert runtimes.why_not("cloud", "debian-13", "gvisor") == ""
    with pytest.raises(ValueError, match="unknown runtime 'kata'"):
        runtimes.docker_runtime("kata")


def test_the_stack_default_is_runc_and_a_deleted_key_falls_back_to_it():
    config = parsed(edited(prod_raw(), ("runtime", "gvisor"), ("runtime", DELETE)))
    assert {c.runtime for c in config.claws} == {"runc"}
