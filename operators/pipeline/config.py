"""The pipeline's settings: one registry, decided once per run, carried in the run's plan.

One table (`REGISTRY`) holds every setting of three kinds:

- Airflow Variables (`criteo_*`, or `AIRFLOW_VAR_<NAME>` in the environment): read once per run by
  its first task (`Settings.load`), checked (`Settings.problems`) and carried in its plan. Steps,
  sensors and hooks receive them, as providers' hooks receive a connection id, and never read
  Variables themselves: a run keeps the settings it started with, even on retry or resume.
- model_monitoring's thresholds (`criteo_monitor_*`): Variables its Params fall back to.
- the parse-time environment (`CRITEO_*`): read when a DAG file is parsed (retries, sensor
  timing), never from Variables, which would cost a database round trip per parse.

A Variable that exists but cannot be read inside a task fails the task, naming it: a metadata
database hiccup must not turn into "the default bucket". Outside a task (the CLI, the API
server's plugin, demos) a failed read falls back to the environment, then the default.

docs/settings.md's table is generated from the registry (`python -m operators.pipeline.config
table`; tests/operators/pipeline/test_config.py keeps them equal).
"""
from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from functools import cached_property
from pathlib import Path

from criteo_kernel.signature import MODEL_NAME

REPO_ROOT = Path(__file__).resolve().parents[2]
BASE = "<base>"   # a default under criteo_base_url, resolved against it


@dataclass(frozen=True)
class Setting:
    name: str
    default: str
    meaning: str
    group: str
    kind: str = "variable"       # variable | monitor | environment
    type: type = str             # what a monitor threshold's Param holds
    title: str = ""              # a monitor threshold's Param title
    bounds: Mapping[str, float] = field(default_factory=dict)


def _settings(group: str, kind: str = "variable", **entries) -> list[Setting]:
    return [Setting(name, *spec, group=group, kind=kind) if isinstance(spec, tuple) else spec
            for name, spec in entries.items()]


def _monitor(name: str, typ: type, default: float, title: str, meaning: str, **bounds) -> Setting:
    return Setting(f"criteo_monitor_{name}", f"{default:g}", meaning, "monitoring", "monitor", typ, title, bounds)


REGISTRY: dict[str, Setting] = {s.name: s for s in [
    *_settings(
        "storage",
        criteo_base_url=(str(REPO_ROOT / ".data" / "bucket"),
                         "every artifact lives under here: a folder, or gs://bucket/prefix"),
        criteo_raw_url=(f"{BASE}/raw", "where the raw Criteo day_N[.gz] files land"),
        criteo_request_log_url=(f"{BASE}/request_log", "the inference client's request log"),
    ),
    *_settings(
        "landing",
        criteo_raw_landing=("settle", "when a raw day in a folder counts as landed whole: settle = once its manifest "
                            "(day_N.manifest.json) is there or it has not changed for criteo_raw_settle_s; "
                            "manifest = only once its manifest is there. On gs:// an object is whole once visible"),
        criteo_raw_settle_s=("60", "seconds a raw day without a manifest must stay unchanged to count as landed"),
        criteo_day0_date=("2026-01-01", "the logical date of day_0"),
        criteo_num_days=("24", "days in the data set"),
    ),
    *_settings(
        "runtime",
        criteo_runtime=("local", "local: steps run as local processes; kubernetes: pods; docker: containers"),
        # Scale inside the preprocess step (criteo_merlin.preprocess.scale_out), any runtime.
        criteo_preprocess_workers=("auto", "preprocess's dask workers: auto = a dask-cuda LocalCUDACluster over all "
                                   "of the step's GPUs when it has more than one, else in process; N = N workers"),
        criteo_dask_part_size=("1GB", "input text per dask partition of preprocess (whole parquet row groups)"),
        criteo_dask_device_memory_limit=("0.8", "device memory per GPU worker before dask-cuda spills to host "
                                         "memory: a fraction of the GPU, or a size such as 30GB"),
        criteo_image_merlin=("", "required by pods and Docker: the merlin image (NVTabular, training), pinned by "
                             "tag or digest"),
        criteo_image_validator=("", "required by pods and Docker: the validator image (Great Expectations), pinned"),
        criteo_image_monitoring=("", "required by pods and Docker: the monitoring image (replay, "
                                 "request_log_to_day), pinned"),
        criteo_image_hugectr=("", "the merlin image's hugectr target (HugeCTR), pinned: required for "
                              "trainer=hugectr"),
        criteo_step_resources=("", "per-step cpu and memory instead of the catalogue's "
                               "(operators/runtime/catalogue.py), as JSON, per GPU for the GPU steps: "
                               '{"preprocess": {"cpu": "8", "memory": "48Gi"}}. '
                               "Pods request and are limited to them; Docker limits the memory"),
    ),
    # The pod runtime (criteo_runtime=kubernetes; operators/runtime/kubernetes.py). "" means unset:
    # the required ones fail the run's first task with their names when missing.
    *_settings(
        "pods",
        criteo_kubernetes_conn_id=("kubernetes_default", "the Airflow connection of the cluster (no GKE cluster "
                                   "named)"),
        criteo_kubernetes_in_cluster=("false", "true: Airflow runs in the step pods' cluster and reaches it with its "
                                      "own pod's service account (KubernetesPodOperator in_cluster), no connection"),
        criteo_kubernetes_namespace=("", "required: the namespace the step pods run in"),
        criteo_kubernetes_service_account=("", "required: the pods' Kubernetes service account (Workload Identity)"),
        criteo_gke_cluster=("", "a GKE cluster name: pods go through GKEStartPodOperator and the GCP connection"),
        criteo_gke_location=("", "the GKE cluster's region or zone"),
        criteo_gcp_project=("", "the GKE cluster's project (default: the GCP connection's)"),
        criteo_gke_use_internal_ip=("false", "reach the GKE cluster's control plane at its private endpoint "
                                    "(a private cluster, Airflow in its VPC)"),
        criteo_gke_use_dns_endpoint=("false", "reach the GKE cluster's control plane at its DNS-based endpoint "
                                     "(private clusters without VPC access; IAM decides who may call it)"),
        criteo_gke_impersonation_chain=("", "service accounts to impersonate for GKE, comma-separated; the last is "
                                        "used, each granting Token Creator to the one before"),
        criteo_gpu_accelerator=("nvidia-tesla-a100", "the GKE accelerator node label GPU steps select"),
        criteo_pod_gpus=("1", "GPUs per GPU step (requested and limited: nvidia.com/gpu)"),
        criteo_pod_data=("gcsfs", "how pods reach the data: gcsfs (gs:// in the step), gcsfuse (CSI mount), "
                         "pvc (criteo_pod_volume_claim at criteo_pod_mount_path), host (local control plane only)"),
        criteo_pod_volume_claim=("", "the PersistentVolumeClaim, with criteo_pod_data=pvc: ReadWriteMany (e.g. "
                                 "Filestore), since step pods on different nodes share it; checked by the run's "
                                 "first task"),
        criteo_pod_mount_path=("/data", "where the claim is mounted, with criteo_pod_data=pvc"),
        criteo_pod_shm_size=("16Gi", "the /dev/shm memory volume of GPU steps (dask, NCCL)"),
        criteo_pod_schedule_timeout_s=("600", "seconds a CPU step's pod may wait to be scheduled (a node for it)"),
        criteo_pod_startup_timeout_s=("600", "seconds a CPU step's pod may take to start once scheduled (image pull)"),
        criteo_pod_gpu_schedule_timeout_s=("1200", "seconds a GPU step's pod may wait to be scheduled: a GPU pool "
                                           "scaling up from zero takes 4-7 min for the node, then the GPU driver "
                                           "install and device plugin before nvidia.com/gpu is allocatable"),
        criteo_pod_gpu_startup_timeout_s=("1200", "seconds a GPU step's pod may take to start once scheduled: a "
                                          "new node pulls the multi-GB merlin/HugeCTR image cold"),
        criteo_pod_active_deadline_s=("21600", "seconds a step pod may run before Kubernetes stops it"),
        criteo_pod_keep_failed=("false", "keep failed pods for debugging (succeeded ones are always deleted)"),
        criteo_pod_deferrable=("true", "wait for pods in the triggerer, freeing the worker slot"),
        criteo_pod_poll_interval_s=("10", "seconds between pod status polls"),
        criteo_pod_env=("", "NAME=value pairs, comma-separated, set in every step pod (no secrets: Workload "
                        "Identity)"),
        criteo_pod_image_pull_policy=("", "the step containers' imagePullPolicy (Always, IfNotPresent, Never); "
                                      "empty: Kubernetes' default, IfNotPresent for a pinned tag"),
        criteo_pod_host_network=("false", "step pods on their node's network (hostNetwork): only for a node without "
                                 "a pod network, as the local kubelet's; never on GKE"),
    ),
    # The Docker runtime (criteo_runtime=docker; operators/runtime/docker.py): the compose stack's.
    *_settings(
        "docker",
        criteo_docker_url=("unix://var/run/docker.sock", "the Docker engine the step containers run on"),
        criteo_docker_network=("", "the network the step containers join (the compose project's, to reach "
                               "gcs/triton)"),
        criteo_docker_volume=("", "the named volume holding a local criteo_base_url, mounted into each step "
                              "container"),
        criteo_docker_mount_path=("/data/bucket", "where that volume is mounted (Airflow's containers and steps')"),
        criteo_docker_gpus=("1", "GPUs requested by each GPU step (Docker device request); 0: a host without GPUs"),
        criteo_docker_env=("", "NAME=value pairs, comma-separated, set in every step container (no secrets)"),
    ),
    *_settings(
        "serving",
        criteo_model_name=(MODEL_NAME, "the model's name in the Triton repository"),
        criteo_keep_versions=("5", "model versions kept in the repository after a deploy (production always is)"),
        criteo_triton_grpc_url=("127.0.0.1:8001", "the Triton server deploy and rollback talk to (host:port)"),
        criteo_triton_replicas=("", "every Triton replica deploy and rollback load through (explicit model control "
                                "is per server): host:port entries, comma-separated, each name standing for every "
                                "address it resolves to, e.g. the headless Service triton-replicas.NS.svc:8001 "
                                "(k8s/serving/base/triton.yaml). Empty: the one server at criteo_triton_grpc_url"),
        criteo_max_model_gib=("3", "the largest model a full retrain may train, in GiB of float32 embedding tables "
                              "(26 x max_vocab rows x embedding_dim): a run whose max_vocab allows more is refused "
                              "at plan time. Past protobuf's 2 GiB the export writes ONNX external data "
                              "(model.onnx.data), so this is a memory bound, not a format one: the export step needs "
                              "about 3x the model in memory, and each Triton replica maps it (up to all of it "
                              "resident, twice while a new version replaces the old; k8s/serving/base/triton.yaml "
                              "asks 8Gi). max_vocab=0 (every value) has no bound to check"),
        criteo_triton_max_queue_delay_us=("0", "the model's dynamic_batching max_queue_delay_microseconds, written "
                                          "into config.pbtxt at deploy (a whole number of microseconds, 0 to "
                                          "1000000). 0: a request that finds the model idle runs at once; requests "
                                          "that queued while it was busy are still batched together"),
        criteo_triton_instance_kind=("KIND_CPU", "where Triton runs the model, written into config.pbtxt's "
                                     "instance_group at deploy: KIND_GPU (onnxruntime's CUDA provider on the GPU or "
                                     "MIG slice of k8s/serving/overlays/gpu, mig-gke, mig-device-plugin) or KIND_CPU "
                                     "(its CPU provider: the embedded default and the cpu overlay)"),
    ),
    *_settings(
        "monitoring",
        criteo_prometheus_url=("http://127.0.0.1:9090", "the Prometheus the monitoring sensors query"),
    ),
    # model_monitoring's thresholds: each a Param of its trigger form, falling back to the Variable.
    _monitor("auc_threshold", float, 0.70, "AUC floor",
             "Retrain when the served version's rolling AUC stays below this.", minimum=0, maximum=1),
    _monitor("psi_threshold", float, 0.25, "PSI ceiling",
             "Retrain when the largest feature PSI stays above this (0.1 some drift, 0.25 significant).", minimum=0),
    _monitor("sustained_s", int, 600, "Sustained window (s)",
             "How long a metric must stay bad before a sensor fires.", minimum=1),
    _monitor("sensor_timeout_s", int, 1200, "Sensor timeout (s)",
             "A sensor that has not fired by then ends skipped; keep it below the 30 min schedule.", minimum=1),
    _monitor("poll_interval_s", int, 60, "Poll interval (s)",
             "Seconds between two Prometheus checks of a sensor.", minimum=1),
    _monitor("cooldown_h", float, 6.0, "Cooldown (h)",
             "No new retrain within this many hours of the last one this DAG triggered.", minimum=0),
    _monitor("window_days", int, 7, "Retrain window (days)",
             "window_days of the triggered criteo_full_retrain, ending at the latest raw day.", minimum=1, maximum=24),
    # Read when a DAG file is parsed (operators/tasks/defaults.py): never a Variable.
    *_settings(
        "dags", "environment",
        CRITEO_RETRY_DELAY_S=("120", "seconds before a failed task's first retry (exponential backoff after)"),
        CRITEO_RAW_WAIT_TIMEOUT_S=(str(6 * 3600), "seconds the raw-day sensors wait for a day to land"),
        CRITEO_RAW_POKE_INTERVAL_S=("300", "seconds between two checks of the raw-day sensors"),
        CRITEO_SENSOR_MODE=("reschedule", "the raw-day and previous-day sensors' mode: reschedule frees the "
                            "worker slot between checks; poke holds it"),
        CRITEO_PREVIOUS_DAY_TIMEOUT_S=(str(24 * 3600), "seconds a daily run waits for the day before it (a day "
                                       "behind a failed one waits a day for it to be fixed and cleared)"),
        CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S=("30", "seconds between two checks of the previous-day sensor"),
        CRITEO_LABEL_RETRY_DELAY_S=("1800", "seconds between criteo_request_log_to_raw's retries while late labels "
                                    "arrive"),
    ),
]}

MONITOR_PREFIX = "criteo_monitor_"
VARIABLES = tuple(name for name, s in REGISTRY.items() if s.kind != "environment")


def environment(name: str) -> str:
    """A parse-time setting (kind environment): the environment, else the registry's default."""
    spec = REGISTRY[name]
    if spec.kind != "environment":
        raise KeyError(f"{name} is an Airflow Variable, read once per run by Settings.load, not at parse time")
    return os.environ.get(name, spec.default)


# -- reading Variables ------------------------------------------------------------------------------

class SettingReadError(RuntimeError):
    """A Variable could not be read inside a task: the task fails (and is retried), naming it."""


def in_task() -> bool:
    """Whether this process is a task run by Airflow's supervisor (its comms channel is set)."""
    runner = sys.modules.get("airflow.sdk.execution_time.task_runner")
    return getattr(runner, "SUPERVISOR_COMMS", None) is not None


def read_variables(names: Iterable[str]) -> dict[str, str | None]:
    """Each Variable's value, None where it is not set.

    Inside a task, the SDK answers "not found" both for a Variable that does not exist and for one
    whose read failed (it logs the error and falls through to the default). The Variables that
    exist are listed first, in one call that fails loudly; a listed one that comes back as not
    found is a failed read, not a default.
    """
    from airflow.sdk import Variable

    names = list(names)
    if not in_task():
        return {name: _outside_task(name) for name in names}
    try:
        existing = set(Variable.keys(prefix="criteo_"))
    except Exception as exc:
        raise SettingReadError(f"the Airflow Variables could not be listed ({type(exc).__name__}: {exc}); "
                               f"the run's settings cannot be decided, so no step starts") from exc
    values = {}
    for name in names:
        try:
            value = Variable.get(name, default=None)
        except Exception as exc:
            raise SettingReadError(f"the Airflow Variable {name} could not be read "
                                   f"({type(exc).__name__}: {exc})") from exc
        if value is None and name in existing:
            raise SettingReadError(f"the Airflow Variable {name} exists but could not be read (the API server "
                                   f"answered with an error; see the line above); not falling back to its default")
        values[name] = value
    return values


def _outside_task(name: str) -> str | None:
    """The CLI, the API server's plugin, demos: the metadata database if reachable, else the environment."""
    from airflow.sdk import Variable

    try:
        return Variable.get(name, default=None)
    except Exception:
        return os.environ.get(f"AIRFLOW_VAR_{name.upper()}")


# -- the typed tree ---------------------------------------------------------------------------------

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
class Storage:
    base_url: str          # every artifact lives under here: a folder, or gs://bucket/prefix
    raw_url: str           # where the raw Criteo day_N[.gz] files land
    request_log_url: str   # served requests + labels (images/monitoring)

    @property
    def model_repository(self) -> str:
        return f"{self.base_url}/model_repository"


@dataclass(frozen=True)
class Landing:
    mode: str              # settle | manifest (criteo_kernel.landing)
    settle_s: float
    day0: date             # the logical date that maps to day_0
    num_days: int          # days in the data set (24 for Criteo Terabyte)


@dataclass(frozen=True)
class Runtime:
    name: str              # local | kubernetes | docker (operators/runtime)
    preprocess: PreprocessScale


@dataclass(frozen=True)
class Serving:
    model_name: str
    keep_versions: int     # model versions kept in the Triton repository (production always is)
    triton_grpc_url: str
    triton_replicas: str
    max_queue_delay_us: str  # checked by criteo_kernel's config.pbtxt contract where it is written
    instance_kind: str       # likewise
    max_model_gib: float     # the plan refuses a full retrain whose vocabulary bound is larger


@dataclass(frozen=True)
class Monitoring:
    prometheus_url: str
    thresholds: Mapping[str, str | None]   # criteo_monitor_<name> without the prefix; None: unset


# The settings that are not text: how each is parsed, and what a bad value is told to be instead.
TYPED: dict[str, tuple[Callable[[str], object], str]] = {
    "criteo_raw_settle_s": (float, "seconds >= 0"),
    "criteo_day0_date": (date.fromisoformat, "a date, YYYY-MM-DD"),
    "criteo_num_days": (int, "a whole number of days"),
    "criteo_keep_versions": (int, "a whole number >= 1"),
    "criteo_max_model_gib": (float, "a size in GiB > 0"),
}


class SettingsError(ValueError):
    """Settings that cannot work: no retry can fix them, so the run's first task fails naming each."""


@dataclass(frozen=True)
class Settings:
    """Every Variable's value for one run, decided once; typed views of it by concern.

    `values` is what the plan carries (plain strings, JSON-ready): `Settings(plan["settings"])`
    gives a step, sensor or hook the same settings the run started with.
    """

    values: Mapping[str, str | None]   # None: an unset monitor threshold

    @classmethod
    def load(cls, read: Callable[[Iterable[str]], Mapping[str, str | None]] = read_variables) -> Settings:
        """Every Variable, read once; unset ones take the registry's defaults."""
        found = read(VARIABLES)
        values = {name: found.get(name) for name in VARIABLES}
        base = (values["criteo_base_url"] or REGISTRY["criteo_base_url"].default).rstrip("/")
        for name, value in values.items():
            if value is None and REGISTRY[name].kind != "monitor":   # a threshold's source is part of its story
                default = REGISTRY[name].default
                values[name] = base + default[len(BASE):] if default.startswith(BASE) else default
        values["criteo_base_url"] = base
        return cls(values)

    @classmethod
    def with_values(cls, **values: str) -> Settings:
        """The registry's defaults with these Variables' values: for scripts, benches and tests that
        set no Variables (as if read in a task)."""
        unknown = sorted(set(values) - set(VARIABLES))
        if unknown:
            raise KeyError(f"unknown settings {unknown}")
        return cls.load(read=lambda names: values)

    @classmethod
    def of(cls, carried: Settings | Mapping[str, str]) -> Settings:
        """The settings a task was handed (the plan's `settings`), typed."""
        if isinstance(carried, Settings):
            return carried
        unknown = sorted(set(carried) - set(VARIABLES))
        missing = sorted(set(VARIABLES) - set(carried))
        if unknown or missing:
            raise SettingsError(f"the settings handed to this task do not match the registry (unknown {unknown}, "
                                f"missing {missing}): was the run planned by another version of the pipeline? "
                                f"Clear the run from its first task")
        return cls(dict(carried))

    def value(self, name: str) -> str | None:
        if name not in self.values:
            raise KeyError(f"unknown setting {name!r}; known: {sorted(self.values)}")
        return self.values[name]

    def to_dict(self) -> dict[str, str]:
        return dict(self.values)

    def _typed(self, name: str):
        parse, expected = TYPED[name]
        raw = self.values[name]
        try:
            return parse(raw.strip())
        except ValueError:
            raise SettingsError(f"{name}={raw!r}: expected {expected}") from None

    @cached_property
    def storage(self) -> Storage:
        v = self.values
        return Storage(v["criteo_base_url"], v["criteo_raw_url"].rstrip("/"), v["criteo_request_log_url"].rstrip("/"))

    @cached_property
    def landing(self) -> Landing:
        return Landing(self.values["criteo_raw_landing"].strip(), self._typed("criteo_raw_settle_s"),
                       self._typed("criteo_day0_date"), self._typed("criteo_num_days"))

    @cached_property
    def runtime(self) -> Runtime:
        v = self.values
        return Runtime(v["criteo_runtime"].strip(), PreprocessScale(
            v["criteo_preprocess_workers"].strip(), v["criteo_dask_part_size"].strip(),
            v["criteo_dask_device_memory_limit"].strip()))

    @cached_property
    def serving(self) -> Serving:
        v = self.values
        return Serving(v["criteo_model_name"], self._typed("criteo_keep_versions"),
                       v["criteo_triton_grpc_url"], v["criteo_triton_replicas"],
                       v["criteo_triton_max_queue_delay_us"].strip(), v["criteo_triton_instance_kind"].strip(),
                       self._typed("criteo_max_model_gib"))

    @cached_property
    def monitoring(self) -> Monitoring:
        v = self.values
        thresholds = {name[len(MONITOR_PREFIX):]: v[name] for name in VARIABLES if name.startswith(MONITOR_PREFIX)}
        return Monitoring(v["criteo_prometheus_url"].rstrip("/"), thresholds)

    def problems(self) -> list[str]:
        """Every setting that cannot work, each naming the Variable and what it expects; the runtime's
        own settings are checked by it (operators.runtime.problems, which calls this first)."""
        bad = []
        for name in TYPED:
            try:
                self._typed(name)
            except SettingsError as exc:
                bad.append(str(exc))
        if bad:
            return bad
        from criteo_kernel.landing import MODES as LANDING_MODES

        if self.landing.mode not in LANDING_MODES:
            bad.append(f"criteo_raw_landing={self.landing.mode!r}: expected one of {', '.join(LANDING_MODES)}")
        if self.landing.settle_s < 0:
            bad.append(f"criteo_raw_settle_s={self.values['criteo_raw_settle_s']!r}: expected seconds >= 0")
        if self.landing.num_days < 1:
            bad.append(f"criteo_num_days={self.landing.num_days}: expected at least 1")
        if self.serving.keep_versions < 1:
            bad.append(f"criteo_keep_versions={self.serving.keep_versions}: expected at least 1")
        if not self.serving.max_model_gib > 0:
            bad.append(f"criteo_max_model_gib={self.serving.max_model_gib}: expected a size in GiB > 0")
        return bad + self.runtime.preprocess.problems()



# -- the generated docs table ----------------------------------------------------------------------

TABLE_BEGIN, TABLE_END = "<!-- settings:begin -->", "<!-- settings:end -->"
GROUP_TITLES = {
    "storage": "Storage", "landing": "Raw landing and the data set", "runtime": "Where steps run",
    "pods": "Pods (criteo_runtime=kubernetes)", "docker": "Docker (criteo_runtime=docker)",
    "serving": "Serving", "monitoring": "Monitoring",
    "dags": "Parse-time environment (read when a DAG file is parsed)",
}


def table() -> str:
    """The settings as docs/settings.md shows them, grouped, generated from REGISTRY."""
    lines = [TABLE_BEGIN]
    for group, title in GROUP_TITLES.items():
        lines += ["", f"### {title}", "", "| setting | default | meaning |", "|---|---|---|"]
        for s in REGISTRY.values():
            if s.group == group:
                default = s.default.replace(str(REPO_ROOT), "<repo>") if s.default else "(unset)"
                lines.append(f"| `{s.name}` | `{default}` | {s.meaning.replace('|', '&#124;')} |")
    lines += ["", TABLE_END]
    return "\n".join(lines)


def write_table(path: Path) -> bool:
    """Replace the table between the markers in `path`; whether it changed."""
    text = path.read_text()
    start, end = text.index(TABLE_BEGIN), text.index(TABLE_END) + len(TABLE_END)
    new = text[:start] + table() + text[end:]
    path.write_text(new)
    return new != text


if __name__ == "__main__":
    if sys.argv[1:] == ["table"]:
        print(table())
    elif sys.argv[1:2] == ["write-table"]:
        changed = write_table(Path(sys.argv[2]))
        print(f"{sys.argv[2]}: {'updated' if changed else 'already up to date'}")
    else:
        sys.exit("usage: python -m operators.pipeline.config table | write-table docs/settings.md")
