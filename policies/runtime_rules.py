"""The runtime rule (issue 16): which runtime may run a cage's container.

A claw runs under runc (the engine's default: the container names no runtime) or under gVisor (the
engine's runsc), as its config says; the program writes that choice on the claw container as the
clawstaff.runtime label. The pack holds the two together, so a claw marked for gVisor can never be
deployed to run on the host kernel, and no container names a runtime the hosts do not register. Whether
the host registered runsc is its engine's to refuse: Docker fails the create of a container that names
an unregistered runtime, so a gVisor claw cannot silently start under runc either.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from cage_conventions import CONTAINER, LABEL_ROLE, LABEL_RUNTIME, ROLE_CLAW, RUNTIME_INPUTS
from policy_support import field, labels_of, resource_policy

Props = Mapping[str, Any]
Config = Mapping[str, Any]


def check_runtime(props: Props, config: Config) -> Iterator[str]:
    """Only a claw container names a runtime, only one the engines register, and the one its config gave
    it: a claw marked for gVisor never runs under runc (nor the other way round)."""
    labels = labels_of(props)
    runtime = field(props, "runtime")
    runtime = None if runtime in (None, "", "runc") else str(runtime)
    registered = [str(r) for r in config.get("registeredRuntimes", ["runsc"])]
    if runtime is not None and runtime not in registered:
        yield (
            f"`runtime` is {runtime!r}, not a runtime the hosts register ({registered} or unset for runc): "
            "another runtime is another isolation boundary, not the reviewed one."
        )
        return
    if labels.get(LABEL_ROLE) != ROLE_CLAW:
        if runtime is not None:
            yield f"`runtime` is {runtime!r} on a {labels.get(LABEL_ROLE)!r} container: only the claw container names one."
        return
    marked = labels.get(LABEL_RUNTIME, "runc")
    if marked not in RUNTIME_INPUTS:
        yield f"label {LABEL_RUNTIME} is {marked!r}, not one of {list(RUNTIME_INPUTS)}."
        return
    wanted = RUNTIME_INPUTS[marked]
    if runtime != wanted:
        shown = "unset (runc)" if runtime is None else repr(runtime)
        yield (
            f"the claw is marked {LABEL_RUNTIME}={marked} but its `runtime` is {shown}, not "
            f"{'unset (runc)' if wanted is None else repr(wanted)}: it would run outside the boundary its config asks for."
        )


POLICIES = [
    resource_policy(
        "container-runtime-as-marked",
        "Only a claw container names a `runtime`, one of the `registeredRuntimes` config (runsc: gVisor), and it is "
        f"the one its {LABEL_RUNTIME} label says: a claw marked gvisor runs under runsc, one marked runc (or "
        "unmarked) under the engine's default.",
        (CONTAINER,),
        check_runtime,
        {"registeredRuntimes": {"type": "array", "items": {"type": "string"}, "default": ["runsc"]}},
    ),
]
