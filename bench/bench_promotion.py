"""Request latency while deploy's promotion changes the served version, against steady serving.

Builds one model version with the real steps (bench_serving.build_version), pushes it twice into a
local model repository (versions 1 and 2: the same files, so only the switch differs), starts two
tritonservers on that repository (explicit model control, as criteo_triton_replicas lists them)
and sends steady traffic (tests/fixtures/traffic.py: --clients threads, --rate requests/s in
all, --batch-size rows each, round robin over the replicas, no version named). A and B are
alternated in one run, --rounds times, for one replica and then for two:

- A, steady: --steady-s seconds of traffic, nothing changes;
- B, promotion: serving.promote (deploy's: pointer, load, smoke inference on each replica in turn)
  switches to the other version; the window is the promotion's own duration.

It prints, per replica count, p50/p99 of the requests started in each kind of window, the
failed requests, the answers per version during the promotions, and the ratios; the last line is

    bench_promotion: ratio <x> (p99 during promotion over steady p99, one replica; ...)

    flock /tmp/criteo-heavy.lock .venv/bin/python bench/bench_promotion.py [--rounds 3] [--rate 60]
"""
from __future__ import annotations

import argparse
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from bench_serving import build_version, held_out_rows  # noqa: E402


def hardware() -> str:
    model, flags = platform.processor() or "?", set()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
            elif line.startswith("flags"):
                flags = set(line.split(":", 1)[1].split())
    except OSError:
        pass
    bf16 = ",".join(sorted(f for f in flags if "bf16" in f)) or "none"
    return f"nproc {os.cpu_count()}, CPU {model}, bf16 flags: {bf16}"


def pct(ms: list[float], q: float) -> float:
    return float(np.percentile(ms, q)) if ms else float("nan")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=20_000, help="rows of the synthetic day the model trains on")
    p.add_argument("--mlp-dims", default="256,256")
    p.add_argument("--rounds", type=int, default=3, help="steady/promotion pairs per replica count")
    p.add_argument("--steady-s", type=float, default=4.0)
    p.add_argument("--rate", type=float, default=60.0, help="requests/s, all clients together")
    p.add_argument("--clients", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--work", default=None, help="work folder; a version already built there is reused")
    a = p.parse_args()
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-promotion-"))
    work.mkdir(parents=True, exist_ok=True)

    from criteo_kernel import storage
    from criteo_kernel.artifacts import SMOKE_ROWS
    from local_servers.triton import LocalTriton
    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.hooks.serving import promote
    from operators.hooks.triton import TritonHook
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout
    from tests.fixtures.traffic import Traffic

    t0 = time.monotonic()
    package, raw_day = build_version(work, a.rows, a.mlp_dims)
    rows = work / "rows.npz" if (work / "rows.npz").exists() else held_out_rows(raw_day, 20_000, work)
    data = np.load(rows)
    dense, cats = data["dense_raw"], data["cat_hash"]
    base = work / "bucket"
    if base.exists():
        shutil.rmtree(base)
    cfg = Settings.with_values(criteo_base_url=str(base), criteo_model_name="criteo_dcn")
    repo = ModelRepositoryHook(Layout(cfg))
    smoke = storage.join(storage.resolve(str(work / "evaluation")), SMOKE_ROWS)
    versions = [repo.push(str(package), {"run_key": f"bench-{i}"}, extra_files={SMOKE_ROWS: smoke}) for i in (0, 1)]
    model = cfg.serving.model_name
    repo_dir = str(Path(repo.model_dir.path).parent)
    servers = [LocalTriton(repo_dir, work_dir=work / f"triton-{i}") for i in (0, 1)]
    results = {}
    try:
        for s in servers:
            s.start()
        hooks = [TritonHook(s.grpc_url) for s in servers]
        promote(repo, hooks, versions[0])
        for n in (1, 2):
            urls = [s.grpc_url for s in servers[:n]]
            for h in hooks[:n]:   # a replica left out of the last round loads production first
                h.load_model(model)
            windows: list[tuple[str, float, float]] = []
            serving = repo.production_version()
            with Traffic(urls, model, dense, cats, rate=a.rate, clients=a.clients, batch=a.batch_size) as traffic:
                time.sleep(1.0)   # connections up, first requests out of the way
                for _ in range(a.rounds):
                    start = time.monotonic()
                    time.sleep(a.steady_s)
                    windows.append(("steady", start, time.monotonic()))
                    target = versions[1] if serving == versions[0] else versions[0]
                    start = time.monotonic()
                    promote(repo, hooks[:n], target)
                    windows.append(("promotion", start, time.monotonic()))
                    serving = target
                time.sleep(1.0)
            results[n] = {"steady": [], "promotion": [], "failed": {"steady": 0, "promotion": 0},
                          "promo_s": [], "versions": {}}
            for kind, lo, hi in windows:
                if kind == "promotion":
                    results[n]["promo_s"].append(hi - lo)
                for r in traffic.requests:
                    if lo <= r.start < hi:
                        if r.ok:
                            results[n][kind].append((r.end - r.start) * 1000)
                            if kind == "promotion":
                                results[n]["versions"][r.version] = results[n]["versions"].get(r.version, 0) + 1
                        else:
                            results[n]["failed"][kind] += 1
            results[n]["failed_all"] = sum(not r.ok for r in traffic.requests)
            results[n]["errors"] = sorted({r.error for r in traffic.requests if not r.ok})[:3]
    finally:
        for s in servers:
            s.stop()

    print(f"\n{hardware()}")
    print(f"promotion under traffic: {a.rate:g} requests/s of {a.batch_size} rows from {a.clients} clients, "
          f"round robin over the replicas; DCN MLP {a.mlp_dims}, Triton 2.51 python backend (onnxruntime, 1 "
          f"thread), explicit model control; {a.rounds} rounds of {a.steady_s:g} s steady then one "
          f"promotion (serving.promote) per replica count; {time.monotonic() - t0:.0f} s in all")
    head = (f"{'replicas':>8} | {'steady p50':>10} {'p99':>8} {'n':>5} | {'promotion p50':>13} {'p99':>8} {'n':>5} "
            f"| {'promotion s':>11} | {'failed':>6} | {'p50 ratio':>9} {'p99 ratio':>9}")
    print(head)
    print("-" * len(head))
    ratios = {}
    for n, r in results.items():
        s50, s99 = pct(r["steady"], 50), pct(r["steady"], 99)
        p50, p99 = pct(r["promotion"], 50), pct(r["promotion"], 99)
        ratios[n] = (p50 / s50, p99 / s99)
        print(f"{n:>8} | {s50:>8.2f}ms {s99:>6.2f}ms {len(r['steady']):>5} | {p50:>11.2f}ms {p99:>6.2f}ms "
              f"{len(r['promotion']):>5} | {np.mean(r['promo_s']):>10.1f}s | {r['failed_all']:>6} "
              f"| {ratios[n][0]:>8.2f}x {ratios[n][1]:>8.2f}x")
    for n, r in results.items():
        print(f"{n} replica(s): answers per version during the promotions {dict(sorted(r['versions'].items()))}; "
              f"failed requests: {r['failed']['steady']} in steady windows, {r['failed']['promotion']} in promotion "
              f"windows, {r['failed_all']} in all" + (f" ({r['errors']})" if r["errors"] else ""))
    print(f"bench_promotion: ratio {ratios[1][1]:.2f} (p99 latency during promotion over steady p99, one replica; "
          f"two replicas {ratios[2][1]:.2f}; p50 {ratios[1][0]:.2f} and {ratios[2][0]:.2f})")


if __name__ == "__main__":
    main()
