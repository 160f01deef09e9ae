"""The runtime seam: a step (catalogue.py) runs as a local process or as a pod, by configuration.

The Airflow Variable `criteo_runtime` picks the runtime at run time; DAG files never change:

- local (embedded default, local.py): a subprocess in the image's local virtual environment;
- kubernetes (kubernetes.py): the provider's KubernetesPodOperator (GKEStartPodOperator where a
  GKE cluster is named), driven by CriteoStepOperator so that it can defer.

Either way the step's result manifest (criteo_kernel.result) is what the task returns.
"""
from __future__ import annotations

from .base import StepFailed

__all__ = ["RUNTIMES", "StepFailed", "runtime_for"]

RUNTIMES = ("local", "kubernetes")


def runtime_for(name: str):
    """The in-process runtime the setting criteo_runtime names (pods are operators: step.py)."""
    if name == "local":
        from .local import LocalProcessRuntime

        return LocalProcessRuntime()
    if name == "kubernetes":
        raise ValueError("criteo_runtime=kubernetes runs steps as KubernetesPodOperator pods, through "
                         "CriteoStepOperator, not in this process")
    raise ValueError(f"unknown criteo_runtime {name!r}: expected one of {RUNTIMES}")
