"""What HugeCTR's Parquet reader needs, written beside NVTabular's output and staged for a run.

The reader (HugeCTR v25.03: pybind/add_input.cpp, data_readers/metadata.cpp, file_source_parquet)
takes a `_file_list.txt` (the number of files, then one path a line) and finds `_metadata.json` in
the folder of the list's *first* file. That metadata names every file by its base name
(`file_stats`: file_name, num_rows, checked against the file's footer) and gives the column index
of each categorical, continuous and label column. Dense and label columns are copied as float32,
categorical keys as int64 (`i64_input_key=True`); the reader adds the cumulative
`slot_size_array` to each slot's ids itself.

Per processed split, preprocess (`--hugectr`) writes both files, the list naming files relative to
the split folder (the folder is read at another path in the training pod). A run reads a window of
days whose files share base names (part_0.parquet in every day), so `stage` links them into one
local folder under unique names with one merged metadata file and a list of absolute paths.
"""
from __future__ import annotations

import json
import os

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL

# The columns the reader copies as float32 (categorical keys are read as int64).
FLOAT_COLUMNS = [*INT_COLUMNS, LABEL]
FILE_LIST = "_file_list.txt"
METADATA = "_metadata.json"


class HugeCTRDataError(ValueError):
    """A partition is not what HugeCTR's reader can read; the message names the file and the rule."""


def parquet_files(split_dir: str) -> list[str]:
    return sorted(f for f in os.listdir(split_dir) if f.endswith(".parquet"))


def check_columns(path: str) -> list[str]:
    """The file's column names, after checking the types the reader copies (else HugeCTRDataError)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pq.read_schema(path)
    want = {**{c: pa.int64() for c in CAT_COLUMNS}, **{c: pa.float32() for c in FLOAT_COLUMNS}}
    for name, typ in want.items():
        if name not in schema.names:
            raise HugeCTRDataError(f"{path}: column {name} is missing (HugeCTR's reader needs {name} as {typ})")
        got = schema.field(name).type
        if got != typ:
            raise HugeCTRDataError(f"{path}: column {name} is {got}; HugeCTR's reader copies it as {typ} "
                                   "(run preprocess with --hugectr)")
    return list(schema.names)


def metadata_for(split_dir: str) -> dict:
    """HugeCTR's `_metadata.json` of the parquet files in `split_dir` (as merlin-core writes it)."""
    import pyarrow.parquet as pq

    files = parquet_files(split_dir)
    if not files:
        raise HugeCTRDataError(f"{split_dir}: no parquet files for HugeCTR's reader")
    names = None
    stats = []
    for f in files:
        path = os.path.join(split_dir, f)
        cols = check_columns(path)
        if names is not None and cols != names:
            raise HugeCTRDataError(f"{path}: columns in another order than {files[0]}'s ({names})")
        names = cols
        stats.append({"file_name": f, "num_rows": pq.ParquetFile(path).metadata.num_rows})
    index = {c: i for i, c in enumerate(names)}
    return {"file_stats": stats,
            "cats": [{"col_name": c, "index": index[c]} for c in CAT_COLUMNS],
            "conts": [{"col_name": c, "index": index[c]} for c in INT_COLUMNS],
            "labels": [{"col_name": LABEL, "index": index[LABEL]}]}


def write_split_files(split_dir: str) -> dict:
    """Write `_metadata.json` and `_file_list.txt` (relative names) into a local split folder."""
    meta = metadata_for(split_dir)
    names = [s["file_name"] for s in meta["file_stats"]]
    with open(os.path.join(split_dir, METADATA), "w") as fh:
        json.dump(meta, fh)
    with open(os.path.join(split_dir, FILE_LIST), "w") as fh:
        fh.write(f"{len(names)}\n" + "".join(f"{n}\n" for n in names))
    return meta


def read_file_list(path: str) -> list[str]:
    """The paths of a `_file_list.txt`, after checking its count line."""
    with open(path) as fh:
        lines = [line.strip() for line in fh if line.strip()]
    if not lines or not lines[0].isdigit() or int(lines[0]) != len(lines) - 1:
        raise HugeCTRDataError(f"{path}: the first line must be the number of files that follow "
                               f"({len(lines) - 1 if lines else 0}), got {lines[0] if lines else 'nothing'!r}")
    return lines[1:]


def stage(split_dirs: list[str], out_dir: str) -> dict:
    """Link the files of `split_dirs` (one split of each day, as mounted) into `out_dir` under unique
    names, with one `_metadata.json` and a `_file_list.txt` of absolute paths. Each split's own
    metadata must match its files (rows per file, columns): a partition rewritten since is refused.
    Returns {"file_list", "rows", "files"}."""
    os.makedirs(out_dir, exist_ok=True)
    merged: dict | None = None
    paths = []
    for k, split in enumerate(split_dirs):
        meta_path = os.path.join(split, METADATA)
        if not os.path.exists(meta_path):
            raise HugeCTRDataError(f"{split}: no {METADATA} (the partition was not preprocessed with --hugectr)")
        with open(meta_path) as fh:
            recorded = json.load(fh)
        actual = metadata_for(split)
        if recorded != actual:
            raise HugeCTRDataError(f"{meta_path} does not describe the files beside it (rows or columns "
                                   "differ): preprocess the day again")
        if merged is None:
            merged = {**actual, "file_stats": []}
        elif {k: actual[k] for k in ("cats", "conts", "labels")} != {k: merged[k] for k in ("cats", "conts", "labels")}:
            raise HugeCTRDataError(f"{split}: column indices differ from {split_dirs[0]}'s")
        for st in actual["file_stats"]:
            name = f"s{k}-{st['file_name']}"
            link = os.path.join(out_dir, name)
            if os.path.lexists(link):
                os.remove(link)
            os.symlink(os.path.abspath(os.path.join(split, st["file_name"])), link)
            merged["file_stats"].append({"file_name": name, "num_rows": st["num_rows"]})
            paths.append(os.path.abspath(link))
    if merged is None:
        raise HugeCTRDataError(f"{out_dir}: no split folders to stage")
    with open(os.path.join(out_dir, METADATA), "w") as fh:
        json.dump(merged, fh)
    file_list = os.path.join(out_dir, FILE_LIST)
    with open(file_list, "w") as fh:
        fh.write(f"{len(paths)}\n" + "".join(f"{p}\n" for p in paths))
    return {"file_list": file_list, "rows": sum(s["num_rows"] for s in merged["file_stats"]), "files": len(paths)}


def slot_size_array(embedding_sizes: dict[str, int]) -> list[int]:
    """HugeCTR's slot_size_array from the fitted workflow's embedding sizes (C1..C26, in order): each
    slot's vocabulary, so that slot k's ids are offset by the sizes of the slots before it."""
    missing = [c for c in CAT_COLUMNS if c not in embedding_sizes]
    if missing:
        raise HugeCTRDataError(f"the workflow has no embedding size for {missing}")
    return [int(embedding_sizes[c]) for c in CAT_COLUMNS]
