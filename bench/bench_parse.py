"""DAG parse time per file, beyond Airflow's own import.

Each measurement is a fresh interpreter: import Airflow (the SDK classes every DAG file uses),
then time the import of one DAG file. Median of --repeat runs.

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
    print(f"{'DAG file':<36} {'Airflow import':>15} {'DAG file beyond it':>19}")
    for f in sorted((REPO / "dags").glob("*.py")):
        runs = []
        for _ in range(a.repeat):
            out = subprocess.run([sys.executable, "-c", PROBE, str(f)], capture_output=True, text=True,
                                 cwd=REPO, check=True)
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
        af = statistics.median(r["airflow_s"] for r in runs) * 1000
        dag = statistics.median(r["dag_s"] for r in runs) * 1000
        print(f"{f.name:<36} {af:>12.0f} ms {dag:>16.1f} ms")


if __name__ == "__main__":
    main()
