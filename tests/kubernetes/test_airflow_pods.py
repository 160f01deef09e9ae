"""Step pods under Airflow's own processes (scheduler, DAG processor, triggerer, API server; tests/
fixtures/airflow.py) against the local control plane, read the way users read them: run states
and task logs through the REST API.

- a deferrable step pod waits in the real triggerer and resumes with its result;
- a failing pod fails its task, with the pod's own log in the task log;
- an image that cannot be pulled fails within the startup deadline, naming the image;
- an unreachable API server fails the task saying so;
- a pod evicted mid-step: the retry runs the step again and writes the same output;
- a task killed while its pod runs (its state set to failed through the REST API) deletes the pod.

Settings that differ between tests are Airflow Variables set through the REST API.
"""
import json
import os
import time

import pytest

from local_servers.kube_fixtures import IMAGES, NAMESPACE, RESOURCES, bucket_folder, pod_environment
from tests.fixtures.airflow import REPO, Airflow

pytestmark = pytest.mark.kubernetes
PER_TEST = ("criteo_pod_deferrable", "criteo_image_merlin", "criteo_kubernetes_conn_id",
            "criteo_pod_startup_timeout_s", "criteo_step_resources")


@pytest.fixture(scope="module")
def airflow(kube, tmp_path_factory):
    root = tmp_path_factory.mktemp("airflow_pods")
    bucket_folder(root / "bucket")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRITEO_"))}
    env.update({k: v for k, v in pod_environment(kube.control_plane, str(root / "bucket")).items()
                if k.removeprefix("AIRFLOW_VAR_").lower() not in PER_TEST})
    af = Airflow(root / "airflow_home", env, dags_folder=REPO / "tests" / "kubernetes" / "dags")
    af.bucket = root / "bucket"
    try:
        af.start()
        af.wait("the DAG processor to parse the pod step DAGs",
                lambda: af.call("GET", "/api/v2/dags?dag_id_pattern=pod_step")["total_entries"] == 4)
        for dag_id in ("pod_step_synth", "pod_step_missing_day", "pod_step_synth_retry"):
            af.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        config = json.loads(kube.control_plane.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"  # nothing listens there
        dead = root / "dead-kubeconfig.json"
        dead.write_text(json.dumps(config))
        af.call("POST", "/api/v2/connections", {"connection_id": "kubernetes_unreachable", "conn_type": "kubernetes",
                                                "extra": json.dumps({"kube_config_path": str(dead)})})
        yield af
    finally:
        af.stop()


def settings(af, **values):
    values = {"criteo_pod_deferrable": "true", "criteo_image_merlin": IMAGES["merlin"],
              "criteo_kubernetes_conn_id": "kubernetes_default", "criteo_pod_startup_timeout_s": "600",
              "criteo_step_resources": json.dumps(RESOURCES), **values}
    for key, value in values.items():
        existing = af.call("GET", f"/api/v2/variables?variable_key_pattern={key}")["variables"]
        if any(v["key"] == key for v in existing):
            af.call("PATCH", f"/api/v2/variables/{key}", {"key": key, "value": value})
        else:
            af.call("POST", "/api/v2/variables", {"key": key, "value": value})


def trigger(af, dag_id, conf=None):
    return af.call("POST", f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf or {}})["dag_run_id"]


def test_a_deferred_step_pod_resumes_in_the_triggerer_with_its_result(af_pods):
    af, kube = af_pods
    settings(af, criteo_pod_deferrable="true")
    # About 10 s of work: a pod that ends within the scheduler's event drain latency trips Airflow
    # 3.3's stale defer-exit race (apache/airflow#72716), which fails the resumed task.
    run_id = trigger(af, "pod_step_synth", {"rows": 1_000_000})
    run = af.finished_run("pod_step_synth", run_id)
    assert run["state"] == "success", (af.task_states("pod_step_synth", run_id), af.logs())
    result = af.call("GET", f"/api/v2/dags/pod_step_synth/dagRuns/{run_id}/taskInstances/synth/xcomEntries/"
                            "return_value")["value"]
    result = json.loads(result) if isinstance(result, str) else result
    assert result["days"][0]["rows"] == 1_000_000
    assert (af.bucket / "raw" / "day_0").stat().st_size > 0
    log = af.task_log("pod_step_synth", run_id, "synth")
    assert "STEP_RESULT" in log and "wrote" in log           # the pod's own log, after the resume
    folder = af.home / "logs" / "dag_id=pod_step_synth" / f"run_id={run_id}" / "task_id=synth"
    trigger_logs = list(folder.glob("attempt=1.log.trigger.*.log"))
    assert trigger_logs, sorted(p.name for p in folder.iterdir())   # the wait ran in the triggerer process
    assert "KubernetesPodTrigger" in log or "defer" in log.lower()
    assert not kube.pods()


def test_a_failing_pod_fails_its_task_with_the_pod_log_in_the_task_log(af_pods):
    af, kube = af_pods
    settings(af, criteo_pod_deferrable="false")
    run_id = trigger(af, "pod_step_missing_day")
    run = af.finished_run("pod_step_missing_day", run_id)
    assert run["state"] == "failed"
    log = af.task_log("pod_step_missing_day", run_id, "extract")
    assert "raw day 7 not found" in log and "step extract exited with code 1" in log, log[-3000:]


def test_an_image_that_cannot_be_pulled_fails_within_the_startup_deadline(af_pods):
    af, kube = af_pods
    missing = IMAGES["merlin"].rsplit(":", 1)[0] + ":no-such-tag"
    settings(af, criteo_pod_deferrable="false", criteo_image_merlin=missing, criteo_pod_startup_timeout_s="30")
    started = time.monotonic()
    run_id = trigger(af, "pod_step_synth")
    run = af.finished_run("pod_step_synth", run_id)
    assert run["state"] == "failed" and time.monotonic() - started < 120
    log = af.task_log("pod_step_synth", run_id, "synth")
    # imagePullPolicy Never here: the node says so at once; with a registry it is ErrImagePull
    assert "ErrImageNeverPull" in log and missing in log, log[-3000:]


def test_an_unreachable_api_server_fails_the_task_saying_so(af_pods):
    af, kube = af_pods
    settings(af, criteo_pod_deferrable="false", criteo_kubernetes_conn_id="kubernetes_unreachable")
    run_id = trigger(af, "pod_step_synth", {"rows": 100})
    run = af.finished_run("pod_step_synth", run_id)
    assert run["state"] == "failed"
    log = af.task_log("pod_step_synth", run_id, "synth")
    assert "the Kubernetes API server is unreachable" in log, log[-3000:]


def test_killing_a_running_task_deletes_its_pod(af_pods):
    af, kube = af_pods
    settings(af, criteo_pod_deferrable="false")
    run_id = trigger(af, "pod_step_synth", {"rows": 5_000_000})   # about a minute of work
    pod = af.wait("the step pod to run", lambda: [p for p in kube.pods() if p.status.phase == "Running"],
                  timeout_s=120, every_s=0.5)[0]
    pid = kube.container_pid(pod)
    assert pid and os.path.exists(f"/proc/{pid}")   # the step's process, in its container on the node
    af.call("PATCH", f"/api/v2/dags/pod_step_synth/dagRuns/{run_id}/taskInstances/synth", {"new_state": "failed"})
    af.wait("the pod to be deleted", lambda: not kube.pods(), timeout_s=60, every_s=0.5)
    grace = pod.spec.termination_grace_period_seconds
    af.wait("the container's process to end", lambda: not os.path.exists(f"/proc/{pid}"), timeout_s=grace, every_s=0.2)
    log = af.task_log("pod_step_synth", run_id, "synth")
    assert "Terminating process" in log, log[-3000:]   # the supervisor's SIGTERM: on_kill deletes the pod
    assert "STEP_RESULT {" not in log   # stopped before it finished


def test_a_step_over_its_memory_limit_fails_as_oomkilled_naming_the_limit_without_retry(af_pods):
    af, kube = af_pods
    settings(af, criteo_pod_deferrable="false", criteo_step_resources=json.dumps({"synth": {"memory": "64Mi"}}))
    run_id = trigger(af, "pod_step_synth_retry", {"rows": 2_000_000})
    run = af.finished_run("pod_step_synth_retry", run_id)
    tis = {ti["task_id"]: ti for ti in
           af.call("GET", f"/api/v2/dags/pod_step_synth_retry/dagRuns/{run_id}/taskInstances")["task_instances"]}
    assert run["state"] == "failed" and tis["synth"]["try_number"] == 1, tis   # retries > 0, none taken
    log = af.task_log("pod_step_synth_retry", run_id, "synth")
    assert "OOMKilled" in log and "limit of 64Mi" in log and "criteo_step_resources" in log, log[-3000:]


def test_an_evicted_pod_is_retried_and_writes_the_same_output(af_pods, tmp_path):
    import hashlib

    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    af, kube = af_pods
    settings(af, criteo_pod_deferrable="false")
    rows = 800_000   # several seconds of work in its container: evicted mid-step
    run_id = trigger(af, "pod_step_synth_retry", {"rows": rows})
    pod = af.wait("the step pod to run", lambda: [p for p in kube.pods() if p.status.phase == "Running"],
                  timeout_s=120, every_s=0.5)[0]
    time.sleep(2)
    kube.core.create_namespaced_pod_eviction(pod.metadata.name, NAMESPACE, body={
        "apiVersion": "policy/v1beta1", "kind": "Eviction",
        "metadata": {"name": pod.metadata.name, "namespace": NAMESPACE}})
    run = af.finished_run("pod_step_synth_retry", run_id)
    tis = {ti["task_id"]: ti for ti in
           af.call("GET", f"/api/v2/dags/pod_step_synth_retry/dagRuns/{run_id}/taskInstances")["task_instances"]}
    assert run["state"] == "success" and tis["synth"]["try_number"] == 2, (tis, af.logs())
    first = af.task_log("pod_step_synth_retry", run_id, "synth", try_number=1)
    assert pod.metadata.name in first and "STEP_RESULT" not in first   # the evicted attempt never finished
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(tmp_path), "--days", "0", "--rows", str(rows)])
    digest = [hashlib.sha256((d / "day_0").read_bytes()).hexdigest() for d in (af.bucket / "retry", tmp_path)]
    assert digest[0] == digest[1]
    # no partial file left: the day and its landing manifest (criteo_kernel.landing)
    assert sorted(p.name for p in (af.bucket / "retry").iterdir()) == ["day_0", "day_0.manifest.json"]


@pytest.fixture
def af_pods(airflow, kube):
    yield airflow, kube
    kube.delete_all_pods(NAMESPACE)
