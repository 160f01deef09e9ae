"""The Docker runtime's containers (the compose stack's), as DockerOperator arguments, and its settings.

No Docker engine runs here: what is checked is what the operator would ask the engine for."""
import pytest

from operators.pipeline.config import Settings
from operators.runtime.catalogue import IMAGES, STEPS

pytestmark = pytest.mark.unit

PINNED = {name: f"criteo-{name}:0.10.0" for name in IMAGES}


@pytest.fixture
def docker_env(monkeypatch):
    env = {"criteo_base_url": "/data/bucket", "criteo_docker_volume": "criteo-bucket",
           "criteo_docker_network": "criteo-mlops", "criteo_docker_env": "STORAGE_EMULATOR_HOST=http://gcs:4443",
           **{f"criteo_image_{name}": ref for name, ref in PINNED.items()}}
    for key, value in env.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", value)
    return monkeypatch


@pytest.mark.parametrize("step", sorted(STEPS))
def test_every_step_runs_in_its_image_with_its_resources(docker_env, step):
    from operators.runtime.docker import DockerSettings, docker_operator

    spec = STEPS[step]
    op = docker_operator(spec, ["--out", "/data/bucket/x"], task_id=step, settings=DockerSettings.of(Settings.load()))
    assert op.image == PINNED[spec.image]
    assert op.entrypoint == ["python", "-m", spec.module] and op.command == [*spec.command, "--out", "/data/bucket/x"]
    assert op.network_mode == "criteo-mlops" and op.mount_tmp_dir is False
    (mount,) = op.mounts
    assert (mount["Target"], mount["Source"], mount["Type"]) == ("/data/bucket", "criteo-bucket", "volume")
    assert op.environment["STORAGE_EMULATOR_HOST"] == "http://gcs:4443"
    assert op.mem_limit == spec.memory.replace("Gi", "g") and op.auto_remove == "success"
    assert op.do_xcom_push and op.xcom_all
    if spec.gpu:
        (gpu,) = op.device_requests
        assert gpu["Count"] == 1 and gpu["Capabilities"] == [["gpu"]]
        assert op.shm_size == 16 * 1024 ** 3
    else:
        assert not op.device_requests and op.shm_size is None


@pytest.mark.parametrize("change, named", [
    ({"criteo_docker_volume": ""}, "criteo_docker_volume is not set"),
    ({"criteo_base_url": "/elsewhere/bucket"}, "is not under criteo_docker_mount_path"),
    ({"criteo_image_merlin": "criteo-merlin:latest"}, "is not pinned"),
    ({"criteo_docker_gpus": "two"}, "criteo_docker_gpus='two'"),
    ({"criteo_docker_env": "NOT A PAIR"}, "is not NAME=value"),
])
def test_bad_settings_fail_naming_the_setting(docker_env, change, named):
    from operators.runtime.docker import DockerConfigurationError, DockerSettings

    for key, value in change.items():
        docker_env.setenv(f"AIRFLOW_VAR_{key.upper()}", value)
    with pytest.raises(DockerConfigurationError, match="cannot start a container") as err:
        DockerSettings.of(Settings.load())
    assert named in str(err.value)


def test_a_host_without_gpus_runs_gpu_steps_on_its_cpus(docker_env):
    from operators.runtime.docker import DockerSettings, docker_operator

    docker_env.setenv("AIRFLOW_VAR_CRITEO_DOCKER_GPUS", "0")
    spec = STEPS["train"]
    op = docker_operator(spec, [], task_id="train", settings=DockerSettings.of(Settings.load()))
    assert spec.gpu and not op.device_requests
    assert op.mem_limit == spec.memory.replace("Gi", "g")


def test_a_gs_base_needs_no_volume(docker_env):
    from operators.runtime.docker import DockerSettings, docker_operator

    docker_env.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", "gs://criteo/pipeline")
    docker_env.setenv("AIRFLOW_VAR_CRITEO_DOCKER_VOLUME", "")
    op = docker_operator(STEPS["extract"], [], task_id="extract", settings=DockerSettings.of(Settings.load()))
    assert op.mounts == []


def test_the_exit_code_is_read_from_the_providers_failure():
    from airflow.providers.docker.exceptions import DockerContainerFailedException

    from operators.runtime.docker import exit_code_of_failure

    exc = DockerContainerFailedException("Docker container failed: {'Error': None, 'StatusCode': 4}", logs=[])
    assert exit_code_of_failure(exc) == 4
    assert exit_code_of_failure(RuntimeError("other")) is None
