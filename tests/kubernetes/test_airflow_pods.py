"""Step pods under Airflow's own processes (scheduler, DAG processor, triggerer, API server; tests/
fixtures/airflow.py) against the local control plane, read the way users read them: run states
and task logs through the REST API.

- a deferrable step pod waits in the real triggerer and resumes with its result;
- a failing pod fails its task, with the pod's own log in the task log;
- an image that cannot be pulled fails within the startup deadline, naming the image;
- an unreachable API server fails the task saying so;
- a pod evicted mid-step: the retry runs the step again and writes the same output;
- a task killed while its pod runs (its state set to failed through the REST API) deletes the pod;
- the triggerer killed (`kill -9`) while a step pod's task is deferred, then started again: the
  restarted triggerer takes the trigger over and the task resumes once (one pod, one try, the
  step's result read once); its row goes into the fault table (tests/fixtures/fault_table.py).

Settings that differ between tests are Airflow Variables set through the REST API.
"""
import json
import os
import threading
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


class PodEvents(threading.Thread):
    """Every event of the pods a label selector matches, from `resource_version` on, as the API server's
    watch sends them: a pod created and deleted between two polls is still seen."""

    def __init__(self, kube, selector: str, resource_version: str):
        super().__init__(daemon=True)
        self.kube, self.selector, self.resource_version = kube, selector, resource_version
        self.events: list[tuple[str, object]] = []
        self.error: BaseException | None = None
        self._ended = threading.Event()

    def run(self):
        from kubernetes import watch

        try:
            while not self._ended.is_set():
                for event in watch.Watch().stream(self.kube.core.list_namespaced_pod, NAMESPACE,
                                                  label_selector=self.selector, timeout_seconds=2,
                                                  resource_version=self.resource_version):
                    self.events.append((event["type"], event["object"]))
                    self.resource_version = event["object"].metadata.resource_version
        except BaseException as exc:   # read by the test: a watch that broke off saw nothing after
            self.error = exc

    def __enter__(self):
        self.start()
        return self

    def __exit__(self, *exc):
        self._ended.set()
        self.join(timeout=10)

    def created(self) -> list[str]:
        """The uids of the pods created since `resource_version`, once the watch has ended."""
        assert self.error is None and not self.is_alive(), self.error
        return sorted({pod.metadata.uid for kind, pod in self.events if kind == "ADDED"})


def test_a_triggerer_killed_while_a_pod_task_is_deferred_resumes_it_once(af_pods, fault_table):
    """kill -9 of the triggerer (with its trigger runner, as its container's death) while a step pod
    runs and its task waits deferred; started again 3 s later. The pod is the kubelet's, not the
    triggerer's: it runs on. The trigger stays in the database; a triggerer takes over the triggers
    of one whose heartbeat is older than triggerer_health_check_threshold (30 s; airflow/models/
    trigger.py `Trigger.assign_unassigned`), so the restarted one takes it about 30 s after the kill
    and runs it again from its serialized state (pod name, namespace): it finds the same pod, still
    running, waits for it and fires once."""
    from airflow.providers.cncf.kubernetes.pod_generator import make_safe_label_value

    af, kube = af_pods
    settings(af, criteo_pod_deferrable="true")
    since = kube.core.list_namespaced_pod(NAMESPACE).metadata.resource_version
    # about a minute of work: still running when the restarted triggerer takes the trigger over
    # (30-38 s after the kill), so the trigger it resumes has a pod to wait for, not one already done
    rows = 5_000_000
    run_id = trigger(af, "pod_step_synth", {"rows": rows})
    selector = f"dag_id=pod_step_synth,task_id=synth,run_id={make_safe_label_value(run_id)}"
    folder = af.home / "logs" / "dag_id=pod_step_synth" / f"run_id={run_id}" / "task_id=synth"
    with PodEvents(kube, selector, since) as events:
        pod, seen = _kill_the_triggerer_while_deferred(af, kube, run_id, selector, folder)
        run = af.finished_run("pod_step_synth", run_id, timeout_s=240)
    assert run["state"] == "success", (af.task_states("pod_step_synth", run_id), af.logs())
    tries = af.tries("pod_step_synth", run_id, "synth")
    assert [(t["try_number"], t["state"]) for t in tries] == [(1, "success")], tries
    assert events.created() == [pod.metadata.uid], [(kind, p.metadata.name) for kind, p in events.events]
    last = [p for _, p in events.events if p.status and p.status.container_statuses][-1]
    (status,) = last.status.container_statuses
    assert status.restart_count == 0 and status.state.terminated and status.state.terminated.exit_code == 0, status
    assert not kube.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items   # deleted once read
    result = af.call("GET", f"/api/v2/dags/pod_step_synth/dagRuns/{run_id}/taskInstances/synth/xcomEntries/"
                            "return_value")["value"]
    result = json.loads(result) if isinstance(result, str) else result
    assert result["days"][0]["rows"] == rows
    log = af.task_log("pod_step_synth", run_id, "synth")
    assert log.count("STEP_RESULT {") == 1, log[-3000:]   # the pod's log read once, after the one resume
    fired = {p.name: p.read_text(errors="replace").count('"Trigger fired event"')
             for p in folder.glob("attempt=1.log.trigger.*.log")}
    assert fired == {**{name: 0 for name in fired}, seen["log"]: 1}, fired   # only in the new triggerer, once
    ended_s = (status.state.terminated.finished_at - seen["killed_at"]).total_seconds()
    assert ended_s > seen["taken_s"], seen   # the step ran on with no triggerer, and past the takeover
    fault_table(
        "triggerer kill -9 while a pod task is deferred (Kubernetes)",
        "run succeeded; one pod, one try, the step's result read once",
        f"the pod ran on and ended {ended_s:.0f}s after the kill; the triggerer, restarted 3 s after it, took the "
        f"trigger over {seen['taken_s']:.0f}s after the kill (a dead one's triggers after 30 s), "
        f"while the step still ran, and fired once when it ended: 1 pod, 1 try, 1 result read")


def _kill_the_triggerer_while_deferred(af, kube, run_id: str, selector: str, folder):
    """Once the task is deferred and its pod runs on the node: kill -9 the triggerer, start it again
    3 s later, and wait for it to start the trigger (its trigger log, in `folder`, says so). Returns
    the pod and what was seen: when the kill was, the seconds from it to the takeover, the new
    triggerer's trigger log."""
    from datetime import UTC, datetime

    from tests.fixtures.airflow import when

    def synth():
        return af.task_instances("pod_step_synth", run_id)["synth"]

    def deferred_and_running():
        ti = synth()
        pods = kube.core.list_namespaced_pod(NAMESPACE, label_selector=selector).items
        if ti["state"] != "deferred" or not (ti["trigger"] or {}).get("triggerer_id") or len(pods) != 1:
            return None
        return (ti, pods[0]) if pods[0].status.phase == "Running" else None

    ti, pod = af.wait("the task deferred and its pod running", deferred_and_running, timeout_s=180, every_s=0.5)
    pid = kube.container_pid(pod)
    assert pid and os.path.exists(f"/proc/{pid}")   # the step's process, in its container on the node
    old_log = f"attempt=1.log.trigger.{ti['trigger']['triggerer_id']}.log"
    af.kill("triggerer", group=True)
    killed_at = datetime.now(UTC)
    time.sleep(3)
    assert synth()["state"] == "deferred", synth()
    af.restart("triggerer")

    def started():
        for path in folder.glob("attempt=1.log.trigger.*.log"):
            if path.name != old_log:
                for line in path.read_text(errors="replace").splitlines():
                    try:
                        record = json.loads(line)
                    except ValueError:      # a line still being written
                        continue
                    if str(record.get("event", "")).endswith(" starting"):
                        return path.name, when(record["timestamp"])
        return None

    log, at = af.wait("the restarted triggerer to start the trigger", started, timeout_s=120, every_s=0.5)
    return pod, {"killed_at": killed_at, "taken_s": (at - killed_at).total_seconds(), "log": log}


@pytest.fixture
def af_pods(airflow, kube):
    yield airflow, kube
    kube.delete_all_pods(NAMESPACE)
