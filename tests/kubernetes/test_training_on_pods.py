"""A full retrain and a daily run with criteo_runtime=kubernetes: every step a pod, run by the real
kubelet as a container of its image from `make images`, beside the same runs on the local runtime
in the same test run. The same versions, lineage and blessings, AUC within 0.002; each runtime's
wall time and each step pod's time from create to Succeeded go to .data/kubernetes/timings.md.

The bucket is a host folder mounted into each pod at the same path (criteo_pod_data=host), owned
as a platform team would prepare a volume for the images' user (uid 50000, group 0).
"""
from __future__ import annotations

import threading
import time

import pytest

from local_servers.kube_fixtures import IMAGES, NAMESPACE, bucket_folder, pod_environment
from operators.runtime.catalogue import STEPS
from tests.fixtures.dag_runs import (
    REPO,
    assert_both_succeeded,
    assert_same_models,
    run_both_dags,
    synth_raw_days,
    write_timings,
)

pytestmark = pytest.mark.kubernetes
DAILY_PODS = ["extract", "validate", "preprocess", "validate", "train", "export", "evaluate"]
# preprocess on a dask cluster inside its pod, on both runtimes: 2 worker processes (no GPU here;
# with GPUs they are dask-cuda workers, one per GPU of the pod)
SCALE = {"criteo_preprocess_workers": "2"}
RUNS: dict[str, dict] = {}


class PodRecorder(threading.Thread):
    """Every pod created in the namespace: its step, task, node, image, phase, and when (monotonic)
    it was first seen, first Running and first Succeeded or Failed."""

    def __init__(self, kube):
        super().__init__(daemon=True)   # left to end with the session: the watch blocks until an event
        self.kube, self.pods, self.stopped = kube, {}, False

    def run(self):
        from kubernetes import watch

        # one watch, never reopened: reopening delivers the events of the gap at once, late
        self.watch = watch.Watch()
        try:
            self._record(self.watch.stream(self.kube.core.list_namespaced_pod, NAMESPACE))
        except Exception:
            if not self.stopped:   # after the runs, the stream ends when the control plane stops
                raise

    def _record(self, events):
        for event in events:
            pod, now = event["object"], time.monotonic()
            seen = self.pods.setdefault(pod.metadata.uid, {
                "step": pod.metadata.labels.get("app.kubernetes.io/component"),
                "task": pod.metadata.labels.get("task_id"), "dag": pod.metadata.labels.get("dag_id"),
                "image": pod.spec.containers[0].image, "created": now})
            seen["node"] = pod.spec.node_name or seen.get("node")
            phase = pod.status.phase
            if phase == "Running":
                seen.setdefault("running", now)
            if phase in ("Succeeded", "Failed"):
                seen.setdefault("done", now)
                seen["phase"] = phase

    def of(self, dag_id):
        return [p for p in self.pods.values() if p["dag"] == dag_id]


@pytest.fixture(scope="module")
def both_runtimes(kube, tmp_path_factory):
    raw = synth_raw_days(tmp_path_factory.mktemp("raw"))
    RUNS["local"] = run_both_dags(tmp_path_factory.mktemp("bucket-local"), raw,
                                  {"criteo_runtime": "local", **SCALE}, tmp_path_factory.mktemp("svc"))
    bucket = bucket_folder(tmp_path_factory.mktemp("pods") / "bucket")
    recorder = PodRecorder(kube)
    recorder.start()
    try:
        # trainer auto would be HugeCTR on pods: the stand-in of its image has no HugeCTR (docs/containers.md)
        RUNS["kubernetes"] = run_both_dags(bucket, raw, {**pod_environment(kube.control_plane, str(bucket)), **SCALE},
                                           tmp_path_factory.mktemp("svc"), {"trainer": "pytorch"})
    finally:
        recorder.stopped = True
        recorder.watch.stop()
    RUNS["pods"] = recorder
    steps = ["", "| step pod (daily run) | node | create → Running (s) | create → Succeeded (s) |",
             "|---|---|---|---|"]
    for pod in sorted(recorder.of("criteo_incremental_training"), key=lambda p: p["created"]):
        steps.append(f"| {pod['task']} | {pod['node']} | {pod.get('running', pod['created']) - pod['created']:.1f} | "
                     f"{pod.get('done', pod['created']) - pod['created']:.1f} |")
    write_timings(RUNS, "kubernetes", "steps as pods on the real kubelet",
                  REPO / ".data" / "kubernetes" / "timings.md", steps)
    return RUNS


def test_both_dags_succeed_with_every_step_a_pod_of_its_image(both_runtimes, kube):
    assert_both_succeeded({k: both_runtimes[k] for k in ("local", "kubernetes")})
    recorder = both_runtimes["pods"]
    daily = sorted(recorder.of("criteo_incremental_training"), key=lambda p: p["created"])
    assert [p["step"] for p in daily] == DAILY_PODS
    everything = list(recorder.pods.values())
    assert len(recorder.of("criteo_full_retrain")) >= len(DAILY_PODS)
    for pod in everything:
        spec = STEPS[pod["step"]]
        assert pod["phase"] == "Succeeded", pod
        assert pod["image"] == IMAGES[spec.image], pod
        assert pod["node"] == ("criteo-gpu-0" if spec.gpu else "criteo-cpu-0"), pod
    assert not kube.pods()  # every succeeded pod was deleted


def test_the_pods_give_the_local_runtimes_lineage_blessing_and_auc(both_runtimes):
    assert_same_models(both_runtimes["local"]["lineage"], both_runtimes["kubernetes"]["lineage"])


def test_the_pods_wrote_the_bucket_as_their_images_user(both_runtimes):
    bucket = both_runtimes["kubernetes"]["bucket"]
    processed = list((bucket / "work" / "processed").rglob("*.parquet"))   # preprocess's, read by train
    checkpoints = list((bucket / "work").rglob("checkpoint.pt"))
    assert processed and checkpoints
    assert {p.stat().st_uid for p in processed + checkpoints} == {50000}
    assert {p.stat().st_gid for p in processed + checkpoints} == {0}
    version = bucket / "model_repository" / "criteo_dcn" / "2"
    assert (version / "model.onnx").exists() and (version / "_SUCCESS").exists()
