"""preprocess: NVTabular workflow over extracted days.

Full retrain (`--fit-workflow OUT`): fit Categorify on C1..C26 and FillMissing -> Clip(0) -> LogOp ->
Normalize on I1..I13 over the window's training rows, save the workflow, then transform every day.
Incremental (`--workflow URL`): load the saved workflow and only transform.

The hex categoricals are decoded to int64 before the workflow (missing -> -1, its own category):
Categorify over integers is ~3x faster than over Python strings (shared/DESIGN.md).

Outputs, each published atomically:
  WORKFLOW/            nvt.Workflow.save() + serving/ (lookup tables for Triton) + meta.json
  OUTPUT_ROOT/day=N/   train/*.parquet, eval/*.parquet, _preprocess.json

    python -m criteo_steps preprocess --extracted .../extracted/day=0 .../extracted/day=1 \
        --output-root .../processed/wf-abc --fit-workflow .../workflows/wf-abc
"""
from __future__ import annotations

import argparse
import glob
import json
import os
import shutil
import tempfile
import time
import warnings

import numpy as np

from . import storage
from .schema import CAT_COLUMNS, INT_COLUMNS, LABEL, DecodeError, decode_hex_column, parse_int_column

warnings.filterwarnings("ignore", message=".*dtype mappings did not load.*")

COLUMNS = [LABEL, *INT_COLUMNS, *CAT_COLUMNS]
# Rows of the first file put into a partition of their own when fitting: merlin samples the
# first partition's head (through the whole graph) to learn output dtypes, so a small first
# partition makes that sample cheap instead of a second full pass over a whole file.
_HEAD_ROWS = 1024
# Rows per file that are re-checked through NVTabular's own Workflow.transform (fast path only).
_CHECK_ROWS = 1024


# ----------------------------------------------------------------------------------------------
# 1. decode: all-text extracted parquet -> typed columns
# ----------------------------------------------------------------------------------------------
class DecodedFile:
    """One extracted file, decoded column by column.

    Every column is kept dictionary-encoded, exactly as the extract writes it to parquet: a list
    of (decoded dictionary values, int32 row indices) per Arrow chunk. Decoding and encoding then
    run over the (small) dictionaries, and rows only cost an `np.take`.
    """

    def __init__(self, source: str, rows: int, cols: dict):
        self.source, self.rows, self.cols = source, rows, cols

    @property
    def nbytes(self) -> int:
        return sum(d.nbytes + i.nbytes for parts in self.cols.values() for d, i in parts)

    def values(self, column: str, lut: dict | None = None, start: int = 0, stop: int | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
        """Row values [start, stop) of `column`; with `lut`, `lut[id(dictionary)]` replaces the dictionary."""
        stop = self.rows if stop is None else min(stop, self.rows)
        parts = self.cols[column]
        if out is None:
            first = parts[0][0] if lut is None else lut[id(parts[0][0])]
            out = np.empty(max(stop - start, 0), dtype=first.dtype)
        pos = 0  # row number where the current chunk starts
        for d, i in parts:
            lo, hi = max(start, pos), min(stop, pos + len(i))
            if lo < hi:
                np.take(d if lut is None else lut[id(d)], i[lo - pos:hi - pos], out=out[lo - start:hi - start])
            pos += len(i)
        return out

    def frame(self, start: int = 0, stop: int | None = None):
        """Typed pandas frame (label int8, I* float64 with NaN, C* int64 with -1) of rows [start, stop)."""
        stop = self.rows if stop is None else min(stop, self.rows)
        return _frame({c: self.values(c, start=start, stop=stop) for c in COLUMNS})

    def take(self, rows: np.ndarray):
        """Typed pandas frame of the given (sorted) row numbers."""
        import pandas as pd

        cols = {}
        for c in COLUMNS:
            parts, start = [], 0
            for d, i in self.cols[c]:
                sel = rows[(rows >= start) & (rows < start + len(i))] - start
                parts.append(d[i[sel]])
                start += len(i)
            cols[c] = np.concatenate(parts) if parts else np.empty(0)
        return _frame(cols)


def _frame(cols: dict):
    """pandas frame over the given columns, built as one 2-D block per dtype.

    Columns of one dtype are copied once into a C-ordered (columns, rows) array that pandas adopts
    as its block, instead of being copied again when pandas consolidates a dict of arrays.
    """
    import pandas as pd

    groups: dict = {}
    for c, v in cols.items():
        groups.setdefault(v.dtype, []).append(c)
    parts = []
    for dtype, names in groups.items():
        block = np.empty((len(names), len(cols[names[0]])), dtype=dtype)
        for k, c in enumerate(names):
            block[k] = cols[c]
        parts.append(pd.DataFrame(block.T, columns=names, copy=False))
    out = parts[0] if len(parts) == 1 else pd.concat(parts, axis=1, copy=False)
    return out if list(out.columns) == list(cols) else out[list(cols)]


def _decode_dictionary(column: str, values, source: str) -> np.ndarray:
    """Decode the distinct text values of one column (validation included)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if column == LABEL:
        ok = pc.is_in(values, value_set=pa.array(["0", "1"]))
        if values.null_count or not pc.all(ok).as_py():
            raise DecodeError(f"{source}: column label: values must be 0 or 1")
        return np.asarray(pc.equal(values, "1").fill_null(False)).astype(np.int8)
    if column in INT_COLUMNS:
        return parse_int_column(values, column, source)
    return decode_hex_column(values, column, source)


def _missing_value(column: str):
    return -1 if column in CAT_COLUMNS else np.nan


def decode_file(parquet_path: str, source: str) -> DecodedFile:
    """All-text extracted parquet -> DecodedFile (label int8, I* float64 NaN, C* int64 -1).

    Reads every column dictionary-encoded (the extract's parquet already is), so each distinct
    text value is parsed once per row group instead of once per row.
    """
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    table = pq.read_table(parquet_path, columns=COLUMNS, read_dictionary=COLUMNS)
    cols: dict[str, list] = {}
    for c in COLUMNS:
        parts = []
        memo: dict[int, np.ndarray] = {}  # chunks of one row group share their dictionary
        try:
            for chunk in table.column(c).chunks:
                if not pa.types.is_dictionary(chunk.type):
                    chunk = pc.dictionary_encode(chunk)
                dictionary, indices = chunk.dictionary, chunk.indices
                key = dictionary.buffers()[-1].address if dictionary.buffers()[-1] is not None else id(dictionary)
                decoded = memo.get((key, len(dictionary)))
                if decoded is None:
                    decoded = _decode_dictionary(c, dictionary, source)
                    memo[(key, len(dictionary))] = decoded
                if indices.null_count:
                    if c == LABEL:
                        raise DecodeError(f"{source}: column label: values must be 0 or 1")
                    decoded = np.append(decoded, _missing_value(c)).astype(decoded.dtype)
                    indices = pc.fill_null(indices, len(decoded) - 1)
                parts.append((decoded, np.asarray(indices.to_numpy(zero_copy_only=False), dtype=np.int32)))
        except DecodeError:
            # Re-decode the whole column row by row for the precise message (first bad row).
            _decode_plain(pq.read_table(parquet_path, columns=[c]).column(c), c, source)
            raise
        cols[c] = parts
    return DecodedFile(source, table.num_rows, cols)


def _decode_plain(arr, column: str, source: str) -> np.ndarray:
    if column == LABEL:
        import pyarrow as pa
        import pyarrow.compute as pc

        bad = pc.invert(pc.is_in(arr, value_set=pa.array(["0", "1"])))
        if pc.any(bad).as_py():
            raise DecodeError(f"{source}: column label: values must be 0 or 1")
        return np.asarray(pc.equal(arr, "1")).astype(np.int8)
    if column in INT_COLUMNS:
        return parse_int_column(arr, column, source)
    return decode_hex_column(arr, column, source)


def decode_extracted(parquet_path: str, source: str):
    """All-text extracted parquet -> typed pandas frame: label int8, I* float64 (NaN), C* int64 (-1)."""
    return decode_file(parquet_path, source).frame()


class _Decoder:
    """Decodes extracted files on demand, keeping decoded files in memory up to a budget.

    Files past the budget are decoded again when the fit or the transform needs them, so a day of
    any size is processed one file at a time. Time spent decoding is accounted in `seconds`.
    """

    def __init__(self, budget_bytes: int):
        self.budget, self.used = budget_bytes, 0
        self.cache: dict[str, DecodedFile] = {}
        self.sources: dict[str, str] = {}
        self.seconds, self.decodes = 0.0, 0

    def load(self, path: str, keep: bool = True) -> DecodedFile:
        hit = self.cache.get(path)
        if hit is not None:
            return hit
        t0 = time.perf_counter()
        dec = decode_file(path, self.sources.get(path, path))
        self.seconds += time.perf_counter() - t0
        self.decodes += 1
        if keep and self.used + dec.nbytes <= self.budget:
            self.cache[path] = dec
            self.used += dec.nbytes
        return dec

    def drop(self, path: str) -> None:
        dec = self.cache.pop(path, None)
        if dec is not None:
            self.used -= dec.nbytes


class _FramePiece:
    """dask `from_map` callable: (path, start, stop) -> typed pandas frame of those rows."""

    def __init__(self, decoder: _Decoder):
        self.decoder = decoder

    def __call__(self, piece):
        path, start, stop = piece
        return self.decoder.load(path).frame(start, stop)


def _typed_meta():
    import pandas as pd

    cols = {LABEL: np.empty(0, np.int8)}
    cols.update({c: np.empty(0, np.float64) for c in INT_COLUMNS})
    cols.update({c: np.empty(0, np.int64) for c in CAT_COLUMNS})
    return pd.DataFrame(cols)


def _fit_dataset(files: list[str], decoder: _Decoder):
    """A lazy nvt.Dataset over the decoded training files: one partition per file."""
    import dask.dataframe as dd
    import nvtabular as nvt
    import pyarrow.parquet as pq
    from dask.base import tokenize

    pieces = []
    for k, f in enumerate(files):
        n = pq.ParquetFile(f).metadata.num_rows
        if k == 0 and n > 2 * _HEAD_ROWS:
            pieces += [(f, 0, _HEAD_ROWS), (f, _HEAD_ROWS, n)]
        else:
            pieces.append((f, 0, n))
    ddf = dd.from_map(_FramePiece(decoder), pieces, meta=_typed_meta(), enforce_metadata=False,
                      label="decode-extracted", token=tokenize(pieces, [os.stat(f).st_mtime for f in files]))
    return nvt.Dataset(ddf, cpu=True)


def build_workflow(max_vocab: int = 0, freq_threshold: int = 0, out_path: str | None = None):
    import nvtabular as nvt
    from nvtabular import ops

    # out_path: Categorify writes its vocabularies to ./categories by default, i.e. wherever the
    # process happens to run; keep them in the step's scratch folder instead.
    cats = CAT_COLUMNS >> ops.Categorify(freq_threshold=freq_threshold, max_size=max_vocab, out_path=out_path)
    conts = INT_COLUMNS >> ops.FillMissing(fill_val=0) >> ops.Clip(min_value=0) >> ops.LogOp() >> ops.Normalize()
    return nvt.Workflow(cats + conts + [LABEL])


def serving_tables(workflow, workdir: str) -> tuple[dict, dict]:
    """Derive the exact lookup tables Triton needs, by running the fitted workflow itself.

    Category ids come from transforming each column's vocabulary (plus a missing and an unseen
    value) through the workflow, so the serving tables cannot drift from NVTabular's encoding.
    """
    import pandas as pd
    from nvtabular import ops

    cat_op = next(n.op for n in _nodes(workflow.output_node) if isinstance(n.op, ops.Categorify))
    norm_op = next(n.op for n in _nodes(workflow.output_node) if isinstance(n.op, ops.Normalize))
    vocab = {}
    for c in CAT_COLUMNS:
        uniq = pd.read_parquet(cat_op.categories[c], columns=[c])[c].dropna().astype(np.int64).to_numpy()
        vocab[c] = np.unique(np.concatenate([uniq, np.array([-1, 2**40], dtype=np.int64)]))
    longest = max(len(v) for v in vocab.values())
    frame = {c: np.resize(vocab[c], longest) for c in CAT_COLUMNS}
    for c in INT_COLUMNS:
        frame[c] = np.zeros(longest)
    frame[LABEL] = np.zeros(longest, dtype=np.int8)
    # Workflow.transform on a pandas frame runs the same operators (LocalExecutor) without dask.
    out = workflow.transform(pd.DataFrame(frame))
    tables, oov = {}, {}
    for c in CAT_COLUMNS:
        keys = vocab[c]
        ids = out[c].to_numpy()[: len(keys)].astype(np.int64)
        oov[c] = int(ids[keys == 2**40][0])
        keep = keys != 2**40
        tables[f"{c}_keys"], tables[f"{c}_ids"] = keys[keep], ids[keep]
    cont = {
        "fill_value": 0.0, "clip_min": 0.0, "log": "log1p",
        "mean": {c: float(norm_op.means[c]) for c in INT_COLUMNS},
        "std": {c: float(norm_op.stds[c]) for c in INT_COLUMNS},
        "oov_ids": oov,
    }
    return tables, cont


class CompiledWorkflow:
    """The fitted workflow as per-column lookups, for transforming decoded files fast.

    Built only from `serving_tables` (which runs the workflow itself over every vocabulary value,
    missing and unseen included) and from the Normalize statistics, replaying NVTabular's own
    arithmetic and dtypes (FillMissing -> Clip -> LogOp in float32 -> Normalize -> float64).
    Every file's transform is also spot-checked against `workflow.transform` (see _check_rows).
    """

    def __init__(self, workflow, tables: dict, cont: dict):
        import pandas as pd
        from nvtabular import ops

        self.workflow = workflow
        norm_op = next(n.op for n in _nodes(workflow.output_node) if isinstance(n.op, ops.Normalize))
        log_op = next(n.op for n in _nodes(workflow.output_node) if isinstance(n.op, ops.LogOp))
        self.log_dtype = np.dtype(log_op.output_dtype)
        self.out_dtype = np.dtype(norm_op.output_dtype)
        self.means, self.stds = dict(norm_op.means), dict(norm_op.stds)
        self.fill = float(cont["fill_value"])
        self.clip_min = float(cont["clip_min"])
        self.index = {c: pd.Index(tables[f"{c}_keys"]) for c in CAT_COLUMNS}
        self.ids = {c: np.asarray(tables[f"{c}_ids"], dtype=np.int64) for c in CAT_COLUMNS}
        self.oov = {c: np.int64(cont["oov_ids"][c]) for c in CAT_COLUMNS}
        out = workflow.output_schema
        self.cat_dtype = {c: np.dtype(out[c].dtype.to_numpy) for c in CAT_COLUMNS}

    def encode_cat(self, column: str, values: np.ndarray) -> np.ndarray:
        pos = self.index[column].get_indexer(values)
        ids = np.where(pos >= 0, self.ids[column][pos], self.oov[column])
        return ids.astype(self.cat_dtype[column], copy=False)

    def encode_cont(self, column: str, values: np.ndarray) -> np.ndarray:
        # Same operations, in the same dtypes, as the NVTabular ops on a pandas frame.
        v = np.where(np.isnan(values), self.fill, values)
        v[v < self.clip_min] = self.clip_min
        v = np.log(v.astype(self.log_dtype) + 1)
        mean, std = self.means[column], self.stds[column]
        v = (v - mean) / std if std > 0 else v - mean
        return v.astype(self.out_dtype)

    def transform_file(self, dec: DecodedFile) -> dict[str, np.ndarray]:
        """Encode every column's dictionary, then gather rows: output columns as numpy arrays."""
        out = {}
        for c in CAT_COLUMNS:
            lut = {id(d): self.encode_cat(c, d) for d, _ in dec.cols[c]}
            out[c] = dec.values(c, lut)
        for c in INT_COLUMNS:
            lut = {id(d): self.encode_cont(c, d) for d, _ in dec.cols[c]}
            out[c] = dec.values(c, lut)
        out[LABEL] = dec.values(LABEL)
        return out


def _check_rows(workflow, dec: DecodedFile, out: dict, source: str) -> int:
    """Re-run NVTabular's Workflow.transform on a sample of rows; the fast path must match exactly."""
    n = dec.rows
    if n == 0:
        return 0
    rows = np.unique(np.concatenate([np.arange(min(n, _CHECK_ROWS // 2)),
                                     np.linspace(0, n - 1, min(n, _CHECK_ROWS // 2)).astype(np.int64)]))
    ref = workflow.transform(dec.take(rows))
    for c in [*CAT_COLUMNS, *INT_COLUMNS, LABEL]:
        got, want = out[c][rows], ref[c].to_numpy()
        if got.dtype != want.dtype or not np.array_equal(got, want, equal_nan=got.dtype.kind == "f"):
            raise RuntimeError(f"{source}: column {c}: fast transform differs from Workflow.transform")
    return len(rows)


def _write_parquet(columns: dict[str, np.ndarray], path: str, names: list[str]) -> int:
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table({c: columns[c] for c in names})
    pq.write_table(table, path, compression="snappy")
    return table.num_rows


def _nodes(node):
    seen, stack = [], [node]
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.append(n)
        stack.extend(n.parents_with_dependencies)
    return seen


def embedding_sizes(workflow) -> dict[str, int]:
    from nvtabular import ops

    sizes = ops.get_embedding_sizes(workflow)
    return {c: int(sizes[c][0]) for c in CAT_COLUMNS}


def preprocess(extracted: list[str], output_root: str, fit_workflow: str | None, workflow_url: str | None,
               max_vocab: int = 0, freq_threshold: int = 0, engine: str = "fast",
               cache_mb: int = 4096) -> dict:
    """Fit (full retrain) or load (incremental) the workflow, then transform every day.

    Work is per extracted file throughout: decode one file, fit over a lazy dask collection with
    one partition per file, transform and write one output file per input file. `cache_mb` bounds
    the decoded files kept in memory between the fit and the transform (others are decoded again).
    `engine`: "fast" (compiled lookups from the fitted workflow, spot-checked against
    Workflow.transform on every file) or "nvt" (Workflow.transform on each file's pandas frame).
    """
    import dask
    import nvtabular as nvt

    if bool(fit_workflow) == bool(workflow_url):
        raise SystemExit("preprocess: give exactly one of --fit-workflow (full retrain) or --workflow (incremental)")
    if engine not in ("fast", "nvt"):
        raise SystemExit(f"preprocess: unknown --engine {engine!r} (fast or nvt)")
    for url in extracted:
        if not storage.is_published(url):
            raise SystemExit(f"preprocess: {url} is not a published extract (no {storage.SUCCESS})")
    timings: dict[str, float] = {}
    tmp = tempfile.mkdtemp(prefix="preprocess-")
    decoder = _Decoder(cache_mb << 20)
    # Two cores and pandas-sized partitions: threads only add contention; the fit's statistics
    # phase is synchronous in merlin anyway.
    with dask.config.set(scheduler="synchronous"):
        try:
            result = _preprocess(extracted, output_root, fit_workflow, workflow_url, max_vocab,
                                 freq_threshold, engine, decoder, tmp, timings, nvt)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return result


def _preprocess(extracted, output_root, fit_workflow, workflow_url, max_vocab, freq_threshold, engine,
                decoder: _Decoder, tmp: str, timings: dict, nvt) -> dict:
    t0 = time.perf_counter()
    # 1. list the input files; decode the ones the fit needs first (kept within the cache budget)
    files: dict[str, dict[str, list[str]]] = {}
    for url in extracted:
        day = url.rstrip("/").rsplit("/", 1)[-1]
        local = storage.download_dir(url, os.path.join(tmp, "in", day))
        files[day] = {}
        for split in ("train", "eval"):
            paths = sorted(glob.glob(os.path.join(local, split, "*.parquet")))
            for f in paths:
                decoder.sources[f] = f"{url}/{split}/{os.path.basename(f)}"
            files[day][split] = paths
    # Decode in the order the work needs the files, while they fit in the cache budget; files
    # past it are decoded (and validated) when the fit or the transform reaches them.
    order = [f for d in files.values() for f in d["train"]] if fit_workflow else []
    order += [f for d in files.values() for split in ("train", "eval") for f in d[split] if f not in order]
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
        workflow.fit(_fit_dataset(fit_files, decoder))
        fit_rows = sum(_num_rows(f) for f in fit_files)
    else:
        wdir = storage.download_dir(workflow_url, os.path.join(tmp, "workflow"))
        workflow = nvt.Workflow.load(os.path.join(wdir, "nvt"))
        fit_rows = 0
    sizes = embedding_sizes(workflow)
    redecode = decoder.seconds - decode_s
    timings["fit_s"] = time.perf_counter() - t0 - redecode

    t0 = time.perf_counter()
    tables, cont = serving_tables(workflow, tmp)
    if fit_workflow:
        # Save to local scratch first: save() repoints the Categorify tables at the save folder,
        # and the transforms below must keep reading them after the staging folder is published.
        local_wf = os.path.join(tmp, "wf-out")
        workflow.save(os.path.join(local_wf, "nvt"))
        os.makedirs(os.path.join(local_wf, "serving"), exist_ok=True)
        np.savez(os.path.join(local_wf, "serving", "categories.npz"), **tables)
        with open(os.path.join(local_wf, "serving", "continuous.json"), "w") as fh:
            json.dump(cont, fh, indent=2)
        meta = {"embedding_sizes": sizes, "fit_days": sorted(files), "fit_rows": fit_rows,
                "max_vocab": max_vocab, "freq_threshold": freq_threshold}
        with open(os.path.join(local_wf, "meta.json"), "w") as fh:
            json.dump(meta, fh, indent=2)
        with storage.staged_partition(fit_workflow) as staging:
            storage.upload_dir(local_wf, staging)
    timings["save_s"] = time.perf_counter() - t0

    # 3. transform each day into its own partition, one output file per input file
    t0 = time.perf_counter()
    before = decoder.seconds
    compiled = CompiledWorkflow(workflow, tables, cont) if engine == "fast" else None
    names = list(workflow.output_schema.column_names)
    outputs, checked = {}, 0
    for day, splits in files.items():
        final = storage.join(output_root, day)
        with storage.staged_partition(final) as staging:
            counts = {}
            fs, spath = storage.fs_path(staging)
            local_stage = storage.local_path(staging) if storage.is_local(staging) else None
            for split, paths in splits.items():
                out_dir = os.path.join(local_stage, split) if local_stage else os.path.join(tmp, "out", day, split)
                os.makedirs(out_dir, exist_ok=True)
                counts[split] = 0
                for k, f in enumerate(paths):
                    dec = decoder.load(f, keep=False)
                    decoder.drop(f)
                    if compiled is not None:
                        cols = compiled.transform_file(dec)
                        checked += _check_rows(workflow, dec, cols, decoder.sources[f])
                    else:
                        frame = workflow.transform(dec.frame())
                        cols = {c: frame[c].to_numpy() for c in names}
                    dst = os.path.join(out_dir, f"part_{k}.parquet")
                    counts[split] += _write_parquet(cols, dst, names)
                    del dec, cols
                    if not local_stage:
                        fs.makedirs(f"{spath}/{split}", exist_ok=True)
                        fs.put(dst, f"{spath}/{split}/{os.path.basename(dst)}")
                        os.remove(dst)
            storage.write_json(storage.join(staging, "_preprocess.json"),
                               {"rows": counts, "embedding_sizes": sizes,
                                "workflow": fit_workflow or workflow_url})
        outputs[day] = {"url": final, "rows": counts}
    redecode += decoder.seconds - before
    timings["transform_s"] = time.perf_counter() - t0 - (decoder.seconds - before)
    timings["redecode_s"] = redecode
    timings["list_s"] = listing_s

    total = timings["fit_s"] + timings["transform_s"]
    result = {
        "output_root": output_root, "days": outputs, "workflow": fit_workflow or workflow_url,
        "fitted": bool(fit_workflow), "embedding_sizes": sizes, "rows": rows, "fit_rows": fit_rows,
        "timings": {k: round(v, 3) for k, v in timings.items()},
        "rows_per_s_fit_transform": round(rows / total, 1) if total else None,
        "engine": engine, "checked_rows": checked, "decodes": decoder.decodes,
    }
    print(f"preprocessed {rows} rows over {len(outputs)} day(s): decode {timings['decode_s']:.2f}s, "
          f"fit {timings['fit_s']:.2f}s, save {timings['save_s']:.2f}s, "
          f"transform {timings['transform_s']:.2f}s ({engine})", flush=True)
    return result


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
    p.add_argument("--max-vocab", type=int, default=0, help="Categorify max_size per column (0 = unbounded)")
    p.add_argument("--freq-threshold", type=int, default=0, help="Categorify frequency threshold")
    p.add_argument("--engine", choices=("fast", "nvt"), default="fast",
                   help="fast: compiled lookups from the fitted workflow, spot-checked against "
                        "Workflow.transform on every file; nvt: Workflow.transform on every file")
    p.add_argument("--cache-mb", type=int, default=4096,
                   help="decoded files kept in memory between fit and transform (others are re-decoded)")
    a = p.parse_args(argv)
    return preprocess(a.extracted, a.output_root, a.fit_workflow, a.workflow, a.max_vocab,
                      a.freq_threshold, a.engine, a.cache_mb)
