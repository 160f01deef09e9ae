"""The closed monitoring loop on the embedded default: serve, watch, retrain, recover.

1. writes historical Criteo days (day_0..day_{H-1}) into the bucket's raw/ folder and the days
   users will send later (day_H..) into traffic/, with drift injected from day K on;
2. starts the serving stack: a real Triton on the bucket's model repository, the monitor on the
   request log, Prometheus scraping both (local_servers/);
3. criteo_full_retrain on the historical days deploys version 1; Triton loads it;
4. each traffic day: the inference client replays it to Triton over gRPC and logs requests,
   predictions, versions and then labels; criteo_request_log_to_raw turns the day's request log
   into raw/day_N (fresh training data: the loop closes); then model_monitoring runs: its sensors
   ask Prometheus whether the
   rolling AUC stayed low, or drift stayed high, for the sustained window;
5. when a sensor fires, model_monitoring triggers criteo_full_retrain; the demo plays the
   scheduler's part and runs that queued run (same logical date and conf) with dag.test();
   the new version deploys and serves the next days;
6. prints the AUC timeline (from Prometheus) and checks: AUC dropped, a sensor fired, a new
   version deployed, the served AUC recovered.

    make demo-loop      # or: .venv/bin/python scripts/demo_loop.py --rows 30000 --json timeline.json
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from datetime import UTC
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "criteo_dcn"


def configure(base: Path, day0: str) -> None:
    from demo import configure as configure_demo  # scripts/demo.py: same Airflow settings

    configure_demo(base, day0)


def forget_runs(dag_ids) -> None:
    """Start from no runs of these DAGs, and no retrain cooldown, in the local Airflow database."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        for model in (TaskInstance, DagRun):
            session.query(model).filter(model.dag_id.in_(dag_ids)).delete(synchronize_session=False)
        session.query(Variable).filter(Variable.key == "criteo_monitor_last_retrain_at").delete()


def queued_runs(dag_id: str) -> list:
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState

    with create_session() as session:
        runs = session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.state == DagRunState.QUEUED).all()
        return [(r.run_id, r.logical_date, dict(r.conf or {})) for r in runs]


def prom_value(prom, query: str) -> float | None:
    rows = prom.query(query)
    return float(rows[0]["value"][1]) if rows else None


def wait_for_monitor(prom, version: int, expect_rows: int, timeout_s: float = 90) -> dict:
    """Wait until Prometheus has scraped the monitor's window for `version` over the new rows."""
    sel = f'{{model="{MODEL}",version="{version}"}}'
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        logged = prom_value(prom, f"sum(criteo_requests_logged_total{sel})") or 0
        joined = prom_value(prom, f"sum(criteo_labels_joined_total{sel})") or 0
        auc = prom_value(prom, f"criteo_rolling_auc{sel}")
        if logged >= expect_rows and joined >= expect_rows and auc is not None:
            return {"auc": auc, "logloss": prom_value(prom, f"criteo_rolling_logloss{sel}"),
                    "calibration": prom_value(prom, f"criteo_calibration_ratio{sel}"),
                    "max_psi": prom_value(prom, f"criteo_max_feature_psi{sel}"), "logged": logged}
        time.sleep(1)
    raise TimeoutError(f"the monitor's metrics for version {version} did not reach Prometheus within {timeout_s:g}s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(REPO / ".data" / "loop"), help="the bucket (a local folder)")
    p.add_argument("--history-days", type=int, default=3, help="days of the first full retrain")
    p.add_argument("--traffic-days", type=int, default=5, help="days replayed to Triton after it")
    p.add_argument("--drift-from-day", type=int, default=5, help="drift is injected from this day on")
    p.add_argument("--rows", type=int, default=40_000, help="rows per historical day")
    p.add_argument("--traffic-rows", type=int, default=30_000, help="rows replayed per traffic day")
    p.add_argument("--window-rows", type=int, default=5000, help="the monitor's rolling window")
    p.add_argument("--auc-threshold", type=float, default=0.72)
    p.add_argument("--psi-threshold", type=float, default=0.25)
    p.add_argument("--sustained-s", type=int, default=8, help="how long a metric must stay bad")
    p.add_argument("--sensor-timeout-s", type=int, default=25, help="a quiet day's sensors give up after this")
    p.add_argument("--retrain-window-days", type=int, default=1,
                   help="days the triggered retrain trains on, ending at the latest day: the drifted ones")
    p.add_argument("--mlp-dims", default="256,256")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--day0", default="2026-01-01")
    p.add_argument("--json", default=None, help="also write the timeline and checks here")
    a = p.parse_args(argv)

    base = Path(a.base).resolve()
    if base.exists():
        import shutil

        shutil.rmtree(base)  # the loop starts from an empty bucket every time
    configure(base, a.day0)
    os.environ["AIRFLOW_VAR_CRITEO_RETRY_DELAY_S"] = "5"
    from datetime import datetime, timedelta

    from airflow.dag_processing.dagbag import DagBag

    from local_servers.stack import ServingStack
    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.hooks.prometheus import PrometheusHook
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    steps = LocalProcessRuntime()
    hist = a.history_days
    traffic = list(range(hist, hist + a.traffic_days))
    print(f"== synthetic Criteo days: day_0..day_{hist - 1} ({a.rows} rows) in raw/, "
          f"day_{traffic[0]}..day_{traffic[-1]} "
          f"({a.traffic_rows} rows) in traffic/, drift from day_{a.drift_from_day}", flush=True)
    steps.run(STEPS["synth"], ["--out", str(base / "raw"), "--days", f"0-{hist - 1}", "--rows", str(a.rows),
                               "--drift-from-day", str(a.drift_from_day)])
    steps.run(STEPS["synth"], ["--out", str(base / "traffic"), "--days", f"{traffic[0]}-{traffic[-1]}",
                               "--rows", str(a.traffic_rows), "--drift-from-day", str(a.drift_from_day)])
    forget_runs(["criteo_full_retrain", "model_monitoring", "criteo_incremental_training", "criteo_request_log_to_raw"])
    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    day0 = datetime.fromisoformat(a.day0).replace(tzinfo=UTC)
    train_conf = {"epochs": a.epochs, "mlp_dims": a.mlp_dims, "batch_size": 2048, "learning_rate": 0.003,
                  "auc_floor": 0.6}
    timeline, events = [], []

    with ServingStack(base, base / ".services", window_rows=a.window_rows, min_rows=min(500, a.window_rows)) as stack:
        print(f"== serving stack: Triton gRPC {stack.triton.grpc_url}, monitor {stack.monitor.metrics_url}, "
              f"Prometheus {stack.prometheus.url}", flush=True)
        layout = Layout(Settings.load())
        repo = ModelRepositoryHook(layout)
        prom = PrometheusHook(stack.prometheus.url)

        t0 = time.time()
        dr = bag.get_dag("criteo_full_retrain").test(
            logical_date=day0 + timedelta(days=hist - 1),
            run_conf={"end_day": hist - 1, "window_days": hist, **train_conf})
        print(f"== criteo_full_retrain days 0-{hist - 1}: {dr.state} in {time.time() - t0:.0f}s; "
              f"production version {repo.production_version()}", flush=True)
        if dr.state != "success":
            print("DEMO-LOOP FAILED: the first full retrain failed")
            return 1
        events.append({"event": "deployed", "version": repo.production_version(), "after_day": hist - 1})

        sent: dict[int, int] = {}  # rows sent to each version so far: what the monitor must have counted
        for day in traffic:
            version = repo.production_version()
            result = steps.run(STEPS["replay"], ["--input", str(base / "traffic" / f"day_{day}"), "--day", str(day),
                                                 "--triton", stack.triton.grpc_url, "--model", MODEL,
                                                 "--request-log", str(stack.request_log), "--batch-size", "64",
                                                 "--concurrency", "2", "--day0", a.day0])
            for v, n in (result.get("versions_seen") or {}).items():
                sent[int(v)] = sent.get(int(v), 0) + int(n)
            # The request log of the day becomes the day's training data (the daily DAG that does it).
            conv = bag.get_dag("criteo_request_log_to_raw").test(logical_date=day0 + timedelta(days=day))
            if conv.state != "success":
                print(f"DEMO-LOOP FAILED: criteo_request_log_to_raw for day_{day}: {conv.state}")
                return 1
            served = wait_for_monitor(prom, version, expect_rows=sent.get(version, 0))
            point = {"day": day, "drifted": day >= a.drift_from_day, "version": version, **served}
            timeline.append(point)
            print(f"== day_{day}{' (drifted)' if point['drifted'] else ''}: served by version {version}, "
                  f"rolling AUC {served['auc']:.4f}, logloss {served['logloss']:.4f}, "
                  f"max PSI {served['max_psi'] if served['max_psi'] is None else round(served['max_psi'], 3)}",
                  flush=True)

            t0 = time.time()
            mon = bag.get_dag("model_monitoring").test(
                logical_date=day0 + timedelta(days=day, hours=23),
                run_conf={"auc_threshold": a.auc_threshold, "psi_threshold": a.psi_threshold,
                          "sustained_s": a.sustained_s, "sensor_timeout_s": a.sensor_timeout_s,
                          "poll_interval_s": 2, "cooldown_h": 1, "window_days": a.retrain_window_days})
            states = {ti.task_id: ti.state for ti in mon.get_task_instances()}
            fired = [t for t in ("auc_degraded", "drift_detected") if states.get(t) == "success"]
            point["sensors_fired"] = fired
            print(f"   model_monitoring: {mon.state} in {time.time() - t0:.0f}s; fired: {fired or 'none'}; "
                  f"trigger_full_retrain {states.get('trigger_full_retrain')}", flush=True)
            for run_id, logical_date, conf in queued_runs("criteo_full_retrain"):
                events.append({"event": "retrain_triggered", "after_day": day, "by": fired, "conf": conf})
                print(f"   queued {run_id} conf {conf}: running it (the scheduler's part)", flush=True)
                t0 = time.time()
                before = repo.production_version()
                dr = bag.get_dag("criteo_full_retrain").test(logical_date=logical_date,
                                                             run_conf={**train_conf, **conf})
                after = repo.production_version()
                states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
                print(f"   criteo_full_retrain: {dr.state} in {time.time() - t0:.0f}s; deploy {states.get('deploy')}; "
                      f"production version {before} -> {after}", flush=True)
                if after != before:
                    events.append({"event": "deployed", "version": after, "after_day": day})

    checks = evaluate_loop(timeline, events, a.drift_from_day)
    print("\n== AUC timeline (rolling AUC over the last "
          f"{a.window_rows} labelled requests, from Prometheus)")
    print(f"  {'day':<7}{'drift':<7}{'version':<9}{'AUC':<8}{'logloss':<9}{'calib.':<8}{'max PSI':<9}sensors fired")
    for t in timeline:
        psi = "-" if t["max_psi"] is None else f"{t['max_psi']:.3f}"
        calib = "-" if t["calibration"] is None else f"{t['calibration']:.3f}"
        print(f"  {t['day']:<7}{'yes' if t['drifted'] else 'no':<7}{t['version']:<9}{t['auc']:<8.4f}"
              f"{t['logloss']:<9.4f}{calib:<8}{psi:<9}{', '.join(t['sensors_fired']) or '-'}")
    for e in events:
        print(f"  event: {e}")
    for name, ok in checks.items():
        print(f"  check {name}: {'OK' if ok else 'FAILED'}")
    if a.json:
        Path(a.json).write_text(json.dumps({"timeline": timeline, "events": events, "checks": checks}, indent=2,
                                           default=str))
    ok = all(checks.values())
    print("\nDEMO-LOOP " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


def evaluate_loop(timeline: list[dict], events: list[dict], drift_day: int) -> dict:
    before = [t["auc"] for t in timeline if not t["drifted"]]
    first_drift = next((t for t in timeline if t["drifted"]), None)
    retrains = [e for e in events if e["event"] == "retrain_triggered"]
    deployed = [e for e in events if e["event"] == "deployed"]
    v1 = deployed[0]["version"] if deployed else None
    after = [t for t in timeline if t["drifted"] and t["version"] != v1]
    return {
        "auc_dropped_with_drift": bool(before and first_drift and first_drift["auc"] < min(before) - 0.02),
        "no_retrain_before_drift": all(e["after_day"] >= drift_day for e in retrains),
        "sensor_fired_and_retrain_triggered": bool(retrains),
        "new_version_deployed": len({e["version"] for e in deployed}) >= 2,
        "served_auc_recovered": bool(first_drift and after and after[-1]["auc"] > first_drift["auc"] + 0.02),
    }


if __name__ == "__main__":
    import signal

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the local servers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.path.insert(0, str(REPO / "scripts"))
    sys.exit(main())
