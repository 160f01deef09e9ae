"""extract: one raw Criteo day (TSV or .gz, in the bucket) -> columnar partition in the working area.

Streams the file in blocks, keeps every field as text (types are checked by validation and applied
by preprocess), and splits a deterministic held-out slice: every `--eval-every`-th row goes to
`eval/`, the rest to `train/`. Extract does not judge the data; it records what it saw in
`_extract.json` and the validation gate decides:

* lines with the wrong number of fields are not guessed at: counted and sampled (`malformed_rows`);
* per-column counts of empty (missing) fields over the whole day (`missing`): the day-level null
  fractions the gate checks cost nothing extra here, while the row rules may run on a sample;
* a file that cannot be read to its end (truncated gzip, not gzip, invalid UTF-8 text) is a fact
  about the data, not a crash: the rows read so far are kept and `read_error` says what broke and
  after how many rows. Storage errors (the bucket unreachable) still fail the step, to be retried.

    python -m criteo_steps extract --input gs://b/raw/day_3.gz --output gs://b/work/extracted/day=3
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np

from criteo_kernel import storage, tsv
from criteo_kernel.artifacts import EXTRACT_META
from criteo_kernel.schema import COLUMNS, NUM_FIELDS


class ExtractError(RuntimeError):
    pass


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
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    started = time.time()
    malformed: list[dict] = []
    malformed_count = 0

    def on_invalid(row) -> str:
        nonlocal malformed_count
        malformed_count += 1
        if len(malformed) < 5:
            try:
                text = printable(row.text or "")[:200]
            except UnicodeDecodeError:  # pyarrow decodes the row's bytes lazily
                text = "<not UTF-8 text>"
            malformed.append({"line": row.number, "fields": row.actual_columns, "text": text})
        return "skip"

    fs, path = storage.fs_path(input_url)
    if not fs.exists(path):
        raise ExtractError(f"{input_url}: raw day file not found")
    size = fs.size(path)
    stats = {"source": input_url, "source_bytes": size, "rows": 0, "train_rows": 0, "eval_rows": 0,
             "positives": 0, "malformed_rows": 0, "malformed_examples": [], "eval_every": eval_every,
             "num_fields_expected": NUM_FIELDS, "missing": {c: 0 for c in COLUMNS}, "read_error": None}
    with storage.staged_partition(output_url) as staging:
        sfs, spath = storage.fs_path(staging)
        sfs.makedirs(f"{spath}/train", exist_ok=True)
        sfs.makedirs(f"{spath}/eval", exist_ok=True)
        writers: dict[str, tuple] = {}
        file_rows = {"train": 0, "eval": 0}
        file_index = {"train": 0, "eval": 0}

        def write(split: str, table) -> None:
            w = writers.get(split)
            if w is None or file_rows[split] >= rows_per_file:
                if w is not None:
                    w[0].close()
                    w[1].close()
                fh = sfs.open(f"{spath}/{split}/part-{file_index[split]:05d}.parquet", "wb")
                writers[split] = (pq.ParquetWriter(fh, table.schema, compression="snappy"), fh)
                file_index[split] += 1
                file_rows[split] = 0
            writers[split][0].write_table(table, row_group_size=256_000)
            file_rows[split] += table.num_rows

        schema = tsv.text_schema()
        row0 = 0
        # pyarrow decodes an invalid row's text before calling on_invalid; bytes that are not
        # UTF-8 raise inside pyarrow, which prints "Exception ignored" and then fails the read
        # (recorded below as not_text). Keep that expected noise out of the log.
        default_hook = sys.unraisablehook
        sys.unraisablehook = lambda u: (None if isinstance(u.exc_value, UnicodeDecodeError)
                                        else default_hook(u))
        try:
            with tsv.open_day(input_url) as raw:
                for batch in tsv.reader(raw, on_invalid, block_bytes=block_mb << 20):
                    if max_rows is not None and row0 >= max_rows:
                        break
                    table = pa.Table.from_batches([batch])
                    n = table.num_rows
                    is_eval = (np.arange(row0, row0 + n) % eval_every) == (eval_every - 1)
                    write("eval", table.filter(pa.array(is_eval)))
                    write("train", table.filter(pa.array(~is_eval)))
                    stats["eval_rows"] += int(is_eval.sum())
                    stats["positives"] += int(np.count_nonzero(np.asarray(table.column("label")) == "1"))
                    for c in COLUMNS:
                        stats["missing"][c] += int(pc.sum(pc.equal(table.column(c), "")).as_py() or 0)
                    row0 += n
        except (pa.ArrowInvalid, EOFError, OSError, UnicodeDecodeError) as exc:
            kind = classify_read_error(exc)
            if kind == "unparseable" and row0 == 0 and "Empty CSV file" in str(exc):
                kind = "empty"  # zero rows: the row-count rule reports it, not a read error
            elif kind is None:
                raise ExtractError(f"{input_url}: cannot be read: {exc}") from exc
            if kind != "empty":
                stats["read_error"] = {"kind": kind, "message": printable(f"{type(exc).__name__}: {exc}")[:300],
                                       "after_rows": row0}
                print(f"WARNING: {input_url}: {kind} after {row0} rows: {printable(str(exc))[:300]}", flush=True)
        finally:
            sys.unraisablehook = default_hook
            # An empty day still gets a (zero-row) file per split, so the partition keeps its schema.
            for split in ("train", "eval"):
                if split not in writers:
                    write(split, schema.empty_table())
            for w, fh in writers.values():
                w.close()
                fh.close()
        stats["rows"] = row0
        stats["train_rows"] = row0 - stats["eval_rows"]
        stats["malformed_rows"] = malformed_count
        stats["malformed_examples"] = malformed
        stats["seconds"] = round(time.time() - started, 3)
        storage.write_json(storage.join(staging, EXTRACT_META), stats)
    print(f"extracted {stats['rows']} rows ({stats['malformed_rows']} malformed) from {input_url} "
          f"to {output_url} in {stats['seconds']} s", flush=True)
    return {"output": output_url, **{k: v for k, v in stats.items() if k != "malformed_examples"},
            "malformed_examples": malformed}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_steps extract", description=__doc__,
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

