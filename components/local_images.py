"""Images built on this machine, named in a stack file by what they are, not by an ID.

A locally built image has no registry digest; its image ID is its pin. But the ID changes whenever
Debian publishes an update to a package in it (images/build.py builds from what the archive serves),
so no committed file may hold one. A stack whose hosts run this machine's engine names its images
`built:<image>` (`built:claw-runtime`, `built:egress-proxy`), and the config resolves that, when it
is read, to the ID the last `make images` recorded in build/images/images.json (or the file named by
CLAWSTAFF_IMAGES_RECORD). Production stacks pin registry digests (`name@sha256:...`) instead.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

PREFIX = "built:"
IMAGES = ("claw-runtime", "egress-proxy", "egress-broker")
RECORD_ENV = "CLAWSTAFF_IMAGES_RECORD"
DEFAULT_RECORD = Path(__file__).resolve().parent.parent / "build" / "images" / "images.json"
_IMAGE_ID = re.compile(r"^sha256:[0-9a-f]{64}\Z")


class NotBuilt(LookupError):
    pass


def record_path() -> Path:
    return Path(os.environ.get(RECORD_ENV) or DEFAULT_RECORD)


def shown_path(path: Path) -> str:
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def built_image_id(image: str) -> str:
    """The image ID of the last recorded build of `image`; NotBuilt says why there is none."""
    if image not in IMAGES:
        raise NotBuilt(f"names no image this repository builds (images/build.py builds {', '.join(IMAGES)})")
    path = record_path()
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise NotBuilt(
            f"names a local build, but {shown_path(path)} does not exist: run `make images` "
            "(as root) to build the images and record their IDs"
        ) from None
    except (OSError, ValueError) as error:
        raise NotBuilt(
            f"names a local build, but {shown_path(path)} cannot be read ({error}): run `make images` again"
        ) from None
    image_id = record.get(image, {}).get("id") if isinstance(record, dict) else None
    if not isinstance(image_id, str) or not _IMAGE_ID.match(image_id):
        raise NotBuilt(
            f"names a local build, but {shown_path(path)} records no build of {image}: run `make images` (as root)"
        )
    return image_id
