"""Wall time of one daily incremental run on a 1M-row day, and its orchestration overhead.

Sets up a production model with a full retrain on a smaller day, then runs
criteo_incremental_training for a --rows day through the real DAG (dag.test()) and reports:
each task's duration, the DAG's wall time, and the ratio DAG wall time / sum of task durations.

    .venv/bin/python bench/bench_daily_run.py [--rows 1000000] [--mlp-dims 1024,1024]
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--full-rows", type=int, default=200_000)
    p.add_argument("--mlp-dims", default="1024,1024")
    p.add_argument("--base", default=None)
    a = p.parse_args()
    base = Path(a.base or tempfile.mkdtemp(prefix="bench-daily-"))
    import demo

    demo.configure(base, "2026-01-01")
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    rt = LocalProcessRuntime()
    rt.run(STEPS["synth"], ["--out", str(base / "raw"), "--days", "0", "--rows", str(a.full_rows)])
    rt.run(STEPS["synth"], ["--out", str(base / "raw"), "--days", "1", "--rows", str(a.rows)])
    bag = demo.load_dags()
    from local_servers.stack import ServingStack

    with ServingStack(base, base / ".services", monitor=False, prometheus=False):  # deploy promotes on Triton
        run(a, bag)


def run(a, bag) -> None:
    from datetime import datetime, timedelta

    import demo

    day0 = datetime(2026, 1, 1, tzinfo=UTC)
    dr, _ = demo.run_dag(bag, "criteo_full_retrain", day0,
                         {"end_day": 0, "window_days": 1, "mlp_dims": a.mlp_dims, "auc_floor": 0.5})
    assert dr.state == "success", dr.state
    t0 = time.perf_counter()
    dr = bag.get_dag("criteo_incremental_training").test(logical_date=day0 + timedelta(days=1),
                                                         run_conf={"auc_floor": 0.5})
    wall = time.perf_counter() - t0
    tis = sorted(dr.get_task_instances(), key=lambda t: t.start_date)
    print(f"\ndaily run on {a.rows:,} rows (MLP {a.mlp_dims}): {dr.state}")
    total = 0.0
    for ti in tis:
        d = (ti.end_date - ti.start_date).total_seconds() if ti.end_date and ti.start_date else 0.0
        total += d
        print(f"  {ti.task_id:<22} {d:8.2f} s")
    print(f"  {'sum of task durations':<22} {total:8.2f} s")
    print(f"  {'DAG wall time':<22} {wall:8.2f} s")
    print(f"bench_daily_run: ratio {wall / total:.3f} (the DAG's wall time over the sum of its task durations)")


if __name__ == "__main__":
    main()
