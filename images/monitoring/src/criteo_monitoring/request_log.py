"""The request log: every row Triton scored and, later, its label, in the bucket.

    <request_log>/requests/date=YYYY-MM-DD/hour=HH/part-<ms>-<id>.parquet   features, prediction, version
    <request_log>/labels/date=YYYY-MM-DD/hour=HH/part-<ms>-<id>.parquet     the click label, when known

Rows are keyed by (`request_id`, `row`): one inference request carries a batch of rows. Both
kinds are partitioned by the hour of the impression's `event_time` (a label lands in the hour of
its impression, not of its arrival), so one Criteo day is one `date=` folder of both kinds.
`criteo_day` is stored on every row too.

Features are stored as they arrived, losslessly: I1..I13 as int64 and C1..C26 as the 32-bit hash
in int64, null = missing. The request log is what `request_log_to_day` turns back into a raw Criteo day for
the next retrain, so it must reproduce the raw file exactly.

A part file becomes visible whole: on a local disk it is written under a hidden name and renamed;
on GCS an object appears only when its upload completes. Readers take only `part-*.parquet`.
"""
from __future__ import annotations

import os
import re
import time
import uuid
from datetime import UTC, datetime

import numpy as np

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS
from criteo_kernel.storage import fs_root, is_local

REQUESTS, LABELS = "requests", "labels"
KEY = ["request_id", "row"]
_PART = re.compile(r"date=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/part-[^/]+\.parquet$")


class RequestLogError(ValueError):
    """A request log file is unreadable or does not have the request log's columns."""


def _schemas():
    import pyarrow as pa

    ts = pa.timestamp("ms", tz="UTC")
    common = [("request_id", pa.string()), ("row", pa.int32()), ("event_time", ts), ("criteo_day", pa.int32())]
    requests = pa.schema(common + [("served_at", ts), ("model", pa.string()), ("version", pa.int32()),
                                   ("prediction", pa.float32()), ("latency_ms", pa.float32())]
                         + [(c, pa.int64()) for c in INT_COLUMNS] + [(c, pa.int64()) for c in CAT_COLUMNS])
    labels = pa.schema(common + [("labelled_at", ts), ("label", pa.int8())])
    return {REQUESTS: requests, LABELS: labels}


def schema(kind: str):
    return _schemas()[kind]


def partition_of(event_time_ms: int) -> str:
    t = datetime.fromtimestamp(event_time_ms / 1000, tz=UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}"


class RequestLogWriter:
    """Appends part files to the request log at `url` (a folder or gs://bucket/prefix)."""

    def __init__(self, url: str):
        self.url = url.rstrip("/")
        self.fs, self.root = fs_root(url)
        self.files: list[str] = []

    def write(self, kind: str, table) -> list[str]:
        """Write `table` (the kind's schema) as one part file per hour partition; return their paths."""
        import pyarrow as pa
        import pyarrow.compute as pc

        table = table.select(schema(kind).names).cast(schema(kind))
        if table.num_rows == 0:
            return []
        hours = pc.divide(table.column("event_time").cast(pa.int64()), 3_600_000).to_numpy()
        written = []
        for hour in np.unique(hours):
            part = table.filter(pa.array(hours == hour))
            written.append(self._write_part(kind, partition_of(int(hour) * 3_600_000), part))
        self.files += written
        return written

    def _write_part(self, kind: str, partition: str, table) -> str:
        import pyarrow.parquet as pq

        folder = f"{self.root}/{kind}/{partition}"
        name = f"part-{int(time.time() * 1000):013d}-{uuid.uuid4().hex[:8]}.parquet"
        path = f"{folder}/{name}"
        self.fs.makedirs(folder, exist_ok=True)
        if is_local(self.fs):
            tmp = f"{folder}/.{name}.tmp"
            pq.write_table(table, tmp, compression="zstd")
            os.replace(tmp, path)
        else:  # an object appears only once its upload completes
            with self.fs.open(path, "wb") as fh:
                pq.write_table(table, fh, compression="zstd")
        return path


def list_parts(url: str, kind: str, date: str | None = None, sizes: bool = False) -> list:
    """Published part files of `kind`, oldest partition first (optionally one `date=` only); with
    `sizes`, (path, size) pairs from the same listing (one call, not a stat per file)."""
    fs, root = fs_root(url)
    base = f"{root}/{kind}" + (f"/date={date}" if date else "")
    if not fs.exists(base):
        return []
    listed = fs.find(base, detail=True)
    found = sorted((p for p in listed if _PART.search(p) and not os.path.basename(p).startswith(".")),
                   key=lambda p: (_PART.search(p).groups(), p))
    return [(p, int(listed[p]["size"])) for p in found] if sizes else found


def part_partition(path: str) -> tuple[str, str]:
    """("YYYY-MM-DD", "HH") of a part file's path."""
    m = _PART.search(path)
    if not m:
        raise RequestLogError(f"{path}: not a request log part file (date=YYYY-MM-DD/hour=HH/part-*.parquet)")
    return m.group(1), m.group(2)


def read_part(fs, path: str, kind: str, columns: list[str] | None = None):
    """One part file as a table, checked against the kind's schema; RequestLogError names what is wrong."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    expected = schema(kind)
    try:
        with fs.open(path, "rb") as fh:
            table = pq.read_table(fh)
    except (OSError, pa.ArrowException) as exc:
        raise RequestLogError(f"{path}: unreadable {kind} log file: {type(exc).__name__}: {exc}") from None
    missing = [n for n in (columns or expected.names) if n not in table.column_names]
    if missing:
        raise RequestLogError(f"{path}: {kind} log file lacks column(s) {missing} "
                              f"(the request log schema has {expected.names})")
    table = table.select(columns or expected.names)
    try:
        return table.cast(pa.schema([expected.field(n) for n in table.column_names]))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise RequestLogError(f"{path}: {kind} log file has a column of the wrong type: {exc}") from None
