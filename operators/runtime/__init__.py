"""The runtime seam: a step (catalogue.py) runs where the setting criteo_runtime says; DAG files
never change.

- local (embedded default, local.py): a subprocess in the image's local virtual environment;
- kubernetes (kubernetes.py): the provider's KubernetesPodOperator (GKEStartPodOperator where a
  GKE cluster is named), deferring to the triggerer while the pod runs;
- docker (docker.py): the Docker provider's DockerOperator, each step in its own image on one
  Docker host (the compose stack).

Each is a StepRuntime (base.py) ending in one StepOutcome; the step's result manifest
(criteo_kernel.result) is what the task returns. The container runtimes import their providers,
so they are loaded only when a run uses them.
"""
from __future__ import annotations

import importlib

from .base import StepFailed, StepOutcome, StepRuntime

__all__ = ["RUNTIMES", "StepFailed", "StepOutcome", "StepRuntime", "problems", "runtime_class"]

RUNTIMES = {
    "local": "operators.runtime.local:LocalProcessRuntime",
    "kubernetes": "operators.runtime.kubernetes:PodRuntime",
    "docker": "operators.runtime.docker:DockerRuntime",
}


def runtime_class(name: str) -> type[StepRuntime]:
    """The StepRuntime criteo_runtime names."""
    if name not in RUNTIMES:
        raise ValueError(f"criteo_runtime={name!r}: expected one of {tuple(RUNTIMES)}")
    module, _, cls = RUNTIMES[name].partition(":")
    return getattr(importlib.import_module(module), cls)


def problems(settings) -> list[str]:
    """Every problem of a run's settings, each naming the setting: the registry's, then those of the
    runtime criteo_runtime names (its images, pod or Docker settings). The run's first task fails
    on any, before a step starts."""
    bad = settings.problems()
    if bad:
        return bad
    if settings.runtime.name not in RUNTIMES:
        return [f"criteo_runtime={settings.runtime.name!r}: expected one of {tuple(RUNTIMES)}"]
    return runtime_class(settings.runtime.name).problems(settings)
