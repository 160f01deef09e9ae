"""The Docker runtime: a step (catalogue.py) as a container of its image on one Docker host, through
the Docker provider's DockerOperator. It is what the compose stack (docker-compose.yaml) runs on a
single GPU host; GKE uses the pod runtime (kubernetes.py).

The image, the entry point (`python -m <package>`), the GPU device request and the memory come from
the same catalogue as the pods. The bucket is a named volume mounted at the same path in Airflow's
containers and in the step's (or a gs:// URL the step reaches itself). The result comes back as
from a pod: the step's last `STEP_RESULT {...}` log line; exit codes keep their meaning.

Imported only inside tasks (it imports the Docker provider and the docker client).
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from airflow.sdk.exceptions import AirflowFailException

from criteo_kernel.result import read_log

from .base import StepOutcome
from .catalogue import StepSpec
from .container import ContainerRuntime, step_env, step_images, step_resources, unset_image

__all__ = ["DockerRuntime", "DockerSettings", "docker_operator", "exit_code_of_failure"]

# 128 + SIGKILL: what a container killed by the kernel's out-of-memory killer exits with.
OOM_EXIT_CODE = 137


class DockerConfigurationError(AirflowFailException):
    """A Docker runtime setting is missing or wrong: no retry can fix it."""


def _quantity(quantity: str) -> tuple[int, str]:
    """A Kubernetes quantity ("8Gi", "512Mi") as (8, "G"), (512, "M")."""
    m = re.fullmatch(r"(\d+)([KMGT])i?", quantity)
    if not m:
        raise ValueError(f"quantity {quantity!r}: expected e.g. 512Mi or 16Gi")
    return int(m.group(1)), m.group(2)


def docker_memory(quantity: str) -> str:
    """A Kubernetes quantity ("8Gi") as Docker's ("8g")."""
    n, unit = _quantity(quantity)
    return f"{n}{unit.lower()}"


def docker_bytes(quantity: str) -> int:
    n, unit = _quantity(quantity)
    return n * 1024 ** ("KMGT".index(unit) + 1)


@dataclass(frozen=True)
class DockerSettings:
    base_url: str
    images: dict[str, str]
    docker_url: str = "unix://var/run/docker.sock"
    network: str = ""
    volume: str = ""
    mount_path: str = ""
    gpus: int = 1
    shm_size: str = "16Gi"
    env: tuple[tuple[str, str], ...] = ()
    resources: dict | None = None

    @classmethod
    def build(cls, settings) -> tuple[DockerSettings | None, list[str]]:
        """The Docker runtime's settings from the run's, and what is wrong with them (each named)."""
        problems: list[str] = []
        get = settings.value
        base = settings.storage.base_url
        images = step_images(settings, problems)
        volume = get("criteo_docker_volume")
        mount_path = get("criteo_docker_mount_path").rstrip("/")
        if "://" not in base:
            if not volume:
                problems.append(f"criteo_docker_volume is not set: the step containers need the volume that holds "
                                f"criteo_base_url {base!r}")
            if not mount_path or not (base + "/").startswith(mount_path + "/"):
                problems.append(f"criteo_base_url {base!r} is not under criteo_docker_mount_path {mount_path!r}")
        raw_gpus = get("criteo_docker_gpus")
        gpus = int(raw_gpus) if raw_gpus.isdigit() else -1
        if gpus < 0:
            problems.append(f"criteo_docker_gpus={raw_gpus!r}: expected a number of GPUs (0: a host without GPUs)")
        env = step_env(settings, "criteo_docker_env", problems)
        resources = step_resources(settings, problems)
        if problems:
            return None, problems
        return cls(base_url=base, images=images, docker_url=get("criteo_docker_url"),
                   network=get("criteo_docker_network"), volume=volume, mount_path=mount_path, gpus=gpus,
                   shm_size=get("criteo_pod_shm_size"), env=env, resources=resources), []

    @classmethod
    def of(cls, settings) -> DockerSettings:
        """The Docker runtime's settings, or DockerConfigurationError naming each that is wrong."""
        docker, problems = cls.build(settings)
        if problems:
            raise DockerConfigurationError("criteo_runtime=docker cannot start a container:\n- "
                                           + "\n- ".join(problems))
        return docker

    def memory_limit(self, spec: StepSpec) -> str:
        """The step's memory limit, Kubernetes-style (per GPU for a GPU step, at least one GPU's share)."""
        return spec.resources(max(self.gpus, 1), (self.resources or {}).get(spec.name))[1]


def docker_operator(spec: StepSpec, argv: list[str], *, task_id: str, settings: DockerSettings):
    """A DockerOperator running one step in its image (entry point `python -m <package>`)."""
    from airflow.providers.docker.operators.docker import DockerOperator
    from docker.types import DeviceRequest, Mount

    unset = unset_image(spec.name, spec.image, settings.images)
    if unset:
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(unset)
    mounts = [Mount(target=settings.mount_path, source=settings.volume, type="volume")] if settings.volume else []
    return DockerOperator(
        task_id=task_id,
        image=settings.images[spec.image],
        entrypoint=["python", "-m", spec.module],
        command=[*spec.command, *argv],
        docker_url=settings.docker_url,
        network_mode=settings.network or None,
        mounts=mounts,
        mount_tmp_dir=False,   # Airflow's own temp folder is not on the Docker host
        environment={"PYTHONUNBUFFERED": "1", **dict(settings.env)},
        # A host without GPUs (criteo_docker_gpus=0) runs the GPU steps on its CPUs, with one GPU's share.
        mem_limit=docker_memory(settings.memory_limit(spec)),
        shm_size=docker_bytes(settings.shm_size) if spec.gpu else None,
        device_requests=([DeviceRequest(count=settings.gpus, capabilities=[["gpu"]])]
                         if spec.gpu and settings.gpus else None),
        labels={"app.kubernetes.io/name": "criteo-mlops", "app.kubernetes.io/component": spec.name},
        auto_remove="success",
        do_xcom_push=True,
        xcom_all=True,         # every log line back; the result is the last STEP_RESULT line
    )


def exit_code_of_failure(exc) -> int | None:
    """The container's exit code from the provider's DockerContainerFailedException."""
    m = re.search(r"'StatusCode': (\d+)", str(exc))
    return int(m.group(1)) if m else None


class DockerRuntime(ContainerRuntime):
    """A step as a container of its image on the Docker host (DockerOperator does not defer, so it
    runs inside the task); its result is the last STEP_RESULT line of the container's log."""

    name = "docker"
    config_class = DockerSettings

    def start(self, spec: StepSpec, argv: list[str], *, task_id: str, context=None) -> StepOutcome:
        from airflow.sdk.exceptions import AirflowException

        self._operator = docker_operator(spec, argv, task_id=task_id, settings=self.config)
        limit = self.config.memory_limit(spec)
        try:
            lines = self._operator.execute(context)
        except AirflowException as exc:
            code = exit_code_of_failure(exc)
            if code is None:   # the engine's error, not the step's
                raise
            text = "\n".join(line.decode() if isinstance(line, bytes) else str(line)
                             for line in getattr(exc, "logs", None) or [])
            # SIGKILL under a memory limit is the kernel's OOM killer (Podman's inspect does not say so reliably)
            reason = "OOMKilled" if code == OOM_EXIT_CODE else None
            return StepOutcome(code, read_log(text), "\n".join(text.splitlines()[-40:]) or str(exc), reason, limit)
        text = "\n".join(lines) if isinstance(lines, list) else str(lines or "")
        return StepOutcome(0, read_log(text), "\n".join(text.splitlines()[-40:]), None, limit)
