"""extract: one raw Criteo day (TSV or .gz, in the bucket) -> columnar partition in the working area.

Streams the file in blocks, keeps every field as text (types are checked by validation and applied
by preprocess), and splits a deterministic held-out slice: every `--eval-every`-th row goes to
`eval/`, the rest to `train/`. Lines with the wrong number of fields are not guessed at: they are
counted and sampled into `_extract.json`, and validation fails the day on them.

    python -m criteo_steps extract --input gs://b/raw/day_3.gz --output gs://b/work/extracted/day=3
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from . import storage
from .schema import COLUMNS, NUM_FIELDS, day_file_name


class ExtractError(RuntimeError):
    pass


def find_day_file(folder: str, day: int) -> str:
    names = [day_file_name(day), day_file_name(day, gz=True)]
    for name in names:
        url = storage.join(folder, name)
        if storage.exists(url):
            return url
    raise ExtractError(f"raw day {day} not found: expected {' or '.join(storage.join(folder, n) for n in names)}")


def extract(input_url: str, output_url: str, eval_every: int = 10, block_mb: int = 64,
            rows_per_file: int = 2_000_000, max_rows: int | None = None) -> dict:
    import pyarrow as pa
    import pyarrow.csv as pacsv
    import pyarrow.parquet as pq

    started = time.time()
    malformed: list[dict] = []
    malformed_count = 0

    def on_invalid(row) -> str:
        nonlocal malformed_count
        malformed_count += 1
        if len(malformed) < 5:
            malformed.append({"line": row.number, "fields": row.actual_columns, "text": (row.text or "")[:200]})
        return "skip"

    fs, path = storage.fs_path(input_url)
    if not fs.exists(path):
        raise ExtractError(f"{input_url}: raw day file not found")
    size = fs.size(path)
    stats = {"source": input_url, "source_bytes": size, "rows": 0, "train_rows": 0, "eval_rows": 0,
             "positives": 0, "malformed_rows": 0, "malformed_examples": [], "eval_every": eval_every,
             "num_fields_expected": NUM_FIELDS}
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

        compression = "gzip" if path.endswith(".gz") else None
        schema = pa.schema([(c, pa.string()) for c in COLUMNS])
        try:
            with fs.open(path, "rb", compression=compression) as raw:
                reader = pacsv.open_csv(
                    raw,
                    read_options=pacsv.ReadOptions(column_names=COLUMNS, block_size=block_mb << 20),
                    parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False,
                                                     invalid_row_handler=on_invalid),
                    convert_options=pacsv.ConvertOptions(column_types=schema, strings_can_be_null=False,
                                                         quoted_strings_can_be_null=False),
                )
                row0 = 0
                for batch in reader:
                    if max_rows is not None and row0 >= max_rows:
                        break
                    table = pa.Table.from_batches([batch])
                    n = table.num_rows
                    is_eval = (np.arange(row0, row0 + n) % eval_every) == (eval_every - 1)
                    write("eval", table.filter(pa.array(is_eval)))
                    write("train", table.filter(pa.array(~is_eval)))
                    stats["eval_rows"] += int(is_eval.sum())
                    stats["positives"] += int(np.count_nonzero(np.asarray(table.column("label")) == "1"))
                    row0 += n
        except (pa.ArrowInvalid, EOFError, OSError, UnicodeDecodeError) as exc:
            raise ExtractError(f"{input_url}: cannot be read as a Criteo TSV day: {exc}") from exc
        finally:
            for w, fh in writers.values():
                w.close()
                fh.close()
        stats["rows"] = row0
        stats["train_rows"] = row0 - stats["eval_rows"]
        stats["malformed_rows"] = malformed_count
        stats["malformed_examples"] = malformed
        stats["seconds"] = round(time.time() - started, 3)
        storage.write_json(storage.join(staging, "_extract.json"), stats)
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
        args.input = find_day_file(args.input, args.day)
    return extract(args.input, args.output, args.eval_every, max_rows=args.max_rows)

