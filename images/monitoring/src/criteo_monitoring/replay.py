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
partitions and `request_log_to_day` gives the day back. With `--clock wall` event time is the serving time
(live traffic); the Criteo day is then the date's (`date - day0`).

Rows with the wrong number of fields are skipped and counted; a value that breaks the Criteo
format fails the replay naming the file, the column and the rule. Triton unreachable or not
serving the model: each request is retried (`--retries`, exponential backoff), then the replay
fails; what was answered until then stays logged.
"""
from __future__ import annotations

import argparse
import time
from collections import Counter, deque
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, date, datetime

import numpy as np

from criteo_kernel.signature import MODEL_NAME

from .errors import ReplayError, ReplayUsageError
from .rate_limiter import RateLimiter
from .recorder import RequestRecorder, day_start_ms
from .request_log import LABELS, REQUESTS, RequestLogWriter
from .traffic import count_rows, read_batches, resolve_input
from .triton_client import TritonClient


def replay(input_url: str, triton_url: str, request_log: str, day0: str, model: str = MODEL_NAME,
           day: int | None = None, batch_size: int = 64, concurrency: int = 2, rate: float = 0.0,
           max_rows: int | None = None, label_delay_s: float = 1.0, clock: str = "replay",
           day_rows: int | None = None, chunk_rows: int = 16384, timeout_s: float = 30.0, retries: int = 5) -> dict:
    if batch_size < 1 or concurrency < 1 or rate < 0:
        raise ReplayUsageError(f"--batch-size and --concurrency must be >= 1 and --rate >= 0, "
                               f"got {batch_size}, {concurrency}, {rate}")
    if clock not in ("replay", "wall"):
        raise ReplayUsageError(f"--clock must be 'replay' or 'wall', got {clock!r}")
    d0 = date.fromisoformat(day0)
    url = resolve_input(input_url, day)
    recorder, day = _recorder(model, day, clock, d0, url, day_rows, max_rows)
    writer = RequestLogWriter(request_log)
    run = _Replay(url, TritonClient(triton_url, model, timeout_s=timeout_s, retries=retries), recorder, writer,
                  RateLimiter(rate), _Labels(writer), batch_size)
    t_start = time.monotonic()
    print(f"replaying {url} (day {day}) to {model} on Triton {run.client.url}: batch {batch_size}, "
          f"concurrency {concurrency}, rate {rate or 'unlimited'} req/s, clock {clock}; request log {request_log}",
          flush=True)
    failure = run.send(chunk_rows, concurrency, max_rows, label_delay_s)
    run.labels.drain()
    run.client.close()
    took = time.monotonic() - t_start
    result = {"input": url, "day": day, "model": model, "triton": run.client.url, "clock": clock,
              **run.summary(took), "batch_size": batch_size, "concurrency": concurrency, "rate": rate,
              "request_log": request_log, "request_files": len(writer.files) - len(run.labels.files),
              "label_files": len(run.labels.files)}
    print(f"replayed {run.sent} rows in {run.requests} requests in {took:.1f}s ({result['rows_per_s']} rows/s, "
          f"p50 {result['latency_ms']['p50']} ms, p99 {result['latency_ms']['p99']} ms); versions "
          f"{dict(run.versions)}; {run.labels.labelled} labels; {run.malformed['rows']} malformed rows skipped; "
          f"{run.client.retried} retries", flush=True)
    if failure is not None:
        raise ReplayError(f"{failure} ({run.sent} rows were answered and logged before it)")
    return result


def _recorder(model: str, day: int | None, clock: str, d0: date, url: str, day_rows: int | None,
              max_rows: int | None) -> tuple[RequestRecorder, int]:
    """The recorder of the rows' event times, and the Criteo day they belong to."""
    if clock == "replay":
        if day is None:
            raise ReplayUsageError("--clock replay needs --day: the Criteo day whose date the rows are replayed on")
        total = day_rows or count_rows(url)
        if max_rows:
            total = min(total, max_rows)
        return RequestRecorder(model, day, clock, day_start_ms(d0, day), total), day
    day = (datetime.now(UTC).date() - d0).days
    return RequestRecorder(model, day, clock), day


class _Labels:
    """The labels of answered rows, each written to the request log once its delay is over: a click
    is known only after its impression."""

    def __init__(self, writer: RequestLogWriter):
        self.writer = writer
        self.due: deque = deque()  # (due at, label table)
        self.files: list[str] = []
        self.labelled = self.positives = 0

    def add(self, due_at: float, table) -> None:
        self.due.append((due_at, table))

    def flush(self, until: float) -> None:
        import pyarrow as pa

        while self.due and self.due[0][0] <= until:
            _, table = self.due.popleft()
            table = table.append_column("labelled_at", pa.array(np.full(table.num_rows, int(time.time() * 1000)),
                                                                pa.timestamp("ms", tz="UTC")))
            self.files.extend(self.writer.write(LABELS, table))
            self.labelled += table.num_rows
            self.positives += int(np.asarray(table.column("label")).sum())

    def drain(self) -> None:
        """The last labels, after their delay."""
        if self.due:
            time.sleep(max(0.0, self.due[-1][0] - time.monotonic()))
            self.flush(float("inf"))


class _Replay:
    """One replay's traffic: the day's rows sent in requests, each answer logged with its version."""

    def __init__(self, url: str, client: TritonClient, recorder: RequestRecorder, writer: RequestLogWriter,
                 limiter: RateLimiter, labels: _Labels, batch_size: int):
        self.url, self.client, self.recorder, self.writer = url, client, recorder, writer
        self.limiter, self.labels, self.batch_size = limiter, labels, batch_size
        self.malformed = {"rows": 0, "examples": []}
        self.versions: Counter = Counter()
        self.latencies: list[float] = []
        self.sent = self.requests = 0

    def on_malformed(self, line: int, fields: int, text: str) -> None:
        self.malformed["rows"] += 1
        if len(self.malformed["examples"]) < 5:
            self.malformed["examples"].append({"line": line, "fields": fields, "text": text})
            print(f"WARNING: {self.url} line {line}: {fields} fields, expected 40; skipped: {text!r}", flush=True)

    def send(self, chunk_rows: int, concurrency: int, max_rows: int | None, label_delay_s: float) -> Exception | None:
        """Every row (or the first max_rows), in order; the first request that failed for good, if any."""
        failure: Exception | None = None
        with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="replay") as pool:
            for batch in read_batches(self.url, chunk_rows, self.on_malformed):
                if max_rows is not None:
                    if self.sent >= max_rows:
                        break
                    batch = batch.slice(0, min(len(batch), max_rows - self.sent))
                answers, error = self._infer(pool, batch)
                failure = failure or error
                if answers:
                    self._log(batch, answers, label_delay_s)
                self.labels.flush(time.monotonic())
                if failure is not None:
                    break
        return failure

    def _infer(self, pool: ThreadPoolExecutor, batch) -> tuple[list, Exception | None]:
        """The batch in requests of batch_size rows: [(start, stop, answer)], and the first failure."""
        bounds = [(s, min(s + self.batch_size, len(batch))) for s in range(0, len(batch), self.batch_size)]
        dense = batch.dense_raw
        futures = []
        for a, b in bounds:
            self.limiter.wait()
            futures.append(pool.submit(self.client.infer, dense[a:b], batch.cat_hash[a:b]))
        answers, failure = [], None
        for (a, b), fut in zip(bounds, futures, strict=True):
            try:
                answers.append((a, b, fut.result()))
            except ReplayError as exc:
                failure = failure or exc
        return answers, failure

    def _log(self, batch, answers: list, label_delay_s: float) -> None:
        req_table, lab_table = self.recorder.tables(batch, answers)
        self.writer.write(REQUESTS, req_table)
        self.labels.add(time.monotonic() + label_delay_s, lab_table)
        for a, b, r in answers:
            self.versions[r[1]] += b - a
            self.latencies.append(r[2])
        self.sent += req_table.num_rows
        self.requests += len(answers)

    def summary(self, took: float) -> dict:
        lat = np.array(self.latencies) if self.latencies else np.zeros(1)
        return {
            "rows": self.sent, "requests": self.requests, "labels": self.labels.labelled,
            "positives": self.labels.positives,
            "malformed_rows": self.malformed["rows"], "malformed_examples": self.malformed["examples"],
            "versions_seen": {str(v): n for v, n in sorted(self.versions.items())},
            "seconds": round(took, 3), "rows_per_s": round(self.sent / took, 1) if took else None,
            "latency_ms": {"p50": round(float(np.percentile(lat, 50)), 3),
                           "p99": round(float(np.percentile(lat, 99)), 3)},
            "retried_requests": self.client.retried,
        }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="criteo_monitoring replay", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, help="raw day file (day_N[.gz]), or the folder holding it with --day")
    p.add_argument("--day", type=int, default=None, help="the Criteo day number of the traffic")
    p.add_argument("--triton", required=True, help="Triton gRPC address host:port")
    p.add_argument("--model", default=MODEL_NAME)
    p.add_argument("--request-log", required=True, help="request log URL: a folder or gs://bucket/prefix")
    p.add_argument("--batch-size", type=int, default=64, help="rows per inference request")
    p.add_argument("--concurrency", type=int, default=2, help="requests in flight")
    p.add_argument("--rate", type=float, default=0.0, help="requests per second at most (0: no limit)")
    p.add_argument("--max-rows", type=int, default=None, help="replay at most this many rows")
    p.add_argument("--label-delay-s", type=float, default=1.0, help="seconds between a row's request and its label")
    p.add_argument("--clock", choices=["replay", "wall"], default="replay",
                   help="event time: the day's own date (replay) or the serving time (wall)")
    p.add_argument("--day0", required=True, help="the date of day_0, YYYY-MM-DD (Variable criteo_day0_date)")
    p.add_argument("--day-rows", type=int, default=None,
                   help="rows in the day, to spread event times (default: counted in a first pass)")
    p.add_argument("--timeout-s", type=float, default=30.0, help="deadline of each request")
    p.add_argument("--retries", type=int, default=5, help="retries of a failed request (backoff 0.5 s, doubling)")
    a = p.parse_args(argv)
    return replay(a.input, a.triton, a.request_log, a.day0, a.model, a.day, a.batch_size, a.concurrency, a.rate,
                  a.max_rows, a.label_delay_s, a.clock, a.day_rows, timeout_s=a.timeout_s, retries=a.retries)
