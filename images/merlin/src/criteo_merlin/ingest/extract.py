"""extract: one raw Criteo day (TSV or .gz, in the bucket) -> columnar partition in the working area.

Streams the file in blocks, keeps every field as text (types are checked by validation and applied
by preprocess), and splits a deterministic held-out slice: every `--eval-every`-th row goes to
`eval/`, the rest to `train/`. Extract does not judge the data; it records what it saw in
`_extract.json` and the validation gate decides:

* lines with the wrong number of fields are not guessed at: counted and sampled (`malformed_rows`);
* per-column counts of empty (missing) fields over the whole day (`missing`): the day-level null
  fractions the gate checks cost nothing extra here, while the row rules may run on a sample;
* a file that cannot be read to its end (truncated gzip, invalid UTF-8 text, a last line without
  its newline: a file cut while being written) is a fact about the data, not a crash: the rows
  read so far are kept and `read_error` says what broke, after how many rows, and how to fix it;
* what was read, for the landing contract (criteo_kernel.landing) and the run's identity: the
  file's size, sha256, generation (gs://) and the manifest beside it, if any.

A file that is no raw day at all fails at once with exit 4 (BAD_DATA, no retry) and a message
naming the file and the fix: a directory, an unreadable file, a `.gz` name on text, UTF-16 text.
gzip content without the `.gz` name is read as gzip, with a warning to rename it. Storage errors
(the bucket unreachable) still fail the step with exit 1, to be retried.

    python -m criteo_merlin extract --input gs://b/raw/day_3.gz --output gs://b/work/extracted/day=3
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from criteo_kernel import landing, storage, tsv
from criteo_kernel.artifacts import EXTRACT_META
from criteo_kernel.result import DataError
from criteo_kernel.schema import COLUMNS, NUM_FIELDS


class ExtractError(RuntimeError):
    """The raw file could not be read for a reason outside the data (storage): a retry may help."""


class BadRawFile(DataError):
    """The input is not a raw day file at all: no retry can help (exit BAD_DATA)."""


# What to do about a read error of each kind: the message names it after the file.
READ_ERROR_FIXES = {
    "truncated": "the file does not end with a newline: its last line is cut (it is still being written, or "
                 "its copy broke). Land the whole file, write its manifest (criteo-mlops manifest FILE), "
                 "then clear the day's run",
    "truncated_gzip": "the gzip stream ends early: the file is cut (still being written, or its copy broke). "
                      "Land the whole file, then clear the day's run",
    "corrupt_gzip": "the gzip data is corrupt: recompress the day from its source (gzip -t FILE checks it)",
    "invalid_utf8": "the text is not UTF-8: re-encode it (e.g. iconv -f latin1 -t utf-8 FILE > FILE.utf8) "
                    "and land it again",
    "not_text": "the file holds binary data, not tab-separated text: land the day's TSV file",
    "unparseable": "the file is not tab-separated Criteo text: land the day's TSV file",
}


def printable(text: str) -> str:
    """Binary bytes quoted in a message must not garble logs and HTML: escape them."""
    return text.encode("ascii", "backslashreplace").decode("ascii")


def classify_read_error(exc: BaseException) -> str | None:
    """The kind of a read error that is the data's fault, or None for an infrastructure error."""
    import gzip
    import zlib

    import pyarrow as pa

    text = str(exc)
    if isinstance(exc, EOFError):
        return "truncated_gzip"
    if isinstance(exc, (gzip.BadGzipFile, zlib.error)):
        return "corrupt_gzip"
    if isinstance(exc, UnicodeDecodeError) or (isinstance(exc, pa.ArrowInvalid) and "UTF8" in text.upper()):
        return "invalid_utf8"
    if isinstance(exc, pa.ArrowInvalid) and any(ch == "\ufffd" or (ord(ch) < 32 and ch not in "\t\n\r")
                                                for ch in text):
        return "not_text"  # binary bytes quoted back in the parse error
    if isinstance(exc, pa.ArrowInvalid):
        return "unparseable"
    return None


def extract(input_url: str, output_url: str, eval_every: int = 10, block_mb: int = 64,
            rows_per_file: int = 2_000_000, max_rows: int | None = None) -> dict:
    started = time.time()
    malformed = _Malformed()
    source = inspect_input(input_url)
    stats = {"source": input_url, "source_bytes": source["bytes"], "source_sha256": None,
             "source_generation": source["generation"], "source_mtime": source["mtime"],
             "compression": source["compression"], "manifest": source["manifest"], "max_rows": max_rows,
             "rows": 0, "train_rows": 0, "eval_rows": 0,
             "positives": 0, "malformed_rows": 0, "malformed_examples": [], "eval_every": eval_every,
             "num_fields_expected": NUM_FIELDS, "missing": {c: 0 for c in COLUMNS}, "read_error": None}
    with storage.staged_partition(output_url) as staging:
        with _SplitWriter(staging, rows_per_file) as writer:
            row0 = _read_day(input_url, source["compression"], writer, stats, malformed, eval_every, block_mb,
                             max_rows)
        stats["rows"] = row0
        stats["train_rows"] = row0 - stats["eval_rows"]
        stats["malformed_rows"] = malformed.count
        stats["malformed_examples"] = malformed.examples
        stats["seconds"] = round(time.time() - started, 3)
        storage.write_json(storage.join(staging, EXTRACT_META), stats)
    print(f"extracted {stats['rows']} rows ({stats['malformed_rows']} malformed) from {input_url} "
          f"to {output_url} in {stats['seconds']} s", flush=True)
    return {"output": output_url, "input": input_facts(stats),
            **{k: v for k, v in stats.items() if k != "malformed_examples"}, "malformed_examples": malformed.examples}


def _read_day(input_url: str, compression: str, writer: _SplitWriter, stats: dict, malformed: _Malformed,
              eval_every: int, block_mb: int, max_rows: int | None) -> int:
    """Parse the raw day into the splits, counting into `stats` as it goes; the rows read. A read error
    that is the data's fault is recorded as stats["read_error"]; any other raises ExtractError."""
    import pyarrow as pa

    fs, path = storage.fs_path(input_url)
    row0 = 0
    # pyarrow decodes an invalid row's text before calling on_invalid; bytes that are not
    # UTF-8 raise inside pyarrow, which prints "Exception ignored" and then fails the read
    # (recorded below as not_text). Keep that expected noise out of the log.
    default_hook = sys.unraisablehook
    sys.unraisablehook = lambda u: (None if isinstance(u.exc_value, UnicodeDecodeError)
                                    else default_hook(u))
    try:
        with fs.open(path, "rb") as raw:
            stored = landing.HashingReader(raw)
            # the last byte of the text, for "ends with a newline"; the checksum is of the stored bytes
            text = landing.HashingReader(_decompressed(stored, compression), hashing=False)
            for batch in tsv.reader(text, malformed.on_invalid, block_bytes=block_mb << 20):
                if max_rows is not None and row0 >= max_rows:
                    break
                row0 += _split_batch(pa.Table.from_batches([batch]), row0, writer, stats, eval_every)
            if max_rows is None:
                stats["source_sha256"] = _rest_hashed(stored)
        if max_rows is None:
            if text.last_byte not in (b"", b"\n"):
                stats["read_error"] = read_error(input_url, "truncated", None, row0 + malformed.count)
    except (pa.ArrowInvalid, EOFError, OSError, UnicodeDecodeError) as exc:
        kind = classify_read_error(exc)
        if kind == "unparseable" and row0 == 0 and "Empty CSV file" in str(exc):
            kind = "empty"  # zero rows: the row-count rule reports it, not a read error
        elif kind is None:
            raise ExtractError(f"{input_url}: cannot be read: {exc}") from exc
        if kind != "empty":
            stats["read_error"] = read_error(input_url, kind, exc, row0)
    finally:
        sys.unraisablehook = default_hook
    return row0


def _split_batch(table, row0: int, writer: _SplitWriter, stats: dict, eval_every: int) -> int:
    """Every eval_every-th row of the day to eval, the others to train; the batch's counts into `stats`."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n = table.num_rows
    is_eval = (np.arange(row0, row0 + n) % eval_every) == (eval_every - 1)
    writer.write("eval", table.filter(pa.array(is_eval)))
    writer.write("train", table.filter(pa.array(~is_eval)))
    stats["eval_rows"] += int(is_eval.sum())
    stats["positives"] += int(np.count_nonzero(np.asarray(table.column("label")) == "1"))
    for c in COLUMNS:
        stats["missing"][c] += int(pc.sum(pc.equal(table.column(c), "")).as_py() or 0)
    return n


class _Malformed:
    """The rows the parser skips (tsv.reader's on_invalid): counted, the first five kept as examples."""

    def __init__(self):
        self.count = 0
        self.examples: list[dict] = []

    def on_invalid(self, row) -> str:
        self.count += 1
        if len(self.examples) < 5:
            try:
                text = printable(row.text or "")[:200]
            except UnicodeDecodeError:  # pyarrow decodes the row's bytes lazily
                text = "<not UTF-8 text>"
            self.examples.append({"line": row.number, "fields": row.actual_columns, "text": text})
        return "skip"


class _SplitWriter:
    """The staging partition's train/ and eval/ parquet files, a new file every `rows_per_file` rows.
    On the way out, error or not, every file is closed and an empty day still gets a (zero-row) file
    per split, so the partition keeps its schema."""

    def __init__(self, staging: str, rows_per_file: int):
        self.fs, self.path = storage.fs_path(staging)
        self.rows_per_file = rows_per_file
        self.writers: dict[str, tuple] = {}
        self.file_rows = {"train": 0, "eval": 0}
        self.file_index = {"train": 0, "eval": 0}
        self.schema = tsv.text_schema()

    def __enter__(self):
        self.fs.makedirs(f"{self.path}/train", exist_ok=True)
        self.fs.makedirs(f"{self.path}/eval", exist_ok=True)
        return self

    def write(self, split: str, table) -> None:
        import pyarrow.parquet as pq

        w = self.writers.get(split)
        if w is None or self.file_rows[split] >= self.rows_per_file:
            if w is not None:
                w[0].close()
                w[1].close()
            fh = self.fs.open(f"{self.path}/{split}/part-{self.file_index[split]:05d}.parquet", "wb")
            self.writers[split] = (pq.ParquetWriter(fh, table.schema, compression="snappy"), fh)
            self.file_index[split] += 1
            self.file_rows[split] = 0
        self.writers[split][0].write_table(table, row_group_size=256_000)
        self.file_rows[split] += table.num_rows

    def __exit__(self, *exc) -> bool:
        for split in ("train", "eval"):
            if split not in self.writers:
                self.write(split, self.schema.empty_table())
        for w, fh in self.writers.values():
            w.close()
            fh.close()
        return False


def input_facts(stats: dict) -> dict:
    """What identifies the raw day read: part of the run's identity (the deploy's fingerprint)."""
    return {"url": stats["source"], "bytes": stats["source_bytes"], "sha256": stats["source_sha256"],
            "generation": stats["source_generation"], "lines": stats["rows"] + stats["malformed_rows"]}


def read_error(url: str, kind: str, exc: BaseException | None, after_rows: int) -> dict:
    """The read_error record and its warning: what broke, where, and the fix."""
    fix = READ_ERROR_FIXES.get(kind, "land the day's file again")
    detail = f" ({printable(f'{type(exc).__name__}: {exc}')[:300]})" if exc is not None else ""
    message = f"{url}: {fix}{detail}"
    print(f"WARNING: {kind} after {after_rows} rows: {message}", flush=True)
    return {"kind": kind, "message": message, "after_rows": after_rows}


def inspect_input(url: str) -> dict:
    """Check that `url` is one readable raw day file; its size, generation, compression, manifest.

    BadRawFile (no retry) for what is not a raw day; the storage's own errors propagate (retried).
    """
    fs, path = storage.fs_path(url)
    name = path.rsplit("/", 1)[-1]
    if not fs.exists(path):
        raise ExtractError(f"{url}: raw day file not found (was it removed after the sensor saw it?)")
    if fs.isdir(path):
        raise BadRawFile(f"{url} is a directory, not a raw day file: a raw day is one tab-separated file "
                         f"named {name} or {name}.gz. Concatenate its parts into one file "
                         f"(cat {url}/part-* > FILE), replace the directory with it, then clear the day's run")
    info = fs.info(path)
    try:
        with fs.open(path, "rb") as fh:
            head = fh.read(4)
    except PermissionError as exc:
        raise BadRawFile(f"{url} cannot be read ({exc.strerror or exc}): give the user the steps run as "
                         "read access to it (e.g. chmod a+r), then clear the day's run") from None
    except IsADirectoryError:
        raise BadRawFile(f"{url} is a directory, not a raw day file") from None
    gz_content, gz_name = head[:2] == landing.GZIP_MAGIC, name.endswith(".gz")
    if head[:2] in (b"\xff\xfe", b"\xfe\xff"):
        raise BadRawFile(f"{url} is UTF-16 text: the Criteo format is UTF-8 (ASCII). Convert it "
                         f"(iconv -f UTF-16 -t UTF-8 {name} > {name}.utf8), land that as {name}, then clear the "
                         "day's run")
    if gz_name and head and not gz_content:
        plain = name[:-3]
        raise BadRawFile(f"{url} is named .gz but is not gzip (it starts with {printable(repr(head))}): "
                         f"if it is plain text name it {plain}; else gzip it (gzip -c {plain} > {name})")
    if gz_content and not gz_name:
        print(f"WARNING: {url} is gzip but its name has no .gz: read as gzip. Name it {name}.gz", flush=True)
    try:
        manifest = landing.read_manifest(url)
    except ValueError as exc:
        raise BadRawFile(f"the landing manifest of {url} is broken: {exc}. Write it again "
                         "(criteo-mlops manifest FILE) or remove it") from None
    return {"bytes": int(info.get("size") or 0), "generation": info.get("generation"),
            "mtime": _mtime(info), "compression": "gzip" if gz_content else "none",
            "manifest": None if manifest is None
            else {"url": landing.manifest_url(url), **manifest.to_dict()}}


def _mtime(info: dict) -> float | None:
    value = info.get("mtime") or info.get("updated")
    if hasattr(value, "timestamp"):
        return value.timestamp()
    if isinstance(value, str) and not value.replace(".", "", 1).isdigit():
        from datetime import datetime

        try:  # gcsfs: "updated" as RFC 3339
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return float(value) if value is not None else None


def _decompressed(stored, compression: str):
    import gzip

    return gzip.GzipFile(fileobj=stored, mode="rb") if compression == "gzip" else stored


def _rest_hashed(stored) -> str | None:
    """The checksum of the whole stored file: bytes the parser did not need (gzip's trailer) included."""
    while stored.read(8 << 20):
        pass
    return stored.hexdigest()


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_merlin extract", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True,
                   help="raw day file URL (day_N or day_N.gz), or with --day the folder holding it")
    p.add_argument("--day", type=int, default=None, help="look for day_N or day_N.gz inside --input")
    p.add_argument("--output", required=True, help="partition URL to publish, e.g. .../extracted/day=N")
    p.add_argument("--eval-every", type=int, default=10, help="every k-th row is held out for evaluation")
    p.add_argument("--max-rows", type=int, default=None, help="read at most this many rows (sampling runs)")
    args = p.parse_args(argv)
    if args.day is not None:
        args.input = storage.find_day_file(args.input, args.day)
    return extract(args.input, args.output, args.eval_every, max_rows=args.max_rows)

