"""preprocess: the NVTabular workflow over extracted days.

Full retrain (`--fit-workflow OUT`): fit the workflow (criteo_merlin.preprocess.workflow) on the window's
training rows, save it with its serving lookup tables, then transform every day.
Incremental (`--workflow URL`): load the saved workflow and only transform.

Outputs, each published atomically:
  WORKFLOW/            nvt/ (Workflow.save), serving/ (lookup tables for Triton), meta.json
  OUTPUT_ROOT/day=N/   train/*.parquet, eval/*.parquet, _preprocess.json

The result declares `partitions` (the day partitions written, in input order) and `workflow`.

    python -m criteo_merlin preprocess --extracted .../extracted/day=0 .../extracted/day=1 \
        --output-root .../processed/wf-abc --fit-workflow .../workflows/wf-abc
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
import warnings

from criteo_kernel import storage
from criteo_kernel.artifacts import COMMIT, PREPROCESS_META

from ..hugectr.hugectr_data import FLOAT_COLUMNS as HUGECTR_FLOAT_COLUMNS
from ..hugectr.hugectr_data import write_split_files
from . import in_process, scale_out
from .decoding import Decoder
from .outputs import SPLITS, hugectr_meta, load_workflow, serving_tables_published, step_result
from .scale_out import ClusterPlan, dask_cluster, list_parquet, piece_dataset, plan_pieces
from .workflow import build_workflow, embedding_sizes

warnings.filterwarnings("ignore", message=".*dtype mappings did not load.*")


def preprocess(extracted: list[str], output_root: str, fit_workflow: str | None, workflow_url: str | None,
               max_vocab: int = 0, freq_threshold: int = 0, engine: str = "fast",
               cache_mb: int = 4096, workers: str = "auto", part_size: str = "1GB",
               device_memory_limit: str = "0.8", hugectr: bool = False) -> dict:
    """Fit (full retrain) or load (incremental) the workflow, then transform every day.

    `hugectr`: write each split the way HugeCTR's Parquet reader reads it (criteo_merlin.hugectr.hugectr_data):
    the continuous features and the label as float32, and `_metadata.json` + `_file_list.txt` beside
    the files. HugeCTR reads no gs://, so the output must be a local or mounted folder.

    `workers` (criteo_merlin.preprocess.scale_out): "auto" runs on a dask-cuda cluster over the pod's GPUs when
    it has more than one; N > 1 runs N dask workers (GPUs if the pod has N, else processes), each
    partition about `part_size` of input, GPU workers spilling past `device_memory_limit`. One
    worker without a GPU is the in-process path (in_process).

    Work is per extracted file throughout: decode one file, count its values (or, with engine nvt,
    fit over a lazy dask collection with one partition per file), transform and write one output
    file per input file (per WRITE_ROWS rows of it). `cache_mb` bounds
    the decoded files kept in memory between the fit and the transform (others are decoded again).
    `engine`: "fast" fits from the decoded files' value counts (criteo_merlin.preprocess.dictionary_fit:
    NVTabular's own vocabulary writer and moments, no pass over the rows) and transforms with
    lookups compiled from the fitted workflow, spot-checked against Workflow.transform on rows of
    every file before anything is published; "nvt" runs Workflow.fit and Workflow.transform on
    each file's pandas frame (the reference).
    """
    import dask
    import nvtabular as nvt

    if bool(fit_workflow) == bool(workflow_url):
        raise SystemExit("preprocess: give exactly one of --fit-workflow (full retrain) or --workflow (incremental)")
    if engine not in ("fast", "nvt"):
        raise SystemExit(f"preprocess: unknown --engine {engine!r} (fast or nvt)")
    if hugectr and not storage.is_local(output_root):
        raise SystemExit(f"preprocess: --hugectr writes for HugeCTR, which reads no gs://: {output_root} must be "
                         "a local or mounted folder (criteo_pod_data=gcsfuse or pvc)")
    plan = ClusterPlan.choose(workers)
    limit, part = scale_out.device_memory_limit(device_memory_limit), scale_out.part_bytes(part_size)
    for url in extracted:
        if not storage.is_published(url):
            raise SystemExit(f"preprocess: {url} is not a published extract (no {COMMIT})")
    print(f"preprocess: {plan.describe()}", flush=True)
    timings: dict[str, float] = {}
    tmp = tempfile.mkdtemp(prefix="preprocess-")
    if plan.distributed:
        try:
            result = _preprocess_distributed(extracted, output_root, fit_workflow, workflow_url, max_vocab,
                                             freq_threshold, plan, part, limit, tmp, timings, nvt, hugectr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return result
    decoder = Decoder(cache_mb << 20)
    t0 = time.perf_counter()
    # Two cores and pandas-sized partitions: threads only add contention; the fit's statistics
    # phase is synchronous in merlin anyway.
    with dask.config.set(scheduler="synchronous"):
        try:
            result = in_process.run(extracted, output_root, fit_workflow, workflow_url, max_vocab,
                                 freq_threshold, engine, decoder, tmp, timings, nvt, hugectr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    result["timings"]["total_s"] = round(time.perf_counter() - t0, 3)  # from listing to the last publish
    return result


def _preprocess_distributed(extracted, output_root, fit_workflow, workflow_url, max_vocab, freq_threshold,
                            plan: ClusterPlan, part_size: int, memory_limit, tmp: str, timings: dict, nvt,
                            hugectr: bool = False) -> dict:
    """The same outputs as `_preprocess`, computed by NVTabular on a dask cluster (scale_out).

    Input files are read in place, in pieces of about `part_size`; each split of each day is
    transformed by the workers and written by them straight into the day's staging partition.
    """
    from dask.distributed import get_task_stream

    t0 = time.perf_counter()
    pieces: dict[str, dict[str, list]] = {}
    for url in extracted:
        day = url.rstrip("/").rsplit("/", 1)[-1]
        pieces[day] = {split: plan_pieces(list_parquet(storage.join(storage.resolve(url), split)), part_size)
                       for split in SPLITS}
    rows = sum(p.rows for splits in pieces.values() for ps in splits.values() for p in ps)
    timings["list_s"] = time.perf_counter() - t0

    with dask_cluster(plan, memory_limit, tmp) as client, get_task_stream(client) as stream:
        t0 = time.perf_counter()
        if fit_workflow:
            workflow = build_workflow(max_vocab, freq_threshold, out_path=tmp)
            fit_pieces = [p for splits in pieces.values() for p in splits["train"]]
            workflow.fit(piece_dataset(fit_pieces, plan.gpu))
            fit_rows = sum(p.rows for p in fit_pieces)
        else:
            workflow, fit_rows = load_workflow(workflow_url, tmp, nvt), 0
        sizes = embedding_sizes(workflow)
        timings["fit_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        serving_tables_published(workflow, fit_workflow, tmp, sizes, sorted(pieces), fit_rows, max_vocab,
                                 freq_threshold)
        timings["save_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        outputs = {}
        for day, splits in pieces.items():
            final = storage.join(output_root, day)
            with storage.staged_partition(final) as staging:
                counts = {}
                for split, ps in splits.items():
                    out = storage.join(staging, split)
                    counts[split] = sum(p.rows for p in ps)
                    if not ps:
                        continue
                    # One output file per piece, in input order, written by the workers.
                    transformed = workflow.transform(piece_dataset(ps, plan.gpu))
                    if hugectr:  # HugeCTR's reader copies dense and label columns as float32
                        transformed = nvt.Dataset(transformed.to_ddf().astype(
                            {c: "float32" for c in HUGECTR_FLOAT_COLUMNS}), cpu=not plan.gpu)
                    transformed.to_parquet(storage.local_path(out) if storage.is_local(out) else out,
                                           output_files=len(ps), shuffle=None)
                    _keep_only_parquet(out)
                    if hugectr:
                        write_split_files(storage.local_path(out))
                storage.write_json(storage.join(staging, PREPROCESS_META),
                                   {"rows": counts, "embedding_sizes": sizes, **hugectr_meta(hugectr, sizes),
                                    "workflow": fit_workflow or workflow_url})
            outputs[day] = {"url": final, "rows": counts}
        timings["transform_s"] = time.perf_counter() - t0
    # Which worker decoded which piece: evidence that the work was spread over the cluster.
    decoded: dict[str, int] = {}
    for task in stream.data:
        if str(task["key"]).startswith("('decode-extracted"):
            decoded[task["worker"]] = decoded.get(task["worker"], 0) + 1

    result = step_result(output_root, outputs, fit_workflow or workflow_url, bool(fit_workflow), sizes, rows,
                         fit_rows, timings, engine="nvt",
                         cluster={"workers": plan.workers, "gpu": plan.gpu, "part_size": part_size,
                                  "pieces_decoded_per_worker": sorted(decoded.values())})
    print(f"preprocessed {rows} rows over {len(outputs)} day(s) on {plan.describe()}: "
          f"fit {timings['fit_s']:.2f}s, save {timings['save_s']:.2f}s, transform {timings['transform_s']:.2f}s",
          flush=True)
    return result


def _keep_only_parquet(url: str) -> None:
    """Remove what NVTabular's writer puts beside the part files (_metadata, _file_list.txt,
    schema.pbtxt, .merlin/): a processed partition holds parquet parts only, whichever path wrote it."""
    fs, path = storage.fs_path(url)
    for entry in fs.ls(path, detail=False):
        if not entry.rstrip("/").endswith(".parquet"):
            fs.rm(entry, recursive=True)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_merlin preprocess", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--extracted", nargs="+", required=True, help="published extract partitions (day=N)")
    p.add_argument("--output-root", required=True, help="processed/<workflow id>; one day=N partition per input")
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--fit-workflow", help="fit a new workflow on the inputs and publish it here (full retrain)")
    g.add_argument("--workflow", help="published workflow to transform with (incremental)")
    p.add_argument("--max-vocab", type=int, default=None,
                   help="with --fit-workflow (required there): Categorify max_size per column, 0 = unbounded")
    p.add_argument("--freq-threshold", type=int, default=0, help="Categorify frequency threshold")
    p.add_argument("--engine", choices=("fast", "nvt"), default="fast",
                   help="fast: fit from the decoded value counts, transform with lookups compiled from the fitted "
                        "workflow, spot-checked against Workflow.transform on rows of every file; "
                        "nvt: Workflow.fit and Workflow.transform on every file")
    p.add_argument("--cache-mb", type=int, default=4096,
                   help="decoded files kept in memory between fit and transform (others are re-decoded)")
    p.add_argument("--workers", default="auto",
                   help="auto: a dask-cuda LocalCUDACluster over the pod's GPUs when it has more than one, "
                        "else in process; N: N dask workers (GPUs when the pod has N, else CPU processes)")
    p.add_argument("--part-size", default="1GB",
                   help="with dask workers: input text per dask partition (whole parquet row groups)")
    p.add_argument("--device-memory-limit", default="0.8",
                   help="with GPU workers: device memory (fraction of each GPU, or a size) before spilling to host")
    p.add_argument("--hugectr", action="store_true",
                   help="write for HugeCTR's Parquet reader too: I1..I13 and label as float32, _metadata.json and "
                        "_file_list.txt in each split (the output must be a local or mounted folder)")
    a = p.parse_args(argv)
    if a.fit_workflow and a.max_vocab is None:
        p.error("--fit-workflow needs --max-vocab (0 keeps every value seen)")
    if a.workflow and a.max_vocab is not None:
        p.error("--max-vocab belongs to fitting (--fit-workflow): a loaded workflow keeps its vocabularies")
    return preprocess(a.extracted, a.output_root, a.fit_workflow, a.workflow, a.max_vocab or 0,
                      a.freq_threshold, a.engine, a.cache_mb, a.workers, a.part_size, a.device_memory_limit,
                      a.hugectr)
