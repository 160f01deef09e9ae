"""Benchmark criteo_steps.preprocess on synthetic data (in-process).

Generates N rows for two days with the synth and extract steps into a temp dir, then runs a full
retrain on day 0 (fit + transform) and an incremental transform of day 1 with the saved workflow.

    .venv-steps/bin/python bench/bench_preprocess.py [--rows 1000000] [--engine fast|nvt] [--keep DIR]
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


if __name__ == "__main__":
    main()
