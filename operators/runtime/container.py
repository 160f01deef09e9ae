"""What the container runtimes (pods: kubernetes.py; Docker: docker.py) share: the step images,
pinned, per-step resources and environment, from the run's settings."""
from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, ClassVar

from .base import StepRuntime
from .catalogue import IMAGES, STEPS, StepSpec

if TYPE_CHECKING:
    from ..pipeline.config import Settings

# A tag other than "latest", or a digest: a retry or a backfill runs the same code.
PINNED = re.compile(r"^[^\s@]+(:(?!latest$)[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})$")


def image_setting(image: str) -> str:
    return f"criteo_image_{image}"


# Needed only by the runs that use them (trainer=hugectr): checked when such a step starts.
OPTIONAL_IMAGES = ("hugectr",)


def step_images(settings: Settings, problems: list[str]) -> dict[str, str]:
    """Each image's reference from its setting; what is missing or unpinned is added to `problems`
    (an optional image only when it is set)."""
    images = {name: settings.value(image_setting(name)).strip() for name in IMAGES}
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


def step_env(settings: Settings, name: str, problems: list[str]) -> tuple[tuple[str, str], ...]:
    """The NAME=value pairs of setting `name` (comma-separated); malformed ones go to `problems`."""
    env = []
    for item in filter(None, (p.strip() for p in settings.value(name).split(","))):
        key, sep, value = item.partition("=")
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            problems.append(f"{name}: {item!r} is not NAME=value")
        env.append((key, value))
    return tuple(env)


RESOURCES_SETTING = "criteo_step_resources"


def step_resources(settings: Settings, problems: list[str]) -> dict[str, dict[str, str]]:
    """The per-step cpu/memory overrides (criteo_step_resources); what is wrong goes to `problems`."""
    raw = settings.value(RESOURCES_SETTING).strip()
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError as exc:
        problems.append(f"{RESOURCES_SETTING} is not JSON ({exc}): expected e.g. "
                        f'{{"preprocess": {{"memory": "48Gi"}}}}')
        return {}
    if not isinstance(value, dict):
        problems.append(f"{RESOURCES_SETTING}: expected a JSON object of steps, got {raw!r}")
        return {}
    found = {}
    for step, res in value.items():
        if step not in STEPS:
            problems.append(f"{RESOURCES_SETTING}: unknown step {step!r}; known: {sorted(STEPS)}")
        elif not isinstance(res, dict) or set(res) - {"cpu", "memory"}:
            problems.append(f"{RESOURCES_SETTING}[{step!r}]: expected {{\"cpu\": ..., \"memory\": ...}}, got {res!r}")
        else:
            try:
                STEPS[step].resources(1, res)
                found[step] = {k: str(v) for k, v in res.items()}
            except ValueError as exc:
                problems.append(f"{RESOURCES_SETTING}: {exc}")
    return found


def out_of_memory(spec: StepSpec, code: int | None, limit: str | None, summary: str) -> Exception:
    """The task's exception for a step the kernel's OOM killer stopped at its memory limit: no retry
    (the same input fails the same way), naming the limit and the setting that raises it."""
    from airflow.sdk.exceptions import AirflowFailException

    return AirflowFailException(
        f"step {spec.name} was killed (OOMKilled, exit {code}): it ran out of memory under its limit of {limit} "
        f"(per GPU for a GPU step: the catalogue's {spec.memory}, or {RESOURCES_SETTING}). Raise "
        f"{RESOURCES_SETTING}, e.g. {{\"{spec.name}\": {{\"memory\": \"...\"}}}}, or give the step a smaller "
        f"input; no retry.\n{summary}")


class ContainerRuntime(StepRuntime):
    """What the container runtimes share: their own settings (`config_class`: PodSettings,
    DockerSettings), built from the run's and checked together, and the provider's operator of the
    step running now, stopped when the task is killed."""

    config_class: ClassVar[type]

    def __init__(self, settings: Settings):
        super().__init__(settings)
        self.config = self.config_class.of(settings)
        self._operator = None

    @classmethod
    def problems(cls, settings: Settings) -> list[str]:
        return cls.config_class.build(settings)[1]

    def kill(self) -> None:
        if self._operator is not None:
            self._operator.on_kill()
