"""criteo_incremental_training with criteo_runtime=kubernetes, against the local control plane:
one pod per step, in the DAG's order, each step's result back as the task's outputs, and the run
ends as it does locally (a new model version deployed on a real Triton, with its lineage).

The bucket is a local folder the pods share with Airflow (criteo_pod_data=host: the node agent
runs pods on this host). The full retrain before it runs locally: the subject is the daily run.
"""
import json
import os
import threading
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.kubernetes import NAMESPACE, pod_environment

pytestmark = pytest.mark.kubernetes
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 20_000
SMALL_MODEL = {"epochs": 1, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048, "auc_floor": 0.55}
STEP_PODS = ["extract", "validate", "preprocess", "validate", "train", "export", "evaluate"]


class PodRecorder(threading.Thread):
    """Every pod created in the namespace, in creation order, with the step it ran."""

    def __init__(self, kube):
        super().__init__(daemon=True)
        self.kube, self.pods, self.stopped = kube, [], threading.Event()

    def run(self):
        from kubernetes import watch

        seen = set()
        while not self.stopped.is_set():
            w = watch.Watch()
            for event in w.stream(self.kube.core.list_namespaced_pod, NAMESPACE, timeout_seconds=2):
                pod = event["object"]
                if pod.metadata.uid not in seen:
                    seen.add(pod.metadata.uid)
                    self.pods.append((pod.metadata.labels.get("app.kubernetes.io/component"),
                                      pod.metadata.labels.get("task_id"), pod.metadata.name))


@pytest.fixture(scope="module")
def trained_bucket(kube, tmp_path_factory, dagbag):
    from tests.dags.test_training_e2e import forget_earlier_runs

    forget_earlier_runs(["criteo_full_retrain", "criteo_incremental_training"])
    base = tmp_path_factory.mktemp("pods_bucket")
    saved = dict(os.environ)
    os.environ.update({"AIRFLOW_VAR_CRITEO_BASE_URL": str(base), "AIRFLOW_VAR_CRITEO_RUNTIME": "local",
                       "AIRFLOW_VAR_CRITEO_DAY0_DATE": DAY0.date().isoformat()})
    from local_servers.stack import ServingStack
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(base / "raw"), "--days", "0-2", "--rows", str(ROWS)])
    try:
        with ServingStack(base, tmp_path_factory.mktemp("pods_services"), monitor=False, prometheus=False):
            dr = dagbag.get_dag("criteo_full_retrain").test(
                logical_date=DAY0 + timedelta(days=1), run_conf={"end_day": 1, "window_days": 2, **SMALL_MODEL})
            assert dr.state == "success", {ti.task_id: ti.state for ti in dr.get_task_instances()}
            yield base
    finally:
        os.environ.clear()
        os.environ.update(saved)


def test_a_daily_run_on_pods_runs_each_step_as_a_pod_and_deploys(kube, trained_bucket, dagbag, monkeypatch):
    for key, value in pod_environment(kube.control_plane, str(trained_bucket)).items():
        monkeypatch.setenv(key, value)
    # preprocess on a dask cluster inside its pod: 2 worker processes (no GPU here; with GPUs they
    # are dask-cuda workers, one per GPU of the pod)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_PREPROCESS_WORKERS", "2")
    recorder = PodRecorder(kube)
    recorder.start()
    try:
        dr = dagbag.get_dag("criteo_incremental_training").test(logical_date=DAY0 + timedelta(days=2),
                                                                run_conf={"auc_floor": 0.55})
    finally:
        recorder.stopped.set()
        recorder.join(timeout=10)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    assert dr.state == "success", states
    # one pod per step, in the DAG's order; the Airflow-side tasks (plan, gate, deploy) ran no pod
    assert [step for step, _, _ in recorder.pods] == STEP_PODS, recorder.pods
    assert [task for _, task, _ in recorder.pods] == ["extract", "validate", "preprocess", "validate_processed",
                                                     "train", "export", "evaluate"]
    assert not kube.pods()  # every succeeded pod was deleted
    # each step's result came back: its declared outputs are what downstream tasks consumed
    train = dr.get_task_instance("train")
    checkpoint = train.xcom_pull(task_ids="train", key="checkpoint")
    assert checkpoint.startswith(str(trained_bucket)) and Path(checkpoint).exists()
    assert train.xcom_pull(task_ids="train", key="pod_name").startswith("criteo-train-")
    preprocess = dr.get_task_instance("preprocess").xcom_pull(task_ids="preprocess")
    assert preprocess["cluster"]["workers"] == 2 and sum(preprocess["cluster"]["pieces_decoded_per_worker"]) >= 2
    # and the run ends as it does locally: version 2, warm-started from version 1, promoted
    model = Path(trained_bucket) / "model_repository" / "criteo_dcn"
    lineage = json.loads((model / "2" / "lineage.json").read_text())
    assert lineage["mode"] == "incremental" and lineage["days"] == [2] and lineage["parent_version"] == 1
    assert lineage["training"]["warm_start"].endswith("criteo_dcn/1/checkpoint.pt")
    deploy = dr.get_task_instance("deploy").xcom_pull(task_ids="deploy")
    assert deploy["promoted"] and deploy["smoke"]["served_version"] == 2
