"""The embedded-default demo: synthetic Criteo days through the real DAGs, end to end.

1. writes synthetic days day_0..day_{N-1} (exact Criteo format) into the bucket's raw/ folder,
2. runs criteo_full_retrain over the first days (dag.test(): the real DAG, real tasks),
3. runs criteo_incremental_training for the next days, each warm-started from production,
4. feeds it a broken day (labels of 2, text in an integer column): the data-quality gate stops the
   run at `validate`, production stays as it was, the data docs page shows why (the terminal shows
   a summary; that run's task logs, the failed task's traceback included, go to <base>/logs/),
5. prints where the model versions, metrics, lineage and data docs are.

    make demo            # or: .venv/bin/python scripts/demo.py --rows 100000 --days 5
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from contextlib import contextmanager
from datetime import UTC
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # local_servers/: the repository's own servers, not an installed package


def configure(base: Path, day0: str) -> None:
    os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
    os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
    os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
    os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
    os.environ["AIRFLOW_VAR_CRITEO_BASE_URL"] = str(base)
    os.environ["AIRFLOW_VAR_CRITEO_DAY0_DATE"] = day0
    # Files are already there in the demo: poke quickly, give up quickly.
    os.environ.setdefault("CRITEO_SENSOR_MODE", "poke")
    os.environ.setdefault("CRITEO_RAW_POKE_INTERVAL_S", "2")
    os.environ.setdefault("CRITEO_RAW_WAIT_TIMEOUT_S", "60")


def load_dags():
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "dags"))
    if bag.import_errors:
        raise SystemExit(f"DAG import errors: {bag.import_errors}")
    return bag


@contextmanager
def output_to(path: Path):
    """Everything written to stdout and stderr meanwhile (the task logs dag.test() prints, the steps'
    output, a failed task's traceback) goes to `path` instead of the terminal."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    try:
        with open(path, "ab") as log:
            os.dup2(log.fileno(), 1)
            os.dup2(log.fileno(), 2)
            try:
                yield path
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                os.dup2(saved[0], 1)
                os.dup2(saved[1], 2)
    finally:
        os.close(saved[0])
        os.close(saved[1])


def run_dag(bag, dag_id: str, logical_date, conf: dict | None = None, log: Path | None = None):
    """dag.test() of one run; with `log`, its task logs go to that file and only the outcome is printed."""
    dag = bag.get_dag(dag_id)
    t0 = time.time()
    if log is None:
        dr = dag.test(logical_date=logical_date, run_conf=conf)
    else:
        with output_to(log):
            dr = dag.test(logical_date=logical_date, run_conf=conf)
    took = time.time() - t0
    print(f"== {dag_id} {logical_date:%Y-%m-%d}: {dr.state} in {took:.1f}s"
          + (f" (its task logs: {log})" if log else ""), flush=True)
    return dr, took


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base", default=str(REPO / ".data" / "demo"), help="the bucket (a local folder)")
    p.add_argument("--rows", type=int, default=100_000, help="rows per synthetic day")
    p.add_argument("--full-days", type=int, default=3, help="days in the full retrain window")
    p.add_argument("--incremental-days", type=int, default=2, help="daily runs after the full retrain")
    p.add_argument("--mlp-dims", default="1024,1024")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--day0", default="2026-01-01")
    a = p.parse_args(argv)

    base = Path(a.base).resolve()
    configure(base, a.day0)
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    total_days = a.full_days + a.incremental_days
    print(f"== writing {total_days} synthetic Criteo days ({a.rows} rows each) to {base}/raw", flush=True)
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(base / "raw"), "--days", f"0-{total_days - 1}",
                                               "--rows", str(a.rows)])
    bag = load_dags()
    from local_servers.stack import ServingStack

    # Deploy promotes each version on a real Triton serving the bucket's model repository.
    with ServingStack(base, base / ".services", monitor=False, prometheus=False) as stack:
        print(f"== Triton Inference Server on {stack.triton.grpc_url} (gRPC), model repository "
              f"{stack.model_repository}", flush=True)
        return run_pipeline(a, base, bag, stack)


def run_pipeline(a, base: Path, bag, stack) -> int:
    from datetime import datetime, timedelta

    total_days = a.full_days + a.incremental_days
    day0 = datetime.fromisoformat(a.day0).replace(tzinfo=UTC)
    last_full = a.full_days - 1
    runs = []
    dr, took = run_dag(bag, "criteo_full_retrain", day0 + timedelta(days=last_full),
                       {"end_day": last_full, "window_days": a.full_days, "epochs": a.epochs,
                        "mlp_dims": a.mlp_dims})
    runs.append(("criteo_full_retrain", dr.state, took))
    for day in range(a.full_days, total_days):
        if any(state != "success" for _, state, _ in runs):
            # wait_for_previous_day: the next daily run would wait for this one
            print("DEMO FAILED: a run failed; see its task logs above")
            return 1
        dr, took = run_dag(bag, "criteo_incremental_training", day0 + timedelta(days=day))
        runs.append((f"criteo_incremental_training day_{day}", dr.state, took))
    if any(state != "success" for _, state, _ in runs):
        print("DEMO FAILED: a run failed; see its task logs above")
        return 1

    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout

    layout = Layout(Settings.load())
    hook = ModelRepositoryHook(layout)

    # A broken day: the gate must stop it before training and leave production alone.
    bad_day = total_days
    lines = (base / "raw" / f"day_{total_days - 1}").read_text().splitlines()
    for i in range(0, len(lines), 97):
        f = lines[i].split("\t")
        f[0], f[5] = "2", "n/a"  # label 2; I5 not an integer
        lines[i] = "\t".join(f)
    (base / "raw" / f"day_{bad_day}").write_text("\n".join(lines) + "\n")
    from criteo_kernel.landing import write_manifest

    write_manifest(str(base / "raw" / f"day_{bad_day}"))  # its writer says it is complete: the gate judges it
    production = hook.production_version()
    print(f"\n== a broken day_{bad_day}: labels of 2 and text in I5 in every 97th row", flush=True)
    # It fails on purpose: its task logs, the failed task's traceback included, go to a file; the
    # terminal gets the summary below (the task, each rule that failed, the data docs page).
    task_logs = base / "logs" / f"criteo_incremental_training-day_{bad_day}.log"
    task_logs.unlink(missing_ok=True)
    dr, took = run_dag(bag, "criteo_incremental_training", day0 + timedelta(days=bad_day), log=task_logs)
    states = {ti.task_id: ti.state for ti in dr.get_task_instances()}
    blocked = dr.state == "failed" and states.get("validate") == "failed" and states.get("train") == "upstream_failed"
    blocked = blocked and hook.production_version() == production
    runs.append((f"criteo_incremental_training day_{bad_day} (broken)", "blocked" if blocked else dr.state, took))
    failure = dr.get_task_instance("validate").xcom_pull(task_ids="validate", key="step_result") or {}
    print("   stopped as intended: task validate failed (no retry), so preprocess, train and deploy never ran;"
          if blocked else f"   NOT STOPPED: task states {states}", flush=True)
    print("   the hard expectations that failed:")
    for f in failure.get("failed", []):
        print(f"     {f['column']}: expected {f['rule'].rsplit(' [', 1)[0]}; observed {f['observed'][:90]}")
    print(f"   the task log, with the exception: {task_logs}")
    from operators.hooks.triton import TritonHook

    serving = TritonHook(stack.triton.grpc_url).ready_versions(layout.model_name)
    blocked = blocked and serving == [production]
    print(f"   production is still version {hook.production_version()} (Triton serves {serving}); why, in the "
          f"data docs: {failure.get('data_docs_page')}")
    print("\n== model versions in", layout.model_dir())
    for v in hook.versions():
        lin = hook.lineage(v)
        m = lin["evaluation"]["candidate_metrics"]
        print(f"  version {v}: {lin['mode']:<11} days {lin['days']}  parent {lin.get('parent_version')}  "
              f"held-out AUC {m['auc']:.4f}  logloss {m['logloss']:.4f}  -> {layout.version_dir(v)}/lineage.json")
    print("\n== runs")
    for name, state, took in runs:
        print(f"  {name:<40} {state:<8} {took:6.1f}s")
    from operators.hooks.data_docs import DataDocsHook

    print(f"\n== data quality (GX data docs under {layout.data_docs}; in the Airflow UI: Browse -> "
          "Data docs (make airflow), or each validate task's 'Data docs' link)")
    hook = DataDocsHook(layout.data_docs)
    for site in sorted(hook.list_runs(), key=lambda r: r["site"]):
        verdict = "PASSED" if site.get("success") else "FAILED"
        print(f"  {site['site']:<70} {verdict}  {site['failed_count']} hard failed, "
              f"{site['warning_count']} soft  -> {hook.resolve(site['page'])}")  # inside the committed attempt
    print(f"== lineage:     {layout.model_dir()}/<version>/lineage.json")
    print(f"== candidates:  {base}/work/candidates/<run key>/evaluation/<the attempt its _COMMITTED names>/"
          "evaluation.json")
    ok = all(state in ("success", "blocked") for _, state, _ in runs) and blocked
    print("\nDEMO " + ("OK" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    import signal

    # SIGTERM (a CI timeout, `kill`) unwinds like Ctrl-C, so the local servers are stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    sys.exit(main())
