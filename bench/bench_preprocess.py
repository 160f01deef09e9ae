"""Benchmark criteo_steps.preprocess on synthetic data (in-process).

Generates N rows for two days with the synth and extract steps into a temp dir, then runs a full
retrain on day 0 (fit + transform) and an incremental transform of day 1 with the saved workflow.

    .venv-steps/bin/python bench/bench_preprocess.py [--rows 1000000] [--engine fast|nvt] [--keep DIR]

`--workers N` instead compares the in-process path (A) with N dask workers (B: a LocalCluster of
processes here, LocalCUDACluster workers on a multi-GPU pod), alternated A B A B for `--rounds`,
and prints the median wall time of each (cluster start and stop included) and B/A.
"""
from __future__ import annotations

import argparse
import os
import resource
import shutil
import sys
import tempfile
import time

for _image in ("kernel", "merlin"):  # the merlin image's sources, as its Dockerfile copies them
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "images", _image, "src"))

from criteo_steps import extract, synth  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=1_000_000)
    p.add_argument("--engine", choices=("fast", "nvt"), default="fast")
    p.add_argument("--keep", help="work in this folder and keep it (default: a temp dir, removed)")
    p.add_argument("--workers", help="compare the in-process path with this many dask workers")
    p.add_argument("--rounds", type=int, default=3, help="with --workers: A/B rounds")
    p.add_argument("--part-size", default="64MB", help="with --workers: input text per dask partition")
    a = p.parse_args()

    root = a.keep or tempfile.mkdtemp(prefix="bench-preprocess-")
    try:
        t0 = time.time()
        synth.main(["--out", f"{root}/raw", "--days", "0-1", "--rows", str(a.rows)])
        for d in (0, 1):
            extract.extract(f"{root}/raw/day_{d}", f"{root}/extracted/day={d}")
        print(f"data generated in {time.time() - t0:.1f}s", flush=True)

        t0 = time.time()
        import nvtabular  # noqa: F401,E402  (import cost kept out of the figures)

        from criteo_steps import preprocess  # noqa: E402
        print(f"imports {time.time() - t0:.1f}s", flush=True)

        if a.workers:
            compare_workers(preprocess, root, a)
            return
        full = preprocess.preprocess([f"{root}/extracted/day=0"], f"{root}/processed/wf", f"{root}/workflows/wf",
                                     None, engine=a.engine)
        inc = preprocess.preprocess([f"{root}/extracted/day=1"], f"{root}/processed/wf", None,
                                    f"{root}/workflows/wf", engine=a.engine)
        ft, it = full["timings"], inc["timings"]
        peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        fit_tr = ft["fit_s"] + ft["transform_s"]
        rows = [
            ("rows", f"{full['rows']:,}"),
            ("engine", a.engine),
            ("decode s", f"{ft['decode_s']:.2f}"),
            ("fit s", f"{ft['fit_s']:.2f}"),
            ("save + serving tables s", f"{ft['save_s']:.2f}"),
            ("transform s", f"{ft['transform_s']:.2f}"),
            ("fit+transform rows/s", f"{full['rows'] / fit_tr:,.0f}"),
            ("incremental decode s", f"{it['decode_s']:.2f}"),
            ("incremental load + tables s", f"{it['fit_s'] + it['save_s']:.2f}"),
            ("incremental transform s", f"{it['transform_s']:.2f}"),
            ("incremental transform rows/s", f"{inc['rows'] / it['transform_s']:,.0f}"),
            ("peak RSS MiB", f"{peak_mb:,.0f}"),
        ]
        w = max(len(k) for k, _ in rows)
        print()
        for k, v in rows:
            print(f"{k:<{w}}  {v:>12}")
    finally:
        if not a.keep:
            shutil.rmtree(root, ignore_errors=True)


def compare_workers(preprocess, root: str, a) -> None:
    import statistics

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


if __name__ == "__main__":
    main()
