"""The monitor's own capacity, in process: rows/s its scans take in on a request log at 10x the
replay's traffic, and where the time goes (cProfile).

A request part of --rows rows (10x = 320,000: one second of 10x traffic) is published, then the
labels of the part before it, then the monitor scans (RequestLogMonitor.scan, the code
`python -m criteo_monitoring monitor` runs every --interval-s), --parts times. Only the scans are
timed: the parts are made before. Rows are random, 64 to a request; every label joins.

    .venv/bin/python bench/profile_monitor.py [--rows 320000 --parts 8 --top 25]
"""
from __future__ import annotations

import argparse
import cProfile
import pstats
import resource
import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
for p in (REPO / "images" / "kernel" / "src", REPO / "images" / "monitoring" / "src"):
    sys.path.insert(0, str(p))


def tables(n: int, rng):
    import numpy as np
    import pyarrow as pa

    from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS

    ts = pa.timestamp("ms", tz="UTC")
    now = int(time.time() * 1000)
    ids = np.repeat(np.array([uuid.uuid4().hex for _ in range(-(-n // 64))], dtype=object), 64)[:n]
    key = {"request_id": pa.array(ids, pa.string()), "row": pa.array(np.arange(n, dtype=np.int32) % 64),
           "event_time": pa.array(np.full(n, now), ts), "criteo_day": pa.array(np.ones(n, np.int32))}
    cols = dict(key, served_at=pa.array(np.full(n, now), ts), model=pa.array(["criteo_dcn"] * n),
                version=pa.array(np.ones(n, np.int32)), prediction=pa.array(rng.random(n, dtype=np.float32)),
                latency_ms=pa.array(np.ones(n, np.float32)))
    for c in INT_COLUMNS:
        cols[c] = pa.array(rng.integers(0, 1000, n), mask=rng.random(n) < 0.2)
    for c in CAT_COLUMNS:
        cols[c] = pa.array(rng.integers(0, 2**32, n), mask=rng.random(n) < 0.1)
    labels = pa.table(dict(key, labelled_at=pa.array(np.full(n, now), ts),
                           label=pa.array(rng.integers(0, 2, n).astype(np.int8))))
    return pa.table(cols), labels


def main() -> None:
    import numpy as np

    from criteo_monitoring.monitor import RequestLogMonitor
    from criteo_monitoring.request_log import LABELS, REQUESTS, RequestLogWriter

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=320_000, help="rows per part (one second of 10x traffic)")
    p.add_argument("--parts", type=int, default=8)
    p.add_argument("--top", type=int, default=25, help="cProfile entries printed (by own time)")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    made = [tables(a.rows, rng) for _ in range(a.parts)]
    root = Path(tempfile.mkdtemp(prefix="profile-monitor-"))
    try:
        writer = RequestLogWriter(str(root))
        monitor = RequestLogMonitor(str(root), None, "criteo_dcn", 5000, 500, 48, 2_000_000)
        profile = cProfile.Profile()
        took, rows = [], 0
        for k in range(a.parts + 1):
            if k < a.parts:
                writer.write(REQUESTS, made[k][0])
            if k > 0:
                writer.write(LABELS, made[k - 1][1])
            t = time.perf_counter()
            profile.enable()
            read = monitor.scan()
            profile.disable()
            took.append(time.perf_counter() - t)
            rows += read["request_rows"]
        snap = monitor.snapshot()
        print(f"{rows:,} request rows (and as many labels, {snap['versions'][('criteo_dcn', 1)]['joined']:,} joined) "
              f"in {sum(took):.2f}s of scans = {rows / sum(took):,.0f} rows/s; scan p50 "
              f"{sorted(took)[len(took) // 2]:.2f}s, max {max(took):.2f}s; pending {snap['pending']}; "
              f"this process's peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:,.0f} MiB "
              f"(the parts made up front included)")
        pstats.Stats(profile).sort_stats("tottime").print_stats(a.top)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
