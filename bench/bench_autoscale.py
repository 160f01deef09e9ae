"""Where one Triton replica needs help: the HPA's queue-time metric under rising request rates.

Builds one model version with the real steps (bench_serving.build_version: the DCN in the HugeCTR
sample's shape), deploys it with deploy's own promotion into the local tritonserver, with the local
Prometheus scraping it every second, and replays another synthetic day (--traffic-rows) with the
inference client (criteo_monitoring replay, --clock wall) at each --rates requests/s of
--batch-size rows, for --step-s seconds each. After each step it reads:

- the HPA's metric: prometheus-adapter's rule (k8s/prometheus-adapter/config.yaml) over the step's
  last 30 s, its templates filled for this one Triton (k8s/adapter.py fill: its scrape target's
  instance label stands for namespace and pod, which only Kubernetes discovery gives);
- Triton's own statistics for the step (queue ns / requests), as a cross-check;
- the rate the client achieved.

Then it reports the highest rate whose queue time stayed under the HPA target
(k8s/serving/base/hpa.yaml's averageValue, or --target-us) and what that implies for
replicas per 1,000 requests/s. The client runs on the same 2 cores as Triton here, so the
capacity is this machine's, not a GPU node's.

    .venv/bin/python bench/bench_autoscale.py [--rates 40,80,120,160,200,240,320] [--batch-size 64]
"""
from __future__ import annotations

import argparse
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import urlsplit

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO), str(Path(__file__).resolve().parent)]

from bench_serving import build_version  # noqa: E402


def main() -> None:
    import yaml

    from k8s.adapter import fill

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rates", default="40,80,120,160,200,240,320", help="requests/s, one step each")
    p.add_argument("--batch-size", type=int, default=64, help="rows per request (the compose client's)")
    p.add_argument("--concurrency", type=int, default=16, help="requests the client keeps in flight at most")
    p.add_argument("--step-s", type=float, default=35.0, help="seconds per rate (the rule's window is 30 s)")
    p.add_argument("--target-us", type=float, default=None,
                   help="the HPA target (default: k8s/serving/base/hpa.yaml averageValue)")
    p.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic day the model trains on")
    p.add_argument("--mlp-dims", default="1024,1024")
    p.add_argument("--traffic-rows", type=int, default=600_000,
                   help="rows of the synthetic day replayed (enough for the highest rate's step)")
    p.add_argument("--work", default=None, help="work folder; a version already built there is reused")
    a = p.parse_args()
    hpa = yaml.safe_load((REPO / "k8s" / "serving" / "base" / "hpa.yaml").read_text())
    target = a.target_us if a.target_us is not None else float(
        hpa["spec"]["metrics"][0]["pods"]["target"]["averageValue"])
    rates = [float(r) for r in a.rates.split(",")]
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-autoscale-"))
    work.mkdir(parents=True, exist_ok=True)

    from criteo_kernel import storage
    from criteo_kernel.artifacts import SMOKE_ROWS
    from local_servers.stack import ServingStack
    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.hooks.prometheus import PrometheusHook
    from operators.hooks.serving import promote
    from operators.hooks.triton import TritonHook
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    package, _ = build_version(work, a.rows, a.mlp_dims)
    rt = LocalProcessRuntime()
    traffic = work / "traffic"
    if not (traffic / "day_1").exists():  # another day of the generator: the traffic the model serves
        rt.run(STEPS["synth"], ["--out", str(traffic), "--days", "1", "--rows", str(a.traffic_rows)])
    base = work / "bucket"
    if base.exists():
        shutil.rmtree(base)
    cfg = Settings.with_values(criteo_base_url=str(base), criteo_model_name="criteo_dcn")
    repo = ModelRepositoryHook(Layout(cfg))
    version = repo.push(str(package), {"run_key": "bench"},
                        extra_files={SMOKE_ROWS: storage.join(storage.resolve(str(work / "evaluation")), SMOKE_ROWS)})
    rows = []
    with ServingStack(base, work / "services", monitor=False) as stack:
        promote(repo, TritonHook(stack.triton.grpc_url), version)
        prom = PrometheusHook(stack.prometheus.url)
        triton = f'instance="{urlsplit(stack.triton.metrics_url).netloc}"'
        query = fill(triton, "instance")
        stats = TritonHook(stack.triton.grpc_url)
        print(f"HPA target {target:,.0f} us; {a.batch_size} rows per request, at most {a.concurrency} in flight, "
              f"{a.step_s:.0f} s per rate", flush=True)
        for rate in rates:
            before = _queue(stats, cfg.serving.model_name)
            out = rt.run(STEPS["replay"], [
                "--input", str(traffic), "--day", "1", "--day0", "2026-01-01", "--clock", "wall",
                "--triton", stack.triton.grpc_url, "--model", cfg.serving.model_name,
                "--request-log", str(work / "logs" / f"rate_{rate:g}"), "--batch-size", str(a.batch_size),
                "--concurrency", str(a.concurrency), "--rate", f"{rate:g}",
                "--max-rows", str(int(rate * a.step_s * a.batch_size)), "--label-delay-s", "0"])
            after = _queue(stats, cfg.serving.model_name)
            time.sleep(2.5)  # two more scrapes: the step's last requests are in Prometheus
            result = prom.query(query)
            metric = float(result[0]["value"][1]) if result else math.nan
            count = after[0] - before[0]
            own = (after[1] - before[1]) / 1e3 / count if count else math.nan
            achieved = out["requests"] / out["seconds"] if out["seconds"] else math.nan
            rows.append((rate, achieved, achieved * a.batch_size, metric, own))
            print(f"rate {rate:>6g} req/s: achieved {achieved:8.1f} req/s ({achieved * a.batch_size:9,.0f} rows/s), "
                  f"HPA metric {metric:10,.1f} us, Triton's own queue {own:10,.1f} us/request", flush=True)
    print("\n| target req/s | achieved req/s | rows/s | triton_queue_avg_us (HPA metric) | Triton's own, us/request |")
    print("|---|---|---|---|---|")
    for rate, achieved, rps, metric, own in rows:
        print(f"| {rate:g} | {achieved:,.1f} | {rps:,.0f} | {metric:,.1f} | {own:,.1f} |")
    under = [r for r in rows if r[3] <= target]
    over = [r for r in rows if r[3] > target]
    if not under:
        print(f"bench_autoscale: every rate was over the target ({target:,.0f} us): try lower --rates")
        return
    best = max(r[1] for r in under)
    crossed = min((r[1] for r in over), default=None)
    print(f"\nunder the target up to {best:,.1f} req/s achieved"
          + (f"; over it from {crossed:,.1f} req/s" if crossed else "; no rate crossed it: try higher --rates"))
    print(f"bench_autoscale: ratio {1000 / best:.2f} (replicas per 1,000 requests/s of {a.batch_size} rows: 1,000 over "
          f"the highest rate one replica took under the {target:,.0f} us queue-time target)")


def _queue(hook, model: str) -> tuple[int, int]:
    """(requests, queue ns) so far, from Triton's statistics for the model (all versions)."""
    stats = hook.get_conn().get_inference_statistics(model, as_json=True)["model_stats"]
    count = sum(int(s["inference_stats"].get("queue", {}).get("count", 0)) for s in stats)
    ns = sum(int(s["inference_stats"].get("queue", {}).get("ns", 0)) for s in stats)
    return count, ns


if __name__ == "__main__":
    main()
