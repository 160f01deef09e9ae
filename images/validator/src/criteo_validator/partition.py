"""Reading what is validated: published partitions, the sample plan, and chunks of rows.

Two kinds of partition, both published by a commit (criteo_kernel.storage: read below the attempt
`_COMMITTED` names) and holding `train/*.parquet` +
`eval/*.parquet`:

* `extracted` (extract step): 40 text columns, "" = missing; facts in `_extract.json`
  (rows, positives, malformed_rows, missing per column, read_error, and what was read: the raw
  file's size, sha256 and the landing manifest found beside it, compared by `landing_fact`);
* `processed` (preprocess step): typed NVTabular output; facts in `_preprocess.json`
  (rows per split, embedding_sizes).

Several partitions (a full retrain's window) are validated as one: their files are read in order.

Scale: a real day is ~195M rows. Rows are read one parquet row group at a time, in chunks of
`--chunk-rows`, and with `--sample-rows N` (default 200000) only a deterministic sample of N rows
is read: evenly spaced row groups over all files (at least one per file) and evenly strided rows
inside each, so the same input always gives the same sample. Day-level counts never come from
the sample: extract counted them over every row.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from dataclasses import dataclass

from criteo_kernel.artifacts import COMMIT, EXTRACT_META, PREPROCESS_META
from criteo_kernel.storage import is_local, resolve_on

SPLITS = ("train", "eval")
SAMPLE_ROWS_PER_GROUP = 20_000  # sample: rows to take per selected row group, roughly
META_FILES = {"extracted": EXTRACT_META, "processed": PREPROCESS_META}


class InputError(RuntimeError):
    """The input (or the suite) cannot be read: exit status 2."""


@dataclass
class Partition:
    paths: list  # [PartitionPath] of the partition folders (local or gs://)
    kind: str  # extracted | processed
    stats: dict  # merged facts of the meta files
    files: list  # [(str, pyarrow.parquet.ParquetFile)]
    row_groups: list  # [(file index, row group index, num_rows)]

    @property
    def path(self) -> PartitionPath:
        return self.paths[0]

    @property
    def label(self) -> str:
        return ", ".join(str(p) for p in self.paths)

    @property
    def parquet_rows(self) -> int:
        return sum(n for _, _, n in self.row_groups)


def _read_meta(fs, part: str, kind: str) -> dict:
    meta_path = f"{part}/{META_FILES[kind]}"
    try:
        with fs.open(meta_path, "rb") as fh:
            stats = json.loads(fh.read())
    except FileNotFoundError as exc:
        raise InputError(f"{meta_path}: missing (is {part} a published {kind} partition?)") from exc
    except (OSError, ValueError) as exc:
        raise InputError(f"{meta_path}: cannot be read as JSON: {exc}") from exc
    if not isinstance(stats, dict):
        raise InputError(f"{meta_path}: expected a JSON object")
    if kind == "extracted":
        missing = [k for k in ("rows", "positives", "malformed_rows") if not isinstance(stats.get(k), int)]
        if missing:
            raise InputError(f"{meta_path}: missing or non-integer keys {missing}")
    elif not isinstance(stats.get("rows"), dict) or not isinstance(stats.get("embedding_sizes"), dict):
        raise InputError(f"{meta_path}: expected 'rows' (per split) and 'embedding_sizes' objects")
    return stats


def landing_fact(stats: dict) -> str:
    """The `landing` fact of one day: "no manifest", "matches manifest" or "mismatch: <what differs>".

    The manifest is what the writer of the raw day says it wrote (criteo_kernel.landing); extract
    records it with what it read. A partition from before extract read manifests has none. Facts
    either side does not know (null) are not compared; rows are not compared when extract stopped
    at --max-rows on purpose.
    """
    manifest = stats.get("manifest")
    if not manifest:
        return "no manifest"
    lines = int(stats.get("rows", 0)) + int(stats.get("malformed_rows", 0))
    diffs = []
    if manifest.get("rows") is not None and stats.get("max_rows") is None and lines != manifest["rows"]:
        diffs.append(f"rows: {lines} lines read (incl. {stats.get('malformed_rows', 0)} malformed) but the "
                     f"manifest says {manifest['rows']}")
    for key, ours, shown in (("bytes", "source_bytes", str), ("sha256", "source_sha256", _short_hash)):
        theirs, read = manifest.get(key), stats.get(ours)
        if theirs is not None and read is not None and theirs != read:
            diffs.append(f"{key}: the file has {shown(read)} but the manifest says {shown(theirs)}")
    if not diffs:
        return "matches manifest"
    return f"mismatch: {'; '.join(diffs)} (manifest {manifest.get('url', '?')})"


def _short_hash(digest: str) -> str:
    return f"{digest[:12]}..." if len(digest) > 12 else digest


def _merge_landing(facts: list[str], sources: list) -> str:
    """Several days validated as one: each mismatch named with its file, else the best news."""
    bad = [f"{src}: {fact.removeprefix('mismatch: ')}" for fact, src in zip(facts, sources, strict=True)
           if fact.startswith("mismatch")]
    if bad:
        return "mismatch: " + " | ".join(bad)
    return "matches manifest" if "matches manifest" in facts else "no manifest"


def _merge_stats(kind: str, metas: list[dict]) -> dict:
    if len(metas) == 1:
        out = dict(metas[0])
        if kind == "extracted":
            out["landing"] = landing_fact(out)
    elif kind == "extracted":
        out = {k: sum(int(m.get(k, 0)) for m in metas)
               for k in ("rows", "train_rows", "eval_rows", "positives", "malformed_rows")}
        out["missing"] = {c: sum(int((m.get("missing") or {}).get(c, 0)) for m in metas)
                          for c in (metas[0].get("missing") or {})}
        out["malformed_examples"] = [e for m in metas for e in m.get("malformed_examples") or []][:5]
        errors = [m["read_error"] for m in metas if m.get("read_error")]
        out["read_error"] = errors[0] if errors else None
        out["num_fields_expected"] = metas[0].get("num_fields_expected", 40)
        out["source"] = ", ".join(str(m.get("source")) for m in metas)
        out["landing"] = _merge_landing([landing_fact(m) for m in metas], [m.get("source") for m in metas])
    else:
        out = {"embedding_sizes": metas[0]["embedding_sizes"], "workflow": metas[0].get("workflow")}
    if kind == "processed":
        out["rows_total"] = sum(sum(int(v) for v in m["rows"].values()) for m in metas)
        sizes = [m["embedding_sizes"] for m in metas]
        if any(s != sizes[0] for s in sizes):
            raise InputError("processed partitions come from different workflows (embedding_sizes differ)")
    return out


def open_partitions(paths: list, kind: str = "extracted") -> Partition:
    import pyarrow.parquet as pq

    if kind not in META_FILES:
        raise InputError(f"unknown partition kind {kind!r}: expected one of {sorted(META_FILES)}")
    folders, metas, files, groups = [], [], [], []
    for raw in paths:
        # A folder or a gs:// URL (fsspec): the parquet files are read in place, row group by
        # row group, so a sampled day on GCS reads only its sampled row groups.
        fs, part = _fs(raw)
        label = str(raw).rstrip("/")
        if not fs.isdir(part):
            raise InputError(f"{label}: input partition folder not found")
        committed = resolve_on(fs, part)  # the commit's attempt: never a mix of two publishes
        if committed is None:
            raise InputError(f"{label}/{COMMIT}: missing, the partition was not published")
        logical, part = part, committed
        metas.append(_read_meta(fs, part, kind))
        found = [p for split in SPLITS for p in sorted(fs.glob(f"{part}/{split}/*.parquet"))]
        if not found:
            raise InputError(f"{label}: no parquet files under {'/, '.join(SPLITS)}/")
        for p in found:
            shown = _shown(raw, logical, p)  # the file itself, its attempt folder included
            try:
                pf = pq.ParquetFile(fs.open(p, "rb") if not is_local(fs) else p)
            except Exception as exc:  # ArrowInvalid, OSError, ...: anything means unreadable
                raise InputError(f"{shown}: cannot be read as parquet: {exc}") from exc
            fi = len(files)
            files.append((shown, pf))
            md = pf.metadata
            groups += [(fi, g, md.row_group(g).num_rows) for g in range(md.num_row_groups)]
        folders.append(PartitionPath(label))
    if not folders:
        raise InputError("no input partitions given")
    return Partition(folders, kind, _merge_stats(kind, metas), files, groups)


class PartitionPath(str):
    """A partition's folder or URL, as given; `.name` like a Path's (its last part)."""

    @property
    def name(self) -> str:
        return self.rstrip("/").rsplit("/", 1)[-1]


def _fs(url):
    import fsspec

    return fsspec.core.url_to_fs(os.fspath(url))


def _shown(raw, part: str, path: str) -> str:
    """A file's name as the user gave its partition (gs://... stays gs://...)."""
    base = str(raw).rstrip("/")
    return base + path[len(part.rstrip("/")):] if path.startswith(part.rstrip("/")) else path


def open_partition(path: str | os.PathLike, kind: str = "extracted") -> Partition:
    return open_partitions([path], kind)


@dataclass
class ReadPlan:
    """What to read: whole row groups, or strided row subsets of some of them."""

    groups: list  # [(file index, row group index, None | numpy array of row indices)]
    rows: int
    sampled: bool
    description: str


def plan_reads(part: Partition, sample_rows: int | None) -> ReadPlan:
    import numpy as np

    total = part.parquet_rows
    groups = [g for g in part.row_groups if g[2] > 0]
    if not sample_rows or total <= sample_rows:
        return ReadPlan([(f, g, None) for f, g, _ in groups], total, False,
                        f"all {total} rows in {len(part.files)} files validated")
    n_sel = min(len(groups), max(len(part.files), math.ceil(sample_rows / SAMPLE_ROWS_PER_GROUP)))
    chosen = {int(round(x)) for x in np.linspace(0, len(groups) - 1, n_sel)}
    for fi in range(len(part.files)):  # every file contributes at least one row group
        own = [i for i, g in enumerate(groups) if g[0] == fi]
        if own and not chosen.intersection(own):
            chosen.add(own[len(own) // 2])
    chosen_groups = [groups[i] for i in sorted(chosen)]
    chosen_rows = sum(n for _, _, n in chosen_groups)
    plan, taken = [], 0
    for fi, g, n in chosen_groups:
        k = min(n, max(1, math.ceil(sample_rows * n / chosen_rows)))
        idx = np.unique(np.linspace(0, n - 1, k).round().astype(np.int64))
        plan.append((fi, g, idx))
        taken += len(idx)
    return ReadPlan(plan, taken, True,
                    f"deterministic sample of {taken} of {total} rows: evenly strided rows from "
                    f"{len(plan)} of {len(groups)} row groups spread over all {len(part.files)} files "
                    f"(--sample-rows {sample_rows}; 0 validates every row)")


def _empty_to_null(table):
    """The format's missing value is the empty field: make it a null, which GX counts as missing."""
    import pyarrow as pa
    import pyarrow.compute as pc

    cols = []
    for col in table.columns:
        if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
            col = pc.if_else(pc.equal(col, ""), pa.scalar(None, col.type), col)
        cols.append(col)
    return pa.Table.from_arrays(cols, names=table.column_names)


def iter_chunks(part: Partition, plan: ReadPlan, chunk_rows: int) -> Iterator:
    """Yield pandas DataFrames of chunk_rows rows (the last one smaller), one row group in memory.

    Extracted text: empty strings become nulls. An empty input still yields one empty frame, so
    that every row expectation gets a result (with nothing to check) and the day-level rules decide.
    """
    import pyarrow as pa

    pending, pending_rows, path, yielded = [], 0, None, False
    for fi, g, idx in plan.groups:
        path, pf = part.files[fi]
        try:
            if idx is None:
                pieces = [pa.Table.from_batches([b]) for b in
                          pf.iter_batches(batch_size=chunk_rows, row_groups=[g], use_threads=True)]
            else:
                pieces = [pf.read_row_group(g, use_threads=True).take(pa.array(idx))]
        except Exception as exc:
            raise InputError(f"{path}: row group {g} cannot be read: {exc}") from exc
        for t in pieces:
            pending.append(t)
            pending_rows += t.num_rows
            while pending_rows >= chunk_rows:
                table = _concat(pending, path)
                yield _to_frame(table.slice(0, chunk_rows), part.kind)
                yielded = True
                rest = table.slice(chunk_rows)
                pending, pending_rows = ([rest], rest.num_rows) if rest.num_rows else ([], 0)
    if pending_rows:
        yield _to_frame(_concat(pending, path), part.kind)
    elif not yielded and part.files:
        yield _to_frame(part.files[0][1].schema_arrow.empty_table(), part.kind)


def _concat(tables, path):
    import pyarrow as pa

    if len(tables) == 1:
        return tables[0]
    try:
        return pa.concat_tables(tables, promote_options="default")
    except pa.ArrowInvalid as exc:
        raise InputError(f"{path}: schema differs from the partition's other files: {exc}") from exc


def _to_frame(table, kind: str):
    return (_empty_to_null(table) if kind == "extracted" else table).to_pandas()
