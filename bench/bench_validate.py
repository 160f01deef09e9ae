"""Benchmark the validation step on a synthetic 1M-row day: throughput and peak memory.

Generates the day with the real synth + extract steps, builds a reference profile from a second
day, then runs the validator CLI (`python -m criteo_validator`, a fresh process each time, exactly
as the DAG runs it) in three modes: the default deterministic 200k-row sample with the drift
suite, every row, and the processed-output suite is left to the e2e tests. Each run's wall time,
the rows/s over the whole day and the process's peak RSS (from wait4) are printed.

    .venv/bin/python bench/bench_validate.py [--rows 1000000] [--keep DIR]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable


def run(argv: list[str], env: dict) -> tuple[float, int, int, dict]:
    """(wall seconds, peak RSS bytes, exit code, step result) of one validator process."""
    result = os.path.join(env["BENCH_TMP"], "result.json")
    env = {**env, "STEP_RESULT_PATH": result}
    t0 = time.time()
    proc = subprocess.Popen([PY, "-m", "criteo_validator", *argv], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    out = proc.stdout.read()
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.time() - t0
    code = os.waitstatus_to_exitcode(status)
    if code not in (0, 1):
        print(out)
        raise SystemExit(f"validator exited {code}")
    with open(result) as fh:
        return wall, usage.ru_maxrss * 1024, code, json.load(fh)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp dir, removed)")
    a = p.parse_args()
    root = a.keep or tempfile.mkdtemp(prefix="bench-validate-")
    env = {**os.environ, "BENCH_TMP": root,
           # the validator image's sources, as its Dockerfile copies them
           "PYTHONPATH": os.pathsep.join([os.path.join(REPO, "images", "kernel", "src"),
                                          os.path.join(REPO, "images", "validator", "src")])}
    try:
        from criteo_merlin.ingest import extract, synth

        t0 = time.time()
        synth.main(["--out", f"{root}/raw", "--days", "0-1", "--rows", str(a.rows)])
        t1 = time.time()
        for d in (0, 1):
            extract.extract(f"{root}/raw/day_{d}", f"{root}/extracted/day={d}")
        t2 = time.time()
        print(f"synth {t1 - t0:.1f}s; extract (streams the day, counts empty fields) "
              f"{(t2 - t1) / 2:.1f}s per day = {a.rows / ((t2 - t1) / 2):,.0f} rows/s", flush=True)

        # reference: day 0's profile
        run(["--input", f"{root}/extracted/day=0", "--suite", "raw_day", "--data-docs", f"{root}/docs/ref",
             "--run-name", "ref", "--profile-out", f"{root}/day0.json"], env)
        subprocess.run([PY, "-m", "criteo_validator", "reference", "--profiles", f"{root}/day0.json",
                        "--output", f"{root}/ref.json"], env=env, check=True, capture_output=True)

        print(f"\nvalidate day 1 ({a.rows:,} rows), 2 cores; each run a fresh process incl. ~7 s GX import")
        print(f"{'mode':44s} {'wall s':>7s} {'GX s':>6s} {'rows/s (day)':>13s} {'peak RSS':>9s} {'exit':>4s}")
        walls: list[float] = []
        for label, extra in (("raw_day + drift, default 200k-row sample", []),
                             ("raw_day + drift, every row (--sample-rows 0)", ["--sample-rows", "0"])):
            wall, rss, code, res = run(["--input", f"{root}/extracted/day=1", "--suite", "raw_day", "drift",
                                        "--data-docs", f"{root}/docs/{len(extra)}", "--run-name", "bench",
                                        "--reference", f"{root}/ref.json", *extra], env)
            print(f"{label:44s} {wall:7.1f} {res['gx_seconds']:6.1f} {a.rows / wall:13,.0f} "
                  f"{rss / 2**20:7.0f}MB {code:4d}   (rows validated: {res['rows_validated']:,})", flush=True)
            walls.append(wall)
        print(f"bench_validate: ratio {walls[1] / walls[0]:.2f} (wall time, every row over the default sample)")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
