"""preprocess: the NVTabular workflow over extracted days.

Full retrain (`--fit-workflow OUT`): fit the workflow (criteo_steps.preprocess.workflow) on the window's
training rows, save it with its serving lookup tables, then transform every day.
Incremental (`--workflow URL`): load the saved workflow and only transform.

Outputs, each published atomically:
  WORKFLOW/            nvt/ (Workflow.save), serving/ (lookup tables for Triton), meta.json
  OUTPUT_ROOT/day=N/   train/*.parquet, eval/*.parquet, _preprocess.json

The result declares `partitions` (the day partitions written, in input order) and `workflow`.

    python -m criteo_steps preprocess --extracted .../extracted/day=0 .../extracted/day=1 \
        --output-root .../processed/wf-abc --fit-workflow .../workflows/wf-abc
"""
from __future__ import annotations

import argparse
import contextlib
import glob
import json
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from criteo_kernel import storage
from criteo_kernel.artifacts import (
    CATEGORY_TABLES,
    CONTINUOUS_STATS,
    PREPROCESS_META,
    SERVING_TABLES,
    SUCCESS,
    WORKFLOW_META,
    WORKFLOW_NVT,
)

from ..hugectr.hugectr_data import FLOAT_COLUMNS as HUGECTR_FLOAT_COLUMNS
from ..hugectr.hugectr_data import slot_size_array, write_split_files
from . import dictionary_fit, scale_out
from .decoding import Decoder, typed_meta
from .scale_out import ClusterPlan, dask_cluster, list_parquet, piece_dataset, plan_pieces
from .serving_tables import CompiledWorkflow, SpotCheck, serving_tables
from .workflow import HEAD_ROWS, build_workflow, embedding_sizes, fit_dataset

warnings.filterwarnings("ignore", message=".*dtype mappings did not load.*")

SPLITS = ("train", "eval")


def preprocess(extracted: list[str], output_root: str, fit_workflow: str | None, workflow_url: str | None,
               max_vocab: int = 0, freq_threshold: int = 0, engine: str = "fast",
               cache_mb: int = 4096, workers: str = "auto", part_size: str = "1GB",
               device_memory_limit: str = "0.8", hugectr: bool = False) -> dict:
    """Fit (full retrain) or load (incremental) the workflow, then transform every day.

    `hugectr`: write each split the way HugeCTR's Parquet reader reads it (criteo_steps.hugectr.hugectr_data):
    the continuous features and the label as float32, and `_metadata.json` + `_file_list.txt` beside
    the files. HugeCTR reads no gs://, so the output must be a local or mounted folder.

    `workers` (criteo_steps.preprocess.scale_out): "auto" runs on a dask-cuda cluster over the pod's GPUs when
    it has more than one; N > 1 runs N dask workers (GPUs if the pod has N, else processes), each
    partition about `part_size` of input, GPU workers spilling past `device_memory_limit`. One
    worker without a GPU is the in-process path below.

    Work is per extracted file throughout: decode one file, count its values (or, with engine nvt,
    fit over a lazy dask collection with one partition per file), transform and write one output
    file per input file (per WRITE_ROWS rows of it). `cache_mb` bounds
    the decoded files kept in memory between the fit and the transform (others are decoded again).
    `engine`: "fast" fits from the decoded files' value counts (criteo_steps.preprocess.dictionary_fit:
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
            raise SystemExit(f"preprocess: {url} is not a published extract (no {SUCCESS})")
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
            result = _preprocess(extracted, output_root, fit_workflow, workflow_url, max_vocab,
                                 freq_threshold, engine, decoder, tmp, timings, nvt, hugectr)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    result["timings"]["total_s"] = round(time.perf_counter() - t0, 3)  # from listing to the last publish
    return result


def _preprocess(extracted, output_root, fit_workflow, workflow_url, max_vocab, freq_threshold, engine,
                decoder: Decoder, tmp: str, timings: dict, nvt, hugectr: bool = False) -> dict:
    t0 = time.perf_counter()
    # 1. list the input files; decode the ones the fit needs first (kept within the cache budget)
    files: dict[str, dict[str, list[str]]] = {}
    for url in extracted:
        day = url.rstrip("/").rsplit("/", 1)[-1]
        local = storage.download_dir(url, os.path.join(tmp, "in", day))
        files[day] = {}
        for split in SPLITS:
            paths = sorted(glob.glob(os.path.join(local, split, "*.parquet")))
            for f in paths:
                decoder.sources[f] = f"{url}/{split}/{os.path.basename(f)}"
            files[day][split] = paths
    # Decode in the order the work needs the files, while they fit in the cache budget; files
    # past it are decoded (and validated) when the fit or the transform reaches them.
    order = [f for d in files.values() for f in d["train"]] if fit_workflow else []
    order += [f for d in files.values() for split in SPLITS for f in d[split] if f not in order]
    for f in order:
        decoder.load(f)
        if f not in decoder.cache:
            break  # over budget: stop decoding ahead
    rows = sum(_num_rows(f) for f in order)
    decode_s = decoder.seconds
    timings["decode_s"] = decode_s
    listing_s = time.perf_counter() - t0 - decode_s

    # 2. fit (full retrain) or load (incremental)
    t0 = time.perf_counter()
    if fit_workflow:
        workflow = build_workflow(max_vocab, freq_threshold, out_path=tmp)
        fit_files = [f for d in files.values() for f in d["train"]]
        if engine == "fast":
            _fit_from_dictionaries(workflow, fit_files, decoder)
        else:
            workflow.fit(fit_dataset(fit_files, decoder))
        fit_rows = sum(_num_rows(f) for f in fit_files)
    else:
        workflow, fit_rows = _load_workflow(workflow_url, tmp, nvt), 0
    sizes = embedding_sizes(workflow)
    redecode = decoder.seconds - decode_s
    timings["fit_s"] = time.perf_counter() - t0 - redecode

    # The serving tables, derived by running the workflow's Categorify over every vocabulary value.
    t0 = time.perf_counter()
    tables, cont = serving_tables(workflow)
    if fit_workflow:
        _publish_workflow(workflow, tables, cont, fit_workflow, tmp,
                          {"embedding_sizes": sizes, "fit_days": sorted(files), "fit_rows": fit_rows,
                           "max_vocab": max_vocab, "freq_threshold": freq_threshold})
    timings["save_s"] = time.perf_counter() - t0

    # 3. transform each day into its own partition, one output file per input file (or per
    # WRITE_ROWS of it); nothing is published until every file's sample matched NVTabular.
    t0 = time.perf_counter()
    before = decoder.seconds
    compiled = CompiledWorkflow(workflow, tables, cont) if engine == "fast" else None
    check = SpotCheck(workflow, sum(len(p) for d in files.values() for p in d.values()))
    names = list(workflow.output_schema.column_names)
    outputs = {}
    with contextlib.ExitStack() as published, _Writer() as writer:
        # Entered last day first, so that the days are published in input order on the way out.
        stagings = {day: published.enter_context(storage.staged_partition(storage.join(output_root, day)))
                    for day in reversed(files)}
        for day, splits in files.items():
            staging = stagings[day]
            counts = {}
            fs, spath = storage.fs_path(staging)
            local_stage = storage.local_path(staging) if storage.is_local(staging) else None
            for split, paths in splits.items():
                out_dir = os.path.join(local_stage, split) if local_stage else os.path.join(tmp, "out", day, split)
                os.makedirs(out_dir, exist_ok=True)
                counts[split] = 0
                upload = None if local_stage else (fs, f"{spath}/{split}")
                for k, f in enumerate(paths):
                    dec = decoder.load(f, keep=False)
                    decoder.drop(f)
                    if compiled is not None:
                        luts = compiled.encode(dec)
                        check.sample(dec, luts, decoder.sources[f])
                    else:
                        frame = workflow.transform(dec.frame())
                    pieces = _pieces(dec.rows)
                    for j, (start, stop) in enumerate(pieces):
                        if compiled is not None:  # gathered while the previous pieces are written
                            cols = compiled.rows(dec, luts, start, stop)
                        else:
                            cols = {c: frame[c].to_numpy()[start:stop] for c in names}
                        if hugectr:  # HugeCTR's reader copies dense and label columns as float32
                            for c in HUGECTR_FLOAT_COLUMNS:
                                cols[c] = cols[c].astype(np.float32)
                        name = f"part_{k}.parquet" if len(pieces) == 1 else f"part_{k}.{j}.parquet"
                        writer.write(cols, names, os.path.join(out_dir, name), upload)
                    counts[split] += dec.rows
                    del dec
                if hugectr and paths:
                    writer.wait()
                    write_split_files(out_dir)
            storage.write_json(storage.join(staging, PREPROCESS_META),
                               {"rows": counts, "embedding_sizes": sizes, **_hugectr_meta(hugectr, sizes),
                                "workflow": fit_workflow or workflow_url})
            outputs[day] = {"url": storage.join(output_root, day), "rows": counts}
        checked = check.verify()  # while the last files are being written
        writer.wait()
    redecode += decoder.seconds - before
    timings["transform_s"] = time.perf_counter() - t0 - (decoder.seconds - before)
    timings["redecode_s"] = redecode
    timings["list_s"] = listing_s

    result = _result(output_root, outputs, fit_workflow or workflow_url, bool(fit_workflow), sizes, rows, fit_rows,
                     timings, engine=engine, checked_rows=checked, decodes=decoder.decodes)
    print(f"preprocessed {rows} rows over {len(outputs)} day(s): decode {timings['decode_s']:.2f}s, "
          f"fit {timings['fit_s']:.2f}s, save {timings['save_s']:.2f}s, "
          f"transform {timings['transform_s']:.2f}s ({engine})", flush=True)
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
        pieces[day] = {split: plan_pieces(list_parquet(storage.join(url, split)), part_size)
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
            workflow, fit_rows = _load_workflow(workflow_url, tmp, nvt), 0
        sizes = embedding_sizes(workflow)
        timings["fit_s"] = time.perf_counter() - t0

        t0 = time.perf_counter()
        _serving_tables_published(workflow, fit_workflow, tmp, sizes, sorted(pieces), fit_rows, max_vocab,
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
                                   {"rows": counts, "embedding_sizes": sizes, **_hugectr_meta(hugectr, sizes),
                                    "workflow": fit_workflow or workflow_url})
            outputs[day] = {"url": final, "rows": counts}
        timings["transform_s"] = time.perf_counter() - t0
    # Which worker decoded which piece: evidence that the work was spread over the cluster.
    decoded: dict[str, int] = {}
    for task in stream.data:
        if str(task["key"]).startswith("('decode-extracted"):
            decoded[task["worker"]] = decoded.get(task["worker"], 0) + 1

    result = _result(output_root, outputs, fit_workflow or workflow_url, bool(fit_workflow), sizes, rows, fit_rows,
                     timings, engine="nvt", cluster={"workers": plan.workers, "gpu": plan.gpu, "part_size": part_size,
                                                     "pieces_decoded_per_worker": sorted(decoded.values())})
    print(f"preprocessed {rows} rows over {len(outputs)} day(s) on {plan.describe()}: "
          f"fit {timings['fit_s']:.2f}s, save {timings['save_s']:.2f}s, transform {timings['transform_s']:.2f}s",
          flush=True)
    return result


# Rows per output file at most: an input file's rows are gathered and written in pieces of this
# size, each its own file, two written at a time while the next is gathered (pyarrow's parquet
# writer lets go of the GIL, and writing is most of the transform's time); this also bounds the
# transformed rows held in memory to three pieces.
WRITE_ROWS = 262_144


def _pieces(rows: int) -> list[tuple[int, int]]:
    """[start, stop) of each output file of an input file of `rows` rows, of equal sizes."""
    n = max(1, -(-rows // WRITE_ROWS))
    bounds = [rows * j // n for j in range(n + 1)]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


class _Writer:
    """Writes output pieces as parquet in two background threads, at most two pending (`write`
    waits for the oldest beyond that); `wait` waits for all and re-raises the first error."""

    def __enter__(self):
        from collections import deque
        from concurrent.futures import ThreadPoolExecutor

        self.pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="parquet-write")
        self.pending: deque = deque()
        return self

    def __exit__(self, *exc):
        self.pool.shutdown(wait=True, cancel_futures=True)
        return False

    def write(self, cols: dict, names: list[str], path: str, upload=None) -> None:
        while len(self.pending) >= 2:
            self.pending.popleft().result()
        self.pending.append(self.pool.submit(_write_piece, cols, names, path, upload))

    def wait(self) -> None:
        while self.pending:
            self.pending.popleft().result()


def _write_piece(cols: dict, names: list[str], path: str, upload) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({c: cols[c] for c in names}), path, compression="snappy")
    if upload is not None:  # an object store: the local file goes up, then away
        fs, remote = upload
        fs.makedirs(remote, exist_ok=True)
        fs.put(path, f"{remote}/{os.path.basename(path)}")
        os.remove(path)


def _fit_from_dictionaries(workflow, files: list[str], decoder: Decoder) -> None:
    """The workflow's statistics from the decoded files' value counts (criteo_steps.preprocess.dictionary_fit)."""
    counts = dictionary_fit.ValueCounts(list(typed_meta().columns))
    for f in files:
        counts.add(decoder.load(f))
    head = decoder.load(files[0]).frame(0, HEAD_ROWS) if files else typed_meta()
    dictionary_fit.fit(workflow, counts, head)


def _hugectr_meta(hugectr: bool, sizes: dict) -> dict:
    """What a partition written for HugeCTR declares: the flag, and the reader's slot_size_array
    (the fitted workflow's vocabulary per categorical column), which train_hugectr reads from here."""
    return {"hugectr": hugectr, **({"slot_size_array": slot_size_array(sizes)} if hugectr else {})}


def _keep_only_parquet(url: str) -> None:
    """Remove what NVTabular's writer puts beside the part files (_metadata, _file_list.txt,
    schema.pbtxt, .merlin/): a processed partition holds parquet parts only, whichever path wrote it."""
    fs, path = storage.fs_path(url)
    for entry in fs.ls(path, detail=False):
        if not entry.rstrip("/").endswith(".parquet"):
            fs.rm(entry, recursive=True)


def _load_workflow(url: str, tmp: str, nvt):
    """The published workflow at `url` (incremental runs transform with it)."""
    wdir = storage.download_dir(url, os.path.join(tmp, "workflow"))
    return nvt.Workflow.load(os.path.join(wdir, WORKFLOW_NVT))


def _serving_tables_published(workflow, fit_workflow: str | None, tmp: str, sizes: dict, fit_days: list,
                              fit_rows: int, max_vocab: int, freq_threshold: int) -> tuple[dict, dict]:
    """The workflow's serving tables; on a full retrain, the workflow is also published with them."""
    tables, cont = serving_tables(workflow)
    if fit_workflow:
        _publish_workflow(workflow, tables, cont, fit_workflow, tmp,
                          {"embedding_sizes": sizes, "fit_days": fit_days, "fit_rows": fit_rows,
                           "max_vocab": max_vocab, "freq_threshold": freq_threshold})
    return tables, cont


def _result(output_root: str, outputs: dict, workflow: str, fitted: bool, sizes: dict, rows: int, fit_rows: int,
            timings: dict, **extra) -> dict:
    """The step's result, whichever path computed it; `extra` says how (engine, cluster, ...)."""
    total = timings["fit_s"] + timings["transform_s"]
    return {
        "output_root": output_root, "days": outputs, "partitions": [o["url"] for o in outputs.values()],
        "workflow": workflow, "fitted": fitted, "embedding_sizes": sizes, "rows": rows, "fit_rows": fit_rows,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "rows_per_s_fit_transform": round(rows / total, 1) if total else None,
        **extra,
    }


def _publish_workflow(workflow, tables: dict, cont: dict, url: str, tmp: str, meta: dict) -> None:
    """Save the fitted workflow with its serving tables and meta.json, and publish it at `url`."""
    # Save to local scratch first: save() repoints the Categorify tables at the save folder,
    # and the transforms after this must keep reading them after the staging folder is published.
    local_wf = os.path.join(tmp, "wf-out")
    workflow.save(os.path.join(local_wf, WORKFLOW_NVT))
    os.makedirs(os.path.join(local_wf, SERVING_TABLES), exist_ok=True)
    np.savez(os.path.join(local_wf, SERVING_TABLES, CATEGORY_TABLES), **tables)
    with open(os.path.join(local_wf, SERVING_TABLES, CONTINUOUS_STATS), "w") as fh:
        json.dump(cont, fh, indent=2)
    with open(os.path.join(local_wf, WORKFLOW_META), "w") as fh:
        json.dump(meta, fh, indent=2)
    with storage.staged_partition(url) as staging:
        storage.upload_dir(local_wf, staging)


def _num_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_steps preprocess", description=__doc__,
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
