"""The host-side scripts, as files, and the one function that renders the text a command runs.

Every script a host runs (the cage's limits, key, proxy config and volume create/delete pairs, the
bootstrap, the host-key install, the audit sink's bootstrap and certificate install) is a bash file in
this folder, linted by shellcheck; the fscrypt helper the volume scripts call is the Python file
`fscrypt.py`, linted by ruff. Functions several scripts share are in `lib/`; LIBRARIES says which
script uses which. The files the bootstraps install (systemd units, apt and sshd drop-ins, the nftables
rulesets) are in `files/`, read by `host_file`. components/cagehost.py, components/hostconfig.py and
components/sinkconfig.py validate their arguments and call `render_script`; nothing builds shell.

`render_script(name, title=..., facts=..., **variables)` returns, in this order:

    #!/bin/bash
    # clawstaff <title>: rendered from components/hostscripts/<name>; safe to run again.
    set -euo pipefail
    # clawcage-facts: {"script": "<name without .sh>", ...facts}
    NAME=<shlex.quote(value)>           (one line per variable, in the order given; `readonly NAME=...`
    ...                                  with readonly=True)
    <each of LIBRARIES[name], verbatim>
    <the file `name`, verbatim>

The facts line is one JSON object (sorted keys) that tools and the policy pack read instead of parsing
shell: `script_facts(text)` here, and the pack's own copy in policies/stack_rules.py. Variable names are
upper case and never a name bash or the environment gives a meaning to; values are strings or integers,
always shell-quoted. The header is the only part that varies between two renders of one script.
"""

from __future__ import annotations

import json
import re
import shlex
import string
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from typing import Any

FOLDER = Path(__file__).resolve().parent
SOURCE_DIR = "components/hostscripts"  # how the header names the folder (relative to the repository)
SHEBANG = "#!/bin/bash"
STRICT = "set -euo pipefail"
FACTS_PREFIX = "# clawcage-facts: "
FSCRYPT_HELPER = "fscrypt.py"

# The library files each script is rendered with, before its own body.
_CAGE = ("lib/cage-common.sh",)
LIBRARIES: dict[str, tuple[str, ...]] = {
    "limits-create.sh": (*_CAGE, "lib/cgroup.sh"),
    "limits-delete.sh": (*_CAGE, "lib/cgroup.sh"),
    "key-create.sh": (*_CAGE, "lib/host-id.sh", "lib/read-secret.sh"),
    "key-delete.sh": _CAGE,
    "broker-state-create.sh": (*_CAGE, "lib/host-id.sh", "lib/read-secret.sh"),
    "broker-state-delete.sh": _CAGE,
    "volume-create.sh": (*_CAGE, "lib/volume-common.sh", "lib/host-id.sh", "lib/read-secret.sh"),
    "volume-delete.sh": (*_CAGE, "lib/volume-common.sh"),
    "proxy-config-create.sh": _CAGE,
    "proxy-config-delete.sh": _CAGE,
    "audit-create.sh": (*_CAGE, "lib/host-id.sh", "lib/audit.sh"),
    "audit-delete.sh": (*_CAGE, "lib/audit.sh"),
    "cage-state.sh": (),
    "bootstrap.sh": ("lib/host-common.sh",),
    "sink-bootstrap.sh": ("lib/host-common.sh", "lib/sink-units.sh"),
    "sink-certs-install.sh": ("lib/host-common.sh", "lib/sink-units.sh"),
    "host-key-install.sh": (),
}

_VARIABLE = re.compile(r"[A-Z][A-Z0-9_]*")
# Names bash or the programs it starts give a meaning to: a header must never set one.
_RESERVED = frozenset(
    {
        "PATH",
        "IFS",
        "HOME",
        "SHELL",
        "SHELLOPTS",
        "ENV",
        "CDPATH",
        "GLOBIGNORE",
        "PS1",
        "PS2",
        "PS4",
        "UID",
        "EUID",
        "PPID",
        "PWD",
        "OLDPWD",
        "RANDOM",
        "SECONDS",
        "LINENO",
        "HOSTNAME",
        "TMPDIR",
        "LANG",
        "LC_ALL",
        "LD_PRELOAD",
        "LD_LIBRARY_PATH",
        "PYTHONPATH",
        "PYTHONHOME",
        "PYTHONSTARTUP",
        "OPTIND",
        "OPTARG",
        "REPLY",
        "PIPESTATUS",
        "FUNCNAME",
        "GROUPS",
        "DEBIAN_FRONTEND",
    }
)


@cache
def source(name: str) -> str:
    """The text of one file of this folder (a script, a library or the fscrypt helper), verbatim."""
    path = (FOLDER / name).resolve()
    if FOLDER not in path.parents or not path.is_file():
        raise ValueError(f"no host script {name!r} in {SOURCE_DIR}")
    text = path.read_text(encoding="utf-8")
    if not text.endswith("\n"):
        raise ValueError(f"{SOURCE_DIR}/{name} does not end with a newline")
    return text


def scripts() -> list[str]:
    """Every bash file of the folder (scripts and libraries), relative to it: what shellcheck lints."""
    return sorted(str(p.relative_to(FOLDER)) for p in FOLDER.rglob("*.sh"))


def fscrypt_helper() -> str:
    """The fscrypt helper's text, as the volume scripts carry it in FSCRYPT_PY."""
    return source(FSCRYPT_HELPER)


def host_file(name: str, **values: str) -> str:
    """A file the bootstrap installs (`files/<name>`: units, drop-ins, the nftables ruleset), verbatim;
    with `values`, its `${name}` placeholders filled in (string.Template, every one required)."""
    text = source(f"files/{name}")
    return string.Template(text).substitute(values) if values else text


def _header_value(name: str, value: Any) -> str:
    if not isinstance(name, str) or not _VARIABLE.fullmatch(name) or name in _RESERVED or name.startswith("BASH"):
        raise ValueError(
            f"{name!r} is not a header variable name (upper case, not one bash or the environment gives a meaning to)"
        )
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise ValueError(f"header variable {name} must be a string or an integer, got {value!r}")
    text = str(value)
    if "\x00" in text:
        raise ValueError(f"header variable {name} contains a NUL byte")
    return shlex.quote(text)


def facts_line(script: str, facts: Mapping[str, Any] | None = None) -> str:
    """The machine-readable line: the script's name (without .sh) and the facts, as sorted JSON."""
    document = {"script": script, **dict(facts or {})}
    if set(facts or {}) & {"script"}:
        raise ValueError("facts may not set `script`: the renderer names the script")
    return FACTS_PREFIX + json.dumps(document, sort_keys=True, ensure_ascii=True, allow_nan=False)


def render_script(
    name: str, *, title: str, facts: Mapping[str, Any] | None = None, readonly: bool = False, **variables: str | int
) -> str:
    """The complete text of host script `name`: the fixed header, its variables, then the files.

    `title` ends up in the second line (`# clawstaff <title>: ...`); `facts` in the JSON facts line.
    Callers validate what they pass (names, sizes): the header quotes every value anyway.
    """
    if name not in LIBRARIES:
        raise ValueError(f"{name!r} is not a host script (known: {', '.join(sorted(LIBRARIES))})")
    if not isinstance(title, str) or not title or not title.isprintable():
        raise ValueError(f"script title {title!r} must be one printable line")
    assign = "readonly " if readonly else ""
    lines = [
        SHEBANG,
        f"# clawstaff {title}: rendered from {SOURCE_DIR}/{name}; safe to run again.",
        STRICT,
        facts_line(name.removesuffix(".sh"), facts),
    ]
    lines += [f"{assign}{var}={_header_value(var, value)}" for var, value in variables.items()]
    body = "".join(source(part) for part in (*LIBRARIES[name], name))
    return "\n".join(lines) + "\n" + body


def script_facts(text: str) -> dict[str, Any]:
    """The facts a rendered script carries (its one facts line, parsed); ValueError if it has none."""
    found = [line[len(FACTS_PREFIX) :] for line in text.splitlines() if line.startswith(FACTS_PREFIX)]
    if len(found) != 1:
        raise ValueError(f"the script carries {len(found)} facts lines, not one")
    facts = json.loads(found[0])
    if not isinstance(facts, dict):
        raise ValueError("the facts line is not a JSON object")
    return facts


def header_variables(text: str) -> dict[str, str]:
    """The variables a rendered script's header sets, unquoted (for tests and tools; bash reads them)."""
    values: dict[str, str] = {}
    lines = text.splitlines(keepends=True)[4:]
    index = 0
    while index < len(lines):
        var, sep, quoted = lines[index].removeprefix("readonly ").partition("=")
        if not sep or not _VARIABLE.fullmatch(var):
            break
        while True:  # a quoted value may span lines (a file the script installs)
            try:
                words = shlex.split(quoted)
                break
            except ValueError:
                index += 1
                if index == len(lines):
                    raise ValueError(f"the value of {var} is never closed") from None
                quoted += lines[index]
        if len(words) > 1:
            raise ValueError(f"header variable {var} is not assigned one word")
        values[var] = words[0] if words else ""
        index += 1
    return values
