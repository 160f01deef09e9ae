"""Serving latency and throughput through Triton (gRPC), against the same model in-process, and the floor.

Builds one model version with the real steps (synth -> extract -> preprocess -> train -> export;
the DCN in the HugeCTR sample's shape by default), deploys it with the pipeline's own deploy code
into a local Triton (python backend: numpy preprocessing + onnxruntime, one model instance, one ORT
thread; the dynamic batcher's queue delay from the Variable criteo_triton_max_queue_delay_us, or
--queue-delay-us) and measures, at each batch size, on real held-out rows:

- latency p50 / p99 of sequential gRPC requests (one in flight) to the deployed model;
- in-process: the same preprocessing + ONNX model (criteo_serving.CTRModel, one ORT thread, in
  the Triton environment's interpreter) called directly on the same batches, back to back;
- the floor of Triton itself: an empty gRPC call (ServerLive) and a python-backend identity model
  (returns its input; same inputs, same dynamic batching; deployed only into this bench's own
  Triton repository);
- the same version with the previous default queue delay (--baseline-queue-delay-us, 500) loaded
  beside it in the same Triton: its latency p50, and the throughput in rows/s of both configs with
  --concurrency requests in flight (async gRPC, runs alternated);
- "in-proc idle": the in-process calls again, each after an untimed --idle-us sleep (a served model
  idles between requests; its caches cool meanwhile), to tell that cost from the stub's;

All of one batch size's measurements are interleaved: --rounds rounds, each running every
measurement for a block of requests (order rotated per round), so that load from other processes
on the machine falls on all of them alike. The last line is the headline ratio:

    bench_serving: ratio <x> (Triton batch-1 p50 over in-process p50)

    .venv/bin/python bench/bench_serving.py [--rows 100000] [--mlp-dims 1024,1024] [--requests 2000]
"""
from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

BASELINE_MODEL = "criteo_dcn_baseline"   # the same version, the previous config (queue delay 500 us)
IDENTITY_MODEL = "identity"
IDENTITY_OUTPUT = "dense_out"
WARMUP = 5                               # untimed requests before each block

# In-process: a server on stdin ("<batch> <n> <start> <warmup> <idle_us>") answering each block's
# latencies (ms) as JSON; idle_us > 0 sleeps that long before each call (the model idles between
# requests when it is served; the sleep is not timed).
IN_PROCESS = r"""
import json, sys, time
import numpy as np
sys.path.insert(0, sys.argv[1])
from criteo_serving import CTRModel
model = CTRModel(sys.argv[1], threads=1)
data = np.load(sys.argv[2])
dense, cats = data["dense_raw"], data["cat_hash"]
for line in sys.stdin:
    batch, n, start, warmup, idle_us = map(int, line.split())
    lat = []
    for i in range(start - warmup, start + n):
        s = (i * batch) % (len(dense) - batch)
        if idle_us:
            time.sleep(idle_us / 1e6)
        t = time.perf_counter()
        model.predict(dense[s:s + batch], cats[s:s + batch])
        if i >= start:
            lat.append((time.perf_counter() - t) * 1000)
    print(json.dumps(lat), flush=True)
"""

IDENTITY_PY = '''"""Returns its input: the python backend's own cost, with the model's inputs (bench_serving)."""
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        return [pb_utils.InferenceResponse([pb_utils.Tensor(
            "{output}", pb_utils.get_input_tensor_by_name(r, "{dense}").as_numpy())]) for r in requests]
'''


def build_version(work: Path, rows: int, mlp_dims: str) -> tuple[Path, Path]:
    """The committed files of a trained, exported package and the raw day it came from (reused when
    `work` has them published)."""
    from criteo_kernel import storage
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    if storage.is_published(str(work / "package")) and storage.is_published(str(work / "evaluation")):
        return Path(storage.resolve(str(work / "package"))), work / "raw" / "day_0"
    rt = LocalProcessRuntime()
    rt.run(STEPS["synth"], ["--out", str(work / "raw"), "--days", "0", "--rows", str(rows)])
    rt.run(STEPS["extract"], ["--input", str(work / "raw"), "--day", "0", "--output", str(work / "extracted/day=0")])
    rt.run(STEPS["preprocess"], ["--extracted", str(work / "extracted/day=0"), "--output-root", str(work / "processed"),
                                 "--fit-workflow", str(work / "workflow"), "--max-vocab", "0"])
    # The HugeCTR sample's DCN (the DAG Params' defaults), one epoch.
    rt.run(STEPS["train"], ["--train", str(work / "processed/day=0"), "--output", str(work / "train"),
                            "--mlp-dims", mlp_dims, "--embedding-dim", "16", "--cross-layers", "6",
                            "--epochs", "1", "--batch-size", "4096", "--lr", "0.001"])
    checkpoint = storage.join(storage.resolve(str(work / "train")), "checkpoint.pt")
    rt.run(STEPS["export"], ["--checkpoint", checkpoint, "--workflow", str(work / "workflow"),
                             "--output", str(work / "package")])
    rt.run(STEPS["evaluate"], ["--eval", str(work / "extracted/day=0"), "--candidate", str(work / "package"),
                               "--output", str(work / "evaluation")])
    return Path(storage.resolve(str(work / "package"))), work / "raw" / "day_0"


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


def add_bench_models(repo_dir: Path, model: str, version: int, baseline_delay_us: int) -> None:
    """Into the bench's own repository: the deployed version again under BASELINE_MODEL with the
    previous queue delay, and the identity model (same inputs and batching as the model)."""
    from criteo_kernel.artifacts import TRITON_CONFIG
    from criteo_kernel.signature import CATEGORICAL_INPUT, DENSE_INPUT, NUM_DENSE, OUTPUT
    from criteo_kernel.triton_config import with_queue_delay

    deployed = (repo_dir / model / TRITON_CONFIG).read_text()
    base = repo_dir / BASELINE_MODEL
    shutil.copytree(repo_dir / model / str(version), base / str(version))
    (base / TRITON_CONFIG).write_text(with_queue_delay(deployed, baseline_delay_us)
                                      .replace(f'name: "{model}"', f'name: "{BASELINE_MODEL}"'))
    ident = repo_dir / IDENTITY_MODEL
    (ident / "1").mkdir(parents=True)
    (ident / "1" / "model.py").write_text(IDENTITY_PY.format(output=IDENTITY_OUTPUT, dense=DENSE_INPUT))
    out = f'{{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ 1 ] }}'
    assert out in deployed, deployed
    (ident / TRITON_CONFIG).write_text(
        deployed.replace(f'name: "{model}"', f'name: "{IDENTITY_MODEL}"')
        .replace(out, f'{{ name: "{IDENTITY_OUTPUT}" data_type: TYPE_FP32 dims: [ {NUM_DENSE} ] }}')
        .replace(f"versions: [ {version} ]", "versions: [ 1 ]"))
    assert CATEGORICAL_INPUT in deployed


STAGES = ("queue", "compute_input", "compute_infer", "compute_output")


def stage_totals(client, model: str) -> dict:
    """Triton's cumulative per-stage statistics of a model: {stage: (count, ns)}."""
    stats = client.get_inference_statistics(model, as_json=True)["model_stats"][0]["inference_stats"]
    return {s: (int(stats.get(s, {}).get("count", 0)), int(stats.get(s, {}).get("ns", 0))) for s in STAGES}


def stage_means_ms(before: dict, after: dict) -> dict:
    """Mean ms per request of each stage between two stage_totals."""
    return {s: (after[s][1] - before[s][1]) / 1e6 / max(1, after[s][0] - before[s][0]) for s in STAGES}


class Latency:
    """Sequential requests (one in flight), block by block; `.ms` holds every timed latency."""

    def __init__(self, run_block):
        self.run_block = run_block
        self.ms: list[float] = []
        self.next = 0

    def block(self, batch: int, n: int) -> None:
        self.ms.extend(self.run_block(batch, n, self.next))
        self.next += n

    def stats(self) -> dict:
        a = np.array(self.ms)
        return {"p50_ms": float(np.percentile(a, 50)), "p99_ms": float(np.percentile(a, 99)), "n": len(a)}


def grpc_block(client, model: str, output: str, dense, cats):
    import tritonclient.grpc as grpcclient

    def run(batch: int, n: int, start: int) -> list[float]:
        lat = []
        for i in range(start - WARMUP, start + n):
            s = (i * batch) % (len(dense) - batch)
            inputs = infer_inputs(dense[s:s + batch], cats[s:s + batch])
            t = time.perf_counter()
            client.infer(model, inputs, outputs=[grpcclient.InferRequestedOutput(output)])
            if i >= start:
                lat.append((time.perf_counter() - t) * 1000)
        return lat
    return run


def live_block(client):
    def run(batch: int, n: int, start: int) -> list[float]:
        lat = []
        for i in range(n + WARMUP):
            t = time.perf_counter()
            client.is_server_live()
            if i >= WARMUP:
                lat.append((time.perf_counter() - t) * 1000)
        return lat
    return run


def in_process_block(proc, idle_us: int = 0):
    def run(batch: int, n: int, start: int) -> list[float]:
        proc.stdin.write(f"{batch} {n} {start} {WARMUP} {idle_us}\n")
        proc.stdin.flush()
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError("the in-process measurement died: " + proc.stderr.read())
        return json.loads(line)
    return run


def grpc_throughput(url: str, model: str, dense, cats, batch: int, n: int, concurrency: int,
                    start: int = 0) -> tuple[int, float]:
    """(rows, seconds) for n requests with `concurrency` in flight."""
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
    for i in range(start, start + n):
        s = (i * batch) % (len(dense) - batch)
        inputs = infer_inputs(dense[s:s + batch], cats[s:s + batch])
        slots.acquire()
        client.async_infer(model, inputs, callback, outputs=[grpcclient.InferRequestedOutput(OUTPUT)])
    errors = [done.get() for _ in range(n)]
    took = time.perf_counter() - t
    client.close()
    bad = [e for e in errors if e is not None]
    if bad:
        raise RuntimeError(f"{len(bad)} of {n} requests failed: {bad[0]}")
    return batch * n, took


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic day the model trains on")
    p.add_argument("--mlp-dims", default="1024,1024")
    p.add_argument("--batches", default="1,64")
    p.add_argument("--requests", type=int, default=2000, help="timed requests per measurement and batch size")
    p.add_argument("--rounds", type=int, default=10, help="interleaved blocks the requests are split into")
    p.add_argument("--concurrency", type=int, default=4)
    p.add_argument("--idle-us", type=int, default=600,
                   help="the in-process run after idling: sleep this long before each call (about the "
                        "identity model's p50, what a served model idles between requests one at a time)")
    p.add_argument("--queue-delay-us", type=int, default=None,
                   help="the deployed config's max_queue_delay_microseconds (default: the Variable "
                        "criteo_triton_max_queue_delay_us, else its default)")
    p.add_argument("--baseline-queue-delay-us", type=int, default=500,
                   help="the config compared with for throughput (the previous default)")
    p.add_argument("--work", default=None, help="work folder; a version already built there is reused")
    a = p.parse_args()
    batches = [int(b) for b in a.batches.split(",")]
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-serving-"))
    work.mkdir(parents=True, exist_ok=True)

    import tritonclient.grpc as grpcclient

    from criteo_kernel import storage
    from criteo_kernel.artifacts import SMOKE_ROWS
    from local_servers.stack import ServingStack
    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.hooks.serving import promote
    from operators.hooks.triton import TritonHook
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout

    t0 = time.monotonic()
    package, raw_day = build_version(work, a.rows, a.mlp_dims)
    rows = work / "rows.npz" if (work / "rows.npz").exists() else held_out_rows(raw_day, 20_000, work)
    data = np.load(rows)
    dense, cats = data["dense_raw"], data["cat_hash"]
    built_s = time.monotonic() - t0
    base = work / "bucket"
    if base.exists():
        shutil.rmtree(base)
    cfg = Settings.with_values(criteo_base_url=str(base), criteo_model_name="criteo_dcn")
    delay = Settings.load().serving.max_queue_delay_us if a.queue_delay_us is None else a.queue_delay_us
    repo = ModelRepositoryHook(Layout(cfg), max_queue_delay_us=delay)
    version = repo.push(str(package), {"run_key": "bench"},
                        extra_files={SMOKE_ROWS: storage.join(storage.resolve(str(work / "evaluation")), SMOKE_ROWS)})
    model = cfg.serving.model_name
    with ServingStack(base, work / "services", monitor=False, prometheus=False) as stack:
        url = stack.triton.grpc_url
        promote(repo, TritonHook(url), version)     # deploy's promotion: config.pbtxt, load, smoke inference
        repo_dir = Path(repo.model_dir.path).parent   # the bench's own Triton repository
        add_bench_models(repo_dir, model, version, a.baseline_queue_delay_us)
        hook = TritonHook(url)
        for m in (BASELINE_MODEL, IDENTITY_MODEL):
            hook.load_model(m)
        in_proc = subprocess.Popen(
            [str(REPO / ".venv-triton/bin/python"), "-c", IN_PROCESS, str(repo_dir / model / str(version)), str(rows)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        client = grpcclient.InferenceServerClient(url)
        names = ["triton", "in_process", "identity", "grpc_empty", "in_process_idle", "triton_baseline"]
        results: dict[int, dict] = {}
        tput: dict[int, dict[str, list[float]]] = {}
        n_block = max(1, a.requests // a.rounds)
        n_tput = max(a.concurrency * 4, a.requests // 4)   # per run: each config gets `requests` in all
        try:
            for b in batches:
                meas = {"triton": Latency(grpc_block(client, model, "ctr", dense, cats)),
                        "in_process": Latency(in_process_block(in_proc)),
                        "identity": Latency(grpc_block(client, IDENTITY_MODEL, IDENTITY_OUTPUT, dense, cats)),
                        "grpc_empty": Latency(live_block(client)),
                        "in_process_idle": Latency(in_process_block(in_proc, a.idle_us)),
                        "triton_baseline": Latency(grpc_block(client, BASELINE_MODEL, "ctr", dense, cats))}
                before = {m: stage_totals(client, m) for m in (model, IDENTITY_MODEL)}
                for r in range(a.rounds):
                    for name in names[r % len(names):] + names[:r % len(names)]:
                        meas[name].block(b, n_block)
                results[b] = {k: v.stats() for k, v in meas.items()}
                results[b]["stages_ms"] = {m: stage_means_ms(before[m], stage_totals(client, m))
                                           for m in (model, IDENTITY_MODEL)}
                # Throughput, deployed config and the baseline alternated (4 runs each, order swapped).
                acc = {"new": [0, 0.0], "old": [0, 0.0]}
                for r, which in enumerate(["new", "old", "old", "new"] * 2):
                    n_rows, took = grpc_throughput(url, model if which == "new" else BASELINE_MODEL, dense, cats, b,
                                                   n_tput, a.concurrency, start=r * n_tput)
                    acc[which][0] += n_rows
                    acc[which][1] += took
                tput[b] = {k: v[0] / v[1] for k, v in acc.items()}
        finally:
            in_proc.stdin.close()
            in_proc.wait(timeout=60)
            client.close()
    took_s = time.monotonic() - t0

    print(f"\nserving the DCN (MLP {a.mlp_dims}) through Triton 2.51 (gRPC from this machine; python backend: "
          f"numpy preprocessing + onnxruntime, 1 instance, 1 ORT thread; dynamic batching, "
          f"max_queue_delay_microseconds {delay} deployed, {a.baseline_queue_delay_us} baseline) vs the same "
          f"CTRModel in-process; {a.requests} timed requests per cell in {a.rounds} interleaved rounds; "
          f"version built/reused in {built_s:.0f} s, {took_s:.0f} s in all")
    q_old, q_new = f"q{a.baseline_queue_delay_us}", f"q{delay}"
    head = (f"{'batch':>5} | {'Triton p50':>10} {'p99':>8} | {'in-proc p50':>11} {'p99':>8} | {'identity p50':>12} "
            f"| {'empty gRPC p50':>14} | {'in-proc idle p50':>16} | {'Triton ' + q_old + ' p50':>15} "
            f"| {'rows/s @' + str(a.concurrency) + ' ' + q_old:>15} "
            f"{q_new:>9} {'new/old':>7} | {'Triton/in-proc':>14} {'identity/in-proc':>16}")
    print(head)
    print("-" * len(head))
    for b in batches:
        r, t = results[b], tput[b]
        tr, ip, idn, em, idle = r["triton"], r["in_process"], r["identity"], r["grpc_empty"], r["in_process_idle"]
        print(f"{b:>5} | {tr['p50_ms']:>8.3f}ms {tr['p99_ms']:>6.3f}ms | {ip['p50_ms']:>9.3f}ms {ip['p99_ms']:>6.3f}ms "
              f"| {idn['p50_ms']:>10.3f}ms | {em['p50_ms']:>12.3f}ms | {idle['p50_ms']:>14.3f}ms "
              f"| {r['triton_baseline']['p50_ms']:>13.3f}ms "
              f"| {t['old']:>15,.0f} {t['new']:>9,.0f} {t['new'] / t['old']:>6.2f}x "
              f"| {tr['p50_ms'] / ip['p50_ms']:>13.2f}x {idn['p50_ms'] / ip['p50_ms']:>15.2f}x")
    print(f"\nin-proc idle: the same in-process calls, each after a {a.idle_us} us sleep (as a served model idles "
          "between requests).")
    print("where the Triton p50 goes (p50 differences):")
    for b in batches:
        r = results[b]
        em, idn, tr = r["grpc_empty"]["p50_ms"], r["identity"]["p50_ms"], r["triton"]["p50_ms"]
        print(f"  batch {b}: empty gRPC call {em:.3f} ms + Triton and the python backend's hop (identity - empty) "
              f"{idn - em:.3f} ms + the model in the stub (Triton - identity) {tr - idn:.3f} ms, which in-process "
              f"takes {r['in_process']['p50_ms']:.3f} ms back to back, "
              f"{r['in_process_idle']['p50_ms']:.3f} ms after idling")
    for b in batches:
        print(f"Triton's own statistics, mean per request at batch {b} (one in flight): " + "; ".join(
            f"{m}: " + ", ".join(f"{k} {v:.3f}" for k, v in st.items()) + " ms"
            for m, st in results[b]["stages_ms"].items()))
    print(json.dumps({"queue_delay_us": delay, "latency": results, "throughput": tput}))
    head_b = batches[0]
    print(f"bench_serving: ratio {results[head_b]['triton']['p50_ms'] / results[head_b]['in_process']['p50_ms']:.2f} "
          f"(Triton batch-{head_b} p50 over in-process p50)")


if __name__ == "__main__":
    main()
