"""Preprocessing throughput: the project's preprocess step against a hand-written polars pipeline.

Generates N rows for two days with the synth and extract steps into a temp dir. By default
(`--compare polars`) it then runs, alternated A B A B for `--rounds`, each in a process of its own:

- A: the project's step, `python -m criteo_merlin preprocess` (.venv-steps): a full retrain of
  day 0 (fit + transform, workflow published), then an incremental transform of day 1 with it;
- B: bench/polars_preprocess.py (.venv-bench): the same decoding and encoding in polars, fit on
  day 0's train split, then day 1 with the saved vocabulary.

Each side's time is what it reports for its own work (from reading the extracted parquet to the
last output written; imports and interpreter start excluded); peak RSS is the process's. It then
checks that both wrote the same encoding (per categorical column the same id frequencies, the
continuous columns within 1e-6) and prints the medians and A over B.

    .venv-steps/bin/python bench/bench_preprocess.py [--rows 1000000] [--rounds 3]
    .venv-steps/bin/python bench/bench_preprocess.py --compare none [--engine fast|nvt]   (one in-process run)

`--workers N` instead compares the in-process path (A) with N dask workers (B: a LocalCluster of
processes here, LocalCUDACluster workers on a multi-GPU pod), alternated A B A B for `--rounds`,
and prints the median wall time of each (cluster start and stop included) and B/A.
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

REPO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
SOURCES = [os.path.join(REPO, "images", image, "src") for image in ("kernel", "merlin")]
sys.path[:0] = SOURCES  # the merlin image's sources, as its Dockerfile copies them

from criteo_kernel import storage  # noqa: E402
from criteo_merlin.ingest import extract, synth  # noqa: E402

STEPS_PYTHON = os.path.join(REPO, ".venv-steps", "bin", "python")
BENCH_PYTHON = os.path.join(REPO, ".venv-bench", "bin", "python")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--compare", choices=("polars", "none"), default="polars")
    p.add_argument("--engine", choices=("fast", "nvt"), default="fast")
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp dir, removed)")
    p.add_argument("--workers", help="compare the in-process path with this many dask workers")
    p.add_argument("--rounds", type=int, default=3, help="A/B rounds")
    p.add_argument("--part-size", default="64MB", help="with --workers: input text per dask partition")
    a = p.parse_args()

    root = a.keep or tempfile.mkdtemp(prefix="bench-preprocess-")
    try:
        t0 = time.time()
        if not storage.is_published(f"{root}/extracted/day=1"):  # --keep: generated once
            synth.main(["--out", f"{root}/raw", "--days", "0-1", "--rows", str(a.rows)])
            for d in (0, 1):
                extract.extract(f"{root}/raw/day_{d}", f"{root}/extracted/day={d}")
        shutil.rmtree(f"{root}/runs", ignore_errors=True)
        print(f"data generated in {time.time() - t0:.1f}s", flush=True)
        if a.workers:
            compare_workers(root, a)
        elif a.compare == "polars":
            compare_polars(root, a)
        else:
            single_run(root, a)
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


def _project(root: str, k: int) -> dict:
    out = f"{root}/runs/project-{k}"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(SOURCES), "PYTHONWARNINGS": "ignore"}
    env.pop("STEP_RESULT_PATH", None)
    runs = {}
    for name, args in (("full", ["--fit-workflow", f"{out}/workflow", "--max-vocab", "0"]),
                       ("incremental", ["--workflow", f"{out}/workflow"])):
        day = 0 if name == "full" else 1
        cmd = [STEPS_PYTHON, "-m", "criteo_merlin", "preprocess", "--extracted", f"{root}/extracted/day={day}",
               "--output-root", f"{out}/processed", *args]
        stdout, rss = _rusage_run(cmd, env)
        result = json.loads(stdout.rsplit("STEP_RESULT ", 1)[1].splitlines()[0])
        t = result["timings"]
        runs[name] = {"rows": result["rows"], "total_s": t["total_s"], "transform_s": t["transform_s"], "rss_mb": rss}
    return runs


def _polars(root: str, k: int) -> dict:
    out = f"{root}/runs/polars-{k}"
    runs = {}
    for name, args in (("full", ["--fit", f"{out}/vocab"]), ("incremental", ["--vocab", f"{out}/vocab"])):
        day = 0 if name == "full" else 1
        cmd = [BENCH_PYTHON, os.path.join(REPO, "bench", "polars_preprocess.py"),
               "--extracted", storage.resolve(f"{root}/extracted/day={day}"),
               "--output", f"{out}/processed/day={day}", *args]
        stdout, rss = _rusage_run(cmd, None)
        result = json.loads(stdout.strip().splitlines()[-1])
        runs[name] = {"rows": result["rows"], "total_s": result["total_s"], "transform_s": result["transform_s"],
                      "rss_mb": rss}
    return runs


def _rusage_run(cmd: list[str], env: dict | None) -> tuple[str, float]:
    """Run a process to its end; (stdout, its own peak RSS in MiB) from wait4."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if proc.returncode:
            raise SystemExit(f"{cmd[1:4]} failed ({proc.returncode}):\n{err.read()[-3000:]}")
        return out.read(), usage.ru_maxrss / 1024


def same_encoding(project_day: str, polars_day: str) -> str:
    """Both outputs encode the same: per categorical column the same multiset of id frequencies
    (ids may differ where frequencies tie), the continuous columns within 1e-6, the labels equal."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL

    worst = 0.0
    for split in ("train", "eval"):
        project = storage.resolve(project_day)  # the project's output is a committed partition
        a = pa.concat_tables(pq.read_table(f) for f in sorted(glob.glob(f"{project}/{split}/*.parquet")))
        b = pa.concat_tables(pq.read_table(f) for f in sorted(glob.glob(f"{polars_day}/{split}/*.parquet")))
        if a.num_rows != b.num_rows:
            raise SystemExit(f"{split}: {a.num_rows} rows against polars' {b.num_rows}")
        for c in CAT_COLUMNS:
            x, y = a.column(c).to_numpy(), b.column(c).to_numpy()
            top = int(max(x.max(), y.max())) + 1
            if not np.array_equal(np.sort(np.bincount(x, minlength=top)), np.sort(np.bincount(y, minlength=top))):
                raise SystemExit(f"{split}: column {c}: the id frequencies differ from polars'")
        for c in INT_COLUMNS:
            worst = max(worst, float(np.abs(a.column(c).to_numpy() - b.column(c).to_numpy()).max()))
        if worst > 1e-5 or not a.column(LABEL).equals(b.column(LABEL)):
            raise SystemExit(f"{split}: continuous columns differ by {worst:g} (or the labels differ)")
    return f"same id frequencies in all 26 categorical columns, continuous within {worst:.1e}, labels equal"


def compare_polars(root: str, a) -> None:
    if not os.path.exists(BENCH_PYTHON):
        raise SystemExit(f"{BENCH_PYTHON} is missing: make bench installs it (requirements/bench.lock.txt)")
    runs: dict[str, list] = {"project": [], "polars": []}
    for k in range(a.rounds):
        for name, fn in (("project", _project), ("polars", _polars)):
            runs[name].append(fn(root, k))
            r = runs[name][-1]
            print(f"round {k} {name:<8} full {r['full']['total_s']:.2f}s (RSS {r['full']['rss_mb']:,.0f} MiB), "
                  f"incremental {r['incremental']['total_s']:.2f}s (transform {r['incremental']['transform_s']:.2f}s)",
                  flush=True)
    runs0 = f"{root}/runs"
    print(f"encoding: {same_encoding(f'{runs0}/project-0/processed/day=0', f'{runs0}/polars-0/processed/day=0')}")

    def med(name: str, run: str, key: str) -> float:
        return statistics.median(r[run][key] for r in runs[name])

    rows = runs["project"][0]["full"]["rows"]
    full = {n: rows / med(n, "full", "total_s") for n in runs}
    inc_rows = runs["project"][0]["incremental"]["rows"]
    inc = {n: inc_rows / med(n, "incremental", "total_s") for n in runs}
    inc_tr = {n: inc_rows / med(n, "incremental", "transform_s") for n in runs}
    rss = {n: max(max(r["full"]["rss_mb"], r["incremental"]["rss_mb"]) for r in runs[n]) for n in runs}
    print(f"\n{rows:,} rows per day, median of {a.rounds} alternated rounds, each run in its own process")
    print(f"{'':<36} {'A: project':>12} {'B: polars':>12} {'A/B':>6}")
    for label, vals, fmt in (("full retrain rows/s (fit+transform)", full, ",.0f"),
                             ("incremental rows/s (whole step)", inc, ",.0f"),
                             ("incremental transform rows/s", inc_tr, ",.0f"),
                             ("peak RSS MiB (either run)", rss, ",.0f")):
        print(f"{label:<36} {vals['project']:>12{fmt}} {vals['polars']:>12{fmt}} "
              f"{vals['project'] / vals['polars']:>6.2f}")
    print(f"project peak RSS per 1M rows: {rss['project'] / (rows / 1e6) / 1024:.2f} GiB")
    print(f"bench_preprocess: ratio {full['project'] / full['polars']:.2f} "
          f"(project full-retrain rows/s over polars', same rows, alternated)")


def single_run(root: str, a) -> None:
    t0 = time.time()
    import nvtabular  # noqa: F401  (import cost kept out of the figures)

    from criteo_merlin.preprocess import preprocess
    print(f"imports {time.time() - t0:.1f}s", flush=True)
    full = preprocess.preprocess([f"{root}/extracted/day=0"], f"{root}/processed/wf", f"{root}/workflows/wf",
                                 None, engine=a.engine)
    inc = preprocess.preprocess([f"{root}/extracted/day=1"], f"{root}/processed/wf", None,
                                f"{root}/workflows/wf", engine=a.engine)
    ft, it = full["timings"], inc["timings"]
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    rows = [
        ("rows", f"{full['rows']:,}"),
        ("engine", a.engine),
        ("decode s", f"{ft['decode_s']:.2f}"),
        ("fit s", f"{ft['fit_s']:.2f}"),
        ("save + serving tables s", f"{ft['save_s']:.2f}"),
        ("transform s (spot check incl.)", f"{ft['transform_s']:.2f}"),
        ("full retrain rows/s (whole step)", f"{full['rows'] / ft['total_s']:,.0f}"),
        ("incremental transform s", f"{it['transform_s']:.2f}"),
        ("incremental transform rows/s", f"{inc['rows'] / it['transform_s']:,.0f}"),
        ("peak RSS MiB", f"{peak_mb:,.0f}"),
    ]
    w = max(len(k) for k, _ in rows)
    print()
    for k, v in rows:
        print(f"{k:<{w}}  {v:>12}")
    print(f"bench_preprocess: ratio {inc['rows'] / it['transform_s'] / 1e6:.2f} "
          f"(incremental transform rows/s over the 1M rows/s target)")


def compare_workers(root: str, a) -> None:
    import nvtabular  # noqa: F401  (import cost kept out of the figures)

    from criteo_merlin.preprocess import preprocess

    def once(workers: str, k: int) -> tuple[float, float]:
        out = f"{root}/runs/{workers}-{k}"
        t0 = time.perf_counter()
        preprocess.preprocess([f"{root}/extracted/day=0"], f"{out}/processed", f"{out}/workflow", None,
                              workers=workers, part_size=a.part_size)
        t1 = time.perf_counter()
        preprocess.preprocess([f"{root}/extracted/day=1"], f"{out}/processed", None, f"{out}/workflow",
                              workers=workers, part_size=a.part_size)
        t2 = time.perf_counter()
        shutil.rmtree(out, ignore_errors=True)
        return t1 - t0, t2 - t1

    times: dict[str, list] = {"1": [], a.workers: []}
    for k in range(a.rounds):
        for workers in ("1", a.workers):
            times[workers].append(once(workers, k))
            print(f"round {k} workers={workers}: full {times[workers][-1][0]:.2f}s, "
                  f"incremental {times[workers][-1][1]:.2f}s", flush=True)
    med = {w: [statistics.median(t[i] for t in ts) for i in (0, 1)] for w, ts in times.items()}
    print(f"\nmedian of {a.rounds} rounds    A: in process   B: {a.workers} dask workers    B/A")
    for i, name in enumerate(("full retrain s", "incremental s")):
        in_process, workers = med["1"][i], med[a.workers][i]
        print(f"{name:<24}  {in_process:>14.2f}   {workers:>16.2f}   {workers / in_process:>5.2f}")
    print(f"bench_preprocess: ratio {med[a.workers][0] / med['1'][0]:.2f} "
          f"(full retrain seconds, {a.workers} dask workers over in process)")


if __name__ == "__main__":
    main()
