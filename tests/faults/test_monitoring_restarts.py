"""Fault: Prometheus and Triton restarted while the monitoring loop runs.

All real: the embedded default's serving stack (local_servers.stack.ServingStack: tritonserver with
explicit model control on the bucket's model repository, the monitor process on the request log,
Prometheus scraping both), the production version a real exported package, the inference client
run as the pipeline runs its `replay` step (LocalProcessRuntime, as scripts/demo_loop.py does), and
model_monitoring through dag.test() (its sensors' triggers run inline, polling that Prometheus).

1. Triton is stopped and started again while the inference client replays a day; the fresh
   server gets production back the way the project does it (local_servers.triton.load_production:
   the version config.pbtxt pins). The replay rides it out with its retries: every row of the
   day logged exactly once, with its label, all by the production version.
2. Prometheus is stopped, then started again, while the AUC sensor waits on a metric that is fine
   (the run's auc_threshold below the served AUC): no sensor fires and none fails; each ends
   skipped (no retrain), the log names the unreachable Prometheus, then the wait goes on against
   the restarted server.
3. Prometheus is down as the AUC sensor starts on a truly bad metric (the served AUC, ~0.52, below
   the default floor 0.70) and comes back while it waits: nothing fires while it is down, the
   sensor fires once it is back, and one full retrain is queued.

Through all of it production is untouched: the config.pbtxt pin is the same bytes, no version
folder appears or disappears, and Triton serves the production version.
"""
from __future__ import annotations

import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

import pytest

from tests.dags.test_model_monitoring import db_runs, delete_runs, delete_variable
from tests.fixtures.model_repository import MODEL, make_bucket
from tests.fixtures.serving import set_policy
from tests.images.monitoring.test_replay_monitor import logged_requests, wait_for

pytestmark = pytest.mark.faults

DAY0 = "2026-01-01"
NOW = datetime(2026, 12, 2, 6, 0, tzinfo=UTC)   # this module's own logical dates
SEL = f'{{model="{MODEL}",version="1"}}'
# sustained_s of a few seconds, as tests/dags/test_model_monitoring.py; a 10 s timeout outlasts the outage
CONF = {"psi_threshold": 0.25, "sustained_s": 3, "sensor_timeout_s": 10, "poll_interval_s": 1,
        "cooldown_h": 1, "window_days": 2}


@pytest.fixture(scope="module")
def bag():
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    dags = DagBag(dag_folder=str(REPO / "dags"))
    assert not dags.import_errors, dags.import_errors
    return dags


@pytest.fixture(scope="module")
def keeper():
    """A thread that restarts servers while dag.test() holds the main thread, and outlives them: a
    local server gets SIGTERM when the *thread* that started it exits (PR_SET_PDEATHSIG,
    local_servers.process), so a server restarted from a short-lived thread would die with it."""
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="keeper")
    yield pool
    pool.shutdown(wait=True)


@pytest.fixture(scope="module")
def loop(tmp_path_factory, packages, keeper):
    """The bucket (version 1 = a real exported package, pinned in config.pbtxt; raw day_0..day_3)
    and the serving stack on it, Triton serving version 1. The servers stop before the keeper."""
    from local_servers.stack import ServingStack
    from local_servers.triton import load_production
    from operators.pipeline.retraining import LAST_RETRAIN_VARIABLE
    from operators.runtime.local import LocalProcessRuntime

    root = tmp_path_factory.mktemp("restarts")
    base = make_bucket(root / "bucket")
    repo = base / "model_repository"
    version = packages.install(repo, 1, package=0)  # the real model in place of make_bucket's stub
    (version / "_SUCCESS").touch()
    (version / "lineage.json").write_text('{"run_key": "restarts"}')
    set_policy(repo, 1, packages.packages[0] / "config.pbtxt")
    # Queued retrains left by earlier sessions would make decide_retrain refuse (as in test_model_monitoring).
    for run_id, state, _, _ in db_runs("criteo_full_retrain"):
        if state == "queued":
            delete_runs("criteo_full_retrain", [run_id])
    delete_variable(LAST_RETRAIN_VARIABLE)
    before = {r[0] for r in db_runs("criteo_full_retrain")}
    state = {"base": base, "repo": repo, "raw": packages.root / "raw", "rt": LocalProcessRuntime(),
             "monitoring_runs": []}
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(base))
        mp.setenv("AIRFLOW_VAR_CRITEO_DAY0_DATE", DAY0)
        try:
            with ServingStack(base, root / "services", window_rows=4000, min_rows=500) as stack:
                assert load_production(stack.triton) == {MODEL: [1]}
                yield {**state, "stack": stack}
        finally:
            created = [r[0] for r in db_runs("criteo_full_retrain") if r[0] not in before]
            if created:
                delete_runs("criteo_full_retrain", created)
            if state["monitoring_runs"]:
                delete_runs("model_monitoring", state["monitoring_runs"])
            delete_variable(LAST_RETRAIN_VARIABLE)


def production_state(loop) -> tuple[bytes, list[str]]:
    """The pin (config.pbtxt's bytes) and the version folders of the model."""
    model = loop["repo"] / MODEL
    return (model / "config.pbtxt").read_bytes(), sorted(p.name for p in model.iterdir() if p.is_dir())


def triton_successes(triton) -> int:
    """Inference requests the model answered on this Triton (its per-model statistics)."""
    import httpx

    try:
        stats = httpx.get(f"{triton.http_url}/v2/models/{MODEL}/stats", timeout=2).json()
        return sum(int(m["inference_stats"]["success"]["count"]) for m in stats.get("model_stats", []))
    except (httpx.HTTPError, ValueError, KeyError):
        return 0


def replay_args(loop, *extra: str) -> list[str]:
    """The replay step's arguments for raw day_0 (4000 rows), as scripts/demo_loop.py passes them."""
    stack = loop["stack"]
    return ["--input", str(loop["raw"]), "--day", "0", "--day0", DAY0, "--triton", stack.triton.grpc_url,
            "--model", MODEL, "--request-log", str(stack.request_log), "--batch-size", "64", "--concurrency", "2",
            "--label-delay-s", "0.2", *extra]


def lines(text: str, *needles: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if all(n in line for n in needles)]


# -- 1. Triton restarted while the inference client replays -----------------------------------------
def test_triton_restarted_while_the_inference_client_replays(loop, packages, caplog, fault_table):
    from local_servers.triton import load_production
    from operators.hooks.triton import TritonHook
    from operators.runtime.catalogue import STEPS

    stack = loop["stack"]
    pin, versions = production_state(loop)
    args = replay_args(loop, "--rate", "8")  # ~8 s of traffic: the restart lands mid-replay
    caplog.set_level(logging.INFO, logger="operators.runtime.local")
    done: dict = {}

    def replay():
        try:
            done["result"] = loop["rt"].run(STEPS["replay"], args)
        except Exception as exc:  # noqa: BLE001 - asserted below
            done["error"] = exc

    thread = threading.Thread(target=replay, name="replay")
    answered_before = triton_successes(stack.triton)
    thread.start()
    try:
        deadline = time.time() + 60
        while triton_successes(stack.triton) - answered_before < 3:  # traffic flows
            assert thread.is_alive() and time.time() < deadline, f"no traffic reached Triton: {done}"
            time.sleep(0.1)
        t0 = time.monotonic()
        stack.triton.stop()
        stopped_s = time.monotonic() - t0
        stack.triton.start()
        loaded = load_production(stack.triton)  # explicit model control: the fresh server loads the pin
        restart_s = time.monotonic() - t0
    finally:
        thread.join(timeout=240)
    step_log = "\n".join(r.getMessage() for r in caplog.records if r.name == "operators.runtime.local")
    print(f"{step_log}\nTriton stopped in {stopped_s:.1f}s, back with production in {restart_s:.1f}s: {loaded}")
    assert "error" not in done, f"the replay did not ride out the restart: {done.get('error')}\n{step_log}"
    result = done["result"]
    assert loaded == {MODEL: [1]}
    assert result["rows"] == 4000 and result["labels"] == 4000 and result["versions_seen"] == {"1": 4000}, result
    assert result["retried_requests"] > 0, result  # it did meet the restart
    # the request log: every row of the day once, labelled, answered by the production version
    rows = logged_requests(str(stack.request_log))
    assert len(rows) == 4000 and not rows.duplicated(["request_id", "row"]).any()
    positions = rows["request_id"].str.removeprefix("day0-").astype(int) + rows["row"]
    assert sorted(positions) == list(range(4000))
    assert rows["label"].notna().all() and set(rows["version"]) == {1}
    # production untouched, and served again
    assert production_state(loop) == (pin, versions) == (pin, ["1"])
    with TritonHook(stack.triton.grpc_url) as triton:
        assert triton.ready_versions(MODEL) == [1]
        pred, version = triton.infer(MODEL, packages.dense_raw[:16], packages.cat_hash[:16])
    assert version == 1 and abs(pred - packages.predictions[0][:16]).max() < 1e-4
    (summary,) = lines(step_log, "replayed 4000 rows", f"; {result['retried_requests']} retries")
    retrying = lines(step_log, f"WARNING: Triton at {stack.triton.grpc_url}: StatusCode.", "retrying the request in")
    assert len(retrying) == result["retried_requests"], step_log
    fault_table("Triton restarted while the inference client replays a day",
                f"replay rode it out ({result['retried_requests']} retries over a {restart_s:.0f}s restart): 4000 "
                "rows logged once each, labelled, all by version 1; the fresh Triton reloaded the pinned version 1; "
                "config.pbtxt and versions unchanged", retrying[0])




# -- 2 and 3. Prometheus restarted while the sensors wait ---------------------------------------------
def query_range_calls(prometheus) -> float | None:
    """How many range queries (the sensors' polls) this Prometheus process answered; None while down."""
    import httpx

    try:
        text = httpx.get(f"{prometheus.url}/metrics", timeout=2).text
    except httpx.HTTPError:
        return None
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith("prometheus_http_requests_total{") and 'handler="/api/v1/query_range"' in line)


def task_started(logical_date, task_id: str) -> bool:
    """Whether `task_id` of the model_monitoring run at `logical_date` has started (its task instance)."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        states = [s for (s,) in session.query(TaskInstance.state).join(
            DagRun, (DagRun.dag_id == TaskInstance.dag_id) & (DagRun.run_id == TaskInstance.run_id)).filter(
            DagRun.dag_id == "model_monitoring", DagRun.logical_date == logical_date,
            TaskInstance.task_id == task_id)]
    return any(s not in (None, "scheduled") for s in states)


def served_auc(loop) -> float:
    """version 1's rolling AUC once Prometheus has the monitor's window over the replayed day (the
    day is replayed here if the Triton case did not run)."""
    from criteo_monitoring.request_log import REQUESTS, list_parts
    from operators.hooks.prometheus import PrometheusHook
    from operators.runtime.catalogue import STEPS

    if not list_parts(str(loop["stack"].request_log), REQUESTS):
        loop["rt"].run(STEPS["replay"], replay_args(loop))
    prom = PrometheusHook(loop["stack"].prometheus.url)
    wait_for(prom, f"criteo_labels_joined_total{SEL}", lambda v: v >= 4000)
    return wait_for(prom, f"criteo_rolling_auc{SEL}", lambda v: True)


def monitoring_run(bag, loop, logical_date, conf, capsys):
    """One model_monitoring run through dag.test(); its task states and its tasks' log lines
    (timestamp and level cut off)."""
    capsys.readouterr()
    dr = bag.get_dag("model_monitoring").test(logical_date=logical_date, run_conf=conf)
    loop["monitoring_runs"].append(dr.run_id)
    captured = capsys.readouterr()
    text = re.sub(r"(?m)^\S+Z \[\w+\s*\] ", "", captured.out + "\n" + captured.err)  # timestamp, level
    text = re.sub(r"(?m)\s+\[[\w.]+\](?: \w+=\S+)*$", "", text)  # [logger] loc=file.py:N
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}, text


def polled(text: str) -> list[int]:
    """Indices of the log lines where a trigger got an answer from Prometheus (met or not)."""
    return [i for i, line in enumerate(text.splitlines())
            if "not met yet:" in line or "no samples for" in line or "condition met:" in line]


def test_prometheus_restarted_while_the_sensors_wait(loop, bag, keeper, capsys, fault_table):
    """The served AUC is above the floor: the restart must not make anything fire, nor fail."""
    stack = loop["stack"]
    prometheus = stack.prometheus
    auc = served_auc(loop)
    threshold = round(auc - 0.15, 2)  # the served AUC is fine for this run
    before = production_state(loop)
    retrains = {r[0] for r in db_runs("criteo_full_retrain")}
    events: dict = {}

    def restart():
        deadline = time.time() + 90
        while not task_started(NOW, "auc_degraded"):  # the sensors run one after the other, in any order
            assert time.time() < deadline, "auc_degraded did not start"
            time.sleep(0.2)
        polls = query_range_calls(prometheus) or 0
        while (query_range_calls(prometheus) or 0) < polls + 2:  # auc_degraded is waiting: it polled twice
            assert time.time() < deadline, "auc_degraded did not poll Prometheus"
            time.sleep(0.2)
        prometheus.stop()
        events["down_at"] = time.time()
        time.sleep(4)  # a few polls meet a refused connection
        prometheus.start()
        events["up_at"] = time.time()

    restarted = keeper.submit(restart)
    dr, states, log = monitoring_run(bag, loop, NOW, {**CONF, "auc_threshold": threshold}, capsys)
    restarted.result(timeout=60)
    print(log)
    assert prometheus.running and events["up_at"] - events["down_at"] >= 4
    assert dr.state == "success", states
    assert states == {"production_version": "success", "auc_degraded": "skipped", "drift_detected": "skipped",
                      "decide_retrain": "skipped", "trigger_full_retrain": "skipped",
                      "record_retrain": "skipped"}, states
    assert {r[0] for r in db_runs("criteo_full_retrain")} == retrains  # no retrain
    # auc_degraded polled, met refused connections while Prometheus was down, polled the restarted server
    auc_log = "\n".join(lines(log, "criteo_rolling_auc"))
    unreachable = lines(auc_log, f"Prometheus at {prometheus.url} is unreachable", "not firing, still waiting")
    down = [i for i, line in enumerate(auc_log.splitlines()) if line in unreachable]
    ok = polled(auc_log)
    assert down and ok and ok[0] < down[0] and ok[-1] > down[-1], auc_log
    assert len(lines(log, "DID NOT FIRE:")) == 2 and not lines(log, "FIRED:"), log
    (not_fired,) = lines(auc_log, "DID NOT FIRE:")
    assert "last check: criteo_rolling_auc" in not_fired and "(soft_fail: the task ends skipped)" in not_fired
    assert production_state(loop) == before
    fault_table("Prometheus restarted while the sensors wait (served AUC above the floor)",
                "run ends success with both sensors skipped, no retrain; the waiting sensor logged Prometheus "
                "unreachable, kept waiting, then polled the restarted server; production untouched",
                unreachable[0])


def test_prometheus_back_while_the_sensors_wait_on_a_bad_metric(loop, bag, keeper, capsys, fault_table):
    """Prometheus is down as the sensors start and the served AUC is truly below the floor: nothing
    fires while it is down; once it is back the AUC sensor fires and one retrain is queued."""
    stack = loop["stack"]
    prometheus = stack.prometheus
    auc = served_auc(loop)
    assert auc < 0.7, f"the served AUC {auc} should be below the default floor 0.70 for this case"
    before = production_state(loop)
    retrains = {r[0] for r in db_runs("criteo_full_retrain")}
    logical_date = NOW + timedelta(minutes=30)
    events: dict = {}

    def bring_back():
        deadline = time.time() + 90
        while not task_started(logical_date, "auc_degraded"):  # drift_detected may wait first, all down
            assert time.time() < deadline, "auc_degraded did not start"
            time.sleep(0.2)
        time.sleep(3)  # a few polls meet a refused connection
        events["up_at"] = time.time()
        prometheus.start()

    keeper.submit(prometheus.stop).result(timeout=30)
    back = keeper.submit(bring_back)
    try:
        dr, states, log = monitoring_run(bag, loop, logical_date, {**CONF, "auc_threshold": 0.7}, capsys)
    finally:
        back.result(timeout=90)
        keeper.submit(prometheus.start).result(timeout=60)  # up again whatever happened (no-op if running)
    print(log)
    assert dr.state == "success", states
    assert states == {"production_version": "success", "auc_degraded": "success", "drift_detected": "skipped",
                      "decide_retrain": "success", "trigger_full_retrain": "success",
                      "record_retrain": "success"}, states
    fired = dr.get_task_instance("auc_degraded").xcom_pull(task_ids="auc_degraded")
    assert fired["status"] == "fired" and fired["value"] == pytest.approx(auc, abs=1e-3), fired
    # nothing fired while Prometheus was down: the event comes after it was back, after refusals
    assert datetime.fromisoformat(fired["at"]).timestamp() >= int(events["up_at"]), (fired, events)
    auc_log = lines(log, "criteo_rolling_auc")
    unreachable = lines("\n".join(auc_log), f"Prometheus at {prometheus.url} is unreachable", "still waiting")
    (fired_line,) = lines(log, "FIRED: criteo_rolling_auc")
    assert unreachable and auc_log.index(unreachable[-1]) < auc_log.index(fired_line), "\n".join(auc_log)
    assert "TRIGGER full retrain: auc_degraded fired: " in log
    (retrain,) = [r for r in db_runs("criteo_full_retrain") if r[0] not in retrains]
    assert retrain[1] == "queued" and retrain[2]["end_day"] == 3 and retrain[2]["window_days"] == 2, retrain
    assert production_state(loop) == before  # the retrain is only queued: production untouched
    fault_table("Prometheus down as the sensors start, back while they wait (served AUC below the floor)",
                "no fire while down (logged unreachable, kept waiting); auc_degraded fired once Prometheus was "
                "back, one criteo_full_retrain queued; production untouched",
                fired_line)
