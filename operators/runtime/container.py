"""What the container runtimes (pods: kubernetes.py; Docker: docker.py) share: the step images,
pinned, from settings; and the result contract read back from a container's log."""
from __future__ import annotations

import json
import re

from criteo_kernel.result import RESULT_LINE

from ..pipeline.config import setting
from .catalogue import IMAGES

# A tag other than "latest", or a digest: a retry or a backfill runs the same code.
PINNED = re.compile(r"^[^\s@]+(:(?!latest$)[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")


def image_setting(image: str) -> str:
    return f"criteo_image_{image}"


# Needed only by the runs that use them (trainer=hugectr): checked when such a step starts.
OPTIONAL_IMAGES = ("hugectr",)


def step_images(problems: list[str]) -> dict[str, str]:
    """Each image's reference from its setting; what is missing or unpinned is added to `problems`
    (an optional image only when it is set)."""
    images = {name: setting(image_setting(name)) for name in IMAGES}
    for name, ref in images.items():
        if not ref and name in OPTIONAL_IMAGES:
            continue
        if not ref:
            problems.append(f"{image_setting(name)} is not set (the {name} image, pinned by tag or digest)")
        elif not PINNED.match(ref):
            problems.append(f"{image_setting(name)}={ref!r} is not pinned: give a tag other than 'latest' or "
                            f"an @sha256: digest")
    return images


def unset_image(step_name: str, image: str, images: dict[str, str]) -> str | None:
    """Why a step cannot start when the image it runs in is not set (an optional one), else None."""
    if images.get(image):
        return None
    return f"step {step_name} runs in the {image} image: set {image_setting(image)} (pinned by tag or digest)"


def result_from_log(text: str) -> dict | None:
    """The manifest a step printed as `STEP_RESULT {...}` (the last one), or None."""
    for line in reversed(text.splitlines()):
        head, sep, rest = line.partition(RESULT_LINE)
        # tolerate a runtime's timestamp prefix before the marker
        if sep and (not head or head.endswith(" ")):
            try:
                return json.loads(rest)
            except json.JSONDecodeError:
                return None
    return None


def step_env(name: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """The NAME=value pairs of setting `name` (comma-separated); malformed ones go to `problems`."""
    env = []
    for item in filter(None, (p.strip() for p in setting(name).split(","))):
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            problems.append(f"{name}: {item!r} is not NAME=value")
        env.append((key, value))
    return tuple(env)

