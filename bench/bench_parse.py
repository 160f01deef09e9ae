"""DAG parse time per file, beyond Airflow's own import.

Each measurement is a fresh interpreter: import Airflow (the SDK classes every DAG file uses),
then time the import of one DAG file (column 1). Column 2 is measured after also building an
empty DAG with a cron schedule, so Airflow's own timetable machinery (croniter and friends, ~30 ms
that any scheduled DAG pays) is counted as Airflow's. Median of --repeat runs.

    .venv/bin/python bench/bench_parse.py [--repeat 7]
    .venv/bin/python bench/bench_parse.py --baseline ../other-checkout   # A/B, alternated in one run

With --baseline, each measurement of a DAG file here (A) is paired with one of the same file in the
other checkout (B: `git worktree add ../other-checkout <rev>`), in alternating order (A, B, then
B, A), both with their own `operators` package (the probe runs in the checkout's folder), so the
machine's noise hits both alike; the table gives both medians and B/A.
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


def measure(tree: Path, dag_file: str, mode: str) -> dict:
    out = subprocess.run([sys.executable, "-c", PROBE, str(tree / "dags" / dag_file), mode], capture_output=True,
                         text=True, cwd=tree, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def median_ms(runs: list[dict], key: str) -> float:
    return statistics.median(r[key] for r in runs) * 1000


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=7)
    p.add_argument("--baseline", type=Path, default=None, help="another checkout to compare with, alternated")
    a = p.parse_args()
    trees = {"A": REPO} if a.baseline is None else {"A": REPO, "B": a.baseline.resolve()}
    files = sorted(f.name for f in (REPO / "dags").glob("*.py"))
    if a.baseline is None:
        print(f"{'DAG file':<34} {'Airflow import':>15} {'beyond Airflow import':>22} "
              f"{'beyond an empty @daily DAG':>27}")
    else:
        print(f"A = {REPO}, B = {trees['B']}; ms beyond Airflow's import (cold) and beyond an empty @daily DAG "
              f"(warm), medians of {a.repeat}")
        print(f"{'DAG file':<34} {'A cold':>9} {'B cold':>9} {'B/A':>6} {'A warm':>9} {'B warm':>9} {'B/A':>6}")
    ratios: list[float] = []
    for name in files:
        runs = {(t, m): [] for t in trees for m in ("cold", "warm")}
        for rep in range(a.repeat):
            for mode in ("cold", "warm"):
                order = list(trees.items()) if rep % 2 == 0 else list(trees.items())[::-1]  # A, B; then B, A
                for t, tree in order:
                    if (tree / "dags" / name).exists():
                        runs[(t, mode)].append(measure(tree, name, mode))
        if a.baseline is None:
            cold, warm = runs[("A", "cold")], runs[("A", "warm")]
            print(f"{name:<34} {median_ms(cold, 'airflow_s'):>12.0f} ms {median_ms(cold, 'dag_s'):>19.1f} ms "
                  f"{median_ms(warm, 'dag_s'):>24.1f} ms")
            ratios.append(median_ms(warm, "dag_s") / median_ms(cold, "airflow_s"))
            continue
        row = [median_ms(runs[(t, m)], "dag_s") if runs[(t, m)] else float("nan")
               for m in ("cold", "warm") for t in ("A", "B")]
        print(f"{name:<34} {row[0]:>6.1f} ms {row[1]:>6.1f} ms {row[1] / row[0]:>6.2f} "
              f"{row[2]:>6.1f} ms {row[3]:>6.1f} ms {row[3] / row[2]:>6.2f}")
        ratios.append(row[1] / row[0])
    if a.baseline is None:
        print(f"bench_parse: ratio {max(ratios):.3f} (the slowest DAG file's own parse time, warm, over "
              "Airflow's import time)")
    else:
        print(f"bench_parse: ratio {statistics.median(ratios):.2f} (cold parse time, B over A, median over files)")


if __name__ == "__main__":
    main()
