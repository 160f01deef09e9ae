"""The pod runtime: a step (catalogue.py) as a KubernetesPodOperator pod, GKEStartPodOperator
where a GKE cluster is named. No Kubernetes client code of ours: the provider's operator creates,
watches, defers, logs and deletes the pod.

Everything about the pod comes from the run's settings (pipeline/config.py), checked together by
the run's first task (`PodRuntime.problems`), so a missing image, namespace, service account or
bucket fails that task with the setting's name, not a pod at 3 a.m.

The result contract: the step prints its manifest as its last log line, `STEP_RESULT {...}`
(criteo_kernel.result). When the pod ends, the runtime's completion callback reads the
container's log through the API server (`pods/log`) and turns it, with the container's exit code
and termination reason, into the run's StepOutcome. No xcom sidecar, so no `exec` into the pod.
The manifest is small (URLs and counts); data never goes through the log.

Imported only inside tasks: it imports the provider and the kubernetes client.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from airflow.providers.cncf.kubernetes.callbacks import KubernetesPodOperatorCallback
from airflow.sdk.exceptions import AirflowFailException
from kubernetes.client import models as k8s

from criteo_kernel.result import read_log

from .base import StepOutcome
from .catalogue import STEPS, StepSpec
from .container import ContainerRuntime, step_env, step_images, step_resources, unset_image

GPU_RESOURCE = "nvidia.com/gpu"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
BASE_CONTAINER = "base"
LOG_TAIL_LINES = 40  # of a failed pod's log, quoted in the task's error
DATA_MODES = ("gcsfs", "gcsfuse", "pvc", "host")
PULL_POLICIES = ("", "Always", "IfNotPresent", "Never")
FUSE_ROOT = "/mnt/gcs"
# The images' user (images/*/Dockerfile): uid 50000, group 0, as Airflow's own images. Group 0 and
# fsGroup 0 let it write volumes whose files are group-writable by root's group (OpenShift's way).
STEP_UID, STEP_GID = 50000, 0


class PodConfigurationError(AirflowFailException):
    """A pod setting is missing or wrong: no retry can fix it."""


@dataclass(frozen=True)
class PodSettings:
    base_url: str
    namespace: str
    service_account: str
    images: dict[str, str]
    data: str = "gcsfs"
    conn_id: str = "kubernetes_default"
    gke_cluster: str = ""
    gke_location: str = ""
    gcp_project: str = ""
    gcp_conn_id: str = "google_cloud_default"
    accelerator: str = "nvidia-tesla-a100"
    gpus: int = 1
    volume_claim: str = ""
    mount_path: str = "/data"
    shm_size: str = "16Gi"
    schedule_timeout_s: int = 600
    startup_timeout_s: int = 600
    gpu_schedule_timeout_s: int = 1200
    gpu_startup_timeout_s: int = 1200
    active_deadline_s: int = 6 * 3600
    keep_failed: bool = False
    deferrable: bool = True
    poll_interval_s: float = 10.0
    labels: dict[str, str] = field(default_factory=dict)
    env: tuple[tuple[str, str], ...] = ()
    image_pull_policy: str = ""
    host_network: bool = False
    in_cluster: bool = False
    gke_use_internal_ip: bool = False
    gke_use_dns_endpoint: bool = False
    gke_impersonation_chain: tuple[str, ...] = ()
    resources: dict[str, dict[str, str]] = field(default_factory=dict)

    @classmethod
    def build(cls, settings) -> tuple[PodSettings | None, list[str]]:
        """The pod settings from the run's, and what is wrong with them (each named)."""
        get = settings.value
        problems: list[str] = []
        base = settings.storage.base_url
        values = {
            "namespace": get("criteo_kubernetes_namespace"),
            "service_account": get("criteo_kubernetes_service_account"),
            "data": get("criteo_pod_data"),
            "conn_id": get("criteo_kubernetes_conn_id"),
            "gke_cluster": get("criteo_gke_cluster"),
            "gke_location": get("criteo_gke_location"),
            "gcp_project": get("criteo_gcp_project"),
            "accelerator": get("criteo_gpu_accelerator"),
            "volume_claim": get("criteo_pod_volume_claim"),
            "mount_path": get("criteo_pod_mount_path").rstrip("/") or "/",
            "shm_size": get("criteo_pod_shm_size"),
            "image_pull_policy": get("criteo_pod_image_pull_policy").strip(),
            "gke_impersonation_chain": tuple(filter(None, (a.strip() for a in get(
                "criteo_gke_impersonation_chain").split(",")))),
        }
        images = step_images(settings, problems)
        env = step_env(settings, "criteo_pod_env", problems)
        resources = step_resources(settings, problems)
        if values["image_pull_policy"] not in PULL_POLICIES:
            problems.append(f"criteo_pod_image_pull_policy={values['image_pull_policy']!r}: expected one of "
                            f"{PULL_POLICIES[1:]} or empty")
        for key, name in (("namespace", "criteo_kubernetes_namespace"),
                          ("service_account", "criteo_kubernetes_service_account")):
            if not values[key]:
                problems.append(f"{name} is not set (the namespace and the Workload Identity service account the "
                                f"step pods run as)")
        data = values["data"]
        if data not in DATA_MODES:
            problems.append(f"criteo_pod_data={data!r}: expected one of {DATA_MODES}")
        elif data in ("gcsfs", "gcsfuse") and not base.startswith("gs://"):
            problems.append(f"criteo_pod_data={data} needs criteo_base_url on gs://, got {base!r}")
        elif data == "pvc":
            if not values["volume_claim"]:
                problems.append("criteo_pod_data=pvc needs criteo_pod_volume_claim (the PersistentVolumeClaim)")
            if not (base + "/").startswith(values["mount_path"].rstrip("/") + "/"):
                problems.append(f"criteo_pod_data=pvc: criteo_base_url {base!r} is not under criteo_pod_mount_path "
                                f"{values['mount_path']!r}")
        elif data == "host" and values["gke_cluster"]:
            problems.append("criteo_pod_data=host is for the local control plane (pods on this host); "
                            "a GKE cluster needs gcsfs, gcsfuse or pvc")
        elif data == "host" and not base.startswith("/"):
            problems.append(f"criteo_pod_data=host mounts the node's folder criteo_base_url: expected an absolute "
                            f"path, got {base!r}")
        if values["gke_cluster"] and not values["gke_location"]:
            problems.append("criteo_gke_cluster is set but criteo_gke_location is not")
        numbers = {}
        for key, name in (("gpus", "criteo_pod_gpus"), *TIMEOUT_SETTINGS.items(),
                          ("active_deadline_s", "criteo_pod_active_deadline_s"),
                          ("poll_interval_s", "criteo_pod_poll_interval_s")):
            raw = get(name)
            try:
                numbers[key] = float(raw) if key == "poll_interval_s" else int(raw)
                if numbers[key] <= 0:
                    raise ValueError
            except ValueError:
                problems.append(f"{name}={raw!r}: expected a positive number")
        flags = {}
        for key, name in (("keep_failed", "criteo_pod_keep_failed"), ("deferrable", "criteo_pod_deferrable"),
                          ("host_network", "criteo_pod_host_network"),
                          ("in_cluster", "criteo_kubernetes_in_cluster"),
                          ("gke_use_internal_ip", "criteo_gke_use_internal_ip"),
                          ("gke_use_dns_endpoint", "criteo_gke_use_dns_endpoint")):
            raw = get(name).strip().lower()
            if raw not in ("true", "false"):
                problems.append(f"{name}={raw!r}: expected true or false")
            flags[key] = raw == "true"
        if flags.get("host_network") and values["gke_cluster"]:
            problems.append("criteo_pod_host_network=true is for a node without a pod network (the local kubelet); "
                            "GKE pods use the cluster's network")
        problems += _connection_problems(values, flags)
        if problems:
            return None, problems
        return cls(base_url=base, images=images, env=env, resources=resources, **values, **numbers, **flags), []

    @classmethod
    def of(cls, settings) -> PodSettings:
        """The pod settings, or PodConfigurationError naming each that is wrong."""
        pods, problems = cls.build(settings)
        if problems:
            raise PodConfigurationError("criteo_runtime=kubernetes cannot start a pod:\n- " + "\n- ".join(problems))
        return pods

    def timeouts(self, spec: StepSpec) -> tuple[int, int]:
        """(schedule, startup) seconds for the pod of `spec`: a GPU step's cover a GPU node pool
        scaling up from zero and a cold pull of its image (docs/kubernetes-gke.md)."""
        if spec.gpu:
            return self.gpu_schedule_timeout_s, self.gpu_startup_timeout_s
        return self.schedule_timeout_s, self.startup_timeout_s

    def memory_limit(self, spec: StepSpec) -> str:
        return spec.resources(self.gpus, self.resources.get(spec.name))[1]

    def container_path(self, value: str) -> str:
        """A gs:// URL under the bucket as the pod sees it (gcsfuse mounts the bucket)."""
        if self.data == "gcsfuse" and value.startswith("gs://"):
            return f"{FUSE_ROOT}/{value[len('gs://'):]}"
        return value


# PodSettings field -> the setting that gives it
TIMEOUT_SETTINGS = {
    "schedule_timeout_s": "criteo_pod_schedule_timeout_s",
    "startup_timeout_s": "criteo_pod_startup_timeout_s",
    "gpu_schedule_timeout_s": "criteo_pod_gpu_schedule_timeout_s",
    "gpu_startup_timeout_s": "criteo_pod_gpu_startup_timeout_s",
}


def timeout_settings(spec: StepSpec) -> tuple[str, str]:
    """The names of the (schedule, startup) timeout settings that apply to the pod of `spec`."""
    if spec.gpu:
        return TIMEOUT_SETTINGS["gpu_schedule_timeout_s"], TIMEOUT_SETTINGS["gpu_startup_timeout_s"]
    return TIMEOUT_SETTINGS["schedule_timeout_s"], TIMEOUT_SETTINGS["startup_timeout_s"]


def _connection_problems(values: dict, flags: dict) -> list[str]:
    """How the settings that say how Airflow reaches the cluster contradict each other."""
    problems = []
    gke = bool(values["gke_cluster"])
    if flags.get("in_cluster") and gke:
        problems.append("criteo_kubernetes_in_cluster=true uses the service account of Airflow's own pod in the "
                        "cluster it runs in; criteo_gke_cluster reaches a cluster through the GCP connection: "
                        "set one of them")
    if flags.get("in_cluster") and values["conn_id"] not in ("", "kubernetes_default"):
        problems.append(f"criteo_kubernetes_in_cluster=true uses the service account of Airflow's own pod, not "
                        f"the connection criteo_kubernetes_conn_id={values['conn_id']!r}: unset one of them")
    if flags.get("gke_use_internal_ip") and flags.get("gke_use_dns_endpoint"):
        problems.append("criteo_gke_use_internal_ip and criteo_gke_use_dns_endpoint are both true: the cluster has "
                        "one endpoint per connection (GKEStartPodOperator takes the DNS one and ignores the other); "
                        "set one")
    for key, name in (("gke_use_internal_ip", "criteo_gke_use_internal_ip"),
                      ("gke_use_dns_endpoint", "criteo_gke_use_dns_endpoint")):
        if flags.get(key) and not gke:
            problems.append(f"{name}=true applies to a GKE cluster (GKEStartPodOperator); criteo_gke_cluster is "
                            f"not set")
    if values["gke_impersonation_chain"] and not gke:
        problems.append("criteo_gke_impersonation_chain applies to a GKE cluster (GKEStartPodOperator); "
                        "criteo_gke_cluster is not set")
    for account in values["gke_impersonation_chain"]:
        if "@" not in account:
            problems.append(f"criteo_gke_impersonation_chain: {account!r} is not a service account e-mail")
    return problems


def _gcs_bucket(url: str) -> str:
    return url[len("gs://"):].split("/", 1)[0]


def check_step(spec: StepSpec, settings: PodSettings) -> None:
    """What only some steps need from the settings: an optional image, data as files."""
    unset = unset_image(spec.name, spec.image, settings.images)
    if unset:
        raise PodConfigurationError(unset)
    if not spec.reads_gcs and settings.data == "gcsfs":
        raise PodConfigurationError(f"step {spec.name} reads no gs:// (HugeCTR needs its data as files): set "
                                    "criteo_pod_data=gcsfuse (GKE's Cloud Storage FUSE CSI driver) or pvc")


def pod_spec_parts(spec: StepSpec, settings: PodSettings) -> dict:
    """The KubernetesPodOperator arguments that describe the pod of `spec` (no command, no name)."""
    check_step(spec, settings)
    cpu, memory = spec.resources(settings.gpus, settings.resources.get(spec.name))
    requests = {"cpu": cpu, "memory": memory}
    limits = {"cpu": cpu, "memory": memory}
    node_selector: dict[str, str] = {}
    tolerations: list[k8s.V1Toleration] = []
    volumes: list[k8s.V1Volume] = []
    mounts: list[k8s.V1VolumeMount] = []
    annotations: dict[str, str] = {}
    if spec.gpu:
        # GPU requests must equal limits; GKE's GPU nodes carry the nvidia.com/gpu taint.
        requests[GPU_RESOURCE] = limits[GPU_RESOURCE] = str(settings.gpus)
        node_selector[ACCELERATOR_LABEL] = settings.accelerator
        tolerations.append(k8s.V1Toleration(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule"))
        # NVTabular's dask workers and NCCL share memory through /dev/shm (64 MiB by default).
        volumes.append(k8s.V1Volume(name="dshm", empty_dir=k8s.V1EmptyDirVolumeSource(
            medium="Memory", size_limit=settings.shm_size)))
        mounts.append(k8s.V1VolumeMount(name="dshm", mount_path="/dev/shm"))
    if settings.data == "gcsfuse":
        bucket = _gcs_bucket(settings.base_url)
        annotations["gke-gcsfuse/volumes"] = "true"
        volumes.append(k8s.V1Volume(name="bucket", csi=k8s.V1CSIVolumeSource(
            driver="gcsfuse.csi.storage.gke.io",
            volume_attributes={"bucketName": bucket, "mountOptions": "implicit-dirs"})))
        mounts.append(k8s.V1VolumeMount(name="bucket", mount_path=f"{FUSE_ROOT}/{bucket}"))
    elif settings.data == "pvc":
        volumes.append(k8s.V1Volume(name="data", persistent_volume_claim=k8s.V1PersistentVolumeClaimVolumeSource(
            claim_name=settings.volume_claim)))
        mounts.append(k8s.V1VolumeMount(name="data", mount_path=settings.mount_path))
    elif settings.data == "host":
        # the node's folder at the same path, so Airflow's tasks and the pods name files alike
        volumes.append(k8s.V1Volume(name="data", host_path=k8s.V1HostPathVolumeSource(
            path=settings.base_url, type="Directory")))
        mounts.append(k8s.V1VolumeMount(name="data", mount_path=settings.base_url))
    return {
        "image": settings.images[spec.image],
        "namespace": settings.namespace,
        "service_account_name": settings.service_account,
        # Workload Identity needs no token in the pod: GKE's metadata server answers for the KSA.
        "automount_service_account_token": False,
        "container_resources": k8s.V1ResourceRequirements(requests=requests, limits=limits),
        "node_selector": node_selector,
        "tolerations": tolerations,
        "volumes": volumes,
        "volume_mounts": mounts,
        "annotations": annotations,
        "labels": {"app.kubernetes.io/name": "criteo-mlops", "app.kubernetes.io/component": spec.name,
                   **settings.labels},
        "security_context": k8s.V1PodSecurityContext(
            run_as_non_root=True, run_as_user=STEP_UID, run_as_group=STEP_GID, fs_group=STEP_GID,
            seccomp_profile=k8s.V1SeccompProfile(type="RuntimeDefault")),
        # A capability the step asks for (HugeCTR's SYS_NICE, catalogue.py) is added alone, not a privileged pod.
        "container_security_context": k8s.V1SecurityContext(
            allow_privilege_escalation=False, privileged=False, run_as_non_root=True,
            capabilities=k8s.V1Capabilities(drop=["ALL"], add=list(spec.capabilities) or None)),
        "env_vars": [k8s.V1EnvVar(name="PYTHONUNBUFFERED", value="1"),
                     *(k8s.V1EnvVar(name=k, value=v) for k, v in settings.env)],
    }


def pod_operator(spec: StepSpec, argv: list[str], *, task_id: str, settings: PodSettings, callbacks=()):
    """A KubernetesPodOperator (GKEStartPodOperator with criteo_gke_cluster) for one step run."""
    schedule_timeout, startup_timeout = settings.timeouts(spec)
    kwargs = dict(
        task_id=task_id,
        name=f"criteo-{spec.name.replace('_', '-')}",
        random_name_suffix=True,
        cmds=["python", "-m", spec.module, *spec.command],
        arguments=[settings.container_path(a) for a in argv],
        base_container_name=BASE_CONTAINER,
        schedule_timeout_seconds=schedule_timeout,
        startup_timeout_seconds=startup_timeout,
        active_deadline_seconds=settings.active_deadline_s,
        on_finish_action="delete_succeeded_pod" if settings.keep_failed else "delete_pod",
        on_kill_action="delete_pod",
        image_pull_policy=settings.image_pull_policy or None,
        hostnetwork=settings.host_network,
        deferrable=settings.deferrable,
        poll_interval=settings.poll_interval_s,
        # the provider checks for the start every 5 s: a pod that starts in 1 s would wait 5
        startup_check_interval_seconds=max(1, min(5, round(settings.poll_interval_s))),
        get_logs=True,
        log_events_on_failure=True,
        do_xcom_push=False,   # the result comes back in the log (module docstring)
        callbacks=list(callbacks),
        **pod_spec_parts(spec, settings),
    )
    if settings.gke_cluster:
        from airflow.providers.google.cloud.operators.kubernetes_engine import GKEStartPodOperator

        chain = settings.gke_impersonation_chain
        return GKEStartPodOperator(location=settings.gke_location, cluster_name=settings.gke_cluster,
                                   project_id=settings.gcp_project or None, gcp_conn_id=settings.gcp_conn_id,
                                   use_internal_ip=settings.gke_use_internal_ip,
                                   use_dns_endpoint=settings.gke_use_dns_endpoint,
                                   impersonation_chain=(chain[0] if len(chain) == 1 else list(chain)) or None,
                                   **kwargs)
    from airflow.providers.cncf.kubernetes.operators.pod import KubernetesPodOperator

    if settings.in_cluster:
        # the service account of Airflow's own pod. KubernetesHook still falls back to the connection
        # kubernetes_default ("self.conn_id = conn_id or kubernetes_conn_id"), and refuses one that
        # holds a kube_config beside in_cluster ("mutually exclusive"): docs/kubernetes-gke.md says so.
        return KubernetesPodOperator(kubernetes_conn_id=None, in_cluster=True, **kwargs)
    return KubernetesPodOperator(kubernetes_conn_id=settings.conn_id, **kwargs)


def terminated_of(pod: k8s.V1Pod | None) -> k8s.V1ContainerStateTerminated | None:
    """The step container's terminated state (exit code, reason such as OOMKilled), if it ended."""
    statuses = (pod.status.container_statuses if pod is not None and pod.status else None) or []
    for status in statuses:
        if status.name == BASE_CONTAINER and status.state and status.state.terminated:
            return status.state.terminated
    return None


@dataclass(frozen=True)
class NotStarted:
    """A pod whose step container never ran, as its status said when the provider gave up on it."""

    scheduled: bool
    waiting: str = ""        # the container's waiting state, e.g. "ErrImagePull: <kubelet's message>"
    unschedulable: str = ""  # the scheduler's reason, e.g. "0/2 nodes are available: ..."


def not_started(pod: k8s.V1Pod) -> NotStarted:
    status = pod.status
    conditions = (status.conditions if status else None) or []
    scheduled = any(c.type == "PodScheduled" and c.status == "True" for c in conditions)
    unschedulable = next((f"{c.reason}: {c.message}" for c in conditions
                          if c.type == "PodScheduled" and c.status != "True" and c.message), "")
    waiting = ""
    for container in (status.container_statuses if status else None) or []:
        state = container.state.waiting if container.name == BASE_CONTAINER and container.state else None
        if state is not None:
            waiting = f"{state.reason}: {state.message}" if state.message else str(state.reason)
    return NotStarted(scheduled, waiting, unschedulable)


def pod_outcome(pod: k8s.V1Pod | None, client, limit: str | None) -> StepOutcome | NotStarted | None:
    """How the step container of a finished pod ended, from its status and its log; NotStarted
    when it never ran (its image not pulled, the pod never scheduled): its log does not exist,
    and a kubelet refuses to read it (HTTP 400), so it is not read."""
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    if pod is None:
        return None
    terminated = terminated_of(pod)
    if terminated is None:
        return not_started(pod)
    try:
        logs = client.read_namespaced_pod_log(name=pod.metadata.name, namespace=pod.metadata.namespace,
                                              container=BASE_CONTAINER, _preload_content=False)
        text = logs.data.decode("utf-8", errors="replace")
    except ApiException as exc:   # e.g. the node is gone with the pod's logs
        return StepOutcome(terminated.exit_code, None,
                           f"(the pod's log could not be read: {exc.status} {exc.reason})", terminated.reason, limit)
    except HTTPError as exc:
        return StepOutcome(terminated.exit_code, None, f"(the pod's log could not be read: {exc})",
                           terminated.reason, limit)
    return StepOutcome(terminated.exit_code, read_log(text), "\n".join(text.splitlines()[-LOG_TAIL_LINES:]),
                       terminated.reason, limit)


def outcome_recorder(outcomes: list, limit: str) -> type[KubernetesPodOperatorCallback]:
    """A completion callback that appends the pod's StepOutcome (or NotStarted) to `outcomes`
    (either mode; the provider calls it in the worker, never in the triggerer). A refused log read
    does not raise: an exception here would replace the provider's own, and the cause with it."""

    class Recorder(KubernetesPodOperatorCallback):
        @staticmethod
        def on_pod_completion(*, pod, client, mode, operator=None, context=None, **kwargs) -> None:
            if pod is not None:
                outcomes.append(pod_outcome(pod, client, limit))

    return Recorder


def _chain(exc: BaseException | None) -> list[BaseException]:
    seen: list[BaseException] = []
    while exc is not None and exc not in seen:
        seen.append(exc)
        exc = exc.__cause__ or exc.__context__
    return seen


def launch_failure(spec: StepSpec, settings: PodSettings, record: NotStarted | None, exc: BaseException) -> str | None:
    """Why the pod of `spec` never ran, naming the image or the timeout setting, from the pod's
    last status (`record`, deferrable mode) or the provider's launch exceptions in `exc`'s chain
    (the task's error is the provider's generic "Pod ... returned a failure." raised over them);
    None when neither says the pod failed to launch."""
    from airflow.providers.cncf.kubernetes.utils.pod_manager import (
        PodLaunchFailedException,
        PodLaunchTimeoutException,
    )

    texts = [str(e) for e in _chain(exc)]
    launch = [e for e in _chain(exc) if isinstance(e, (PodLaunchFailedException, PodLaunchTimeoutException))]
    timed_out = any(isinstance(e, PodLaunchTimeoutException) for e in launch) or any(
        "took too long" in t for t in texts)
    image = settings.images[spec.image]
    schedule_s, startup_s = settings.timeouts(spec)
    schedule_name, startup_name = timeout_settings(spec)
    if timed_out:
        never_scheduled = (not record.scheduled) if record else any("to be scheduled" in t for t in texts)
        if never_scheduled:
            said = f"; the scheduler said: {record.unschedulable}" if record and record.unschedulable else ""
            return (f"step {spec.name}: its pod was not scheduled within {schedule_s} s ({schedule_name}){said}. "
                    f"No node fits it yet: a {'GPU ' if spec.gpu else ''}node pool scaling up from zero needs "
                    f"its new node{', its GPU driver and device plugin' if spec.gpu else ''} first; raise "
                    f"{schedule_name} or keep a node in the pool")
        waiting = f"; its container is waiting: {record.waiting}" if record and record.waiting else ""
        return (f"step {spec.name}: its pod was scheduled but its container did not start within {startup_s} s "
                f"({startup_name}), image {image}{waiting}. A cold pull of a multi-GB image takes minutes: "
                f"raise {startup_name}")
    if record is not None and record.waiting:
        return f"step {spec.name}: its container never started, image {image}: {record.waiting}"
    for e in launch:
        return f"step {spec.name}: its container never started, image {image}: {e}"
    return None


def claim_problems(settings: PodSettings) -> list[str]:
    """criteo_pod_data=pvc: the claim, read through the run's own connection (in-cluster, GKE or
    kubernetes_conn_id), must exist and be ReadWriteMany: consecutive steps run as pods on different
    nodes (GPU and CPU pools) and a ReadWriteOnce volume attaches to one node only, so the next pod
    would wait for the volume until its startup timeout. An unreachable API server is retried."""
    from airflow.sdk.exceptions import AirflowException
    from kubernetes.client.rest import ApiException
    from urllib3.exceptions import HTTPError

    name = settings.volume_claim
    client = pod_operator(STEPS["extract"], [], task_id="check_volume_claim", settings=settings).client
    try:
        claim = client.read_namespaced_persistent_volume_claim(name, settings.namespace)
    except ApiException as exc:
        if exc.status == 404:
            return [f"criteo_pod_volume_claim={name!r}: no such PersistentVolumeClaim in namespace "
                    f"{settings.namespace!r}"]
        return [f"criteo_pod_volume_claim={name!r} cannot be read in namespace {settings.namespace!r}: "
                f"{exc.status} {exc.reason}"]
    except (OSError, HTTPError) as exc:
        raise AirflowException(f"criteo_pod_volume_claim={name!r} cannot be checked: the Kubernetes API server is "
                               f"unreachable ({type(exc).__name__}: {exc}); the task will be retried") from exc
    modes = (claim.status.access_modes if claim.status and claim.status.access_modes else
             claim.spec.access_modes) or []
    if "ReadWriteMany" not in modes:
        return [f"criteo_pod_volume_claim={name!r} is {', '.join(modes) or 'without access modes'}: the step pods "
                f"run on several nodes (GPU and CPU pools) and need a ReadWriteMany claim (e.g. Filestore)"]
    return []


class PodRuntime(ContainerRuntime):
    """A step as a pod through the provider's operator, built per attempt from the run's settings.

    The provider's deferral is taken over by CriteoStepOperator: the trigger's event comes back to
    `resume`, which rebuilds the same pod operator and hands it the event.
    """

    name = "kubernetes"
    config_class = PodSettings

    @classmethod
    def problems(cls, settings) -> list[str]:
        pods, problems = PodSettings.build(settings)
        if pods is not None and pods.data == "pvc":
            return claim_problems(pods)
        return problems

    def _build(self, spec: StepSpec, argv: list[str], task_id: str) -> list:
        """The step's pod operator; the list its completion callback appends the outcome to."""
        outcomes: list = []
        recorder = outcome_recorder(outcomes, self.config.memory_limit(spec))
        self._operator = pod_operator(spec, argv, task_id=task_id, settings=self.config, callbacks=[recorder])
        return outcomes

    def start(self, spec: StepSpec, argv: list[str], *, task_id: str, context=None) -> StepOutcome:
        outcomes = self._build(spec, argv, task_id)
        pod = self._operator
        return self._drive(spec, outcomes, pod.execute_async if pod.deferrable else pod.execute_sync, context)

    def resume(self, spec: StepSpec, argv: list[str], *, task_id: str, context, event: dict) -> StepOutcome:
        outcomes = self._build(spec, argv, task_id)
        return self._drive(spec, outcomes, self._operator.trigger_reentry, context, event)

    def _drive(self, spec: StepSpec, outcomes: list, call, *args) -> StepOutcome:
        from airflow.sdk.exceptions import AirflowException
        from urllib3.exceptions import HTTPError

        try:
            call(*args)
        except AirflowException as exc:
            # the step's exit (e.g. non-zero) is the outcome; a pod that never ran raises the provider's
            # generic error, replaced here by its cause
            outcome = outcomes[-1] if outcomes else None
            if outcome is None or isinstance(outcome, NotStarted):
                cause = launch_failure(spec, self.config, outcome, exc)
                if cause is None:
                    raise
                raise AirflowException(cause) from exc
            if outcome.exit_code == 0:
                raise AirflowException(f"step {spec.name} exited with code 0 but its pod failed: {exc}") from exc
            return outcome
        except (OSError, HTTPError) as exc:  # the API server is unreachable (urllib3's errors)
            raise AirflowException(f"step {spec.name}: the Kubernetes API server is unreachable "
                                   f"({type(exc).__name__}: {exc}); the task will be retried") from exc
        outcome = outcomes[-1] if outcomes else None
        if not isinstance(outcome, StepOutcome):
            raise AirflowException(f"step {spec.name}: its pod ended but its container has no exit status")
        return outcome
