"""The VM host tier: a Debian 13 VM (systemd, cgroup v2, Debian's docker.io) booted under QEMU/TCG
with the user-data the program renders, then provisioned over SSH the way `pulumi up` provisions a
new cloud host (tools/vm.py, tools/vmhost.py). Outside CI a missing tool or a non-root run skips;
in CI (CI=true) it fails. The VM is booted once per session and stopped at the end
(CLAWSTAFF_VM_KEEP=1 leaves it running for a look: `python -m tools.vm ssh ...`; outside CI,
CLAWSTAFF_VM_REUSE=1 runs the tests against a VM that `python -m tools.vm up` left running).
"""

from __future__ import annotations

import os
import shutil

import pytest

from tests.conftest import IN_CI
from tools import vm, vmhost

NEEDED = ("qemu-system-x86_64", "mmdebstrap", "mkfs.ext4", "nft", "ssh", "ssh-keygen", "apt-cacher-ng")


def _unavailable(reason: str):
    if IN_CI:
        pytest.fail(f"the VM tier cannot run: {reason} (.ci/run must provide it)")
    pytest.skip(f"the VM tier cannot run here: {reason}")


@pytest.fixture(scope="session")
def vm_host():
    """(the host as the program renders it, the VM, what provisioning printed)."""
    if os.geteuid() != 0:
        _unavailable("it needs root (tap device, nftables, mmdebstrap)")
    missing = [t for t in NEEDED if shutil.which(t) is None]
    if missing:
        _unavailable(f"missing {', '.join(missing)}")
    host = vmhost.rendered()
    running = vm.Vm.load()
    if os.environ.get("CLAWSTAFF_VM_REUSE") == "1" and running and running.alive() and not IN_CI:
        # Development only: the VM `python -m tools.vm up` left running (already provisioned).
        yield host, running, vm.wait_for_cloud_init(running), {}
        return
    machine = vm.boot(host.user_data, host.first_contact_public)
    try:
        status = vm.wait_for_cloud_init(machine)
        logs = vmhost.provision(host, machine) if status.get("status") == "done" else {}
        yield host, machine, status, logs
    finally:
        if os.environ.get("CLAWSTAFF_VM_KEEP") != "1":
            vm.down()
