"""replay: the inference client. Sends a Criteo day to Triton over gRPC as live traffic and writes
the request log (features, prediction, model version, then the label).

    python -m criteo_monitoring replay --input gs://b/traffic/day_5.gz --day 5 --triton triton:8001 \
        --request-log gs://b/request_log --batch-size 64 --rate 200 --concurrency 4

Rows go in order, `--batch-size` rows per request, at most `--rate` requests per second (0: as
fast as the server answers) with `--concurrency` requests in flight. Each answered request is
logged with the version that answered it (Triton's response says), so a version switch during
the replay shows in the log row by row. The label of each row is logged `--label-delay-s` later,
as a click arrives after its impression.

Time: with `--clock replay` (default) a historical day is replayed as if served on its own date:
row i of n gets event time `day0 + day + i/n * 24h`, so the day's rows land in its 24 hour
partitions and `to-day` gives the day back. With `--clock wall` event time is the serving time
(live traffic); the Criteo day is then the date's (`date - day0`).

Rows with the wrong number of fields are skipped and counted; a value that breaks the Criteo
format fails the replay naming the file, the column and the rule. Triton unreachable or not
serving the model: each request is retried (`--retries`, exponential backoff), then the replay
fails; what was answered until then stays logged.
"""
from __future__ import annotations

import argparse
import threading
import time
import uuid
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone
from typing import Callable, Iterator

import numpy as np
from criteo_steps.schema import (CAT_COLUMNS, COLUMNS, INT_COLUMNS, LABEL, DecodeError, decode_hex_column,
                                 parse_int_column)

from .request_log import LABELS, REQUESTS, RequestLogWriter

DAY_MS = 86_400_000
# gRPC codes that mean "try again": the server is down or restarting, or the model is between
# versions (Triton answers a request for a model that is not ready with UNAVAILABLE too).
_RETRYABLE = ("UNAVAILABLE", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED")


class ReplayError(RuntimeError):
    """The replay could not go on (Triton kept failing); the message says why."""


class ReplayUsageError(ReplayError):
    """The replay was asked for something it cannot do (bad settings): no retry helps."""


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

    def slice(self, start: int, stop: int) -> "Batch":
        return Batch(self.first_row + start, self.label[start:stop], self.ints[start:stop],
                     self.cat_hash[start:stop])


def _open(url: str):
    import fsspec

    return fsspec.open(url, "rb", compression="gzip" if url.endswith(".gz") else None)


def resolve_input(url: str, day: int | None) -> str:
    """A day file, or with a folder the `day_N` / `day_N.gz` inside it."""
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.isdir(path):
        if day is None:
            raise ReplayUsageError(f"{url} is a folder: give --day to pick day_N or day_N.gz in it")
        from criteo_steps.extract import find_day_file

        return find_day_file(url, day)
    if not fs.exists(path):
        raise ReplayError(f"{url}: raw day file not found")
    return url


def count_rows(url: str) -> int:
    """Lines of a day file (the replay clock spreads them over the day)."""
    n, last = 0, b"\n"
    with _open(url) as fh:
        while block := fh.read(16 << 20):
            n += block.count(b"\n")
            last = block[-1:]
    return n + (last != b"\n")


def decode_label(arr, source: str) -> np.ndarray:
    values = np.asarray(arr.to_numpy(zero_copy_only=False), dtype=object)
    ok = (values == "0") | (values == "1")
    if not ok.all():
        first = int(np.flatnonzero(~ok)[0])
        raise DecodeError(f"{source}: column {LABEL}: {int((~ok).sum())} value(s) are not 0 or 1 "
                          f"(first at row {first}: {values[first]!r})")
    return (values == "1").astype(np.int8)


def read_batches(url: str, chunk_rows: int = 65536,
                 on_malformed: Callable[[int, int, str], None] | None = None) -> Iterator[Batch]:
    """Stream a raw Criteo day (TSV, plain or .gz, local or gs://) as decoded batches of `chunk_rows`.

    Lines without exactly 40 fields are skipped and reported to `on_malformed(line, fields, text)`.
    """
    import pyarrow as pa
    import pyarrow.csv as pacsv

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

    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    with _open(url) as fh:
        reader = pacsv.open_csv(
            # one thread: the invalid-row handler then gets line numbers (a replay is bound by Triton)
            fh, read_options=pacsv.ReadOptions(column_names=COLUMNS, block_size=8 << 20, use_threads=False),
            parse_options=pacsv.ParseOptions(delimiter="\t", quote_char=False, invalid_row_handler=invalid),
            convert_options=pacsv.ConvertOptions(column_types=schema, strings_can_be_null=False))
        for record_batch in reader:
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


class RateLimiter:
    """At most `rate` starts per second (0: no limit), evenly spaced."""

    def __init__(self, rate: float):
        self.interval = 1.0 / rate if rate > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            start = max(self.next, now)
            self.next = start + self.interval
        if start > now:
            time.sleep(start - now)


class TritonClient:
    """Inference requests to one model over gRPC, one channel per thread, with retries."""

    def __init__(self, url: str, model: str, timeout_s: float = 30.0, retries: int = 5, backoff_s: float = 0.5):
        self.url = url.removeprefix("grpc://")
        self.model = model
        self.timeout_s = timeout_s
        self.retries = retries
        self.backoff_s = backoff_s
        self._local = threading.local()
        self._clients: list = []
        self._lock = threading.Lock()  # requests run in several threads
        self.retried = 0

    def _client(self):
        client = getattr(self._local, "client", None)
        if client is None:
            import tritonclient.grpc as grpcclient

            client = grpcclient.InferenceServerClient(
                self.url, channel_args=[("grpc.initial_reconnect_backoff_ms", 200),
                                        ("grpc.max_reconnect_backoff_ms", 1000)])
            self._local.client = client
            with self._lock:
                self._clients.append(client)
        return client

    def infer(self, dense_raw: np.ndarray, cat_hash: np.ndarray) -> tuple[np.ndarray, int, float, int]:
        """(ctr [n] float32, the version that answered, latency ms, answered at ms since the epoch)."""
        import tritonclient.grpc as grpcclient
        from tritonclient.utils import InferenceServerException

        dense = np.ascontiguousarray(dense_raw, dtype=np.float32)
        cats = np.ascontiguousarray(cat_hash, dtype=np.int64)
        for attempt in range(self.retries + 1):
            inputs = [grpcclient.InferInput("dense_raw", list(dense.shape), "FP32"),
                      grpcclient.InferInput("cat_hash", list(cats.shape), "INT64")]
            inputs[0].set_data_from_numpy(dense)
            inputs[1].set_data_from_numpy(cats)
            t0 = time.perf_counter()
            try:
                result = self._client().infer(self.model, inputs, client_timeout=self.timeout_s,
                                              outputs=[grpcclient.InferRequestedOutput("ctr")])
            except InferenceServerException as exc:
                status = str(exc.status() or "")
                if attempt < self.retries and any(code in status for code in _RETRYABLE):
                    with self._lock:
                        self.retried += 1
                    time.sleep(self.backoff_s * 2 ** attempt)
                    continue
                raise ReplayError(f"Triton at {self.url} failed inference on {self.model!r} "
                                  f"after {attempt + 1} attempt(s): {status} {exc.message()}") from None
            latency = (time.perf_counter() - t0) * 1000
            pred = result.as_numpy("ctr").reshape(-1).astype(np.float32, copy=False)
            return pred, int(result.get_response().model_version), latency, int(time.time() * 1000)
        raise AssertionError("unreachable")

    def close(self) -> None:
        for client in self._clients:
            client.close()


def day_start_ms(day0: date, day: int) -> int:
    start = datetime.combine(day0, datetime.min.time(), tzinfo=timezone.utc) + timedelta(days=day)
    return int(start.timestamp() * 1000)


def _nullable(values: np.ndarray, missing: np.ndarray):
    import pyarrow as pa

    return pa.array(np.where(missing, 0, values).astype(np.int64), mask=missing)


class RequestRecorder:
    """Turns answered requests into request log rows: event times, request ids, then the tables.

    clock "replay": row i of the day's `total` rows happens at `start_ms + i/total * 24h` and
    request ids are `day<N>-<first row>` (a rerun logs the same ids: to-day keeps one copy);
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


def replay(input_url: str, triton_url: str, request_log: str, model: str = "criteo_dcn", day: int | None = None,
           batch_size: int = 64, concurrency: int = 2, rate: float = 0.0, max_rows: int | None = None,
           label_delay_s: float = 1.0, clock: str = "replay", day0: str = "2026-01-01",
           day_rows: int | None = None, chunk_rows: int = 16384, timeout_s: float = 30.0, retries: int = 5) -> dict:
    import pyarrow as pa

    if batch_size < 1 or concurrency < 1 or rate < 0:
        raise ReplayUsageError(f"--batch-size and --concurrency must be >= 1 and --rate >= 0, "
                               f"got {batch_size}, {concurrency}, {rate}")
    if clock not in ("replay", "wall"):
        raise ReplayUsageError(f"--clock must be 'replay' or 'wall', got {clock!r}")
    d0 = date.fromisoformat(day0)
    url = resolve_input(input_url, day)
    if clock == "replay":
        if day is None:
            raise ReplayUsageError("--clock replay needs --day: the Criteo day whose date the rows are replayed on")
        total = day_rows or count_rows(url)
        if max_rows:
            total = min(total, max_rows)
        recorder = RequestRecorder(model, day, clock, day_start_ms(d0, day), total)
    else:
        day = (datetime.now(timezone.utc).date() - d0).days
        recorder = RequestRecorder(model, day, clock)

    malformed = {"rows": 0, "examples": []}

    def on_malformed(line: int, fields: int, text: str) -> None:
        malformed["rows"] += 1
        if len(malformed["examples"]) < 5:
            malformed["examples"].append({"line": line, "fields": fields, "text": text})
            print(f"WARNING: {url} line {line}: {fields} fields, expected 40; skipped: {text!r}", flush=True)

    writer = RequestLogWriter(request_log)
    client = TritonClient(triton_url, model, timeout_s=timeout_s, retries=retries)
    limiter = RateLimiter(rate)
    due_labels: deque = deque()  # (due at, label table): a click is known only after its impression
    versions: Counter = Counter()
    latencies: list[float] = []
    sent = requests = labelled = positives = 0
    label_files: list[str] = []

    def flush_labels(until: float) -> None:
        nonlocal labelled, positives
        while due_labels and due_labels[0][0] <= until:
            _, table = due_labels.popleft()
            table = table.append_column("labelled_at", pa.array(np.full(table.num_rows, int(time.time() * 1000)),
                                                                pa.timestamp("ms", tz="UTC")))
            label_files.extend(writer.write(LABELS, table))
            labelled += table.num_rows
            positives += int(np.asarray(table.column("label")).sum())

    t_start = time.monotonic()
    failure: Exception | None = None
    print(f"replaying {url} (day {day}) to {model} on Triton {client.url}: batch {batch_size}, "
          f"concurrency {concurrency}, rate {rate or 'unlimited'} req/s, clock {clock}; request log {request_log}",
          flush=True)
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay") as pool:
        for batch in read_batches(url, chunk_rows, on_malformed):
            if max_rows is not None:
                if sent >= max_rows:
                    break
                batch = batch.slice(0, min(len(batch), max_rows - sent))
            bounds = [(s, min(s + batch_size, len(batch))) for s in range(0, len(batch), batch_size)]
            dense = batch.dense_raw
            futures = []
            for a, b in bounds:
                limiter.wait()
                futures.append(pool.submit(client.infer, dense[a:b], batch.cat_hash[a:b]))
            answers = []
            for (a, b), fut in zip(bounds, futures):
                try:
                    answers.append((a, b, fut.result()))
                except ReplayError as exc:
                    failure = failure or exc
            if answers:
                req_table, lab_table = recorder.tables(batch, answers)
                writer.write(REQUESTS, req_table)
                due_labels.append((time.monotonic() + label_delay_s, lab_table))
                for a, b, r in answers:
                    versions[r[1]] += b - a
                    latencies.append(r[2])
                sent += req_table.num_rows
                requests += len(answers)
            flush_labels(time.monotonic())
            if failure is not None:
                break
    if due_labels:  # the last labels arrive after their delay
        time.sleep(max(0.0, due_labels[-1][0] - time.monotonic()))
        flush_labels(float("inf"))
    client.close()
    took = time.monotonic() - t_start
    lat = np.array(latencies) if latencies else np.zeros(1)
    result = {
        "input": url, "day": day, "model": model, "triton": client.url, "clock": clock,
        "rows": sent, "requests": requests, "labels": labelled, "positives": positives,
        "malformed_rows": malformed["rows"], "malformed_examples": malformed["examples"],
        "versions_seen": {str(v): n for v, n in sorted(versions.items())},
        "seconds": round(took, 3), "rows_per_s": round(sent / took, 1) if took else None,
        "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3), "p99": round(float(np.percentile(lat, 99)), 3)},
        "retried_requests": client.retried, "batch_size": batch_size, "concurrency": concurrency, "rate": rate,
        "request_log": request_log, "request_files": len(writer.files) - len(label_files),
        "label_files": len(label_files),
    }
    print(f"replayed {sent} rows in {requests} requests in {took:.1f}s ({result['rows_per_s']} rows/s, "
          f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms); versions {dict(versions)}; "
          f"{labelled} labels; {malformed['rows']} malformed rows skipped", flush=True)
    if failure is not None:
        raise ReplayError(f"{failure} ({sent} rows were answered and logged before it)")
    return result


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_monitoring replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="raw day file (day_N[.gz]), or the folder holding it with --day")
    p.add_argument("--day", type=int, default=None, help="the Criteo day number of the traffic")
    p.add_argument("--triton", required=True, help="Triton gRPC address host:port")
    p.add_argument("--model", default="criteo_dcn")
    p.add_argument("--request-log", required=True, help="request log URL: a folder or gs://bucket/prefix")
    p.add_argument("--batch-size", type=int, default=64, help="rows per inference request")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    p.add_argument("--rate", type=float, default=0.0, help="requests per second at most (0: no limit)")
    p.add_argument("--max-rows", type=int, default=None, help="replay at most this many rows")
    p.add_argument("--label-delay-s", type=float, default=1.0, help="seconds between a row's request and its label")
    p.add_argument("--clock", choices=["replay", "wall"], default="replay",
                   help="event time: the day's own date (replay) or the serving time (wall)")
    p.add_argument("--day0", default="2026-01-01", help="the date of day_0 (Variable criteo_day0_date)")
    p.add_argument("--day-rows", type=int, default=None,
                   help="rows in the day, to spread event times (default: counted in a first pass)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="deadline of each request")
    p.add_argument("--retries", type=int, default=5, help="retries of a failed request (backoff 0.5 s, doubling)")
    a = p.parse_args(argv)
    return replay(a.input, a.triton, a.request_log, a.model, a.day, a.batch_size, a.concurrency, a.rate, a.max_rows,
                  a.label_delay_s, a.clock, a.day0, a.day_rows, timeout_s=a.timeout_s, retries=a.retries)
