"""The runtime seam: a step (catalogue.py) runs as a local process or as a pod, by configuration.

The Airflow Variable `criteo_runtime` picks the runtime; DAG files never change:

- local (embedded default, local.py): a subprocess in the image's local virtual environment;
- kubernetes: a KubernetesPodOperator pod of the image on GKE (GPU steps get a GPU), whose
  result comes back through the xcom sidecar from /airflow/xcom/return.json. Its module goes
  beside local.py.

Either way the step's result manifest (criteo_kernel.result) is what the task returns.
"""
from __future__ import annotations

from .base import StepFailed

__all__ = ["StepFailed", "runtime_for"]


def runtime_for(name: str):
    """The runtime the setting criteo_runtime names."""
    if name == "local":
        from .local import LocalProcessRuntime

        return LocalProcessRuntime()
    if name == "kubernetes":
        raise NotImplementedError(
            "criteo_runtime=kubernetes: pods are not wired in this release; set criteo_runtime=local")
    raise ValueError(f"unknown criteo_runtime {name!r}: expected 'local' or 'kubernetes'")
