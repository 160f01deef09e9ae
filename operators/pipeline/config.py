"""The pipeline's settings: one registry of names and defaults, one way to read them.

Each setting is an Airflow Variable, so it can be set in the UI or as AIRFLOW_VAR_<NAME> in the
environment; the defaults are the embedded default (a local folder as the bucket, local
processes). Settings are read at task run time, never at DAG parse time (a Variable lookup is a
round trip to the metadata database or the API server).

    setting("criteo_triton_grpc_url")        # the Variable, else the registry's default
    PipelineConfig.load()                    # every pipeline setting, typed
"""
from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from criteo_kernel.signature import MODEL_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]

# name: (default, meaning). "<base>" stands for the value of criteo_base_url.
SETTINGS: dict[str, tuple[str, str]] = {
    "criteo_base_url": (str(REPO_ROOT / ".data" / "bucket"),
                        "every artifact lives under here: a folder, or gs://bucket/prefix"),
    "criteo_raw_url": ("<base>/raw", "where the raw Criteo day_N[.gz] files land"),
    "criteo_raw_landing": ("settle", "when a raw day in a folder counts as landed whole: settle = once its manifest "
                           "(day_N.manifest.json) is there or it has not changed for criteo_raw_settle_s; "
                           "manifest = only once its manifest is there. On gs:// an object is whole once visible"),
    "criteo_raw_settle_s": ("60", "seconds a raw day without a manifest must stay unchanged to count as landed"),
    "criteo_runtime": ("local", "local: steps run as local processes; kubernetes: pods; docker: containers"),
    "criteo_day0_date": ("2026-01-01", "the logical date of day_0"),
    "criteo_num_days": ("24", "days in the data set"),
    "criteo_model_name": (MODEL_NAME, "the model's name in the Triton repository"),
    "criteo_keep_versions": ("5", "model versions kept in the repository after a deploy (production always is)"),
    "criteo_triton_grpc_url": ("127.0.0.1:8001", "the Triton server deploy and rollback talk to (host:port)"),
    "criteo_triton_replicas": ("", "every Triton replica deploy and rollback load through (explicit model control "
                               "is per server): host:port entries, comma-separated, each name standing for every "
                               "address it resolves to, e.g. the headless Service triton-replicas.NS.svc:8001 "
                               "(k8s/serving.py). Empty: the one server at criteo_triton_grpc_url"),
    "criteo_triton_max_queue_delay_us": ("0", "the model's dynamic_batching max_queue_delay_microseconds, written "
                                         "into config.pbtxt at deploy (a whole number of microseconds, 0 to 1000000). "
                                         "0: a request that finds the model idle runs at once; requests that queued "
                                         "while it was busy are still batched together"),
    "criteo_prometheus_url": ("http://127.0.0.1:9090", "the Prometheus the monitoring sensors query"),
    "criteo_request_log_url": ("<base>/request_log", "the inference client's request log"),
    # Scale inside the preprocess step (images/merlin criteo_steps.scale_out), any runtime.
    "criteo_preprocess_workers": ("auto", "preprocess's dask workers: auto = a dask-cuda LocalCUDACluster over all "
                                  "of the step's GPUs when it has more than one, else in process; N = N workers"),
    "criteo_dask_part_size": ("1GB", "input text per dask partition of preprocess (whole parquet row groups)"),
    "criteo_dask_device_memory_limit": ("0.8", "device memory per GPU worker before dask-cuda spills to host "
                                        "memory: a fraction of the GPU, or a size such as 30GB"),
    # The pod runtime (criteo_runtime=kubernetes; operators/runtime/kubernetes.py). "" means unset:
    # the required ones fail the first task with their names when missing.
    "criteo_kubernetes_conn_id": ("kubernetes_default", "the Airflow connection of the cluster (no GKE cluster named)"),
    "criteo_kubernetes_namespace": ("", "required: the namespace the step pods run in"),
    "criteo_kubernetes_service_account": ("", "required: the pods' Kubernetes service account (Workload Identity)"),
    "criteo_image_merlin": ("", "required: the merlin image (NVTabular, training), pinned by tag or digest"),
    "criteo_image_validator": ("", "required: the validator image (Great Expectations), pinned"),
    "criteo_image_monitoring": ("", "required: the monitoring image (replay, to-day), pinned"),
    "criteo_image_hugectr": ("", "the merlin image's hugectr target (HugeCTR), pinned: required for trainer=hugectr"),
    "criteo_gke_cluster": ("", "a GKE cluster name: pods go through GKEStartPodOperator and the GCP connection"),
    "criteo_gke_location": ("", "the GKE cluster's region or zone"),
    "criteo_gcp_project": ("", "the GKE cluster's project (default: the GCP connection's)"),
    "criteo_gpu_accelerator": ("nvidia-tesla-a100", "the GKE accelerator node label GPU steps select"),
    "criteo_pod_gpus": ("1", "GPUs per GPU step (requested and limited: nvidia.com/gpu)"),
    "criteo_pod_data": ("gcsfs", "how pods reach the data: gcsfs (gs:// in the step), gcsfuse (CSI mount), "
                        "pvc (criteo_pod_volume_claim at criteo_pod_mount_path), host (local control plane only)"),
    "criteo_pod_volume_claim": ("", "the PersistentVolumeClaim, with criteo_pod_data=pvc"),
    "criteo_pod_mount_path": ("/data", "where the claim is mounted, with criteo_pod_data=pvc"),
    "criteo_pod_shm_size": ("16Gi", "the /dev/shm memory volume of GPU steps (dask, NCCL)"),
    "criteo_pod_startup_timeout_s": ("600", "seconds a pod may take to be scheduled and start (image pull)"),
    "criteo_pod_active_deadline_s": ("21600", "seconds a step pod may run before Kubernetes stops it"),
    "criteo_pod_keep_failed": ("false", "keep failed pods for debugging (succeeded ones are always deleted)"),
    "criteo_pod_deferrable": ("true", "wait for pods in the triggerer, freeing the worker slot"),
    "criteo_pod_poll_interval_s": ("10", "seconds between pod status polls"),
    "criteo_pod_env": ("", "NAME=value pairs, comma-separated, set in every step pod (no secrets: Workload Identity)"),
    "criteo_pod_image_pull_policy": ("", "the step containers' imagePullPolicy (Always, IfNotPresent, Never); empty: "
                                     "Kubernetes' default, IfNotPresent for a pinned tag"),
    "criteo_pod_host_network": ("false", "step pods on their node's network (hostNetwork): only for a node without a "
                                "pod network, as the local kubelet's; never on GKE"),
    # Any container runtime (pods, Docker).
    "criteo_step_resources": ("", "per-step cpu and memory instead of the catalogue's "
                              "(operators/runtime/catalogue.py), as JSON, per GPU for the GPU steps: "
                              '{"preprocess": {"cpu": "8", "memory": "48Gi"}}. '
                              "Pods request and are limited to them; Docker limits the memory"),
    # The Docker runtime (criteo_runtime=docker; operators/runtime/docker.py): the compose stack's.
    "criteo_docker_url": ("unix://var/run/docker.sock", "the Docker engine the step containers run on"),
    "criteo_docker_network": ("", "the network the step containers join (the compose project's, to reach gcs/triton)"),
    "criteo_docker_volume": ("", "the named volume holding a local criteo_base_url, mounted into each step container"),
    "criteo_docker_mount_path": ("/data/bucket", "where that volume is mounted (Airflow's containers and steps')"),
    "criteo_docker_gpus": ("1", "GPUs requested by each GPU step (Docker device request); 0: a host without GPUs"),
    "criteo_docker_env": ("", "NAME=value pairs, comma-separated, set in every step container (no secrets)"),
}


def default_of(name: str, base_url: str | None = None) -> str:
    """The registry's default of a setting; a "<base>/..." one resolved against `base_url` (or the setting)."""
    if name not in SETTINGS:
        raise KeyError(f"unknown setting {name!r}; known: {sorted(SETTINGS)}")
    default = SETTINGS[name][0]
    if default.startswith("<base>"):
        base = base_url if base_url is not None else setting("criteo_base_url")
        default = base.rstrip("/") + default[len("<base>"):]
    return default


def setting(name: str, default: str | None = None) -> str:
    """The Airflow Variable `name`; else AIRFLOW_VAR_<NAME>; else `default`, or the registry's.

    Outside a task (the CLI, tests, demos) there is no API server to ask: the environment is read.
    """
    if default is None:
        default = default_of(name)
    from airflow.sdk import Variable

    try:
        return Variable.get(name, default=default)
    except Exception:  # no task context (unit tests, CLI helpers): environment only
        return os.environ.get(f"AIRFLOW_VAR_{name.upper()}", default)


# A byte size as dask's parse_bytes reads it: "1GB", "256 MiB", "500000" (bytes).
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([kmgtp]i?b?|b)?\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class PreprocessScale:
    """How the preprocess step spreads its work: dask workers, partition size, GPU memory limit.

    The step itself decides from the GPUs its pod really has ("auto"); these settings only become
    its flags, checked here first so that a typo fails the run's first task, not a 6-hour pod.
    """

    workers: str = "auto"
    part_size: str = "1GB"
    device_memory_limit: str = "0.8"

    @classmethod
    def load(cls) -> PreprocessScale:
        return cls(setting("criteo_preprocess_workers").strip(), setting("criteo_dask_part_size").strip(),
                   setting("criteo_dask_device_memory_limit").strip())

    def problems(self) -> list[str]:
        bad = []
        if self.workers != "auto" and not (self.workers.isdigit() and int(self.workers) >= 1):
            bad.append(f"criteo_preprocess_workers={self.workers!r}: expected 'auto' or a whole number >= 1")
        size = _SIZE.match(self.part_size)
        if not size or float(size.group(1)) <= 0:
            bad.append(f"criteo_dask_part_size={self.part_size!r}: expected a size such as 1GB or 256MB")
        limit = _SIZE.match(self.device_memory_limit)
        fraction = limit and not limit.group(2) and 0 < float(limit.group(1)) <= 1
        if not fraction and not (limit and limit.group(2) and float(limit.group(1)) > 0):
            bad.append(f"criteo_dask_device_memory_limit={self.device_memory_limit!r}: expected a fraction "
                       "in (0, 1] of each GPU's memory or a size such as 30GB")
        return bad

    def args(self) -> dict:
        return {"--workers": self.workers, "--part-size": self.part_size,
                "--device-memory-limit": self.device_memory_limit}


@dataclass(frozen=True)
class PipelineConfig:
    base_url: str          # every artifact lives under here: a folder, or gs://bucket/prefix
    raw_url: str           # where the raw Criteo day_N[.gz] files land
    runtime: str           # "local" (subprocesses) or "kubernetes" (pods)
    day0: date             # the logical date that maps to day_0
    num_days: int          # days in the dataset (24 for Criteo Terabyte)
    model_name: str
    keep_versions: int = 5  # model versions kept in the Triton repository (production always is)
    request_log_url: str = ""  # served requests + labels (images/monitoring); default <base>/request_log
    preprocess: PreprocessScale = PreprocessScale()

    @classmethod
    def load(cls) -> PipelineConfig:
        base = setting("criteo_base_url").rstrip("/")
        return cls(
            base_url=base,
            raw_url=setting("criteo_raw_url", default_of("criteo_raw_url", base)).rstrip("/"),
            runtime=setting("criteo_runtime"),
            day0=date.fromisoformat(setting("criteo_day0_date")),
            num_days=int(setting("criteo_num_days")),
            model_name=setting("criteo_model_name"),
            keep_versions=int(setting("criteo_keep_versions")),
            request_log_url=setting("criteo_request_log_url", default_of("criteo_request_log_url", base)).rstrip("/"),
            preprocess=PreprocessScale.load(),
        )

    @property
    def model_repository(self) -> str:
        return f"{self.base_url}/model_repository"
