"""What the Debian archive serves now, as apt sees it, for building and checking the images.

The images are built from whatever the archive serves at build time (main, updates, security), never
from a list of exact versions that the archive may already have dropped: Debian keeps only the newest
version of each package in a suite, so a lock of exact versions breaks the build exactly when a
security update lands. Instead:

- `Archive.update()` runs the host's `apt-get update` in a scratch apt root against the image's
  sources (signatures checked with Debian's archive keyring), and `Archive.state()` reads back the
  archive state it saw: each suite's Release `Date` and the sha256 of its InRelease file.
- `Archive.resolve(roots)` asks apt which packages, at which versions and from which suite, a build of
  those roots installs: mmdebstrap's `essential` variant (every Essential:yes package) plus the roots
  and their dependencies, resolved by apt against an empty dpkg status. The build installs exactly
  that set, from the very index files apt resolved it against (mmdebstrap `--skip=update`), and
  records it; `images/build.py --check` resolves again later and lists what moved.
- `drift(recorded, current)` compares two such sets (pure; security updates are marked).

Standard library and the host's apt only.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SUITE = "trixie"  # Debian 13, the stable release
ARCH = "amd64"
MIRROR = os.environ.get("CLAWCAGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
SECURITY_MIRROR = os.environ.get("CLAWCAGE_DEBIAN_SECURITY_MIRROR", "http://deb.debian.org/debian-security")
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"


def sources(suite: str = SUITE) -> tuple[str, ...]:
    """The one-line sources of an image build: main, updates and security of the suite."""
    return (
        f"deb {MIRROR} {suite} main",
        f"deb {MIRROR} {suite}-updates main",
        f"deb {SECURITY_MIRROR} {suite}-security main",
    )


@dataclass(frozen=True)
class Package:
    version: str
    origin: str  # the archives apt names for the version, e.g. "Debian-Security:13/stable-security"

    @property
    def security(self) -> bool:
        return "security" in self.origin.lower()


@dataclass(frozen=True)
class Moved:
    name: str
    before: str | None  # None: new in the current set
    after: str | None  # None: no longer in the set (or no longer served)
    security: bool

    def describe(self) -> str:
        if self.before is None:
            return f"{self.name}: new, {self.after}"
        if self.after is None:
            return f"{self.name}: {self.before}, no longer installed"
        return f"{self.name}: {self.before} -> {self.after}" + ("  [security]" if self.security else "")


# ------------------------------------------------------------------------------------ pure parsing

# apt-get -s prints one line per package it would install:
#   Inst libc6 (2.41-12+deb13u5 Debian:13.8/stable [amd64])
#   Inst libssl3t64 (3.5.1-1+deb13u1 Debian-Security:13/stable-security [amd64]) []
_INST = re.compile(r"^Inst (?P<name>[a-z0-9][a-z0-9+.-]*)(?::\S+)? \((?P<version>\S+) (?P<origin>.+?) \[[^]]+\]\)")


def parse_simulation(text: str) -> dict[str, Package]:
    """The packages an `apt-get -s install` would install: name -> Package."""
    found: dict[str, Package] = {}
    for line in text.splitlines():
        match = _INST.match(line)
        if match:
            # apt names every archive that serves the version, comma-separated
            found[match["name"]] = Package(match["version"], match["origin"])
    return found


def parse_release(text: str) -> dict[str, str]:
    """The top-level fields of a Release/InRelease file (its signature armour ignored)."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if line.startswith("-----BEGIN PGP SIGNATURE"):
            break
        if line and not line[0].isspace() and ":" in line:
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
    return fields


def drift(recorded: dict[str, str], current: dict[str, Package]) -> list[Moved]:
    """What moved between a recorded set (name -> version) and what the archive serves now."""
    moved = []
    for name in sorted(recorded.keys() | current.keys()):
        before = recorded.get(name)
        now = current.get(name)
        after = now.version if now else None
        if before != after:
            moved.append(Moved(name, before, after, bool(now and now.security)))
    return moved


def deb_build_epoch(deb: Path) -> int:
    """The timestamp of a .deb's ar members: dpkg-deb sets it to the package's SOURCE_DATE_EPOCH
    (its changelog date) when the package is built reproducibly, and to the build time otherwise.
    Either way it is a property of the package's bytes, never of when or where we build."""
    with open(deb, "rb") as f:
        if f.read(8) != b"!<arch>\n":
            raise ValueError(f"{deb} is not a Debian package (no ar header)")
        header = f.read(60)
    if len(header) != 60 or header[58:60] != b"`\n":
        raise ValueError(f"{deb} has a malformed ar member header")
    return int(header[16:28].decode("ascii").strip())


# ---------------------------------------------------------------------------------- the scratch apt


class ArchiveError(RuntimeError):
    pass


class Archive:
    """A scratch apt root (under `work`) that sees only the image sources; the host's apt does the work."""

    def __init__(self, work: Path, suite: str = SUITE) -> None:
        self.root = work
        self.suite = suite
        self.lists = work / "var/lib/apt/lists"

    def _apt_options(self) -> list[str]:
        etc = self.root / "etc/apt"
        return [
            "-o",
            f"Dir={self.root}",
            "-o",
            f"Dir::Etc={etc}",
            "-o",
            f"Dir::State::status={self.root / 'var/lib/dpkg/status'}",
            "-o",
            f"APT::Architecture={ARCH}",
            "-o",
            f"APT::Architectures={ARCH}",
            "-o",
            "Acquire::Languages=none",
            "-o",
            "APT::Install-Recommends=false",
            "-o",
            "APT::Install-Suggests=false",
            "-o",
            "Debug::NoLocking=true",
            # mmdebstrap's own setting: apt must not count itself as essential.
            "-o",
            "pkgCacheGen::ForceEssential=,",
            "-q",
        ]

    def update(self) -> None:
        etc = self.root / "etc/apt"
        for sub in (
            "etc/apt/apt.conf.d",
            "etc/apt/preferences.d",
            "etc/apt/sources.list.d",
            "etc/apt/trusted.gpg.d",
            "var/lib/apt/lists/partial",
            "var/cache/apt/archives/partial",
            "var/lib/dpkg",
            "var/log/apt",
        ):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        (self.root / "var/lib/dpkg/status").write_text("")
        (etc / "sources.list").write_text(
            "".join(line.replace("deb ", f"deb [signed-by={KEYRING}] ", 1) + "\n" for line in sources(self.suite))
        )
        done = subprocess.run(
            ["apt-get", *self._apt_options(), "update"],
            capture_output=True,
            text=True,
            env=dict(os.environ, LC_ALL="C.UTF-8"),
        )
        if done.returncode != 0 or re.search(r"^(E:|W: (GPG|The repository|Failed))", done.stdout + done.stderr, re.M):
            raise ArchiveError(f"apt-get update for {self.suite} failed:\n{(done.stdout + done.stderr)[-3000:]}")

    def state(self) -> list[dict[str, str]]:
        """Each suite's Release Date and the sha256 of the InRelease file apt verified."""
        states = []
        for path in sorted(self.lists.glob("*_InRelease")):
            data = path.read_bytes()
            fields = parse_release(data.decode("utf-8", "replace"))
            states.append(
                {
                    "codename": fields.get("Codename", ""),
                    "label": fields.get("Suite", ""),
                    "date": fields.get("Date", ""),
                    "inrelease_sha256": hashlib.sha256(data).hexdigest(),
                    "file": path.name,
                }
            )
        if len(states) != len(sources(self.suite)):
            raise ArchiveError(
                f"expected {len(sources(self.suite))} InRelease files in {self.lists}, found "
                f"{[s['file'] for s in states]}"
            )
        return states

    def resolve(self, roots: tuple[str, ...]) -> dict[str, Package]:
        """What a build of `roots` installs: the essential set plus the roots' dependency closure."""
        essential = f"?narrow(?architecture({ARCH}),?essential)"
        done = subprocess.run(
            ["apt-get", *self._apt_options(), "-s", "install", essential, *roots],
            capture_output=True,
            text=True,
            env=dict(os.environ, LC_ALL="C.UTF-8"),
        )
        if done.returncode != 0:
            raise ArchiveError(
                f"apt cannot resolve {' '.join(roots)} on {self.suite}:\n{(done.stdout + done.stderr)[-3000:]}"
            )
        found = parse_simulation(done.stdout)
        missing = [r for r in roots if r not in found]
        if missing:
            raise ArchiveError(f"apt's resolution of {self.suite} lacks the roots {missing}")
        return found

    def copy_lists_hook(self) -> str:
        """An mmdebstrap --setup-hook that gives the build exactly the index files resolved against."""
        return (
            f'mkdir -p "$1/var/lib/apt/lists" && cp -a {shlex.quote(str(self.lists))}/. '
            '"$1/var/lib/apt/lists/" && rm -f "$1/var/lib/apt/lists/lock"'
        )

    def remove(self) -> None:
        shutil.rmtree(self.root, ignore_errors=True)
