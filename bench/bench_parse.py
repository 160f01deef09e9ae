"""DAG parse time per file, beyond Airflow's own import.

Each measurement is a fresh interpreter: import Airflow (the SDK classes every DAG file uses),
then time the import of one DAG file (column 1). Column 2 is measured after also building an
empty DAG with a cron schedule, so Airflow's own timetable machinery (croniter and friends, ~30 ms
that any scheduled DAG pays) is counted as Airflow's. Median of --repeat runs.

    .venv/bin/python bench/bench_parse.py [--repeat 7]
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE = r"""
import importlib.util, json, sys, time
t0 = time.perf_counter()
import airflow.sdk
from airflow.sdk import DAG, BaseOperator, BaseSensorOperator, Param, task  # what any DAG file needs
if sys.argv[2] == "warm":
    from datetime import datetime
    with DAG("empty", schedule="@daily", start_date=datetime(2026, 1, 1)):
        BaseOperator(task_id="noop")
t1 = time.perf_counter()
spec = importlib.util.spec_from_file_location("dag_under_test", sys.argv[1])
mod = importlib.util.module_from_spec(spec)
spec.loader.exec_module(mod)
t2 = time.perf_counter()
print(json.dumps({"airflow_s": t1 - t0, "dag_s": t2 - t1}))
"""


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--repeat", type=int, default=7)
    a = p.parse_args()
    print(f"{'DAG file':<34} {'Airflow import':>15} {'beyond Airflow import':>22} {'beyond an empty @daily DAG':>27}")
    for f in sorted((REPO / "dags").glob("*.py")):
        med = {}
        for mode in ("cold", "warm"):
            runs = []
            for _ in range(a.repeat):
                out = subprocess.run([sys.executable, "-c", PROBE, str(f), mode], capture_output=True,
                                     text=True, cwd=REPO, check=True)
                runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            med[mode] = (statistics.median(r["airflow_s"] for r in runs) * 1000,
                         statistics.median(r["dag_s"] for r in runs) * 1000)
        print(f"{f.name:<34} {med['cold'][0]:>12.0f} ms {med['cold'][1]:>19.1f} ms {med['warm'][1]:>24.1f} ms")


if __name__ == "__main__":
    main()
