"""The training DAGs under Airflow's own processes (scheduler with LocalExecutor, DAG processor,
triggerer, API server), driven as users drive them: the REST API with a real login, and Airflow's
CLI for the backfill.

1. The DAGs parse with no import error; unpausing the training DAGs today (far after the data
   set's dates) gives skipped runs, not failed ones.
2. `criteo_full_retrain` triggered through the REST API with a conf deploys version 1.
3. `airflow backfill create` over three days, as the README writes it (no reprocess flag): three
   runs, each on its own day, applied in order, each version's parent the version before.

Figures (printed, recorded in README): the backfill's wall time, trigger-to-first-task latency,
and queued-to-running latency per task.
"""
import json
import os
import statistics
import subprocess
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.fixtures.airflow import AIRFLOW, Airflow

pytestmark = pytest.mark.live
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 20_000
SMALL_MODEL = {"epochs": 1, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048, "auc_floor": 0.55}
FULL = "criteo_full_retrain"
DAILY = "criteo_incremental_training"


def _when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    from local_servers.stack import ServingStack
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    root = tmp_path_factory.mktemp("live")
    base = root / "bucket"
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(base / "raw"), "--days", "0-4", "--rows", str(ROWS)])
    with ServingStack(base, root / "services", monitor=False, prometheus=False) as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRITEO_"))}
        env.update({
            "AIRFLOW_VAR_CRITEO_BASE_URL": str(base),
            "AIRFLOW_VAR_CRITEO_DAY0_DATE": DAY0.date().isoformat(),
            "AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL": stack.triton.grpc_url,
            # sensors give their worker slot back between pokes, as in production. Not much faster
            # than this: a task rescheduled within the scheduler's executor-event latency is failed
            # by the stale event of its previous poke (Airflow 3.3; see README, apache/airflow#72716).
            "CRITEO_SENSOR_MODE": "reschedule",
            "CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S": "10",
            "CRITEO_RAW_POKE_INTERVAL_S": "10",
            "CRITEO_RAW_WAIT_TIMEOUT_S": "120",
            "CRITEO_RETRY_DELAY_S": "5",
        })
        af = Airflow(root / "airflow_home", env)
        try:
            af.start()
            yield af, base
        finally:
            af.stop()


def airflow_cli(airflow, *args: str) -> subprocess.CompletedProcess:
    """An `airflow` CLI command against the live Airflow. Its database is SQLite (one writer at a
    time): a command that clears many task instances while the scheduler writes can fail with
    "database is locked", and is run again, as a user would. Production runs on PostgreSQL."""
    import time

    for _ in range(5):
        out = subprocess.run([AIRFLOW, *args], env=airflow.env, capture_output=True, text=True, timeout=300)
        if out.returncode == 0 or "database is locked" not in out.stderr:
            return out
        time.sleep(3)
    return out


def _model(base: Path) -> Path:
    return base / "model_repository" / "criteo_dcn"


def test_the_dags_parse_and_unpausing_today_gives_skipped_runs(live):
    airflow, _ = live
    airflow.wait("the DAG processor to parse the training DAGs", lambda: all(
        airflow.call("GET", f"/api/v2/dags?dag_id_pattern={d}")["total_entries"] for d in (FULL, DAILY)))
    errors = airflow.call("GET", "/api/v2/importErrors")
    assert errors["total_entries"] == 0, errors
    for dag_id in (FULL, DAILY):
        airflow.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
        scheduled = airflow.wait(f"{dag_id}'s scheduled run", lambda d=dag_id: [
            r for r in airflow.runs(d) if r["run_type"] == "scheduled"])[0]
        run = airflow.finished_run(dag_id, scheduled["dag_run_id"])
        states = airflow.task_states(dag_id, run["dag_run_id"])
        plan = "plan_full_retrain" if dag_id == FULL else "plan_incremental_run"
        assert run["state"] == "success" and states[plan] == "skipped", (dag_id, states)
        assert set(states.values()) <= {"success", "skipped"}, states
        log = airflow.task_log(dag_id, run["dag_run_id"], plan)
        assert "outside day_0..day_23" in log and "has nothing to train, so it is skipped" in log, log[-2000:]


def test_a_full_retrain_triggered_through_the_rest_api(live):
    airflow, base = live
    triggered = airflow.call("POST", f"/api/v2/dags/{FULL}/dagRuns", {
        "logical_date": None, "conf": {"end_day": 1, "window_days": 2, **SMALL_MODEL}})
    run = airflow.wait("the full retrain", lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
        airflow.call("GET", f"/api/v2/dags/{FULL}/dagRuns/{triggered['dag_run_id']}")), timeout_s=900, every_s=5)
    assert run["state"] == "success", (airflow.task_states(FULL, run["dag_run_id"]), airflow.logs())
    assert json.loads((_model(base) / "1" / "lineage.json").read_text())["mode"] == "full"
    tis = airflow.call("GET", f"/api/v2/dags/{FULL}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    first = min(_when(t["start_date"]) for t in tis if t["start_date"])
    print(f"\nFIGURE trigger-to-first-task {(first - _when(run['queued_at'])).total_seconds():.1f}s "
          f"(run queued_at -> first task start)")


def test_a_cli_backfill_applies_the_days_in_order(live):
    airflow, base = live
    t0 = datetime.now(UTC)
    # the README's command; the conf only lowers the AUC floor for these small synthetic days
    out = airflow_cli(airflow, "backfill", "create", "--dag-id", DAILY, "--from-date", "2026-01-03",
                      "--to-date", "2026-01-05", "--dag-run-conf", json.dumps({"auc_floor": 0.55}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def backfill_runs():
        runs = [r for r in airflow.runs(DAILY) if r["run_type"] == "backfill"]
        return runs if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = sorted(airflow.wait("the backfill's three runs", backfill_runs, timeout_s=1500, every_s=5),
                  key=lambda r: r["logical_date"])
    wall = (max(_when(r["end_date"]) for r in runs) - t0).total_seconds()
    assert [r["logical_date"][:10] for r in runs] == ["2026-01-03", "2026-01-04", "2026-01-05"]
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], airflow.task_states(DAILY, r["dag_run_id"]))
                                                        for r in runs]
    # day N warm-starts from the version day N-1 deployed: versions 2, 3, 4 with parents 1, 2, 3
    lineage = {v: json.loads((_model(base) / str(v) / "lineage.json").read_text()) for v in (2, 3, 4)}
    assert [(lineage[v]["days"], lineage[v]["parent_version"]) for v in (2, 3, 4)] == [([2], 1), ([3], 2), ([4], 3)]
    # in order: each day planned only after the day before had deployed
    tis = {r["logical_date"][:10]: {t["task_id"]: t for t in airflow.call(
        "GET", f"/api/v2/dags/{DAILY}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]} for r in runs}
    days = sorted(tis)
    for before, after in zip(days, days[1:], strict=False):
        assert _when(tis[after]["plan_incremental_run"]["start_date"]) >= _when(tis[before]["deploy"]["end_date"])
    waits = [(_when(t["start_date"]) - _when(t["queued_when"])).total_seconds()
             for day in days for t in tis[day].values() if t["queued_when"] and t["start_date"]]
    print(f"\nFIGURE backfill of 3 days: {wall:.0f}s wall; queued-to-running per task: median "
          f"{statistics.median(waits):.1f}s, max {max(waits):.1f}s over {len(waits)} task attempts")


def _digests(folder: Path) -> dict:
    import hashlib

    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_reprocessing_the_backfill_gives_the_same_artifacts_and_no_new_version(live):
    airflow, base = live
    processed = base / "work" / "processed"
    versions = sorted(p.name for p in _model(base).iterdir() if p.name.isdigit())
    before = {"processed": _digests(processed), **{v: _digests(_model(base) / v) for v in versions}}
    # one backfill per DAG at a time: the scheduler marks the first one completed shortly after its runs
    airflow.wait("the first backfill to complete", lambda: all(
        b["completed_at"] for b in airflow.call("GET", f"/api/v2/backfills?dag_id={DAILY}")["backfills"]))
    out = airflow_cli(airflow, "backfill", "create", "--dag-id", DAILY, "--from-date", "2026-01-03",
                      "--to-date", "2026-01-05", "--reprocess-behavior", "completed",
                      "--dag-run-conf", json.dumps({"auc_floor": 0.55}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def rerun():
        runs = [r for r in airflow.runs(DAILY) if r["run_type"] == "backfill"]
        tries = [t["try_number"] for r in runs for t in airflow.call(
            "GET", f"/api/v2/dags/{DAILY}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]
            if t["task_id"] == "plan_incremental_run"]
        finished = all(r["state"] in ("success", "failed") for r in runs)
        return runs if finished and len(runs) == 3 and min(tries) >= 2 else None

    runs = airflow.wait("the reprocessed backfill", rerun, timeout_s=1500, every_s=5)
    assert all(r["state"] == "success" for r in runs), [r["state"] for r in runs]
    assert sorted(p.name for p in _model(base).iterdir() if p.name.isdigit()) == versions   # no new version
    after = {"processed": _digests(processed), **{v: _digests(_model(base) / v) for v in versions}}
    assert after == before
