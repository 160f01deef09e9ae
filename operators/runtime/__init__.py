"""The runtime seam: a step (catalogue.py) runs as a local process or as a pod, by configuration.

The Airflow Variable `criteo_runtime` picks the runtime at run time; DAG files never change:

- local (embedded default, local.py): a subprocess in the image's local virtual environment;
- kubernetes (kubernetes.py): the provider's KubernetesPodOperator (GKEStartPodOperator where a
  GKE cluster is named), driven by CriteoStepOperator so that it can defer;
- docker (docker.py): the Docker provider's DockerOperator, each step in its own image on one
  Docker host (the compose stack).

Either way the step's result manifest (criteo_kernel.result) is what the task returns.
"""
from __future__ import annotations

from .base import StepFailed

__all__ = ["RUNTIMES", "StepFailed", "runtime_for"]

RUNTIMES = ("local", "kubernetes", "docker")


def runtime_for(name: str):
    """The in-process runtime the setting criteo_runtime names (pods are operators: step.py)."""
    if name == "local":
        from .local import LocalProcessRuntime

        return LocalProcessRuntime()
    if name in ("kubernetes", "docker"):
        raise ValueError(f"criteo_runtime={name} runs steps as containers, through CriteoStepOperator, "
                         f"not in this process")
    raise ValueError(f"unknown criteo_runtime {name!r}: expected one of {RUNTIMES}")
