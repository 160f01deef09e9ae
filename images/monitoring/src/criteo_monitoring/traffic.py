"""A raw Criteo day read as traffic: decoded batches of consecutive rows, in file order.

Lines without exactly 40 fields are skipped and reported; a value that breaks the Criteo format
fails with a DecodeError naming the file, the rows, the column and the rule.
"""
from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np

from criteo_kernel import storage, tsv
from criteo_kernel.codecs import decode_hex_column, decode_label, parse_int_column
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL

from .errors import ReplayError, ReplayUsageError


@dataclass
class Batch:
    """Consecutive rows of a raw day, decoded: what Triton takes, and what the log keeps."""

    first_row: int            # index in the day of the first row
    label: np.ndarray         # int8 [n], 0/1
    ints: np.ndarray          # float64 [n, 13], NaN = missing (exact: counts are far below 2^53)
    cat_hash: np.ndarray      # int64 [n, 26], -1 = missing

    def __len__(self) -> int:
        return len(self.label)

    @property
    def dense_raw(self) -> np.ndarray:
        return self.ints.astype(np.float32)

    def slice(self, start: int, stop: int) -> Batch:
        return Batch(self.first_row + start, self.label[start:stop], self.ints[start:stop],
                     self.cat_hash[start:stop])


def resolve_input(url: str, day: int | None) -> str:
    """A day file, or with a folder the `day_N` / `day_N.gz` inside it."""
    fs, path = storage.fs_path(url)
    if fs.isdir(path):
        if day is None:
            raise ReplayUsageError(f"{url} is a folder: give --day to pick day_N or day_N.gz in it")
        try:
            return storage.find_day_file(url, day)
        except FileNotFoundError as exc:
            raise ReplayError(str(exc)) from None
    if not fs.exists(path):
        raise ReplayError(f"{url}: raw day file not found")
    return url


def count_rows(url: str) -> int:
    """Lines of a day file (the replay clock spreads them over the day)."""
    n, last = 0, b"\n"
    with tsv.open_day(url) as fh:
        while block := fh.read(16 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def read_batches(url: str, chunk_rows: int = 65536,
                 on_malformed: Callable[[int, int, str], None] | None = None) -> Iterator[Batch]:
    """Stream a raw Criteo day (TSV, plain or .gz, local or gs://) as decoded batches of `chunk_rows`.

    Lines without exactly 40 fields are skipped and reported to `on_malformed(line, fields, text)`.
    """
    import pyarrow as pa

    def invalid(row) -> str:
        if on_malformed is not None:
            try:
                text = (row.text or "")[:120]
            except UnicodeDecodeError:
                text = "<not UTF-8 text>"
            on_malformed(row.number, row.actual_columns, text)
        return "skip"

    pending: list = []
    pending_rows = 0
    first = 0

    def decode(table) -> Batch:
        src = f"{url} rows {first}..{first + table.num_rows - 1}"
        return Batch(first, decode_label(table.column(LABEL), src),
                     np.stack([parse_int_column(table.column(c), c, src) for c in INT_COLUMNS], 1),
                     np.stack([decode_hex_column(table.column(c), c, src) for c in CAT_COLUMNS], 1))

    with tsv.open_day(url) as fh:
        # one thread: the invalid-row handler then gets line numbers (a replay is bound by Triton)
        for record_batch in tsv.reader(fh, invalid, block_bytes=8 << 20, use_threads=False):
            pending.append(record_batch)
            pending_rows += record_batch.num_rows
            while pending_rows >= chunk_rows:
                table = pa.Table.from_batches(pending)
                yield decode(table.slice(0, chunk_rows))
                first += chunk_rows
                rest = table.slice(chunk_rows)
                pending, pending_rows = rest.to_batches(), rest.num_rows
        if pending_rows:
            yield decode(pa.Table.from_batches(pending))
