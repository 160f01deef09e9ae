"""The preprocess step in process (one worker, no dask cluster), per extracted file throughout.

Its phases: list the inputs and decode ahead what fits the cache; fit the workflow (from the decoded
files' value counts, or NVTabular's fit) or load it; publish it with its serving tables; transform
each day into its partition, each file through the lookups compiled from the workflow (spot-checked
against NVTabular) or Workflow.transform, the pieces written in the background.
"""
from __future__ import annotations

import contextlib
import glob
import os
import time
from dataclasses import dataclass, field

import numpy as np

from criteo_kernel import storage
from criteo_kernel.artifacts import PREPROCESS_META

from ..hugectr.hugectr_data import FLOAT_COLUMNS as HUGECTR_FLOAT_COLUMNS
from ..hugectr.hugectr_data import write_split_files
from . import dictionary_fit
from .decoding import Decoder, typed_meta
from .outputs import SPLITS, hugectr_meta, load_workflow, serving_tables_published, step_result
from .serving_tables import CompiledWorkflow, SpotCheck
from .workflow import HEAD_ROWS, build_workflow, embedding_sizes, fit_dataset


def run(extracted, output_root, fit_workflow, workflow_url, max_vocab, freq_threshold, engine,
        decoder: Decoder, tmp: str, timings: dict, nvt, hugectr: bool = False) -> dict:
    t0 = time.perf_counter()
    files = _list_inputs(extracted, tmp, decoder)
    rows = _decode_ahead(files, decoder, bool(fit_workflow))
    decode_s = decoder.seconds
    timings["decode_s"] = decode_s
    listing_s = time.perf_counter() - t0 - decode_s

    t0 = time.perf_counter()
    workflow, fit_rows = _fit_or_load(files, fit_workflow, workflow_url, max_vocab, freq_threshold, engine,
                                      decoder, tmp, nvt)
    sizes = embedding_sizes(workflow)
    redecode = decoder.seconds - decode_s
    timings["fit_s"] = time.perf_counter() - t0 - redecode

    # The serving tables, derived by running the workflow's Categorify over every vocabulary value.
    t0 = time.perf_counter()
    tables, cont = serving_tables_published(workflow, fit_workflow, tmp, sizes, sorted(files), fit_rows, max_vocab,
                                            freq_threshold)
    timings["save_s"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    before = decoder.seconds
    transform = _Transform(workflow, CompiledWorkflow(workflow, tables, cont) if engine == "fast" else None,
                           SpotCheck(workflow, sum(len(p) for d in files.values() for p in d.values())),
                           decoder, hugectr)
    outputs, checked = _transform_days(transform, files, output_root, tmp,
                                       {"embedding_sizes": sizes, **hugectr_meta(hugectr, sizes),
                                        "workflow": fit_workflow or workflow_url})
    redecode += decoder.seconds - before
    timings["transform_s"] = time.perf_counter() - t0 - (decoder.seconds - before)
    timings["redecode_s"] = redecode
    timings["list_s"] = listing_s

    result = step_result(output_root, outputs, fit_workflow or workflow_url, bool(fit_workflow), sizes, rows,
                         fit_rows, timings, engine=engine, checked_rows=checked, decodes=decoder.decodes)
    print(f"preprocessed {rows} rows over {len(outputs)} day(s): decode {timings['decode_s']:.2f}s, "
          f"fit {timings['fit_s']:.2f}s, save {timings['save_s']:.2f}s, "
          f"transform {timings['transform_s']:.2f}s ({engine})", flush=True)
    return result


def _list_inputs(extracted: list[str], tmp: str, decoder: Decoder) -> dict[str, dict[str, list[str]]]:
    """day -> split -> the day's extracted files, local (downloaded first from an object store)."""
    files: dict[str, dict[str, list[str]]] = {}
    for url in extracted:
        day = url.rstrip("/").rsplit("/", 1)[-1]
        local = storage.download_dir(storage.resolve(url), os.path.join(tmp, "in", day))
        files[day] = {}
        for split in SPLITS:
            paths = sorted(glob.glob(os.path.join(local, split, "*.parquet")))
            for f in paths:
                decoder.sources[f] = f"{url}/{split}/{os.path.basename(f)}"
            files[day][split] = paths
    return files


def _decode_ahead(files: dict, decoder: Decoder, fitting: bool) -> int:
    """Decode in the order the work needs the files, while they fit in the cache budget; files
    past it are decoded (and validated) when the fit or the transform reaches them. The rows of all."""
    order = [f for d in files.values() for f in d["train"]] if fitting else []
    order += [f for d in files.values() for split in SPLITS for f in d[split] if f not in order]
    for f in order:
        decoder.load(f)
        if f not in decoder.cache:
            break  # over budget: stop decoding ahead
    return sum(_num_rows(f) for f in order)


def _fit_or_load(files: dict, fit_workflow, workflow_url, max_vocab, freq_threshold, engine, decoder: Decoder,
                 tmp: str, nvt):
    """(the workflow, the rows it was fitted on): fitted on the training files (full retrain), or the
    published one loaded (incremental, 0 rows)."""
    if not fit_workflow:
        return load_workflow(workflow_url, tmp, nvt), 0
    workflow = build_workflow(max_vocab, freq_threshold, out_path=tmp)
    fit_files = [f for d in files.values() for f in d["train"]]
    if engine == "fast":
        _fit_from_dictionaries(workflow, fit_files, decoder)
    else:
        workflow.fit(fit_dataset(fit_files, decoder))
    return workflow, sum(_num_rows(f) for f in fit_files)


def _transform_days(transform: _Transform, files: dict, output_root: str, tmp: str, meta: dict) -> tuple[dict, int]:
    """Each day into its own partition, one output file per input file (or per WRITE_ROWS of it);
    nothing is published until every file's sample matched NVTabular. (outputs, rows spot-checked)"""
    outputs = {}
    with contextlib.ExitStack() as published, _Writer() as writer:
        transform.writer = writer
        # Entered last day first, so that the days are published in input order on the way out.
        stagings = {day: published.enter_context(storage.staged_partition(storage.join(output_root, day)))
                    for day in reversed(files)}
        for day, splits in files.items():
            counts = transform.day(day, splits, stagings[day], tmp)
            storage.write_json(storage.join(stagings[day], PREPROCESS_META), {"rows": counts, **meta})
            outputs[day] = {"url": storage.join(output_root, day), "rows": counts}
        checked = transform.check.verify()  # while the last files are being written
        writer.wait()
    return outputs, checked


@dataclass
class _Transform:
    """One run's transform of input files into output pieces: through the compiled lookups (engine
    fast, each file's sample checked) or Workflow.transform (engine nvt)."""
    workflow: object
    compiled: CompiledWorkflow | None
    check: SpotCheck
    decoder: Decoder
    hugectr: bool
    writer: _Writer | None = None
    names: list[str] = field(init=False)

    def __post_init__(self):
        self.names = list(self.workflow.output_schema.column_names)

    def day(self, day: str, splits: dict[str, list[str]], staging: str, tmp: str) -> dict[str, int]:
        """The day's splits into its staging partition (written there, or uploaded from `tmp`); rows per split."""
        counts = {}
        fs, spath = storage.fs_path(staging)
        local_stage = storage.local_path(staging) if storage.is_local(staging) else None
        for split, paths in splits.items():
            out_dir = os.path.join(local_stage, split) if local_stage else os.path.join(tmp, "out", day, split)
            os.makedirs(out_dir, exist_ok=True)
            upload = None if local_stage else (fs, f"{spath}/{split}")
            counts[split] = sum(self.file(k, f, out_dir, upload) for k, f in enumerate(paths))
            if self.hugectr and paths:
                self.writer.wait()
                write_split_files(out_dir)
        return counts

    def file(self, k: int, f: str, out_dir: str, upload) -> int:
        """Input file number `k` of its split -> part_k[.j].parquet; its rows."""
        dec = self.decoder.load(f, keep=False)
        self.decoder.drop(f)
        if self.compiled is not None:
            luts = self.compiled.encode(dec)
            self.check.sample(dec, luts, self.decoder.sources[f])
        else:
            frame = self.workflow.transform(dec.frame())
        pieces = _pieces(dec.rows)
        for j, (start, stop) in enumerate(pieces):
            if self.compiled is not None:  # gathered while the previous pieces are written
                cols = self.compiled.rows(dec, luts, start, stop)
            else:
                cols = {c: frame[c].to_numpy()[start:stop] for c in self.names}
            if self.hugectr:  # HugeCTR's reader copies dense and label columns as float32
                for c in HUGECTR_FLOAT_COLUMNS:
                    cols[c] = cols[c].astype(np.float32)
            name = f"part_{k}.parquet" if len(pieces) == 1 else f"part_{k}.{j}.parquet"
            self.writer.write(cols, self.names, os.path.join(out_dir, name), upload)
        return dec.rows


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
    """The workflow's statistics from the decoded files' value counts (criteo_merlin.preprocess.dictionary_fit)."""
    counts = dictionary_fit.ValueCounts(list(typed_meta().columns))
    for f in files:
        counts.add(decoder.load(f))
    head = decoder.load(files[0]).frame(0, HEAD_ROWS) if files else typed_meta()
    dictionary_fit.fit(workflow, counts, head)


def _num_rows(path: str) -> int:
    import pyarrow.parquet as pq

    return pq.ParquetFile(path).metadata.num_rows
