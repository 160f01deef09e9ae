"""A pod whose container never ran fails its task naming the cause: the image and the kubelet's
reason, or the timeout and the setting that raises it; never the provider's generic "Pod ...
returned a failure.".

The deferrable path runs the real KubernetesPodOperator.trigger_reentry (provider 10.25.0) with
the event its trigger sends, against an API client that answers as a real kubelet does for the
log of a container that never started: HTTP 400 (kubernetes' own ApiException). The same paths
run against real kubelets in tests/kubernetes/test_pod_launch.py."""
import pytest
from kubernetes.client import models as k8s
from kubernetes.client.rest import ApiException

from operators.pipeline.config import Settings
from operators.runtime.catalogue import STEPS
from tests.operators.runtime.conftest import PINNED

pytestmark = pytest.mark.unit

SCHEDULER_SAID = "0/2 nodes are available: 2 node(s) didn't match Pod's node affinity."
PULL_ERROR = (f'rpc error: code = NotFound desc = failed to pull and unpack image "{PINNED["merlin"]}": '
              f'failed to resolve reference "{PINNED["merlin"]}": not found')




def pending_pod(*, scheduled: bool, waiting: k8s.V1ContainerStateWaiting | None = None) -> k8s.V1Pod:
    condition = (k8s.V1PodCondition(type="PodScheduled", status="True") if scheduled else
                 k8s.V1PodCondition(type="PodScheduled", status="False", reason="Unschedulable",
                                    message=SCHEDULER_SAID))
    statuses = None
    if waiting:
        statuses = [k8s.V1ContainerStatus(name="base", image=PINNED["merlin"], image_id="", ready=False,
                                          restart_count=0, state=k8s.V1ContainerState(waiting=waiting))]
    return k8s.V1Pod(metadata=k8s.V1ObjectMeta(name="criteo-train-abc", namespace="criteo", labels={}),
                     spec=k8s.V1PodSpec(containers=[k8s.V1Container(name="base", image=PINNED["merlin"])]),
                     status=k8s.V1PodStatus(phase="Pending", conditions=[condition], container_statuses=statuses))


class RefusingKubelet:
    """The CoreV1Api calls the provider and the callback make after a deferral; the log read is
    refused as kube-apiserver relays a kubelet's answer for a container that never started."""

    def __init__(self, pod):
        self.pod = pod
        self.log_reads = 0
        self.deleted = []

    def read_namespaced_pod(self, name, namespace, **kwargs):
        return self.pod

    def read_namespaced_pod_log(self, name, namespace, **kwargs):
        self.log_reads += 1
        raise ApiException(status=400, reason="Bad Request")

    def list_namespaced_event(self, namespace, **kwargs):
        return k8s.CoreV1EventList(items=[])

    def patch_namespaced_pod(self, name, namespace, body, **kwargs):
        return self.pod

    def delete_namespaced_pod(self, name, namespace, **kwargs):
        self.deleted.append(name)


class Hook:
    def __init__(self, pod):
        self.pod = pod

    def get_pod(self, name, namespace):
        return self.pod


@pytest.fixture
def resume_with(monkeypatch, settings_env):
    """PodRuntime.resume, the real provider operator it builds taking the trigger's event, talking
    to a RefusingKubelet instead of an API server."""
    from operators.runtime import kubernetes

    def run(api, event, step="train"):
        from airflow.providers.cncf.kubernetes.utils.pod_manager import PodManager

        pod = api.pod
        real = kubernetes.pod_operator

        def built(*args, **kwargs):
            op = real(*args, **kwargs)
            op.hook, op.client = Hook(pod), api
            op.pod_manager = PodManager(kube_client=api, callbacks=op.callbacks)
            return op

        monkeypatch.setattr(kubernetes, "pod_operator", built)
        runtime = kubernetes.PodRuntime(Settings.load())
        event = {"name": pod.metadata.name, "namespace": "criteo", **event}
        return runtime.resume(STEPS[step], ["--help"], task_id=step, context={"ti": None}, event=event)

    return run


def test_a_deferred_pod_never_scheduled_names_the_schedule_timeout_setting(resume_with):
    from airflow.sdk.exceptions import AirflowException

    event = {"status": "timeout", "message": "Pod took too long to be scheduled on the cluster, giving up. "
                                             "More than 1200s. Check the pod events in kubernetes."}
    api = RefusingKubelet(pending_pod(scheduled=False))
    with pytest.raises(AirflowException) as err:
        resume_with(api, event)
    assert api.log_reads and api.deleted == ["criteo-train-abc"]   # the provider met the 400, went on, cleaned up
    message = str(err.value)
    assert message.startswith("step train: its pod was not scheduled within 1200 s "
                              "(criteo_pod_gpu_schedule_timeout_s)"), message
    assert SCHEDULER_SAID in message and "raise criteo_pod_gpu_schedule_timeout_s" in message
    assert "returned a failure" not in message


def test_a_deferred_pod_that_cannot_pull_its_image_names_it_and_the_kubelets_reason(resume_with):
    from airflow.sdk.exceptions import AirflowException

    pod = pending_pod(scheduled=True, waiting=k8s.V1ContainerStateWaiting(reason="ErrImagePull", message=PULL_ERROR))
    # what the trigger sends when await_pod_start raised PodLaunchFailedException (its generic branch)
    event = {"status": "error", "message": f"Image cannot be pulled, unable to start: ErrImagePull\n{PULL_ERROR}",
             "stack_trace": "Traceback (most recent call last):\n  ...\nPodLaunchFailedException: Image cannot be "
                            "pulled"}
    api = RefusingKubelet(pod)
    with pytest.raises(AirflowException) as err:
        resume_with(api, event)
    assert api.log_reads and api.deleted == ["criteo-train-abc"]
    message = str(err.value)
    assert message == f"step train: its container never started, image {PINNED['merlin']}: ErrImagePull: {PULL_ERROR}"


def test_a_deferred_pod_whose_container_did_not_start_in_time_names_the_startup_setting(resume_with):
    """Scheduled, but the image still not pulled when the startup timeout ends."""
    from airflow.sdk.exceptions import AirflowException

    pod = pending_pod(scheduled=True, waiting=k8s.V1ContainerStateWaiting(reason="ImagePullBackOff",
                                                                         message="Back-off pulling image"))
    event = {"status": "timeout", "message": "Pod took too long to start. More than 1200s. Check the pod events "
                                             "in kubernetes."}
    api = RefusingKubelet(pod)
    with pytest.raises(AirflowException) as err:
        resume_with(api, event)
    assert api.log_reads
    message = str(err.value)
    assert message.startswith("step train: its pod was scheduled but its container did not start within 1200 s "
                              "(criteo_pod_gpu_startup_timeout_s)"), message
    assert "ImagePullBackOff: Back-off pulling image" in message and PINNED["merlin"] in message


def test_the_callback_survives_a_refused_log_read_of_a_container_that_ran():
    """A container that ended whose log is refused (its node gone): the outcome keeps the exit code
    and says the log could not be read."""
    from operators.runtime.kubernetes import StepOutcome, outcome_recorder

    pod = pending_pod(scheduled=True)
    pod.status.container_statuses = [k8s.V1ContainerStatus(
        name="base", image="i", image_id="", ready=False, restart_count=0,
        state=k8s.V1ContainerState(terminated=k8s.V1ContainerStateTerminated(exit_code=137, reason="Error")))]
    outcomes = []
    api = RefusingKubelet(pod)
    outcome_recorder(outcomes, "8Gi").on_pod_completion(pod=pod, client=api, mode="sync")
    (outcome,) = outcomes
    assert isinstance(outcome, StepOutcome) and outcome.exit_code == 137 and api.log_reads == 1
    assert outcome.log_tail == "(the pod's log could not be read: 400 Bad Request)"


def test_a_launch_failure_in_a_waiting_task_names_its_cause(settings_env):
    """Not deferrable: the provider raises its generic error over PodLaunchFailedException or
    PodLaunchTimeoutException (cleanup's raise in execute_sync's finally); no callback ran."""
    from airflow.providers.cncf.kubernetes.utils.pod_manager import (
        PodLaunchFailedException,
        PodLaunchTimeoutException,
    )
    from airflow.sdk.exceptions import AirflowException

    from operators.runtime.kubernetes import PodSettings, launch_failure

    settings = PodSettings.of(Settings.load())

    def chained(first):
        try:
            try:
                raise first
            finally:
                raise AirflowException("Pod criteo-extract-abc returned a failure.")
        except AirflowException as exc:
            return exc

    exc = chained(PodLaunchTimeoutException("Pod took too long to be scheduled on the cluster, giving up. More "
                                            "than 600s. Check the pod events in kubernetes."))
    assert launch_failure(STEPS["extract"], settings, None, exc).startswith(
        "step extract: its pod was not scheduled within 600 s (criteo_pod_schedule_timeout_s)")
    exc = chained(PodLaunchFailedException(f"Image cannot be pulled, unable to start: ErrImagePull\n{PULL_ERROR}"))
    assert launch_failure(STEPS["extract"], settings, None, exc) == (
        f"step extract: its container never started, image {PINNED['merlin']}: Image cannot be pulled, unable to "
        f"start: ErrImagePull\n{PULL_ERROR}")
    assert launch_failure(STEPS["extract"], settings, None, AirflowException("something else")) is None
