"""The monitor's state machine on a request log (no server): joins labels that come later, keeps
versions apart, skips bad files without stopping, rebuilds from the log after a restart."""
import logging
import os

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from criteo_monitoring.monitor import RequestLogMonitor
from criteo_monitoring.request_log import LABELS, list_parts

from .conftest import MODEL, day_profile, log_day

pytestmark = pytest.mark.unit


def exposition(monitor) -> dict:
    """The monitor's /metrics as {sample line without value: value}."""
    registry = CollectorRegistry()
    registry.register(monitor)
    out = {}
    for line in generate_latest(registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


def sel(version):
    return f'{{model="{MODEL}",version="{version}"}}'


def test_labels_that_arrive_later_are_joined_then(raw_days, tmp_path):
    log_day(raw_days / "day_0", 0, tmp_path / "log", labels=False)
    monitor = RequestLogMonitor(str(tmp_path / "log"), window_rows=5000, min_rows=500)
    monitor.scan()
    m = exposition(monitor)
    assert m[f"criteo_requests_logged_total{sel(1)}"] == 20000 and m[f"criteo_labels_joined_total{sel(1)}"] == 0
    assert f"criteo_rolling_auc{sel(1)}" not in m  # no labels yet: no quality metric at all
    assert m['criteo_monitor_pending_rows{kind="requests"}'] == 20000
    # the labels land now (the same rows, as replay writes them after its delay)
    log_day(raw_days / "day_0", 0, tmp_path / "labels_only")
    for src in list_parts(str(tmp_path / "labels_only"), LABELS):
        dst = src.replace("labels_only", "log")
        os.makedirs(os.path.dirname(dst), exist_ok=True)
        os.replace(src, dst)
    read = monitor.scan()
    assert read["joined"] == 20000 and read["request_rows"] == 0
    m = exposition(monitor)
    assert m[f"criteo_labels_joined_total{sel(1)}"] == 20000
    assert m[f"criteo_rolling_labelled_requests{sel(1)}"] == 5000
    assert 0.0 <= m[f"criteo_rolling_auc{sel(1)}"] <= 1.0 and m['criteo_monitor_pending_rows{kind="requests"}'] == 0
    # the window is the LAST 5000 rows of the day: the AUC equals the offline one over them
    from criteo_merlin.export.evaluate import roc_auc

    window = monitor.windows[(MODEL, 1)]
    assert m[f"criteo_rolling_auc{sel(1)}"] == \
        pytest.approx(roc_auc(window.labels.values(), window.predictions.values()))
    assert monitor.scan()["request_files"] == 0  # nothing new: nothing read again


def test_versions_are_kept_apart_and_psi_needs_the_reference(raw_days, tmp_path):
    import json

    repo = tmp_path / "repo"
    (repo / MODEL / "2").mkdir(parents=True)
    # The profile lies in the artifact store (the version's package), where the version's lineage says.
    profile = tmp_path / "store" / "package" / "reference_profile.json"
    profile.parent.mkdir(parents=True)
    profile.write_text(json.dumps(day_profile(raw_days / "day_0")))
    (repo / MODEL / "2" / "lineage.json").write_text(json.dumps({"artifacts": {"reference_profile": str(profile)}}))
    log_day(raw_days / "day_0", 0, tmp_path / "log", version=1)
    log_day(raw_days / "day_1", 1, tmp_path / "log", version=2)
    monitor = RequestLogMonitor(str(tmp_path / "log"), str(repo), window_rows=5000, min_rows=500)
    monitor.scan()
    m = exposition(monitor)
    assert m[f"criteo_requests_logged_total{sel(1)}"] == 20000 and m[f"criteo_requests_logged_total{sel(2)}"] == 6000
    assert m[f"criteo_reference_profile_loaded{sel(1)}"] == 0 and f"criteo_max_feature_psi{sel(1)}" not in m
    assert m[f"criteo_reference_profile_loaded{sel(2)}"] == 1
    psi = {k: v for k, v in m.items() if k.startswith("criteo_feature_psi{") and 'version="2"' in k}
    assert len(psi) == 39 and m[f"criteo_max_feature_psi{sel(2)}"] == max(psi.values()) > 0.25  # day_1 drifted


def test_a_bad_file_is_skipped_named_and_counted(raw_days, tmp_path, caplog):
    log_day(raw_days / "day_1", 1, tmp_path / "log")
    bad = tmp_path / "log/requests/date=2026-01-02/hour=05/part-0000000000000-broken.parquet"
    bad.write_bytes(b"not parquet at all")
    monitor = RequestLogMonitor(str(tmp_path / "log"), window_rows=5000, min_rows=500)
    with caplog.at_level(logging.ERROR, logger="criteo_monitoring.monitor"):
        monitor.scan()
        monitor.scan()
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and str(bad) in errors[0] and "unreadable requests log file" in errors[0]
    m = exposition(monitor)
    assert m["criteo_monitor_bad_files"] == 1 and m[f"criteo_labels_joined_total{sel(1)}"] == 6000


def test_a_failing_scan_is_counted_and_the_monitor_goes_on(tmp_path, monkeypatch):
    monitor = RequestLogMonitor(str(tmp_path / "log"))

    def boom(*_):
        raise OSError("bucket unreachable")

    monkeypatch.setattr("criteo_monitoring.monitor.list_parts", boom)
    assert monitor.scan_safely() is None
    assert exposition(monitor)["criteo_monitor_scan_errors_total"] == 1


def test_a_restart_rebuilds_the_windows_from_the_log(raw_days, tmp_path):
    log_day(raw_days / "day_0", 0, tmp_path / "log")
    log_day(raw_days / "day_1", 1, tmp_path / "log")
    first = RequestLogMonitor(str(tmp_path / "log"), window_rows=3000, min_rows=500)
    first.scan()
    again = RequestLogMonitor(str(tmp_path / "log"), window_rows=3000, min_rows=500)
    again.scan()
    timing = {"criteo_monitor_last_scan_timestamp_seconds": 0, "criteo_monitor_scan_duration_seconds": 0}
    assert exposition(first) | timing == exposition(again) | timing
    # the lookback: only partitions within 6 h of the newest are read (day_1's last hours)
    recent = RequestLogMonitor(str(tmp_path / "log"), window_rows=3000, min_rows=500, lookback_hours=6)
    recent.scan()
    logged = exposition(recent)[f"criteo_requests_logged_total{sel(1)}"]
    assert 1000 < logged < 2000  # 7 of day_1's 24 hour partitions, 250 rows each


def test_a_replay_rerun_is_joined_once(raw_days, tmp_path):
    log_day(raw_days / "day_1", 1, tmp_path / "log")
    log_day(raw_days / "day_1", 1, tmp_path / "log")  # the same request ids again
    monitor = RequestLogMonitor(str(tmp_path / "log"), window_rows=10_000, min_rows=500)
    monitor.scan()
    m = exposition(monitor)
    assert m[f"criteo_requests_logged_total{sel(1)}"] == 12000  # rows read
    assert m[f"criteo_labels_joined_total{sel(1)}"] == 6000 and m[f"criteo_rolling_labelled_requests{sel(1)}"] == 6000
    assert m['criteo_monitor_pending_rows{kind="requests"}'] == 0
    assert m['criteo_monitor_pending_rows{kind="labels"}'] == 0


def write_record(log_url, model, run_id, at, **extra):
    from criteo_kernel import retrain_log

    record = retrain_log.RetrainRecord(model=model, version=1, at=at, run_id=run_id, **extra)
    path = retrain_log.record_url(str(log_url), record)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as fh:
        fh.write(record.to_json())
    return path


def test_retrains_in_the_retrain_log_are_counted_per_model(tmp_path, caplog):
    """0 before any retrain (so increase() sees the first one), then one per record; a record
    rewritten by a retried task counts once; a broken one is named, skipped and counted."""
    from datetime import datetime

    retrains = tmp_path / "retrain_log"
    monitor = RequestLogMonitor(str(tmp_path / "log"), model=MODEL, retrain_log_url=str(retrains))
    monitor.scan()
    m = exposition(monitor)
    assert m[f'criteo_retrains_triggered_total{{model="{MODEL}"}}'] == 0
    assert not any(k.startswith("criteo_last_retrain_triggered_timestamp_seconds") for k in m)

    write_record(retrains, MODEL, "monitoring__a", "2026-11-24T12:00:05+00:00", triggers=["auc_degraded"])
    write_record(retrains, MODEL, "monitoring__b", "2026-11-24T18:30:00+00:00", triggers=["drift_detected"])
    write_record(retrains, "another_model", "monitoring__c", "2026-11-25T00:00:00+00:00")  # not this monitor's
    bad = retrains / MODEL / "broken.json"
    bad.write_text('{"model": "criteo_dcn", "at": "yesterday", "run_id": "x"}')
    with caplog.at_level(logging.ERROR, logger="criteo_monitoring.monitor"):
        assert monitor.scan()["retrains"] == 3
        assert monitor.scan()["retrains"] == 0  # nothing new: nothing read again
        # a retried record_retrain rewrites its run's record: read again, still one retrain
        write_record(retrains, MODEL, "monitoring__b", "2026-11-24T18:30:00+00:00", triggers=["drift_detected"],
                     reason="written again by a retry")
        assert monitor.scan()["retrains"] == 1
    m = exposition(monitor)
    assert m[f'criteo_retrains_triggered_total{{model="{MODEL}"}}'] == 2
    assert m[f'criteo_last_retrain_triggered_timestamp_seconds{{model="{MODEL}"}}'] == \
        datetime.fromisoformat("2026-11-24T18:30:00+00:00").timestamp()
    assert not any('another_model' in k for k in m)
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"skipping retrain record {bad}: field 'at' is 'yesterday'; expected an ISO-8601 time"]
    assert m["criteo_monitor_bad_files"] == 1
    # every model when the monitor watches all of them
    every = RequestLogMonitor(str(tmp_path / "log"), retrain_log_url=str(retrains))
    every.scan()
    assert exposition(every)['criteo_retrains_triggered_total{model="another_model"}'] == 1


def test_without_a_retrain_log_there_is_no_retrain_metric(tmp_path):
    monitor = RequestLogMonitor(str(tmp_path / "log"), model=MODEL)
    monitor.scan()
    assert not any(k.startswith("criteo_retrains_triggered") for k in exposition(monitor))
