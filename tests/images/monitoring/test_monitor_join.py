"""The monitor's vectorised join and window updates on crafted request logs: which rows are counted,
which label each request gets, in which order they enter the windows, what is kept waiting and what
is evicted (and counted). Throughput itself is measured in bench/bench_load.py, not here."""
import time

import numpy as np
import pytest

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS
from criteo_monitoring import monitor as monitor_module
from criteo_monitoring.metrics import feature_bins
from criteo_monitoring.monitor import RequestLogMonitor
from criteo_monitoring.request_log import LABELS, REQUESTS, RequestLogWriter

from .conftest import MODEL, log_day
from .test_monitor import exposition, sel

pytestmark = pytest.mark.unit
T0 = 1_767_225_600_000  # 2026-01-01T00:00Z, in ms


def requests(rows):
    """A requests table of (request_id, row, event ms offset, model, version, prediction, I1, C1)."""
    import pyarrow as pa

    ts = pa.timestamp("ms", tz="UTC")
    n = len(rows)
    cols = {
        "request_id": pa.array([r[0] for r in rows], pa.string()),
        "row": pa.array([r[1] for r in rows], pa.int32()),
        "event_time": pa.array([T0 + r[2] for r in rows], ts),
        "criteo_day": pa.array([0] * n, pa.int32()),
        "served_at": pa.array([T0] * n, ts),
        "model": pa.array([r[3] for r in rows], pa.string()),
        "version": pa.array([r[4] for r in rows], pa.int32()),
        "prediction": pa.array([r[5] for r in rows], pa.float32()),
        "latency_ms": pa.array([1.0] * n, pa.float32()),
    }
    for c in INT_COLUMNS:
        cols[c] = pa.array([r[6] if c == "I1" else None for r in rows], pa.int64())
    for c in CAT_COLUMNS:
        cols[c] = pa.array([r[7] if c == "C1" else None for r in rows], pa.int64())
    return pa.table(cols)


def labels(rows):
    """A labels table of (request_id, row, event ms offset, label)."""
    import pyarrow as pa

    ts = pa.timestamp("ms", tz="UTC")
    return pa.table({"request_id": pa.array([r[0] for r in rows], pa.string()),
                     "row": pa.array([r[1] for r in rows], pa.int32()),
                     "event_time": pa.array([T0 + r[2] for r in rows], ts),
                     "criteo_day": pa.array([0] * len(rows), pa.int32()),
                     "labelled_at": pa.array([T0] * len(rows), ts),
                     "label": pa.array([r[3] for r in rows], pa.int8())})


def write(log, kind, table):
    RequestLogWriter(str(log)).write(kind, table)
    time.sleep(0.003)  # part names carry the ms they were written at: the order they are read in


def chronological(ring):
    """A ring's rows oldest first (its storage wraps around)."""
    return np.roll(ring.values(), -ring.pos, axis=0) if ring.count >= ring.size else ring.values()


def expected_bins(rows):
    ints = np.full((len(rows), len(INT_COLUMNS)), np.nan)
    ints[:, 0] = [r[6] for r in rows]
    cats = np.full((len(rows), len(CAT_COLUMNS)), -1, np.int64)
    cats[:, 0] = [r[7] for r in rows]
    return feature_bins(ints, cats)


def test_labels_join_their_requests_in_event_time_request_id_row_order(tmp_path):
    log = tmp_path / "log"
    rows = [("b", 0, 2000, MODEL, 1, 0.2, 3, 11), ("b", 1, 2000, MODEL, 1, 0.3, 40, 12),
            ("a", 1, 2000, MODEL, 1, 0.5, 500, 13), ("a", 0, 2000, MODEL, 1, 0.4, 6000, 14),
            ("c", 0, 1000, MODEL, 1, 0.1, 7, 15),
            ("v2", 0, 1500, MODEL, 2, 0.7, 8, 16),
            ("other", 0, 1000, "another_model", 1, 0.9, 9, 17)]   # not --model: neither counted nor joined
    write(log, REQUESTS, requests(rows))
    write(log, LABELS, labels([("a", 0, 2000, 1), ("b", 0, 2000, 0), ("c", 0, 1000, 1), ("a", 1, 2000, 0),
                               ("v2", 0, 1500, 1), ("other", 0, 1000, 1), ("zz", 0, 2000, 1)]))
    monitor = RequestLogMonitor(str(log), model=MODEL, window_rows=3, min_rows=1)
    read = monitor.scan()
    assert read == {"request_rows": 6, "label_rows": 7, "joined": 5, "request_files": 1, "label_files": 1,
                    "retrains": 0}
    v1 = monitor.windows[(MODEL, 1)]
    # c (t=1000) first; then at t=2000 a before b, row 0 before row 1; b1 has no label yet
    # the last 3 of c0 a0 a1 b0
    np.testing.assert_array_equal(chronological(v1.predictions), np.float32([0.4, 0.5, 0.2]))
    np.testing.assert_array_equal(chronological(v1.labels), [1, 0, 0])
    # the drift window: the last 3 requests of version 1 in that order (a1, b0, b1)
    np.testing.assert_array_equal(chronological(v1.bins), expected_bins([rows[2], rows[0], rows[1]]))
    np.testing.assert_array_equal(chronological(monitor.windows[(MODEL, 2)].labels), [1])
    assert set(monitor.windows) == {(MODEL, 1), (MODEL, 2)}
    m = exposition(monitor)
    assert m[f"criteo_requests_logged_total{sel(1)}"] == 5 and m[f"criteo_labels_joined_total{sel(1)}"] == 4
    assert m[f"criteo_labels_joined_total{sel(2)}"] == 1
    # b1 waits for its label; the labels of "other" (another model) and "zz" wait for a request
    assert m['criteo_monitor_pending_rows{kind="requests"}'] == 1
    assert m['criteo_monitor_pending_rows{kind="labels"}'] == 2

    write(log, LABELS, labels([("b", 1, 2000, 1)]))
    assert monitor.scan()["joined"] == 1
    np.testing.assert_array_equal(chronological(v1.predictions), np.float32([0.5, 0.2, 0.3]))
    np.testing.assert_array_equal(chronological(v1.labels), [0, 0, 1])
    assert exposition(monitor)['criteo_monitor_pending_rows{kind="requests"}'] == 0


def test_a_request_or_label_read_twice_counts_once_the_last_read_wins(tmp_path):
    log = tmp_path / "log"
    write(log, REQUESTS, requests([("d", 0, 0, MODEL, 1, 0.1, 1, 1), ("e", 0, 0, MODEL, 1, 0.6, 1, 1)]))
    write(log, REQUESTS, requests([("d", 0, 0, MODEL, 1, 0.9, 1, 1)]))   # a rerun logs d0 again
    write(log, LABELS, labels([("d", 0, 0, 0), ("e", 0, 0, 0)]))
    write(log, LABELS, labels([("d", 0, 0, 1)]))
    monitor = RequestLogMonitor(str(log), model=MODEL, window_rows=10, min_rows=1)
    assert monitor.scan()["joined"] == 2
    window = monitor.windows[(MODEL, 1)]
    np.testing.assert_array_equal(chronological(window.predictions), np.float32([0.9, 0.6]))
    np.testing.assert_array_equal(chronological(window.labels), [1, 0])
    m = exposition(monitor)
    assert m[f"criteo_requests_logged_total{sel(1)}"] == 3   # rows read
    assert m['criteo_monitor_pending_rows{kind="requests"}'] == 0
    assert m['criteo_monitor_pending_rows{kind="labels"}'] == 0


def test_what_waits_too_long_is_evicted_and_counted(tmp_path, caplog):
    log = tmp_path / "log"
    # five requests with no label yet, oldest event last; at most 3 wait: the 2 oldest events go
    write(log, REQUESTS, requests([(f"r{i}", 0, 100 - i, MODEL, 1, 0.1 * i, 1, 1) for i in range(5)]))
    # five labels whose requests are not in the log yet: the 2 read first go
    write(log, LABELS, labels([(f"l{i}", 0, 0, 1) for i in range(5)]))
    monitor = RequestLogMonitor(str(log), model=MODEL, window_rows=10, min_rows=1, max_pending_rows=3)
    monitor.scan()
    m = exposition(monitor)
    assert m["criteo_monitor_unlabelled_dropped_total"] == 2
    assert m["criteo_monitor_unjoined_labels_dropped_total"] == 2
    assert m['criteo_monitor_pending_rows{kind="requests"}'] == 3
    assert m['criteo_monitor_pending_rows{kind="labels"}'] == 3
    # the evicted ones (r3, r4 and l0, l1) never join; the kept ones do when their other half comes
    write(log, LABELS, labels([(f"r{i}", 0, 100 - i, 1) for i in range(5)]))
    write(log, REQUESTS, requests([(f"l{i}", 0, 200, MODEL, 1, 0.5, 1, 1) for i in range(5)]))
    monitor.scan()
    m = exposition(monitor)
    assert m[f"criteo_labels_joined_total{sel(1)}"] == 6   # r0 r1 r2 and l2 l3 l4
    window = chronological(monitor.windows[(MODEL, 1)].predictions)
    np.testing.assert_array_equal(window[:3], np.float32([0.2, 0.1, 0.0]))   # r2 r1 r0: event time order
    # r3 r4's labels now wait (their requests are gone), l0 l1's requests wait for labels already dropped
    assert m['criteo_monitor_pending_rows{kind="labels"}'] == 2
    assert m['criteo_monitor_pending_rows{kind="requests"}'] == 2


def test_reading_a_backlog_in_chunks_gives_the_same_metrics(raw_days, tmp_path, monkeypatch):
    log_day(raw_days / "day_1", 1, tmp_path / "log", chunk_rows=500)   # 12 parts of each kind
    whole = RequestLogMonitor(str(tmp_path / "log"), window_rows=2000, min_rows=500)
    whole.scan()
    monkeypatch.setattr(monitor_module, "CHUNK_ROWS", 700)   # two parts at a time, requests and labels mixed
    chunked = RequestLogMonitor(str(tmp_path / "log"), window_rows=2000, min_rows=500)
    read = chunked.scan()
    assert read["request_rows"] == read["label_rows"] == read["joined"] == 6000
    timing = {"criteo_monitor_last_scan_timestamp_seconds": 0, "criteo_monitor_scan_duration_seconds": 0}
    assert exposition(whole) | timing == exposition(chunked) | timing
    for attr in ("predictions", "labels", "bins"):
        np.testing.assert_array_equal(getattr(whole.windows[(MODEL, 1)], attr).values(),
                                      getattr(chunked.windows[(MODEL, 1)], attr).values())
