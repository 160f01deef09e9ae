"""Answered requests -> request log rows: event times, request ids, the two tables."""
from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta

import numpy as np

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS

from .traffic import Batch

DAY_MS = 86_400_000


def day_start_ms(day0: date, day: int) -> int:
    start = datetime.combine(day0, datetime.min.time(), tzinfo=UTC) + timedelta(days=day)
    return int(start.timestamp() * 1000)


def _nullable(values: np.ndarray, missing: np.ndarray):
    import pyarrow as pa

    return pa.array(np.where(missing, 0, values).astype(np.int64), mask=missing)


class RequestRecorder:
    """Turns answered requests into request log rows: event times, request ids, then the tables.

    clock "replay": row i of the day's `total` rows happens at `start_ms + i/total * 24h` and
    request ids are `day<N>-<first row>` (a rerun logs the same ids: request_log_to_day keeps one copy);
    clock "wall": event time is when Triton answered, ids are random.
    """

    def __init__(self, model: str, day: int, clock: str = "replay", start_ms: int = 0, total: int = 1):
        self.model, self.day, self.clock, self.start_ms, self.total = model, day, clock, start_ms, max(total, 1)

    def tables(self, batch: Batch, answers: list[tuple[int, int, tuple]]):
        """(requests, labels) tables of `batch`'s answered requests.

        answers: (start, stop, (pred, version, latency_ms, answered_ms)) per request, offsets in batch.
        """
        import pyarrow as pa

        if self.clock == "replay":
            pos = batch.first_row + np.arange(len(batch), dtype=np.int64)
            event_ms = self.start_ms + np.minimum(pos * DAY_MS // self.total, DAY_MS - 1)
            ids = [f"day{self.day}-{batch.first_row + a:010d}" for a, _, _ in answers]
        else:
            event_ms = np.empty(len(batch), np.int64)
            for a, b, r in answers:
                event_ms[a:b] = r[3]
            ids = [uuid.uuid4().hex for _ in answers]
        ts = pa.timestamp("ms", tz="UTC")
        idx = np.concatenate([np.arange(a, b) for a, b, _ in answers])
        lens = [b - a for a, b, _ in answers]
        rows = pa.array(np.concatenate([np.arange(n, dtype=np.int32) for n in lens]))
        rid = pa.array(np.repeat(np.array(ids, dtype=object), lens), pa.string())
        ev = pa.array(event_ms[idx], ts)
        cday = pa.array(np.full(len(idx), self.day, np.int32))
        cols = {
            "request_id": rid, "row": rows, "event_time": ev, "criteo_day": cday,
            "served_at": pa.array(np.repeat([r[3] for _, _, r in answers], lens), ts),
            "model": pa.array([self.model] * len(idx), pa.string()),
            "version": pa.array(np.repeat([r[1] for _, _, r in answers], lens).astype(np.int32)),
            "prediction": pa.array(np.concatenate([r[0] for _, _, r in answers]).astype(np.float32)),
            "latency_ms": pa.array(np.repeat([r[2] for _, _, r in answers], lens).astype(np.float32)),
        }
        ints, cats = batch.ints[idx], batch.cat_hash[idx]
        for j, c in enumerate(INT_COLUMNS):
            cols[c] = _nullable(ints[:, j], np.isnan(ints[:, j]))
        for j, c in enumerate(CAT_COLUMNS):
            cols[c] = _nullable(cats[:, j], cats[:, j] < 0)
        labels = pa.table({"request_id": rid, "row": rows, "event_time": ev, "criteo_day": cday,
                           "label": pa.array(batch.label[idx])})
        return pa.table(cols), labels
