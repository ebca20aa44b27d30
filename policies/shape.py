"""The vocabulary of the allowlist (policies/allowlist.py): what an input may be, said as data.

Each kind of value is a small class with three duties:

* `problems(value, path, cage)` says why `value` (found at `path`, e.g. `mounts[1].bindOptions`) is not
  allowed, one message per problem; `cage` holds what a template may name (`{claw}`, `{host}`), taken
  from the resource's own labels or facts. A value unknown during preview raises `Unverifiable(path)`
  (the rule fails closed on it);
* `text()` says what is allowed, in the words the allowlist table prints and every violation quotes;
* `refused(good)` gives values outside the allowed set, derived from a compliant value `good`: the
  generated tests set each of them and expect the pack to refuse it.

`Judged(policy, ...)` marks a value another policy of the pack owns (it checks it exactly and reports it
in its own words); the allowlist rules leave it to that policy, so a breach is reported once.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from policy_support import UNKNOWN, Unverifiable

Cage = Mapping[str, str]
PROBE = "clawcage-probe"
# Keys a bridged provider adds to an object of inputs (the names of the defaults it filled in): not inputs.
META_KEYS = frozenset({"__defaults"})


def show(value: Any, limit: int = 80) -> str:
    """A value as a reviewer reads it: JSON, shortened."""
    text = "<unknown during preview>" if value is UNKNOWN else json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


FACTS = ("claw", "host", "piece")  # what a template may name: {claw}, {host}, {piece}
_TEMPLATE = re.compile(r"\{(" + "|".join(FACTS) + r")\}")


def _fill(template: str, cage: Cage, path: str) -> str:
    def fact(match: re.Match[str]) -> str:
        if match.group(1) not in cage:
            raise _NoCage(path, match.group(1))
        return cage[match.group(1)]

    return _TEMPLATE.sub(fact, template)


def _placeholders(template: str) -> str:
    return _TEMPLATE.sub(r"<\1>", template)


class _NoCage(Exception):
    """A template names a fact (the claw, the host) the resource does not show."""

    def __init__(self, path: str, name: str) -> None:
        super().__init__(path)
        self.path, self.name = path, name


def _known(value: Any, path: str) -> Any:
    if value is UNKNOWN:
        raise Unverifiable(path)
    return value


class Value:
    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        raise NotImplementedError

    def text(self) -> str:
        raise NotImplementedError

    def refused(self, good: Any) -> list[Any]:
        raise NotImplementedError

    def check(self, value: Any, path: str, cage: Cage) -> list[str]:
        """problems(), with a template that names a missing fact reported as one problem."""
        try:
            return list(self.problems(value, path, cage))
        except _NoCage as missing:
            return [
                f"`{missing.path}` cannot be checked: the resource does not say which cage it belongs to "
                f"(no valid {missing.name} label or fact)"
            ]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _same(expected: Any, value: Any) -> bool:
    if isinstance(expected, bool) or isinstance(value, bool):
        return value is expected
    if isinstance(expected, (int, float)):
        return _number(value) == float(expected)
    return value == expected


@dataclass(frozen=True)
class Is(Value):
    """Exactly this value (a string may name `{claw}` or `{host}`)."""

    value: Any

    def _expected(self, cage: Cage, path: str) -> Any:
        return _fill(self.value, cage, path) if isinstance(self.value, str) else self.value

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        expected = self._expected(cage, path)
        if not _same(expected, _known(value, path)):
            yield f"`{path}` is {show(value)}, not {show(expected)}"

    def text(self) -> str:
        return show(_placeholders(self.value)) if isinstance(self.value, str) else show(self.value)

    def refused(self, good: Any) -> list[Any]:
        if isinstance(self.value, bool):
            return [not self.value]
        if isinstance(self.value, (int, float)):
            return [self.value + 1000]
        return [f"{good}-{PROBE}" if isinstance(good, str) else PROBE]


@dataclass(frozen=True)
class OneOf(Value):
    values: tuple[Any, ...]

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        if not any(_same(v, _known(value, path)) for v in self.values):
            yield f"`{path}` is {show(value)}, not one of {show(list(self.values))}"

    def text(self) -> str:
        return "one of " + ", ".join(show(v) for v in self.values)

    def refused(self, good: Any) -> list[Any]:
        return [PROBE]


@dataclass(frozen=True)
class Text(Value):
    """A string matching `pattern` whole (it may name `{claw}`/`{host}`, inserted literally)."""

    pattern: str
    says: str
    bad: tuple[Any, ...] = (12345,)

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        value = _known(value, path)
        escaped = {k: re.escape(v) for k, v in cage.items()}
        pattern = _fill(self.pattern, escaped, path)
        if not isinstance(value, str) or re.fullmatch(pattern, value) is None:
            yield f"`{path}` is {show(value)}, not {self.says}"

    def text(self) -> str:
        return self.says

    def refused(self, good: Any) -> list[Any]:
        return list(self.bad)


@dataclass(frozen=True)
class Number(Value):
    low: float
    high: float
    says: str

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        number = _number(_known(value, path))
        if number is None or not self.low <= number <= self.high:
            yield f"`{path}` is {show(value)}, not {self.says}"

    def text(self) -> str:
        return self.says

    def refused(self, good: Any) -> list[Any]:
        return [self.high + 1, "12"]


@dataclass(frozen=True)
class ListOf(Value):
    """A list, every item of one kind."""

    item: Value

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        value = _known(value, path)
        if not isinstance(value, list):
            yield f"`{path}` is {show(value)}, not a list"
            return
        for index, entry in enumerate(value):
            yield from self.item.problems(entry, f"{path}[{index}]", cage)

    def text(self) -> str:
        return f"a list of: {self.item.text()}"

    def refused(self, good: Any) -> list[Any]:
        base = good[0] if isinstance(good, list) and good else None
        return [PROBE] + [[*(good or []), bad] for bad in self.item.refused(base)]


@dataclass(frozen=True)
class Items(Value):
    """A list of exactly these items, each once, in any order (`items=()`: the empty list)."""

    items: tuple[Value, ...]

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        value = _known(value, path)
        if not isinstance(value, list):
            yield f"`{path}` is {show(value)}, not a list"
            return
        left = list(range(len(value)))
        for wanted in self.items:
            match = next((i for i in left if not wanted.check(value[i], f"{path}[{i}]", cage)), None)
            if match is None:
                yield f"`{path}` has no item that is {wanted.text()}"
            else:
                left.remove(match)
        for index in left:
            yield f"`{path}[{index}]` ({show(value[index])}) is an item the allowlist does not name"

    def text(self) -> str:
        if not self.items:
            return "the empty list"
        return "exactly [" + "; ".join(item.text() for item in self.items) + "]"

    def refused(self, good: Any) -> list[Any]:
        good = list(good or [])
        extra = copy.deepcopy(good[0]) if good else PROBE
        found = [[*good, extra]]
        if self.items and good:
            found += [[*good[1:], bad] for bad in self.items[0].refused(good[0])]
        return found


@dataclass(frozen=True)
class SeccompProfile(Value):
    """`seccomp=<JSON profile>`: refuses by default and allows none of `refused` (e.g. io_uring)."""

    refused: tuple[str, ...]

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        value = _known(value, path)
        if not isinstance(value, str) or not value.startswith("seccomp="):
            yield f"`{path}` is {show(value)}, not seccomp=<a JSON profile>"
            return
        try:
            profile = json.loads(value[len("seccomp=") :])
        except ValueError:
            yield f"`{path}` is {show(value)}: its profile is not JSON (unconfined or a file name?)"
            return
        if not isinstance(profile, dict) or not str(profile.get("defaultAction", "")).startswith(
            ("SCMP_ACT_ERRNO", "SCMP_ACT_KILL")
        ):
            yield f"`{path}`'s profile has defaultAction {show(profile.get('defaultAction') if isinstance(profile, dict) else profile)}, not a refusal"
            return
        allowed = {
            name
            for rule in profile.get("syscalls", []) or []
            if isinstance(rule, dict) and rule.get("action") == "SCMP_ACT_ALLOW"
            for name in rule.get("names", []) or []
        }
        for name in sorted(allowed & set(self.refused)):
            yield f"`{path}`'s profile allows {name}"

    def text(self) -> str:
        return f"seccomp=<a JSON profile that refuses by default and allows none of {', '.join(self.refused)}>"

    def refused(self, good: Any) -> list[Any]:
        found: list[Any] = ["seccomp=unconfined", "seccomp=/etc/docker/seccomp.json"]
        if isinstance(good, str) and good.startswith("seccomp="):
            profile = json.loads(good[len("seccomp=") :])
            found.append("seccomp=" + json.dumps({**profile, "defaultAction": "SCMP_ACT_ALLOW"}))
            opened = copy.deepcopy(profile)
            opened.setdefault("syscalls", []).append({"names": [self.refused[0]], "action": "SCMP_ACT_ALLOW"})
            found.append("seccomp=" + json.dumps(opened))
        return found


@dataclass(frozen=True)
class Fields(Value):
    """An object (or map) with only these keys; `required` ones must be there."""

    fields: Mapping[str, Value]
    required: tuple[str, ...] = ()

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        value = _known(value, path)
        if not isinstance(value, Mapping):
            yield f"`{path}` is {show(value)}, not an object"
            return
        for key, entry in value.items():
            where = f"{path}.{key}"
            if entry is None or key in META_KEYS:
                continue
            if key not in self.fields:
                yield f"`{where}` is set ({show(entry)}), which the allowlist does not name"
            else:
                yield from self.fields[key].problems(entry, where, cage)
        for key in self.required:
            if value.get(key) is None:
                yield f"`{path}.{key}` is missing"

    def text(self) -> str:
        parts = [f"{key}{'' if key in self.required else '?'}: {v.text()}" for key, v in self.fields.items()]
        return "{" + "; ".join(parts) + "}" if parts else "{} (nothing)"

    def refused(self, good: Any) -> list[Any]:
        good = dict(good) if isinstance(good, Mapping) else {}
        found: list[Any] = [{**good, PROBE: PROBE}]
        for key, kind in self.fields.items():
            if key in good and not isinstance(kind, Judged):
                found += [{**good, key: bad} for bad in kind.refused(good[key])[:1]]
        return found


@dataclass(frozen=True)
class Pairs(Value):
    """A list of "NAME=value" strings (`envs`) or of {label, value} objects (`labels`): only these names,
    each at most once (`required` ones exactly once); names matching `open_pattern` may take any value."""

    names: Mapping[str, Value]
    style: str  # "env" or "label"
    required: tuple[str, ...] = ()
    open_pattern: str | None = None
    open_says: str = ""

    def _pairs(self, value: Any, path: str) -> Iterator[tuple[str, Any, str]]:
        for index, entry in enumerate(_known(value, path) if isinstance(value, list) else []):
            where = f"{path}[{index}]"
            entry = _known(entry, where)
            if self.style == "env":
                name, sep, text = str(entry).partition("=")
                yield (name, text if sep else None, where)
            elif isinstance(entry, Mapping):
                yield (str(_known(entry.get("label"), where)), entry.get("value"), where)
            else:
                yield ("", entry, where)

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        if not isinstance(_known(value, path), list):
            yield f"`{path}` is {show(value)}, not a list"
            return
        seen: dict[str, int] = {}
        for name, text, _where in self._pairs(value, path):
            seen[name] = seen.get(name, 0) + 1
            if seen[name] == 2:
                yield f"`{path}` sets {name} more than once (the last one wins)"
            if name in self.names:
                yield from self.names[name].problems(text, f"{path} {name}", cage)
            elif not (self.open_pattern and re.fullmatch(self.open_pattern, name)):
                yield f"`{path}` sets {name or show(text)}, a name the allowlist does not name"
        for name in self.required:
            if name not in seen:
                yield f"`{path}` lacks {name}"

    def text(self) -> str:
        parts = [f"{name}{'' if name in self.required else '?'}={v.text()}" for name, v in self.names.items()]
        if self.open_pattern:
            parts.append(self.open_says)
        return "only " + "; ".join(parts)

    def refused(self, good: Any) -> list[Any]:
        good = list(good or [])
        probe = "NO_PROXY=*" if self.style == "env" else {"label": PROBE, "value": "1"}
        return [[*good, probe], [*good, copy.deepcopy(good[-1])] if good else PROBE]


@dataclass(frozen=True)
class Judged(Value):
    """A value that policy `policy` owns: the allowlist names it, that policy checks it exactly."""

    policy: str
    says: str
    bad: tuple[Any, ...] = ()

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        return iter(())

    def text(self) -> str:
        return f"{self.says} (checked by {self.policy})"

    def refused(self, good: Any) -> list[Any]:
        return list(self.bad)


def owners(value: Value) -> set[str]:
    """The policies that a value (or any part of it) leaves its checking to."""
    if isinstance(value, Judged):
        return {value.policy}
    parts: Sequence[Value] = ()
    if isinstance(value, Fields):
        parts = list(value.fields.values())
    elif isinstance(value, Pairs):
        parts = list(value.names.values())
    elif isinstance(value, Items):
        parts = list(value.items)
    elif isinstance(value, ListOf):
        parts = [value.item]
    return set().union(*(owners(p) for p in parts)) if parts else set()


@dataclass(frozen=True)
class Script(Value):
    """A cage piece's rendered `/bin/bash -c '<script>'`: its facts line names `<piece>-<phase>` and the
    cage (`{piece}` and `{claw}` come from the command's create script)."""

    phase: str
    bad: tuple[Any, ...] = ("/bin/sh -c 'true'",)

    def problems(self, value: Any, path: str, cage: Cage) -> Iterator[str]:
        from limits_rules import bash_script, script_facts  # imported late: limits_rules needs the whole pack

        script = bash_script(_known(value, path))
        if script is None:
            yield f"`{path}` is not `/bin/bash -c '<script>'`"
            return
        facts, problem = script_facts(script)
        if facts is None:
            yield f"`{path}` {problem}"
            return
        expected = (_fill("{piece}", cage, path) + "-" + self.phase, _fill("{claw}", cage, path))
        if (facts.get("script"), facts.get("claw")) != expected:
            yield (
                f"`{path}`'s facts line names {show(facts.get('script'))} of cage {show(facts.get('claw'))}, "
                f"not {show(expected[0])} of cage {show(expected[1])}"
            )

    def text(self) -> str:
        return f"/bin/bash -c '<the <piece>-{self.phase} script of the same cage>' (read from its facts line)"

    def refused(self, good: Any) -> list[Any]:
        return list(self.bad)
