"""Serving latency and throughput through Triton (gRPC), against the same model in-process.

Builds one model version with the real steps (synth -> extract -> preprocess -> train -> export;
the DCN in the HugeCTR sample's shape by default), deploys it into a local Triton (python backend:
numpy preprocessing + onnxruntime, one model instance, one ORT thread) and measures, at each
batch size, on real held-out rows:

- latency p50 / p99 of sequential gRPC requests (one in flight);
- throughput in rows/s with --concurrency requests in flight (async gRPC);
- the floor: the same preprocessing + ONNX model called in-process (criteo_serving.CTRModel with
  one ORT thread, in the Triton environment's interpreter), same batches;
- the overhead ratio Triton p50 / in-process p50.

    .venv/bin/python bench/bench_serving.py [--rows 100000] [--mlp-dims 1024,1024] [--requests 2000]
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

FLOOR = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from criteo_serving import CTRModel
model = CTRModel(sys.argv[1], threads=1)
data = np.load(sys.argv[2])
dense, cats = data["dense_raw"], data["cat_hash"]
out = {}
for batch in json.loads(sys.argv[3]):
    n = int(sys.argv[4])
    lat = []
    for i in range(n + 20):
        s = (i * batch) % (len(dense) - batch)
        t = time.perf_counter()
        model.predict(dense[s:s + batch], cats[s:s + batch])
        if i >= 20:
            lat.append(time.perf_counter() - t)
    lat = np.array(lat) * 1000
    out[batch] = {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
                  "rows_per_s": float(batch * len(lat) / (lat.sum() / 1000))}
print(json.dumps(out))
"""


def build_version(work: Path, rows: int, mlp_dims: str) -> tuple[Path, Path]:
    """A trained, exported package and the raw day it came from."""
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    rt = LocalProcessRuntime()
    rt.run(STEPS["synth"], ["--out", str(work / "raw"), "--days", "0", "--rows", str(rows)])
    rt.run(STEPS["extract"], ["--input", str(work / "raw"), "--day", "0", "--output", str(work / "extracted/day=0")])
    rt.run(STEPS["preprocess"], ["--extracted", str(work / "extracted/day=0"), "--output-root", str(work / "processed"),
                                 "--fit-workflow", str(work / "workflow"), "--max-vocab", "0"])
    # The HugeCTR sample's DCN (the DAG Params' defaults), one epoch.
    rt.run(STEPS["train"], ["--train", str(work / "processed/day=0"), "--output", str(work / "train"),
                            "--mlp-dims", mlp_dims, "--embedding-dim", "16", "--cross-layers", "6",
                            "--epochs", "1", "--batch-size", "4096", "--lr", "0.001"])
    rt.run(STEPS["export"], ["--checkpoint", str(work / "train/checkpoint.pt"), "--workflow", str(work / "workflow"),
                             "--output", str(work / "package")])
    rt.run(STEPS["evaluate"], ["--eval", str(work / "extracted/day=0"), "--candidate", str(work / "package"),
                               "--output", str(work / "evaluation")])
    return work / "package", work / "raw" / "day_0"


def held_out_rows(raw_day: Path, n: int, work: Path) -> Path:
    """The first n rows of the day as serving inputs, parsed by the inference client's own parser."""
    from criteo_monitoring.traffic import read_batches

    dense, cats = [], []
    got = 0
    for batch in read_batches(str(raw_day), chunk_rows=min(n, 65536)):
        dense.append(batch.dense_raw)
        cats.append(batch.cat_hash)
        got += len(batch.dense_raw)
        if got >= n:
            break
    path = work / "rows.npz"
    np.savez(path, dense_raw=np.concatenate(dense)[:n].astype(np.float32),
             cat_hash=np.concatenate(cats)[:n].astype(np.int64))
    return path


def infer_inputs(dense, cats):
    """One request's inputs in the model's signature."""
    import tritonclient.grpc as grpcclient

    from criteo_kernel.signature import CATEGORICAL_INPUT, DENSE_INPUT

    inputs = [grpcclient.InferInput(DENSE_INPUT, list(dense.shape), "FP32"),
              grpcclient.InferInput(CATEGORICAL_INPUT, list(cats.shape), "INT64")]
    inputs[0].set_data_from_numpy(dense)
    inputs[1].set_data_from_numpy(cats)
    return inputs


def grpc_latency(url: str, model: str, dense, cats, batch: int, n: int) -> dict:
    import tritonclient.grpc as grpcclient

    from criteo_kernel.signature import OUTPUT

    client = grpcclient.InferenceServerClient(url)
    lat = []
    for i in range(n + 20):
        s = (i * batch) % (len(dense) - batch)
        inputs = infer_inputs(dense[s:s + batch], cats[s:s + batch])
        t = time.perf_counter()
        client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(OUTPUT)])
        if i >= 20:  # warm-up excluded
            lat.append(time.perf_counter() - t)
    lat = np.array(lat) * 1000
    return {"p50_ms": float(np.percentile(lat, 50)), "p99_ms": float(np.percentile(lat, 99)),
            "rows_per_s_sequential": float(batch * len(lat) / (lat.sum() / 1000))}


def grpc_throughput(url: str, model: str, dense, cats, batch: int, n: int, concurrency: int) -> float:
    import queue
    import threading

    import tritonclient.grpc as grpcclient

    from criteo_kernel.signature import OUTPUT

    client = grpcclient.InferenceServerClient(url)
    slots = threading.Semaphore(concurrency)
    done: queue.Queue = queue.Queue()

    def callback(result, error):
        slots.release()
        done.put(error)

    t = time.perf_counter()
    for i in range(n):
        s = (i * batch) % (len(dense) - batch)
        inputs = infer_inputs(dense[s:s + batch], cats[s:s + batch])
        slots.acquire()
        client.async_infer(model, inputs, callback, outputs=[grpcclient.InferRequestedOutput(OUTPUT)])
    errors = [done.get() for _ in range(n)]
    took = time.perf_counter() - t
    bad = [e for e in errors if e is not None]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} requests failed: {bad[0]}")
    return batch * n / took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic day the model trains on")
    p.add_argument("--mlp-dims", default="1024,1024")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--requests", type=int, default=2000, help="timed requests per batch size (latency)")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--work", default=None)
    a = p.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-serving-"))
    from datetime import date

    from criteo_kernel.artifacts import SMOKE_ROWS
    from local_servers.stack import ServingStack
    from operators.deploy import promote
    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.hooks.triton import TritonHook
    from operators.pipeline.config import PipelineConfig
    from operators.pipeline.layout import Layout

    package, raw_day = build_version(work, a.rows, a.mlp_dims)
    rows = held_out_rows(raw_day, 20_000, work)
    data = np.load(rows)
    dense, cats = data["dense_raw"], data["cat_hash"]
    base = work / "bucket"
    cfg = PipelineConfig(base_url=str(base), raw_url=str(base / "raw"), runtime="local", day0=date(2026, 1, 1),
                         num_days=24, model_name="criteo_dcn")
    repo = ModelRepositoryHook(Layout(cfg))
    version = repo.push(str(package), {"run_key": "bench"},
                        extra_files={SMOKE_ROWS: str(work / "evaluation" / SMOKE_ROWS)})
    with ServingStack(base, work / "services", monitor=False, prometheus=False) as stack:
        promote(repo, TritonHook(stack.triton.grpc_url), version)
        floor = json.loads(subprocess.run(
            [str(REPO / ".venv-triton/bin/python"), "-c", FLOOR, f"{repo.model_dir.path}/{version}", str(rows),
             json.dumps(batches), str(a.requests)], check=True, capture_output=True, text=True).stdout)
        print(f"\nserving the DCN (MLP {a.mlp_dims}) through Triton {stack.triton.grpc_url} (gRPC, python backend + "
              f"onnxruntime, 1 instance, 1 ORT thread) vs in-process onnxruntime; {a.requests} timed requests each")
        print(f"{'batch':>6} {'triton p50':>11} {'p99':>8} {'seq rows/s':>11} {'rows/s @' + str(a.concurrency):>12} "
              f"{'in-proc p50':>12} {'p99':>8} {'rows/s':>9} {'overhead p50':>13}")
        for b in batches:
            lat = grpc_latency(stack.triton.grpc_url, "criteo_dcn", dense, cats, b, a.requests)
            tput = grpc_throughput(stack.triton.grpc_url, "criteo_dcn", dense, cats, b, a.requests, a.concurrency)
            f = floor[str(b)]
            print(f"{b:>6} {lat['p50_ms']:>9.3f}ms {lat['p99_ms']:>6.3f}ms {lat['rows_per_s_sequential']:>11,.0f} "
                  f"{tput:>12,.0f} {f['p50_ms']:>10.3f}ms {f['p99_ms']:>6.3f}ms {f['rows_per_s']:>9,.0f} "
                  f"{lat['p50_ms'] / f['p50_ms']:>12.2f}x")


if __name__ == "__main__":
    main()
