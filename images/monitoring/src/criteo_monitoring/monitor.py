"""monitor: reads the request log as it grows and serves the served model's quality and drift as
Prometheus metrics, labelled by model and version.

    python -m criteo_monitoring monitor --request-log gs://b/request_log \
        --model-repository gs://b/model_repository --retrain-log gs://b/retrain_log --port 9109 \
        [--window-rows 5000]

Every `--interval-s` it reads the part files that appeared since the last scan (within
`--lookback-hours` of the newest partition; a restart rebuilds its windows from there), joins
labels to requests on (request_id, row), and updates each version's rolling windows
(criteo_monitoring.metrics). A request waits for its label as long as it takes, up to
`--max-pending-rows` unlabelled rows (then the oldest are dropped, and counted); a label waits for
its request up to as many (then the first read are dropped, and counted).

Metrics (`/metrics`), labels `model`, `version`:

    criteo_rolling_auc, criteo_rolling_logloss       over the last --window-rows labelled rows
    criteo_rolling_predicted_ctr, criteo_rolling_observed_ctr, criteo_calibration_ratio (predicted / observed)
    criteo_rolling_labelled_requests                 rows in that window
    criteo_feature_psi{feature}, criteo_max_feature_psi   requests vs the version's reference profile (lineage)
    criteo_drift_window_requests                     rows in the drift window
    criteo_requests_logged_total, criteo_labels_joined_total
    criteo_reference_profile_loaded                  1 when the version's reference profile was found
    criteo_monitor_files_read_total{kind}, criteo_monitor_bad_files, criteo_monitor_pending_rows{kind},
    criteo_monitor_unlabelled_dropped_total, criteo_monitor_unjoined_labels_dropped_total,
    criteo_monitor_scan_errors_total,
    criteo_monitor_last_scan_timestamp_seconds, criteo_monitor_scan_duration_seconds

and, label `model` only, from `--retrain-log` (criteo_kernel.retrain_log, written by model_monitoring):

    criteo_retrains_triggered_total                  full retrains model_monitoring triggered (0 until one)
    criteo_last_retrain_triggered_timestamp_seconds  when the last one was triggered

A quality metric appears only once `--min-rows` labelled rows are in its window, PSI once as many
requests are (below that it is noise). A file that cannot be read, or lacks the request log's
columns (or a retrain record that breaks its format), is logged with its path and the reason,
counted, and skipped (read again if it changes);
a scan that fails (bucket unreachable) is logged and retried at the next interval. Neither stops
the monitor.
"""
from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from collections import Counter
from datetime import datetime, timedelta

import numpy as np

from criteo_kernel import profiles, retrain_log, storage
from criteo_kernel.artifacts import LINEAGE, stored_artifacts
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS
from criteo_kernel.storage import fs_root

from .exposition import families
from .metrics import VersionWindow, feature_bins
from .request_log import KEY, LABELS, REQUESTS, RequestLogError, list_parts, part_partition, read_part

log = logging.getLogger("criteo_monitoring.monitor")
REFERENCE_RETRY_S = 30.0


CHUNK_ROWS = 1_000_000   # rows one scan reads before it joins them: what a backlog (a restart) holds at once


def _hour(partition: tuple[str, str]) -> datetime:
    return datetime.fromisoformat(f"{partition[0]}T{partition[1]}:00:00")


def _pending_schemas():
    import pyarrow as pa

    requests = pa.schema([("request_id", pa.string()), ("row", pa.int32()), ("event_time", pa.int64()),
                          ("model", pa.string()), ("version", pa.int32()), ("prediction", pa.float32())])
    labels = pa.schema([("request_id", pa.string()), ("row", pa.int32()), ("label", pa.int8())])
    return requests, labels


def _codes(array) -> tuple[np.ndarray, np.ndarray]:
    """(code of each value, rank of each code in the values' sort order) of a string column: the
    join and the (event_time, request_id, row) order work on integers, not on Python strings."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks() if array.num_chunks != 1 else array.chunk(0)
    encoded = pc.dictionary_encode(array)
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)
    rank = np.empty(len(encoded.dictionary) + 1, np.int64)
    rank[pc.sort_indices(encoded.dictionary).to_numpy()] = np.arange(len(encoded.dictionary))
    rank[-1] = -1   # a null sorts first (code -1 reads the last slot)
    return codes, rank


def _keys(codes: np.ndarray, rows) -> np.ndarray:
    """(request_id, row) as one int64: the request id's code in the high half, the row in the low."""
    return (codes << 32) | (rows.fill_null(-1).to_numpy().astype(np.int64) & 0xFFFFFFFF)


def _keep_last(keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mask of the last occurrence of each key, positions of those rows in key order)."""
    order = np.argsort(keys, kind="stable")
    ordered = keys[order]
    last = np.ones(len(keys), bool)
    last[:-1] = ordered[:-1] != ordered[1:]
    kept = order[last]
    keep = np.zeros(len(keys), bool)
    keep[kept] = True
    return keep, kept


def _groups(models, versions: np.ndarray, rows: np.ndarray):
    """[(model, version, positions in `rows`)] of the (model, version) pairs among `rows`, sorted."""
    import pyarrow as pa
    import pyarrow.compute as pc

    if isinstance(models, pa.ChunkedArray):
        models = models.combine_chunks() if models.num_chunks != 1 else models.chunk(0)
    encoded = pc.dictionary_encode(models)
    names = encoded.dictionary.to_pylist()
    codes = pc.fill_null(encoded.indices, -1).to_numpy().astype(np.int64)[rows]
    pair = codes * (1 << 33) + versions[rows].astype(np.int64)
    out = []
    for value in np.unique(pair):
        sel = np.flatnonzero(pair == value)
        out.append((names[codes[sel[0]]], int(versions[rows[sel[0]]]), sel))
    return sorted(out, key=lambda g: (g[0], g[1]))


class RequestLogMonitor:
    """The monitor's state: windows per (model, version), pending joins, counters. Thread-safe."""

    def __init__(self, request_log: str, model_repository: str | None = None, model: str | None = None,
                 window_rows: int = 5000, min_rows: int = 500, lookback_hours: float = 48,
                 max_pending_rows: int = 2_000_000, retrain_log_url: str | None = None):
        self.request_log = request_log.rstrip("/")
        self.model_repository = model_repository.rstrip("/") if model_repository else None
        self.model = model
        self.retrain_log = retrain_log_url.rstrip("/") if retrain_log_url else None
        self.retrains: dict[str, retrain_log.RetrainRecord] = {}  # path -> record
        self.window_rows = window_rows
        self.min_rows = min_rows
        self.lookback_hours = lookback_hours
        self.max_pending_rows = max_pending_rows
        self.windows: dict[tuple[str, int], VersionWindow] = {}
        self.logged: Counter = Counter()
        self.joined: Counter = Counter()
        self.files_read: Counter = Counter()
        self.seen: dict[str, int] = {}          # path -> size when read
        self.bad: dict[str, tuple[int, str]] = {}  # path -> (its size then, why it was skipped)
        self.references: dict[tuple[str, int], tuple[dict | None, float]] = {}
        requests, labels = _pending_schemas()
        self.pending_requests = requests.empty_table()  # requests still waiting for their label
        self.pending_labels = labels.empty_table()      # labels whose request has not been read yet
        self.dropped = 0
        self.dropped_labels = 0
        self.scan_errors = 0
        self.last_scan = None
        self.last_scan_seconds = None
        self.lock = threading.Lock()

    # -- reading the log ------------------------------------------------------------------------
    def _new_files(self, fs, kind: str) -> list[tuple[str, int]]:
        parts = list_parts(self.request_log, kind, None, True)
        if parts and self.lookback_hours:
            newest = _hour(part_partition(parts[-1][0]))
            oldest = newest - timedelta(hours=self.lookback_hours)
            parts = [(p, size) for p, size in parts if _hour(part_partition(p)) >= oldest]
        self._forget(fs, kind, {p for p, _ in parts})
        return [(p, size) for p, size in parts
                if self.seen.get(p) != size and self.bad.get(p, (None,))[0] != size]

    def _forget(self, fs, kind: str, listed: set[str]) -> None:
        """Drop what is remembered of the kind's files no longer listed (past the lookback): they are
        not read again, and a log of one file per second would otherwise grow this without bound."""
        _, root = fs_root(self.request_log)
        prefix = f"{root}/{kind}/"
        for p in [p for p in self.seen if p.startswith(prefix) and p not in listed]:
            del self.seen[p]

    def _changed(self, fs, paths) -> list[tuple[str, int]]:
        """(path, size) of the files not read yet, or changed since they were read or skipped."""
        new = []
        for p in paths:
            size = fs.size(p)
            if self.seen.get(p) == size or self.bad.get(p, (None,))[0] == size:
                continue
            new.append((p, size))
        return new

    def _skipped(self, path: str, size: int, why: str) -> None:
        if path not in self.bad:  # logged once, not at every scan
            log.error("skipping %s", why)
        self.bad[path] = (size, why)

    def _taken(self, path: str, size: int) -> None:
        self.seen[path] = size
        self.bad.pop(path, None)

    def _read(self, fs, kind: str, path: str, size: int):
        try:
            table = read_part(fs, path, kind)
        except RequestLogError as exc:
            self._skipped(path, size, str(exc))
            return None
        self._taken(path, size)
        self.files_read[kind] += 1
        return table

    def scan(self) -> dict:
        """Read what is new in the request log and update the windows; returns what it read.

        The new part files of both kinds are read in the order they were written (partition, then
        name: part-<ms>-...), up to CHUNK_ROWS rows at a time, each chunk joined before the next is
        read: a backlog (a restart's lookback) is never held whole."""
        t0 = time.monotonic()
        fs, _ = fs_root(self.request_log)
        files = [(p, size, kind) for kind in (REQUESTS, LABELS) for p, size in self._new_files(fs, kind)]
        files.sort(key=lambda f: (part_partition(f[0]), f[0].rsplit("/", 1)[-1], f[2]))
        new_retrains = self._read_retrains()
        out = {"request_rows": 0, "label_rows": 0, "joined": 0, "request_files": 0, "label_files": 0,
               "retrains": len(new_retrains)}
        with self.lock:
            self.retrains.update(new_retrains)
        chunk: dict[str, list] = {REQUESTS: [], LABELS: []}
        rows = 0
        for i, (path, size, kind) in enumerate(files):
            table = self._read(fs, kind, path, size)
            if table is not None:
                chunk[kind].append(table)
                rows += table.num_rows
            if chunk[REQUESTS] or chunk[LABELS]:
                if rows >= CHUNK_ROWS or i == len(files) - 1:
                    self._take_in(chunk, out)
                    chunk, rows = {REQUESTS: [], LABELS: []}, 0
        if chunk[REQUESTS] or chunk[LABELS]:
            self._take_in(chunk, out)
        with self.lock:
            self.last_scan = time.time()
            self.last_scan_seconds = time.monotonic() - t0
        return out

    def _take_in(self, chunk: dict[str, list], out: dict) -> None:
        """Add one chunk's requests to their windows, queue its labels, join what now matches."""
        import pyarrow as pa

        with self.lock:
            if chunk[REQUESTS]:
                out["request_rows"] += self._add_requests(pa.concat_tables(chunk[REQUESTS]))
                out["request_files"] += len(chunk[REQUESTS])
            if chunk[LABELS]:
                labels = pa.concat_tables([t.select([*KEY, "label"]) for t in chunk[LABELS]])
                out["label_rows"] += labels.num_rows
                out["label_files"] += len(chunk[LABELS])
                self.pending_labels = pa.concat_tables([self.pending_labels, labels])
            out["joined"] += self._join()

    def _read_retrains(self) -> dict[str, retrain_log.RetrainRecord]:
        """The retrain records that appeared (or changed) since the last scan."""
        if not self.retrain_log:
            return {}
        fs, root = fs_root(self.retrain_log)
        out = {}
        for path, size in self._changed(fs, retrain_log.list_records(fs, root)):
            try:
                with fs.open(path, "rb") as fh:
                    out[path] = retrain_log.RetrainRecord.parse(path, fh.read().decode("utf-8", "replace"))
            except (OSError, ValueError) as exc:  # a ValueError names the file and the field already
                why = str(exc) if isinstance(exc, ValueError) else f"{path}: {type(exc).__name__}: {exc}"
                self._skipped(path, size, f"retrain record {why}")
                continue
            self._taken(path, size)
            log.info("retrain of %s triggered at %s: %s (fired: %s)", out[path].model, out[path].at,
                     out[path].run_id, ", ".join(out[path].triggers) or "none")
        return out

    def _add_requests(self, table) -> int:
        """Count the requests (of --model), put the last --window-rows of each version (in event_time,
        request_id, row order) in its drift window, and queue them all for their labels in that
        order; returns how many. Only the rows a window keeps are binned: the rest would be pushed
        out of it by the same call. The wide table is never copied whole: only row positions move."""
        import pyarrow as pa

        codes, rank = _codes(table.column("request_id"))
        row = table.column("row")
        event_ms = table.column("event_time").cast(pa.int64()).fill_null(np.iinfo(np.int64).min).to_numpy()
        order = np.lexsort((row.fill_null(-1).to_numpy(), rank[codes], event_ms))
        versions = table.column("version").to_numpy()
        groups = _groups(table.column("model"), versions, order)
        if self.model:
            keep = np.zeros(len(order), bool)
            for model, _, sel in groups:
                keep[sel] = model == self.model
            order = order[keep]
            groups = _groups(table.column("model"), versions, order)
        for model, version, sel in groups:
            tail = table.select([*INT_COLUMNS, *CAT_COLUMNS]).take(order[sel[-self.window_rows:]])
            ints = np.stack([tail.column(c).to_numpy(zero_copy_only=False).astype(np.float64)
                             for c in INT_COLUMNS], 1)
            cats = np.stack([tail.column(c).fill_null(-1).to_numpy() for c in CAT_COLUMNS], 1)
            self._window(model, version).add_requests(feature_bins(ints, cats))
            self.logged[(model, version)] += len(sel)
        narrow = table.select(["request_id", "row", "event_time", "model", "version", "prediction"]).take(order)
        narrow = narrow.set_column(2, "event_time", narrow.column("event_time").cast(pa.int64()))
        self.pending_requests = pa.concat_tables([self.pending_requests, narrow.cast(self.pending_requests.schema)])
        return len(order)

    def _join(self) -> int:
        """Move labelled requests from pending into their windows, oldest first.

        A request logged twice (a rerun) counts once, and so does a label: the last read of each
        (request_id, row) is kept. Keys are integers (codes of the request ids), joined by sorting."""
        import pyarrow as pa

        req, lab = self.pending_requests, self.pending_labels
        if not req.num_rows or not lab.num_rows:
            self._bound_pending()
            return 0
        n = req.num_rows
        codes, rank = _codes(pa.chunked_array(req.column("request_id").chunks + lab.column("request_id").chunks,
                                              pa.string()))
        keys = _keys(codes, pa.chunked_array(req.column("row").chunks + lab.column("row").chunks, pa.int32()))
        req_keys = keys[:n]
        req_kept, _ = _keep_last(req_keys)
        lab_kept, by_key = _keep_last(keys[n:])
        lab_keys = keys[n:][by_key]
        at = np.minimum(np.searchsorted(lab_keys, req_keys), max(len(lab_keys) - 1, 0))
        hit = req_kept & (lab_keys[at] == req_keys)
        done = np.flatnonzero(hit)
        label_of = by_key[at[done]]   # the label row of each joined request
        event_ms = req.column("event_time").to_numpy()
        order = np.lexsort((req.column("row").fill_null(-1).to_numpy()[done], rank[codes[:n][done]], event_ms[done]))
        done, label_of = done[order], label_of[order]
        predictions = req.column("prediction").to_numpy()
        labels = lab.column("label").to_numpy()
        for model, version, sel in _groups(req.column("model"), req.column("version").to_numpy(), done):
            self._window(model, version).add_labelled(predictions[done[sel]].astype(np.float32),
                                                      labels[label_of[sel]].astype(np.int8))
            self.joined[(model, version)] += len(sel)
        used = np.zeros(lab.num_rows, bool)
        used[label_of] = True
        self.pending_requests = req.take(np.flatnonzero(req_kept & ~hit))
        self.pending_labels = lab.take(np.flatnonzero(lab_kept & ~used))
        self._bound_pending()
        return len(done)

    def _bound_pending(self) -> None:
        extra = self.pending_requests.num_rows - self.max_pending_rows
        if extra > 0:
            event_ms = self.pending_requests.column("event_time").to_numpy()
            self.pending_requests = self.pending_requests.take(np.argsort(event_ms, kind="stable")[extra:])
            self.dropped += extra
            log.warning("dropped the %d oldest requests still waiting for a label (more than %d pending)",
                        extra, self.max_pending_rows)
        extra = self.pending_labels.num_rows - self.max_pending_rows
        if extra > 0:  # labels of requests outside the lookback
            self.pending_labels = self.pending_labels.slice(extra)
            self.dropped_labels += extra
            log.warning("dropped the %d labels read first that still wait for their request (more than %d "
                        "pending)", extra, self.max_pending_rows)

    def _window(self, model: str, version: int) -> VersionWindow:
        key = (str(model), int(version))
        if key not in self.windows:
            self.windows[key] = VersionWindow(self.window_rows)
            log.info("first requests of %s version %s in the request log", *key)
        return self.windows[key]

    # -- reference profiles ---------------------------------------------------------------------
    def reference_url(self, model: str, version: int) -> str | None:
        """Where the version's reference profile lies: the artifact store URL its lineage names
        (the Triton repository holds only what serves); None when it has none."""
        version_dir = f"{self.model_repository}/{model}/{version}"
        lineage_url = f"{version_dir}/{LINEAGE}"
        lineage = storage.read_json(lineage_url) if storage.exists(lineage_url) else {}
        return stored_artifacts(lineage, version_dir).get("reference_profile")

    def reference(self, model: str, version: int) -> dict | None:
        """The version's reference profile, looked up again every 30 s while missing."""
        key = (model, version)
        cached = self.references.get(key)
        if cached and (cached[0] is not None or time.monotonic() - cached[1] < REFERENCE_RETRY_S):
            return cached[0]
        profile = None
        if self.model_repository:
            url = None
            try:
                url = self.reference_url(model, version)
                profile = profiles.load(url)
            except (OSError, ValueError, KeyError) as exc:
                log.error("cannot read the reference profile of %s version %s (%s): %s", model, version,
                          url or "lineage", exc)
            if profile is None and cached is None:
                log.warning("%s not found: no drift metrics for %s version %s (quality metrics still are)",
                            url, model, version)
        self.references[key] = (profile, time.monotonic())
        return profile

    # -- exposition -----------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Every metric's current value: {(model, version): {...}} plus the monitor's own."""
        with self.lock:
            versions = {}
            for (model, version), window in sorted(self.windows.items()):
                reference = self.reference(model, version)
                versions[(model, version)] = {
                    "quality": window.quality(self.min_rows),
                    "labelled_rows": len(window.labels),
                    "drift_rows": len(window.bins),
                    "drift": window.drift(reference, self.min_rows),
                    "reference": reference is not None,
                    "logged": self.logged[(model, version)],
                    "joined": self.joined[(model, version)],
                }
            retrains = None
            if self.retrain_log:
                models = {m for m, _ in self.windows} | ({self.model} if self.model else set())
                retrains = {m: {"count": 0, "last": None} for m in models}
                for record in self.retrains.values():
                    if self.model and record.model != self.model:
                        continue
                    r = retrains.setdefault(record.model, {"count": 0, "last": None})
                    r["count"] += 1
                    r["last"] = max(r["last"] or 0.0, record.timestamp())
            return {"versions": versions, "retrains": retrains, "files_read": dict(self.files_read),
                    "bad_files": len(self.bad),
                    "pending": {"requests": len(self.pending_requests), "labels": len(self.pending_labels)},
                    "dropped": self.dropped, "dropped_labels": self.dropped_labels,
                    "scan_errors": self.scan_errors, "last_scan": self.last_scan,
                    "last_scan_seconds": self.last_scan_seconds}

    def collect(self):
        """prometheus_client collector protocol: the metric families of the snapshot."""
        yield from families(self.snapshot())

    def scan_safely(self) -> dict | None:
        try:
            return self.scan()
        except Exception as exc:  # noqa: BLE001 - a bad scan (bucket unreachable) must not stop the monitor
            with self.lock:
                self.scan_errors += 1
            log.error("scan of %s failed (%s: %s); retrying at the next interval", self.request_log,
                      type(exc).__name__, exc)
            return None


def serve(monitor: RequestLogMonitor, host: str, port: int, interval_s: float) -> None:
    from prometheus_client import CollectorRegistry, start_http_server

    registry = CollectorRegistry()
    registry.register(monitor)
    server, _ = start_http_server(port, addr=host, registry=registry)
    log.info("monitor of %s serving metrics on http://%s:%s/metrics (window %d rows, scan every %gs)",
             monitor.request_log, host, port, monitor.window_rows, interval_s)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    while not stop.is_set():
        read = monitor.scan_safely()
        if read and (read["request_rows"] or read["label_rows"]):
            log.info("read %(request_rows)d request rows (%(request_files)d files), %(label_rows)d labels "
                     "(%(label_files)d files); joined %(joined)d", read)
        stop.wait(interval_s)
    server.shutdown()
    log.info("monitor stopped")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="criteo_monitoring monitor", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--request-log", required=True, help="request log URL: a folder or gs://bucket/prefix")
    p.add_argument("--model-repository", default=None,
                   help="the Triton model repository (each version's lineage.json names its reference profile)")
    p.add_argument("--model", default=None, help="only this model (default: every model in the log)")
    p.add_argument("--retrain-log", default=None,
                   help="model_monitoring's retrain log (<base>/retrain_log), counted as "
                        "criteo_retrains_triggered_total")
    p.add_argument("--host", default="127.0.0.1", help="address to serve /metrics on")
    p.add_argument("--port", type=int, default=9109)
    p.add_argument("--window-rows", type=int, default=5000, help="rows in each rolling window")
    p.add_argument("--min-rows", type=int, default=500, help="rows a window needs before its metrics appear")
    p.add_argument("--interval-s", type=float, default=5.0, help="seconds between scans of the request log")
    p.add_argument("--lookback-hours", type=float, default=48,
                   help="read partitions within this many hours of the newest (0: all)")
    p.add_argument("--max-pending-rows", type=int, default=2_000_000, help="unlabelled requests kept waiting")
    p.add_argument("--once", action="store_true", help="scan once, print the metrics and exit")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    if a.window_rows < 1 or a.min_rows < 1 or a.min_rows > a.window_rows:
        p.error(f"need 1 <= --min-rows <= --window-rows, got {a.min_rows} and {a.window_rows}")
    monitor = RequestLogMonitor(a.request_log, a.model_repository, a.model, a.window_rows, a.min_rows,
                                a.lookback_hours, a.max_pending_rows, a.retrain_log)
    if a.once:
        from prometheus_client import CollectorRegistry, generate_latest

        if monitor.scan_safely() is None:
            return 1
        registry = CollectorRegistry()
        registry.register(monitor)
        print(generate_latest(registry).decode(), end="")
        return 0
    serve(monitor, a.host, a.port, a.interval_s)
    return 0
