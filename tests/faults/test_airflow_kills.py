"""Fault: Airflow's own processes killed mid-run, on the training and monitoring DAGs under a running
Airflow (tests/fixtures/airflow.py `live_airflow`: scheduler with LocalExecutor, DAG processor,
triggerer, API server, Triton; 20k-row synthetic days).

1. `kill -9` of the scheduler while a full retrain's `train` step runs, then a restart. Under the
   LocalExecutor the task is not the scheduler's to lose: it runs in a worker process that
   multiprocessing forked from the scheduler (airflow/executors/local_executor.py `_spawn_worker`,
   `_run_worker`: nothing ties it to its parent's life), and that worker's task supervisor talks to
   the API server, not to the scheduler (airflow/sdk/execution_time/supervisor.py: heartbeats and
   the final state go through the execution API). So the step runs on, orphaned, and reports its
   success itself. The restarted scheduler adopts or resets the TIs queued by a scheduler job only
   once that job's heartbeat is older than scheduler_health_check_threshold (30 s;
   jobs/scheduler_job_runner.py `adopt_or_reset_orphaned_tasks`, at start and every
   orphaned_tasks_check_interval, 300 s); restarted within that, nothing is reset: one try, one
   attempt of the step, one model version.
2. `kill -9` of the triggerer (with its trigger runner) while the monitoring DAG's two sensors are
   deferred and two daily runs wait in their raw-day and previous-day sensors. The daily sensors
   run in reschedule mode (CRITEO_SENSOR_MODE): they are not deferred and never touch the triggerer.
   The deferred triggers stay in the database; the restarted triggerer takes them once the dead
   one's heartbeat is older than triggerer_health_check_threshold (30 s; models/trigger.py
   `Trigger.assign_unassigned`) and runs each again from its serialized state (the sensor's
   deadline is absolute). The metric turns bad while no triggerer runs: it fires once, in the new
   triggerer, and one retrain is queued.
3. The API server killed (with its workers) and started again while a daily run's tasks report to
   it: the task supervisors retry their calls (airflow/sdk/api/client.py: 5 retries, exponential
   wait) and count failed heartbeats (3 allowed): the run ends success, every try visible.
"""
from __future__ import annotations

import json
import os
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.airflow import DAILY, FULL, SMALL_MODEL, create_backfill, land, live_airflow, model_dir, when

pytestmark = pytest.mark.faults

DAYS, ROWS = 6, 20_000         # day_0..day_5: a full retrain of 0-1, daily runs of 2-3 and 5
MONITORING = "model_monitoring"
MODEL = "criteo_dcn"
GOOD_AUC, BAD_AUC = 0.80, 0.55
SENSOR_TIMEOUT_S = 150          # the monitoring sensors' wait: past the triggerer's 30 s takeover


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The training DAGs' Airflow, plus a Prometheus scraping an exporter whose AUC the test sets
    (the monitoring sensors' metric); the training and daily DAGs unpaused."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from local_servers.process import free_port
    from local_servers.prometheus import LocalPrometheus

    root = tmp_path_factory.mktemp("kills")
    registry = CollectorRegistry()
    auc = Gauge("criteo_rolling_auc", "AUC", ["model", "version"], registry=registry).labels(MODEL, "1")
    auc.set(GOOD_AUC)
    Gauge("criteo_max_feature_psi", "PSI", ["model", "version"], registry=registry).labels(MODEL, "1").set(0.05)
    port = free_port()
    exporter, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    prometheus = LocalPrometheus([f"127.0.0.1:{port}"], work_dir=root / "prometheus", scrape_interval_s=1.0)
    prometheus.start()
    env = {"AIRFLOW_VAR_CRITEO_PROMETHEUS_URL": prometheus.url,
           # the scheduled monitoring run's settings, from Variables
           "AIRFLOW_VAR_CRITEO_MONITOR_SUSTAINED_S": "3",
           "AIRFLOW_VAR_CRITEO_MONITOR_SENSOR_TIMEOUT_S": str(SENSOR_TIMEOUT_S),
           "AIRFLOW_VAR_CRITEO_MONITOR_POLL_INTERVAL_S": "1",
           "AIRFLOW_VAR_CRITEO_MONITOR_WINDOW_DAYS": "2"}
    try:
        with live_airflow(root, DAYS, ROWS, env) as (airflow, base):
            airflow.wait_for_dags([FULL, DAILY, MONITORING])
            for dag_id in (FULL, DAILY):    # their scheduled runs (today: far past the days) are skipped
                airflow.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
            airflow.auc = auc
            yield airflow, base
    finally:
        prometheus.stop()
        exporter.shutdown()
        exporter.server_close()


def _group(pgid: int) -> list:
    """The live processes of a process group."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        try:
            if os.getpgid(p.pid) == pgid and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return out


def _alive(pid: int) -> bool:
    import psutil

    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _last_orphan_check(airflow) -> datetime:
    """When the (restarted) scheduler last ran adopt_or_reset_orphaned_tasks, from its log."""
    lines = [line for line in airflow.process("scheduler").log_path.read_text(errors="replace").splitlines()
             if "Adopting or resetting orphaned tasks" in line]
    assert lines, "the scheduler's log has no orphan check"
    return when(lines[-1].split()[0])


def _no_overlap(tries: list[dict]) -> None:
    """Each try ended before the next began: the step never ran twice at once."""
    for before, after in zip(tries, tries[1:], strict=False):
        assert before["end_date"] and when(before["end_date"]) <= when(after["start_date"]), (before, after)


def _versions(base: Path) -> dict[int, dict]:
    return {int(p.name): json.loads((p / "lineage.json").read_text())
            for p in model_dir(base).iterdir() if p.name.isdigit() and (p / "lineage.json").is_file()}


def _one_version_per_run_key(base: Path) -> dict[str, int]:
    keys: dict[str, list[int]] = {}
    for version, lineage in _versions(base).items():
        keys.setdefault(lineage["run_key"], []).append(version)
    assert all(len(v) == 1 for v in keys.values()), keys
    return {k: v[0] for k, v in keys.items()}


def _train_attempts(base: Path, run_key: str) -> list[str]:
    return sorted(p.name for p in (base / "work" / "candidates" / run_key / "train").glob(".attempt-*"))


def test_scheduler_killed_while_train_runs(stack, fault_table):
    airflow, base = stack
    run_id = airflow.call("POST", f"/api/v2/dags/{FULL}/dagRuns", {
        "logical_date": None, "conf": {"end_day": 1, "window_days": 2, **SMALL_MODEL}})["dag_run_id"]

    def train_step_running():
        import psutil

        ti = airflow.task_instances(FULL, run_id).get("train", {})
        if ti.get("state") != "running" or not ti.get("pid"):
            return None
        try:       # the step's own process: a child of the task's
            return ti if psutil.Process(ti["pid"]).children(recursive=True) else None
        except psutil.NoSuchProcess:
            return None

    ti = airflow.wait("train's step process", train_step_running, timeout_s=600, every_s=1)
    task_pid = ti["pid"]
    scheduler = airflow.kill("scheduler")                   # kill -9 <scheduler pid>
    killed_at = datetime.now(UTC)
    time.sleep(3)
    orphans = _group(scheduler)
    assert _alive(task_pid), f"train's task process {task_pid} died with the scheduler (its group now: {orphans})"
    airflow.restart("scheduler")
    still_running = airflow.task_instances(FULL, run_id)["train"]["state"]
    run = airflow.finished_run(FULL, run_id, timeout_s=600)
    states = airflow.task_states(FULL, run_id)
    assert run["state"] == "success", (states, airflow.logs())
    tries = airflow.tries(FULL, run_id, "train")
    _no_overlap(tries)
    checked_s = (_last_orphan_check(airflow) - killed_at).total_seconds()
    # the new scheduler's orphan check came within scheduler_health_check_threshold (30 s) of the old one's
    # last heartbeat: the old job still counts as alive, so its running TI is neither adopted nor reset
    assert [t["try_number"] for t in tries] == [1], (f"orphan check {checked_s:.0f}s after the kill", tries)
    keys = _one_version_per_run_key(base)
    (run_key,) = [k for k, v in keys.items() if _versions(base)[v]["mode"] == "full"]
    attempts = _train_attempts(base, run_key)
    assert len(attempts) == len(tries), attempts
    left = _group(scheduler)
    fault_table(
        "scheduler kill -9 while train runs (LocalExecutor)", "run succeeded; train ran once, one version",
        f"train's task (pid {task_pid}) outlived the scheduler; restarted, its orphan check {checked_s:.0f}s after the "
        f"kill (< 30 s health threshold) reset nothing; train {still_running}, tries {len(tries)}, step attempts "
        f"{len(attempts)}, version {keys[run_key]}; {len(left)} orphaned workers idle")


def test_triggerer_killed_while_sensors_wait(stack, fault_table):
    airflow, base = stack
    assert _versions(base), "needs a production version (test_scheduler_killed_while_train_runs deploys it)"
    airflow.call("PATCH", f"/api/v2/dags/{FULL}", {"is_paused": True})     # a retrain queued here stays queued
    raw2 = base / "raw" / "day_2"
    held = raw2.read_bytes()
    raw2.unlink()
    (base / "raw" / "day_2.manifest.json").unlink(missing_ok=True)
    try:
        _triggerer_kill(airflow, base, raw2, held, fault_table)
    finally:
        if not raw2.exists():
            land(raw2, held)
        airflow.call("PATCH", f"/api/v2/dags/{MONITORING}", {"is_paused": True})
        for r in airflow.runs(FULL):
            if r["state"] == "queued":
                airflow.call("DELETE", f"/api/v2/dags/{FULL}/dagRuns/{r['dag_run_id']}")


def _triggerer_kill(airflow, base, raw2, held, fault_table):
    out = create_backfill(airflow, "--dag-id", DAILY, "--from-date", "2026-01-03", "--to-date", "2026-01-04",
                          "--dag-run-conf", json.dumps({"auc_floor": 0.55}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    airflow.call("PATCH", f"/api/v2/dags/{MONITORING}", {"is_paused": False})

    def waiting():
        runs = {r["logical_date"][:10]: r["dag_run_id"] for r in airflow.runs(DAILY) if r["run_type"] == "backfill"}
        monitoring = [r["dag_run_id"] for r in airflow.runs(MONITORING) if r["run_type"] == "scheduled"]
        if not monitoring or not {"2026-01-03", "2026-01-04"} <= set(runs):
            return None
        day2 = airflow.task_states(DAILY, runs["2026-01-03"])
        day3 = airflow.task_states(DAILY, runs["2026-01-04"])
        mon = airflow.task_states(MONITORING, monitoring[0])
        ok = (day2.get("wait_for_raw_day") == "up_for_reschedule" and
              day3.get("wait_for_previous_day") == "up_for_reschedule" and
              mon.get("auc_degraded") == mon.get("drift_detected") == "deferred")
        return (runs["2026-01-03"], runs["2026-01-04"], monitoring[0]) if ok else None

    day2, day3, mon = airflow.wait("the sensors to wait", waiting, timeout_s=300, every_s=2)
    folder = (airflow.home / "logs" / f"dag_id={MONITORING}" / f"run_id={mon}")
    before = {p.name for p in folder.glob("task_id=*/attempt=1.log.trigger.*.log")}
    airflow.kill("triggerer", group=True)
    killed_at = time.monotonic()
    airflow.auc.set(BAD_AUC)                 # turns bad while no triggerer runs
    time.sleep(5)
    assert airflow.task_states(MONITORING, mon)["auc_degraded"] == "deferred", "fired with no triggerer"
    airflow.restart("triggerer")
    land(raw2, held)

    def fired():
        return airflow.task_states(MONITORING, mon)["auc_degraded"] not in ("deferred", "scheduled", "queued",
                                                                            "running", None)

    airflow.wait("auc_degraded to resume", fired, timeout_s=SENSOR_TIMEOUT_S + 60, every_s=1)
    fired_after_s = time.monotonic() - killed_at
    monitoring = airflow.finished_run(MONITORING, mon, timeout_s=SENSOR_TIMEOUT_S + 120)
    states = airflow.task_states(MONITORING, mon)
    assert monitoring["state"] == "success", states
    assert states == {"production_version": "success", "auc_degraded": "success", "drift_detected": "skipped",
                      "decide_retrain": "success", "trigger_full_retrain": "success", "record_retrain": "success"}
    for task_id in ("auc_degraded", "drift_detected", "decide_retrain", "trigger_full_retrain"):
        assert [t["try_number"] for t in airflow.tries(MONITORING, mon, task_id)] == [1], task_id
    # the trigger ran again in the new triggerer, from its stored state, and fired there once
    def trigger_logs(task_id):
        return {p.name: p.read_text(errors="replace")
                for p in folder.glob(f"task_id={task_id}/attempt=1.log.trigger.*.log")}

    logs = trigger_logs("auc_degraded")
    met = [name for name, text in logs.items() for _ in range(text.count("condition met: criteo_rolling_auc"))]
    assert len(met) == 1 and met[0] not in before, (sorted(before), {k: v[-1500:] for k, v in logs.items()})
    drift_logs = [text for name, text in trigger_logs("drift_detected").items() if name not in before]
    assert sum(t.count("deadline reached") for t in drift_logs) == 1, drift_logs
    retrains = [r for r in airflow.runs(FULL)
                if str((r.get("conf") or {}).get("reason", "")).startswith("model_monitoring:")]
    assert len(retrains) == 1 and retrains[0]["state"] == "queued", retrains

    for run_id in (day2, day3):
        done = airflow.finished_run(DAILY, run_id, timeout_s=600)
        assert done["state"] == "success", airflow.task_states(DAILY, run_id)
    sensor_tries = {(d, t): [x["try_number"] for x in airflow.tries(DAILY, r, t)]
                    for d, r in (("day2", day2), ("day3", day3))
                    for t in ("wait_for_previous_day", "wait_for_raw_day", "plan_incremental_run", "deploy")}
    assert all(v == [1] for v in sensor_tries.values()), sensor_tries
    keys = _one_version_per_run_key(base)
    days = sorted(tuple(_versions(base)[v]["days"]) for v in keys.values())
    assert (2,) in days and (3,) in days, days
    fault_table(
        "triggerer kill -9 while sensors wait", "each sensor ended once; one retrain queued",
        f"metric bad with no triggerer: auc_degraded fired once, {fired_after_s:.0f}s after the kill, in the restarted "
        f"triggerer (it takes a dead one's triggers after 30 s); drift_detected timed out once; daily sensors "
        f"(reschedule, no trigger) 1 try each")


def test_api_server_restarted_while_tasks_report(stack, fault_table):
    airflow, base = stack
    assert _versions(base), "needs a production version (test_scheduler_killed_while_train_runs deploys it)"
    run_id = airflow.call("POST", f"/api/v2/dags/{DAILY}/dagRuns", {
        "logical_date": "2026-01-06T00:00:00Z", "conf": {"auc_floor": 0.55}})["dag_run_id"]

    def step_running():
        states = airflow.task_states(DAILY, run_id)
        running = [t for t in ("preprocess", "train") if states.get(t) == "running"]
        return running or None

    during = airflow.wait("a step of the daily run", step_running, timeout_s=600, every_s=1)
    t0 = time.monotonic()
    airflow.kill("api-server", group=True)
    down_at = datetime.now(UTC)
    time.sleep(2)
    airflow.restart("api-server")
    outage_s = time.monotonic() - t0
    run = airflow.finished_run(DAILY, run_id, timeout_s=600)
    tis = airflow.task_instances(DAILY, run_id)
    assert run["state"] == "success", ({t: ti["state"] for t, ti in tis.items()}, airflow.logs())
    assert all(ti["state"] in ("success", "skipped") for ti in tis.values()), {t: ti["state"] for t, ti in tis.items()}
    retried, reporting = {}, []
    for task_id in tis:
        tries = airflow.tries(DAILY, run_id, task_id)
        _no_overlap(tries)
        if len(tries) > 1:       # a call that outlasted the client's retries failed the try: Airflow retried it
            retried[task_id] = [t["state"] for t in tries]
            assert tries[-1]["state"] == "success" and all(t["state"] == "failed" for t in tries[:-1]), tries
        if any(t["start_date"] and when(t["start_date"]) <= down_at and t["end_date"] and
               when(t["end_date"]) >= down_at for t in tries):
            reporting.append(task_id)
    assert reporting, "no task ran across the outage"
    _one_version_per_run_key(base)
    fault_table(
        "API server killed and restarted while tasks run", "run succeeded" + (", with retries" if retried else ""),
        f"down {outage_s:.0f}s while {', '.join(during)} ran; across the outage: {', '.join(reporting)}; "
        + (f"retried: {retried}" if retried else "no task retried, none left running"))
