"""A model past protobuf's 2 GiB, exported and served on this machine: the export writes ONNX external
data (model.onnx + model.onnx.data, criteo_kernel.onnx_size) and the real tritonserver's python
backend loads it from the version folder.

- a DCN whose embedding table has --rows rows in all (default 35M at E=16: 2.24 GB of float32, one
  tensor), saved as the train step saves a checkpoint;
- its workflow: a real one fitted by the steps on a small synthetic day (synth -> extract ->
  preprocess), its embedding sizes raised to the model's (the extra rows go to the three largest
  columns, as Criteo's 10M+ columns hold most of a vocabulary); the lookup tables stay the small
  day's, whose ids all fall inside the larger tables;
- the export step as the pipeline runs it (a subprocess in the merlin environment), timed, with the
  peak RSS of its process (GNU time's %M);
- the package installed as version 1 of a local model repository, loaded by the real tritonserver
  (explicit model control): load time, the peak and current RSS of the python backend's stub
  (which holds the onnxruntime session) and of tritonserver, and batch-64 request latency.

Run it alone on the machine (it holds several GB): flock /tmp/criteo-heavy.lock .venv/bin/python
bench/bench_large_model.py [--rows 35000000] [--embedding-dim 16] [--work DIR] [--keep]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

MODEL = "criteo_dcn"
SMALL_DAY_ROWS = 4000
GIB = 2**30

# In the merlin environment: the DCN (its dense part small: the table is what the bench is about),
# saved as the train step saves it.
MAKE_CHECKPOINT = r"""
import json, sys, time, torch
from criteo_merlin.train.dcn import DCN, DCNConfig, save_checkpoint
torch.manual_seed(0)
t0 = time.monotonic()
model = DCN(DCNConfig(json.loads(sys.argv[2]), embedding_dim=int(sys.argv[3]), num_cross_layers=3,
                      mlp_dims=[256, 128])).eval()
save_checkpoint(model, sys.argv[1])
print(json.dumps({"checkpoint_s": round(time.monotonic() - t0, 1)}))
"""


def hardware() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = next(int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                  if line.startswith("MemTotal"))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1), "kernel": platform.release()}


def status_kib(pid: int) -> dict:
    """VmHWM (peak), VmRSS and its anonymous and file-backed parts (mapped files) of a live process, KiB."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
            out[key] = int(value.split()[0])
    return out


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def timed_step(rt, step: str, argv: list[str], rss_file: Path) -> tuple[float, int]:
    """Run one step as the embedded runtime does, under GNU time: (seconds, peak RSS in KiB)."""
    from operators.runtime.catalogue import STEPS

    cmd, env = rt.command(STEPS[step], argv)
    t0 = time.monotonic()
    proc = subprocess.run(["/usr/bin/time", "-f", "%M", "-o", str(rss_file), *cmd], env=env,
                          capture_output=True, text=True)
    seconds = time.monotonic() - t0
    if proc.returncode:
        raise SystemExit(f"{step} failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return seconds, int(rss_file.read_text().split()[-1])


def big_workflow(small: Path, out: Path, rows: int) -> list[int]:
    """The small fitted workflow with its embedding sizes raised to `rows` in all."""
    from criteo_kernel.artifacts import WORKFLOW_META
    from criteo_kernel.schema import CAT_COLUMNS

    shutil.copytree(small, out)
    meta = json.loads((out / WORKFLOW_META).read_text())
    sizes = [int(meta["embedding_sizes"][c]) for c in CAT_COLUMNS]
    extra = rows - sum(sizes)
    if extra < 0:
        raise SystemExit(f"--rows {rows} is below the small workflow's own {sum(sizes)} rows")
    largest = sorted(range(len(sizes)), key=lambda j: -sizes[j])[:3]
    for k, j in enumerate(largest):
        sizes[j] += extra // 3 + (extra % 3 if k == 0 else 0)
    meta["embedding_sizes"] = dict(zip(CAT_COLUMNS, sizes, strict=True))
    (out / WORKFLOW_META).write_text(json.dumps(meta))
    return sizes


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=35_000_000, help="embedding rows in all (26 columns)")
    p.add_argument("--embedding-dim", type=int, default=16)
    p.add_argument("--work", default=None, help="work folder (default: a new one under /tmp, removed after)")
    p.add_argument("--keep", action="store_true", help="keep the work folder")
    a = p.parse_args()

    from criteo_kernel.onnx_size import PROTOBUF_LIMIT, model_bytes
    from criteo_kernel.triton_config import with_version_policy
    from local_servers.triton import LocalTriton
    from operators.hooks.triton import TritonHook
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LOCAL_ENVIRONMENTS, LocalProcessRuntime

    work = Path(a.work or tempfile.mkdtemp(prefix="bench-large-model-"))
    work.mkdir(parents=True, exist_ok=True)
    result: dict = {"hardware": hardware(), "rows": a.rows, "embedding_dim": a.embedding_dim,
                    "table_bytes": model_bytes(a.rows, a.embedding_dim), "protobuf_limit": PROTOBUF_LIMIT}
    print(json.dumps(result["hardware"]), flush=True)
    server = None
    try:
        rt = LocalProcessRuntime()
        rt.run(STEPS["synth"], ["--out", str(work / "raw"), "--days", "0", "--rows", str(SMALL_DAY_ROWS)])
        rt.run(STEPS["extract"], ["--input", str(work / "raw"), "--day", "0", "--output",
                                  str(work / "extracted/day=0")])
        rt.run(STEPS["preprocess"], ["--extracted", str(work / "extracted/day=0"), "--output-root",
                                     str(work / "processed"), "--fit-workflow", str(work / "workflow_small"),
                                     "--max-vocab", "0"])
        sizes = big_workflow(work / "workflow_small", work / "workflow", a.rows)
        merlin = LOCAL_ENVIRONMENTS["merlin"]
        env = dict(os.environ, PYTHONPATH=merlin.pythonpath)
        ckpt = work / "checkpoint.pt"
        made = subprocess.run([merlin.python, "-c", MAKE_CHECKPOINT, str(ckpt), json.dumps(sizes),
                               str(a.embedding_dim)], env=env, capture_output=True, text=True)
        if made.returncode:
            raise SystemExit(made.stdout + made.stderr)
        result.update(json.loads(made.stdout.strip().splitlines()[-1]), checkpoint_bytes=ckpt.stat().st_size)
        print(f"checkpoint: {ckpt.stat().st_size / GIB:.2f} GiB", flush=True)

        pkg = work / "package"
        seconds, rss = timed_step(rt, "export", ["--checkpoint", str(ckpt), "--workflow", str(work / "workflow"),
                                                 "--output", str(pkg)], work / "export.rss")
        ckpt.unlink()  # the package keeps its own copy
        info = json.loads((pkg / "export.json").read_text())
        result.update(export_s=round(seconds, 1), export_peak_rss_gib=round(rss / 2**20, 2),
                      parity_max_abs_diff=info["parity_max_abs_diff"], onnx_files=info["onnx_files"],
                      files={p.name: p.stat().st_size for p in pkg.iterdir() if p.is_file()})
        print(f"export: {seconds:.1f}s, peak RSS {rss / 2**20:.2f} GiB, {result['files']}", flush=True)
        if "model.onnx.data" not in info["onnx_files"]:
            raise SystemExit("the export wrote no model.onnx.data: the model is under the threshold")

        repo = work / "model_repository"
        version = repo / MODEL / "1"
        version.parent.mkdir(parents=True)
        os.rename(pkg, version)  # as deploy installs it, without a second copy of the weights
        (repo / MODEL / "config.pbtxt").write_text(with_version_policy((version / "config.pbtxt").read_text(), 1))
        server = LocalTriton(str(repo), work_dir=work / "triton", log_path=work / "triton" / "tritonserver.log")
        server.start()
        hook = TritonHook(server.grpc_url, timeout_s=600)
        t0 = time.monotonic()
        hook.load_model(MODEL)
        result["triton_load_s"] = round(time.monotonic() - t0, 1)
        tritonserver = server.process.proc.pid
        stubs = [pid for pid in children(tritonserver)
                 if "triton_python_backend_stub" in Path(f"/proc/{pid}/cmdline").read_text(errors="replace")]
        result["stub_rss_kib"] = [status_kib(pid) for pid in stubs]
        # onnxruntime may map the data file instead of reading it: then the table's pages count as
        # RssFile (page cache) only once a lookup touches them
        result["stub_maps_data_file"] = [any(line.endswith("/model.onnx.data") for line in
                                             Path(f"/proc/{pid}/maps").read_text().splitlines()) for pid in stubs]
        result["tritonserver_rss_kib"] = status_kib(tritonserver)
        rng = np.random.default_rng(0)
        dense = rng.gamma(1.0, 5.0, size=(64, 13)).astype(np.float32)
        cats = rng.integers(0, 2**31, size=(64, 26)).astype(np.int64)
        latencies = []
        for _ in range(30):
            t0 = time.monotonic()
            prob, served = hook.infer(MODEL, dense, cats)
            latencies.append(time.monotonic() - t0)
        assert served == 1 and prob.shape == (64,) and np.all((prob >= 0) & (prob <= 1)), prob
        result["infer_batch64_p50_ms"] = round(1000 * float(np.median(latencies[5:])), 2)
        print(f"triton: load {result['triton_load_s']}s, stub {result['stub_rss_kib']} "
              f"(data file mapped: {result['stub_maps_data_file']}), "
              f"server {result['tritonserver_rss_kib']}, batch-64 p50 {result['infer_batch64_p50_ms']} ms",
              flush=True)
    finally:
        if server is not None:
            server.stop()
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
