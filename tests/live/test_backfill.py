"""The training DAGs under Airflow's own processes (scheduler with LocalExecutor, DAG processor,
triggerer, API server), driven as users drive them: the REST API with a real login, and Airflow's
CLI for the backfill.

1. The DAGs parse with no import error; unpausing the training DAGs today (far after the data
   set's dates) gives skipped runs, not failed ones.
2. `criteo_full_retrain` triggered through the REST API with a conf deploys version 1.
3. `airflow backfill create` over three days, as docs/operations.md writes it (no reprocess flag): three
   runs, each on its own day, applied in order, each version's parent the version before.
4. The backfill's last two days reprocessed: identical artifacts, no new version.
5. A bad day inside a backfill stops at validation, the next day waits, production is untouched;
   docs/operations.md's way to resume (fix the file, clear the failed run) finishes both days.

Figures (printed, recorded in docs/figures.md): the backfill's wall time, trigger-to-first-task latency,
and queued-to-running latency per task.
"""
import json
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from tests.live.conftest import (
    DAILY,
    FULL,
    SMALL_MODEL,
    airflow_cli,
    corrupt_day,
    create_backfill,
    land,
    model_dir,
    when,
)

pytestmark = pytest.mark.live


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
    assert json.loads((model_dir(base) / "1" / "lineage.json").read_text())["mode"] == "full"
    tis = airflow.call("GET", f"/api/v2/dags/{FULL}/dagRuns/{run['dag_run_id']}/taskInstances")["task_instances"]
    first = min(when(t["start_date"]) for t in tis if t["start_date"])
    print(f"\nFIGURE trigger-to-first-task {(first - when(run['queued_at'])).total_seconds():.1f}s "
          f"(run queued_at -> first task start)")


def test_a_cli_backfill_applies_the_days_in_order(live):
    airflow, base = live
    t0 = datetime.now(UTC)
    # docs/operations.md's command; the conf only lowers the AUC floor for these small synthetic days
    out = create_backfill(airflow, "--dag-id", DAILY, "--from-date", "2026-01-03",
                          "--to-date", "2026-01-05", "--dag-run-conf", json.dumps({"auc_floor": 0.55}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def backfill_runs():
        runs = [r for r in airflow.runs(DAILY) if r["run_type"] == "backfill"]
        return runs if len(runs) == 3 and all(r["state"] in ("success", "failed") for r in runs) else None

    runs = sorted(airflow.wait("the backfill's three runs", backfill_runs, timeout_s=1500, every_s=5),
                  key=lambda r: r["logical_date"])
    wall = (max(when(r["end_date"]) for r in runs) - t0).total_seconds()
    assert [r["logical_date"][:10] for r in runs] == ["2026-01-03", "2026-01-04", "2026-01-05"]
    assert all(r["state"] == "success" for r in runs), [(r["dag_run_id"], airflow.task_states(DAILY, r["dag_run_id"]))
                                                        for r in runs]
    # day N warm-starts from the version day N-1 deployed: versions 2, 3, 4 with parents 1, 2, 3
    lineage = {v: json.loads((model_dir(base) / str(v) / "lineage.json").read_text()) for v in (2, 3, 4)}
    assert [(lineage[v]["days"], lineage[v]["parent_version"]) for v in (2, 3, 4)] == [([2], 1), ([3], 2), ([4], 3)]
    # in order: each day planned only after the day before had deployed
    tis = {r["logical_date"][:10]: {t["task_id"]: t for t in airflow.call(
        "GET", f"/api/v2/dags/{DAILY}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]} for r in runs}
    days = sorted(tis)
    for before, after in zip(days, days[1:], strict=False):
        assert when(tis[after]["plan_incremental_run"]["start_date"]) >= when(tis[before]["deploy"]["end_date"])
    waits = [(when(t["start_date"]) - when(t["queued_when"])).total_seconds()
             for day in days for t in tis[day].values() if t["queued_when"] and t["start_date"]]
    print(f"\nFIGURE backfill of 3 days: {wall:.0f}s wall; queued-to-running per task: median "
          f"{statistics.median(waits):.1f}s, max {max(waits):.1f}s over {len(waits)} task attempts")


def _digests(folder: Path) -> dict:
    """Each file's digest by its place in its partition's committed content: a reprocessed partition
    is a new attempt (a new folder name, a new commit object) holding the same bytes."""
    import hashlib

    out = {}
    for p in sorted(folder.rglob("*")):
        if not p.is_file() or p.name == "_COMMITTED" or "_RETAINED" in p.parts:
            continue
        rel = "/".join("<attempt>" if part.startswith(".attempt-") else part for part in p.relative_to(folder).parts)
        assert rel not in out, f"{p}: a second attempt beside the committed one"  # the replaced one was collected
        out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def test_reprocessing_the_backfill_gives_the_same_artifacts_and_no_new_version(live):
    airflow, base = live
    processed = base / "work" / "processed"
    versions = sorted(p.name for p in model_dir(base).iterdir() if p.name.isdigit())
    before = {"processed": _digests(processed), **{v: _digests(model_dir(base) / v) for v in versions}}
    # two days, not all three: the second warm-starts from the version the first reprocessed day
    # left in production, as in the first pass; a third day would prove nothing more
    days = ("2026-01-04", "2026-01-05")
    out = create_backfill(airflow, "--dag-id", DAILY, "--from-date", days[0], "--to-date", days[-1],
                          "--reprocess-behavior", "completed", "--dag-run-conf", json.dumps({"auc_floor": 0.55}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def rerun():
        runs = [r for r in airflow.runs(DAILY) if r["run_type"] == "backfill" and r["logical_date"][:10] in days]
        tries = [t["try_number"] for r in runs for t in airflow.call(
            "GET", f"/api/v2/dags/{DAILY}/dagRuns/{r['dag_run_id']}/taskInstances")["task_instances"]
            if t["task_id"] == "plan_incremental_run"]
        finished = all(r["state"] in ("success", "failed") for r in runs)
        return runs if finished and len(runs) == len(days) and min(tries) >= 2 else None

    runs = airflow.wait("the reprocessed backfill", rerun, timeout_s=1500, every_s=5)
    assert all(r["state"] == "success" for r in runs), [r["state"] for r in runs]
    assert sorted(p.name for p in model_dir(base).iterdir() if p.name.isdigit()) == versions   # no new version
    after = {"processed": _digests(processed), **{v: _digests(model_dir(base) / v) for v in versions}}
    assert after == before


def test_a_bad_day_stops_the_backfill_and_the_readme_resumes_it(live):
    """Day 5 is broken: its run stops at validate, day 6 waits in wait_for_previous_day, production
    and what Triton serves stay as they were, and the failure's data docs page is behind the login.
    Then docs/operations.md's resume: fix the file, clear day 5's run; both days finish in order."""
    airflow, base = live
    raw5 = base / "raw" / "day_5"
    original = corrupt_day(raw5)
    try:
        _bad_day_then_resume(airflow, base, raw5, original)
    finally:
        land(raw5, original)  # the later tests' days stay good whatever happened here


def _bad_day_then_resume(airflow, base, raw5, original):
    import httpx

    from operators.hooks.triton import TritonHook

    versions = sorted(int(p.name) for p in model_dir(base).iterdir() if p.name.isdigit())
    serving = TritonHook(airflow.stack.triton.grpc_url).ready_versions("criteo_dcn")
    assert serving == [max(versions)], serving
    out = create_backfill(airflow, "--dag-id", DAILY, "--from-date", "2026-01-06", "--to-date", "2026-01-07",
                          "--dag-run-conf", json.dumps({"auc_floor": 0.55}))
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]

    def day_runs():
        runs = {r["logical_date"][:10]: r for r in airflow.runs(DAILY) if r["run_type"] == "backfill"}
        return runs if {"2026-01-06", "2026-01-07"} <= set(runs) else None

    runs = airflow.wait("the backfill's runs", day_runs, timeout_s=120)
    bad, later = runs["2026-01-06"]["dag_run_id"], runs["2026-01-07"]["dag_run_id"]
    failed = airflow.finished_run(DAILY, bad, timeout_s=600)
    states = airflow.task_states(DAILY, bad)
    assert failed["state"] == "failed" and states["validate"] == "failed", states
    assert states["train"] in ("upstream_failed", None), states
    # the next day waits for it, long after it failed: it never planned
    time.sleep(30)
    waiting = airflow.task_instances(DAILY, later)
    assert airflow.call("GET", f"/api/v2/dags/{DAILY}/dagRuns/{later}")["state"] == "running"
    assert waiting["wait_for_previous_day"]["state"] in ("up_for_reschedule", "running", "queued", "scheduled"), waiting
    assert waiting["plan_incremental_run"]["start_date"] is None, waiting["plan_incremental_run"]
    # production untouched: no new version, Triton serves the same one
    assert sorted(int(p.name) for p in model_dir(base).iterdir() if p.name.isdigit()) == versions
    assert TritonHook(airflow.stack.triton.grpc_url).ready_versions("criteo_dcn") == serving
    # the failure's data docs: the task's extra link, served by the plugin to a logged-in user only
    links = airflow.call("GET", f"/api/v2/dags/{DAILY}/dagRuns/{bad}/taskInstances/validate/links")
    page = links["extra_links"]["Data docs"]
    assert page.startswith("/criteo-data-docs/site/"), links
    anonymous = httpx.get(f"{airflow.url}{page}", timeout=30)
    assert anonymous.status_code == 401, anonymous.status_code
    seen = httpx.get(f"{airflow.url}{page}", headers={"Authorization": f"Bearer {airflow.token}"}, timeout=30)
    assert seen.status_code == 200 and seen.headers["content-type"].startswith("text/html"), seen.status_code
    assert "label" in seen.text and "I5" in seen.text, seen.text[:500]       # the columns that broke
    assert "https://maxcdn.bootstrapcdn.com" not in seen.text         # assets rewritten to the plugin

    # resume as docs/operations.md says: fix the raw file, clear the failed day's run
    land(raw5, original)
    out = airflow_cli(airflow, "tasks", "clear", DAILY, "--start-date", "2026-01-06", "--end-date", "2026-01-06",
                      "--yes")
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    for run_id in (bad, later):
        done = airflow.wait(f"{run_id} to succeed", lambda r=run_id: (lambda x: x if x["state"] in (
            "success", "failed") and x["end_date"] else None)(airflow.call(
                "GET", f"/api/v2/dags/{DAILY}/dagRuns/{r}")), timeout_s=900, every_s=5)
        assert done["state"] == "success", airflow.task_states(DAILY, run_id)
    lineage = {v: json.loads((model_dir(base) / str(v) / "lineage.json").read_text())
               for v in (max(versions) + 1, max(versions) + 2)}
    assert [(v["days"], v["parent_version"]) for v in lineage.values()] == [([5], max(versions)),
                                                                            ([6], max(versions) + 1)]
