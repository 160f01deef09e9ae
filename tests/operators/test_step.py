"""CriteoStepOperator: one mapping of a step's outcome to the task's state, whatever runtime ran it.

For each runtime, the outcome comes from what that runtime really sees: the local runtime's
subprocess exit and $STEP_RESULT_PATH, the Docker provider's failure and log lines, the pod's
container status and log read through the API client. The operator then maps it in one place:
outputs pushed on success, no retry for bad input or out of memory, a retry for anything else.
"""
import pytest
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from operators.pipeline.config import Settings
from operators.runtime.base import StepOutcome
from operators.runtime.catalogue import IMAGES, STEPS
from operators.step import CriteoStepOperator

pytestmark = pytest.mark.unit

PINNED = {f"criteo_image_{name}": f"criteo-{name}:0.10.0" for name in IMAGES}


class TI:
    def __init__(self):
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def run(outcome: StepOutcome, step="extract"):
    """The operator's mapping of `outcome`: (its return value or exception, what it pushed)."""
    op = CriteoStepOperator(task_id=step, step=step, settings=Settings.with_values().to_dict())
    ti = TI()
    try:
        return op._finish({"ti": ti}, STEPS[step], outcome), ti.pushed
    except AirflowException as exc:
        return exc, ti.pushed


# -- each runtime's outcome, from what it really gets back ------------------------------------------

def local_outcome(tmp_path, code: int) -> StepOutcome:
    """A real step subprocess: extract on a directory exits 4 (bad data); synth exits 0."""
    from operators.runtime.local import LocalProcessRuntime

    if code == 0:
        return LocalProcessRuntime().start(STEPS["synth"], ["--out", str(tmp_path), "--days", "0", "--rows", "50"])
    (tmp_path / "day_7").mkdir()
    return LocalProcessRuntime().start(STEPS["extract"], ["--input", str(tmp_path / "day_7"),
                                                          "--output", str(tmp_path / "out")])


def docker_outcome(monkeypatch, code: int, lines: list[str]) -> StepOutcome:
    """What DockerRuntime makes of the Docker provider's return value or DockerContainerFailedException."""
    from airflow.providers.docker.exceptions import DockerContainerFailedException

    from operators.runtime import docker

    class Container:
        def execute(self, context):
            if code:
                raise DockerContainerFailedException(
                    f"Docker container failed: {{'Error': None, 'StatusCode': {code}}}", logs=lines)
            return lines

    monkeypatch.setattr(docker, "docker_operator", lambda *a, **k: Container())
    settings = Settings.with_values(criteo_runtime="docker", criteo_base_url="/data/bucket",
                                    criteo_docker_volume="bucket", **PINNED)
    return docker.DockerRuntime(settings).start(STEPS["extract"], [], task_id="extract")


def pod_outcome(code: int, reason: str, log: str) -> StepOutcome:
    """What the pod runtime's completion callback makes of a finished pod and its log."""
    from kubernetes.client import models as k8s

    from operators.runtime.kubernetes import pod_outcome

    class Client:
        def read_namespaced_pod_log(self, **kwargs):
            assert kwargs["container"] == "base"
            return type("Response", (), {"data": log.encode()})()

    state = k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=code, reason=reason))
    pod = k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="p", namespace="ns"), status=k8s.V1PodStatus(
        container_statuses=[k8s.V1ContainerStatus(name="base", state=state, image="i", image_id="",
                                                  ready=False, restart_count=0)]))
    return pod_outcome(pod, Client(), "6Gi")


RESULT = '{"output": "/b/x", "input": {"size": 1}}'
BAD = '{"error": "day_7 is a directory", "summary": "extract failed: day_7 is a directory"}'


@pytest.mark.parametrize("runtime", ["local", "docker", "kubernetes"])
def test_success_pushes_each_declared_output(runtime, tmp_path, monkeypatch):
    if runtime == "local":
        returned, pushed = run(local_outcome(tmp_path, 0), step="synth")
        assert returned["days"][0]["rows"] == 50 and pushed == {}      # synth declares no outputs
        return
    outcome = (docker_outcome(monkeypatch, 0, ["log line", f"STEP_RESULT {RESULT}"]) if runtime == "docker"
               else pod_outcome(0, "Completed", f"log line\nSTEP_RESULT {RESULT}\n"))
    returned, pushed = run(outcome)
    assert returned == {"output": "/b/x", "input": {"size": 1}}
    assert pushed == {"output": "/b/x", "input": {"size": 1}}


@pytest.mark.parametrize("runtime", ["local", "docker", "kubernetes"])
def test_bad_input_fails_at_once_with_the_steps_result_pushed(runtime, tmp_path, monkeypatch):
    outcome = {"local": lambda: local_outcome(tmp_path, 4),
               "docker": lambda: docker_outcome(monkeypatch, 4, [f"STEP_RESULT {BAD}"]),
               "kubernetes": lambda: pod_outcome(4, "Error", f"STEP_RESULT {BAD}\n")}[runtime]()
    error, pushed = run(outcome)
    assert isinstance(error, AirflowFailException), error
    assert "step extract exited with code 4 (bad input: no retry)" in str(error)
    assert "is a directory" in str(error) and "is a directory" in pushed["step_result"]["error"]


@pytest.mark.parametrize("runtime", ["docker", "kubernetes"])
def test_out_of_memory_fails_without_retry_naming_the_limit_and_the_setting(runtime, monkeypatch):
    outcome = (docker_outcome(monkeypatch, 137, ["loading"]) if runtime == "docker"
               else pod_outcome(137, "OOMKilled", "loading\n"))
    error, _ = run(outcome)
    assert isinstance(error, AirflowFailException)
    limit = "8Gi" if runtime == "docker" else "6Gi"
    assert f"ran out of memory under its limit of {limit}" in str(error) and "criteo_step_resources" in str(error)


@pytest.mark.parametrize("runtime", ["docker", "kubernetes"])
def test_any_other_failure_is_retried_with_the_log_tail(runtime, monkeypatch):
    outcome = (docker_outcome(monkeypatch, 1, ["Traceback", "KeyError: 'x'"]) if runtime == "docker"
               else pod_outcome(143, "Error", "Traceback\nKeyError: 'x'\n"))
    error, pushed = run(outcome)
    assert type(error) is AirflowException and "KeyError: 'x'" in str(error)
    assert f"exited with code {outcome.exit_code}:" in str(error) and pushed == {}


def test_a_step_that_exits_0_without_a_result_breaks_the_contract():
    error, _ = run(StepOutcome(0, None, "done"))
    assert type(error) is AirflowException and "no result" in str(error) and "criteo_kernel.result" in str(error)
    error, _ = run(StepOutcome(0, {"output": "/b/x"}))                  # extract declares output and input
    assert "declares the outputs ['output', 'input'], but its result has no ['input']" in str(error)


def test_a_step_without_the_runs_settings_or_with_another_registrys_fails_naming_why():
    op = CriteoStepOperator(task_id="extract", step="extract")
    with pytest.raises(AirflowFailException, match="no settings were handed to this step"):
        op.execute({"ti": TI()})
    op = CriteoStepOperator(task_id="extract", step="extract", settings={"criteo_base_url": "/b"})
    with pytest.raises(AirflowFailException, match="do not match the registry"):
        op.execute({"ti": TI()})


def test_a_step_reads_no_variable_it_gets_every_setting_from_the_plan(monkeypatch, tmp_path):
    """The count the structural issue asked for: Variable look-ups when a pod step starts."""
    import airflow.sdk

    from operators.runtime import kubernetes

    lookups = []
    monkeypatch.setattr(airflow.sdk.Variable, "get", classmethod(lambda cls, key, *a, **k: lookups.append(key)))
    monkeypatch.setattr(airflow.sdk.Variable, "keys", classmethod(lambda cls, *a, **k: lookups.append("keys")))
    built = []

    class Pod:
        deferrable = False

        def __init__(self, **kwargs):
            built.append(kwargs)

        def execute_sync(self, context):
            raise AirflowException("pod failed")

    monkeypatch.setattr(kubernetes, "pod_operator", lambda spec, argv, **kw: Pod(**kw))
    settings = Settings.with_values(criteo_runtime="kubernetes", criteo_base_url="gs://b/p",
                                    criteo_kubernetes_namespace="ns", criteo_kubernetes_service_account="sa", **PINNED)
    op = CriteoStepOperator(task_id="export", step="export", settings=settings.to_dict())
    with pytest.raises(AirflowException, match="pod failed"):      # never started: the provider's error
        op.execute({"ti": TI()})
    assert built[0]["settings"].namespace == "ns" and lookups == []


def test_a_resumed_pod_step_takes_the_runs_settings_not_the_variables(monkeypatch):
    """A deferred step resumes in a new worker process: the pod operator it rebuilds to take the
    trigger's event comes from the plan's settings (the operator's `settings`), even when the
    Variables changed meanwhile."""
    from operators.runtime import kubernetes

    plan = Settings.with_values(
        criteo_runtime="kubernetes", criteo_base_url="gs://planned-bucket/pipeline", criteo_pod_data="gcsfuse",
        criteo_kubernetes_namespace="criteo", criteo_kubernetes_service_account="criteo-steps", **PINNED).to_dict()
    for key, value in {"BASE_URL": "gs://variable-bucket/pipeline", "KUBERNETES_NAMESPACE": "other",
                       "POD_DATA": "gcsfs", "RUNTIME": "local"}.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_CRITEO_{key}", value)
    resumed = []

    def drive(self, spec, outcomes, call, *args):
        resumed.append((self._operator, call, args))
        return StepOutcome(0, {"days": []})

    monkeypatch.setattr(kubernetes.PodRuntime, "_drive", drive)
    op = CriteoStepOperator(task_id="synth", step="synth", settings=plan,
                            arguments={"--out": "gs://planned-bucket/pipeline/raw"})
    event = {"status": "success", "name": "criteo-synth-abc", "namespace": "criteo"}
    assert op.resume({"ti": TI()}, event) == {"days": []}
    ((pod, call, args),) = resumed
    assert call == pod.trigger_reentry and args[1] == event
    (bucket,) = [v for v in pod.volumes if v.name == "bucket"]
    assert bucket.csi.volume_attributes["bucketName"] == "planned-bucket" and pod.namespace == "criteo"
    assert pod.arguments == ["--out", "/mnt/gcs/planned-bucket/pipeline/raw"]
