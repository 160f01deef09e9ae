"""Pods that wait for their node, and pods that never start, on the real local control plane and
its real kubelets (local_servers.kubelet).

- A GPU pool scaling up from zero: the GPU node leaves the cluster (kubelet stopped, its Node
  deleted, as the autoscaler removes an idle node), a GPU step's pod stays Pending and
  Unschedulable; with a short schedule timeout the task fails naming
  criteo_pod_gpu_schedule_timeout_s and the scheduler's reason (deferrable: the provider's real
  trigger, run here); with a longer one the node registers again while the pod waits (a new node
  joining, its GPUs advertised), pulls the step's image slowly (below) and the step runs there and
  succeeds.
- An image that cannot be pulled (a registry address with nothing listening on loopback): the
  kubelet reports ErrImagePull, refuses the log read of the container with HTTP 400, and the task
  fails naming the image and the kubelet's message.

- A slow pull: the step's image from a loopback registry (local_servers.registry) whose blobs go
  out at PULL_BANDWIDTH, pulled by the node's real containerd (imagePullPolicy Always). Past the
  startup timeout the task fails naming criteo_pod_gpu_startup_timeout_s and the image; within
  criteo_pod_startup_timeout_s the step runs, and the test prints how long the kubelet says the pull
  took. The image is the node's own plus one new layer of random bytes: only that layer is fetched
  (the node has the others unpacked), so PULL_BYTES is what goes through the throttle.

What is not emulated: the GPU driver install, the autoscaler itself, GKE's image streaming and a
registry with authentication.
"""
import asyncio
import re
import subprocess
import threading
import time

import pytest

from operators.runtime.catalogue import STEPS

pytestmark = pytest.mark.kubernetes

GPU_NODE = "criteo-gpu-0"
CPU_NODE = "criteo-cpu-0"
PULL_BYTES = 24_000_000
PULL_BANDWIDTH = 1_000_000   # bytes/s: the pull takes ~24 s


class TI:
    """The task instance fields the provider's operator reads (its pod's labels, the pod's name pushed)."""

    dag_id, map_index, try_number = "pod_launch", -1, 1

    def __init__(self, task_id):
        self.task_id = task_id
        self.pushed = {}

    def xcom_push(self, key, value):
        self.pushed[key] = value


def context(task_id):
    return {"ti": TI(task_id), "run_id": f"manual__{time.time_ns()}", "dag": None}


def runtime():
    from operators.pipeline.config import Settings
    from operators.runtime.kubernetes import PodRuntime

    return PodRuntime(Settings.load())


def first_event(trigger) -> dict:
    """What the provider's trigger sends the task: its first event, as the triggerer runs it."""
    async def run():
        async for event in trigger.run():
            return event.payload
    return asyncio.run(run())


def start_deferred(step, argv):
    """A deferrable step: its pod created, then the trigger run here, then the task resumed with
    the trigger's event, as the triggerer and a new worker would."""
    from airflow.sdk.exceptions import TaskDeferred

    ctx = context(step)
    with pytest.raises(TaskDeferred) as deferred:
        runtime().start(STEPS[step], argv, task_id=step, context=ctx)
    event = first_event(deferred.value.trigger)
    return event, lambda: runtime().resume(STEPS[step], argv, task_id=step, context=ctx, event=event)


def pod_state(kube, prefix):
    pods = [p for p in kube.pods() if p.metadata.name.startswith(prefix)]
    return pods[0] if pods else None


@pytest.fixture
def gpu_pool_at_zero(kube, pod_settings):
    """The GPU node gone from the cluster; put back (re-registered, Ready, GPUs advertised) after."""
    node = kube.nodes[GPU_NODE]
    node.stop()
    kube.core.delete_node(GPU_NODE)
    try:
        yield node
    finally:
        if not node.running:
            node.start()


def test_a_gpu_step_waits_for_a_late_gpu_node_then_a_slow_pull_within_its_timeouts(kube, pod_settings, slow_registry,
                                                                                  gpu_pool_at_zero, monkeypatch):
    from airflow.sdk.exceptions import AirflowException

    # too short: the deferrable task fails naming the setting and what the scheduler said
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DEFERRABLE", "true")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_GPU_SCHEDULE_TIMEOUT_S", "4")
    event, resume = start_deferred("train", ["--help"])
    assert event["status"] == "timeout", event
    with pytest.raises(AirflowException) as err:
        resume()
    message = str(err.value)
    assert message.startswith("step train: its pod was not scheduled within 4 s (criteo_pod_gpu_schedule_timeout_s)")
    assert "the scheduler said: Unschedulable:" in message and "returned a failure" not in message, message
    assert not kube.pods()   # deleted

    # long enough: the node joins while the pod waits, pulls the image slowly (a cold node: its last
    # layer is new to it; the CPU node's copy of the image is the GPU node's, both imported from the
    # engine) and the step runs there (waiting, not deferred)
    image = slow_image(kube, slow_registry, CPU_NODE, monkeypatch)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DEFERRABLE", "false")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_GPU_SCHEDULE_TIMEOUT_S", "240")
    done = {}

    def step():
        try:
            done["outcome"] = runtime().start(STEPS["train"], ["--help"], task_id="train", context=context("train"))
        except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
            done["error"] = exc

    worker = threading.Thread(target=step)
    worker.start()
    deadline = time.monotonic() + 30
    while not (pod := pod_state(kube, "criteo-train-")) or not any(
            c.type == "PodScheduled" and c.reason == "Unschedulable" for c in pod.status.conditions or []):
        assert time.monotonic() < deadline, "the GPU pod was never found Unschedulable"
        time.sleep(0.2)
    waited_from = time.monotonic()
    gpu_pool_at_zero.start()   # the new node: kubelet registers, its GPUs are advertised
    node_of_pod = None
    while worker.is_alive() and node_of_pod is None:
        pod = pod_state(kube, "criteo-train-")
        node_of_pod = pod.spec.node_name if pod else None
        time.sleep(0.2)
    worker.join(timeout=240)
    assert "error" not in done, done.get("error")
    assert done["outcome"].exit_code == 0 and node_of_pod == GPU_NODE
    took = time.monotonic() - waited_from
    layer = slow_registry.transfer_of(slow_registry.added_layers[image])
    assert layer is not None and layer.finished is not None and layer.sent >= PULL_BYTES, layer
    assert layer.started > waited_from and layer.seconds >= 0.9 * PULL_BYTES / PULL_BANDWIDTH, layer
    print(f"\nlate GPU node: the step ran {took:.1f} s after the node was started, "
          f"{layer.started - waited_from:.1f} s of it before its pull began, {layer.seconds:.1f} s pulling")


def test_an_image_that_cannot_be_pulled_fails_naming_it_and_the_kubelets_reason(kube, pod_settings, monkeypatch):
    from airflow.sdk.exceptions import AirflowException
    from kubernetes.client.rest import ApiException

    image = "127.0.0.1:9/criteo/merlin:0.10.0"   # the discard port: nothing listens there
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_IMAGE_MERLIN", image)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_IMAGE_PULL_POLICY", "IfNotPresent")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DEFERRABLE", "true")
    event, resume = start_deferred("synth", ["--out", str(pod_settings / "raw"), "--days", "0", "--rows", "10"])
    assert event["status"] == "error" and "ErrImagePull" in event["message"], event
    pod = pod_state(kube, "criteo-synth-")
    with pytest.raises(ApiException) as refused:   # what a real kubelet answers for a container never started
        kube.core.read_namespaced_pod_log(pod.metadata.name, pod.metadata.namespace, container="base")
    assert refused.value.status == 400
    with pytest.raises(AirflowException) as err:
        resume()
    message = str(err.value)
    assert message.startswith(f"step synth: its container never started, image {image}: "), message
    assert ("ErrImagePull: " in message or "ImagePullBackOff: " in message) and "127.0.0.1:9" in message
    assert all(p.metadata.deletion_timestamp for p in kube.pods())   # being deleted (its grace period)


@pytest.fixture
def slow_registry(kube):
    """A throttled loopback registry; what the nodes pulled from it is removed after."""
    from local_servers.registry import Registry

    with Registry(bandwidth=PULL_BANDWIDTH) as registry:
        yield registry
    for node in kube.nodes.values():
        if not node.running:   # a node a failed test left stopped: nothing to remove from it now
            continue
        rows = [line.split() for line in subprocess.run([*node.ctr, "images", "ls"], capture_output=True, text=True,
                                                        check=True).stdout.splitlines()[1:]]
        pulled = {row[2] for row in rows if row[0].startswith(registry.host + "/")}
        refs = [row[0] for row in rows if row[2] in pulled]   # with the image's ID and digest references
        if refs:
            subprocess.run([*node.ctr, "images", "rm", "--sync", *refs], capture_output=True, check=True)


def slow_image(kube, registry, node: str, monkeypatch) -> str:
    """The merlin image of `node`, served slowly under a new tag, as the steps' merlin image."""
    from local_servers.kubelet import step_image

    image = registry.add_image(kube.nodes[node], step_image("merlin"), "criteo/merlin", f"slow-{time.time_ns()}",
                               PULL_BYTES)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_IMAGE_MERLIN", image)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_IMAGE_PULL_POLICY", "Always")
    return image


def test_a_pull_slower_than_the_startup_timeout_fails_naming_the_setting_and_the_image(kube, pod_settings,
                                                                                   slow_registry, monkeypatch):
    from airflow.sdk.exceptions import AirflowException

    image = slow_image(kube, slow_registry, GPU_NODE, monkeypatch)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DEFERRABLE", "true")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_GPU_STARTUP_TIMEOUT_S", "6")
    event, resume = start_deferred("train", ["--help"])
    assert event["status"] == "timeout", event
    layer = slow_registry.transfer_of(slow_registry.added_layers[image])
    assert layer is None or layer.finished is None, layer   # the pull was not done
    with pytest.raises(AirflowException) as err:
        resume()
    message = str(err.value)
    assert message.startswith(f"step train: its pod was scheduled but its container did not start within 6 s "
                              f"(criteo_pod_gpu_startup_timeout_s), image {image}"), message
    assert "raise criteo_pod_gpu_startup_timeout_s" in message
    # kubelet goes on pulling for the deleted pod, one image at a time: end it, as a dropped connection
    slow_registry.cut(image)


def test_a_slow_pull_within_the_startup_timeout_runs_the_step(kube, pod_settings, slow_registry, monkeypatch):
    from local_servers.kube_fixtures import NAMESPACE

    image = slow_image(kube, slow_registry, CPU_NODE, monkeypatch)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_DEFERRABLE", "false")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_POD_STARTUP_TIMEOUT_S", "180")
    started = time.monotonic()
    outcome = runtime().start(STEPS["synth"], ["--help"], task_id="synth", context=context("synth"))
    took = time.monotonic() - started
    assert outcome.exit_code == 0
    layer = slow_registry.transfer_of(slow_registry.added_layers[image])
    assert layer is not None and layer.finished is not None and layer.sent >= PULL_BYTES, layer
    assert layer.seconds >= 0.9 * PULL_BYTES / PULL_BANDWIDTH, layer   # the throttle held
    pulled = [e for e in kube.core.list_namespaced_event(NAMESPACE).items
              if e.reason == "Pulled" and image in (e.message or "")]
    assert pulled, "no Pulled event for the image"
    said = re.search(r"Successfully pulled image .* in ([0-9.]+)(ms|s)", pulled[-1].message)
    assert said, pulled[-1].message
    kubelet_s = float(said[1]) / (1000 if said[2] == "ms" else 1)
    assert kubelet_s >= layer.seconds * 0.9, (kubelet_s, layer)
    print(f"\nslow pull of {image}: kubelet {kubelet_s:.1f} s, the new layer ({layer.sent / 1e6:.0f} MB) "
          f"{layer.seconds:.1f} s at {PULL_BANDWIDTH / 1e6:g} MB/s; the step took {took:.1f} s in all")
