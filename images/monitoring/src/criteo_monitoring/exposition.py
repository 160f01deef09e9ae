"""The monitor's /metrics: one snapshot of its state (RequestLogMonitor.snapshot) as Prometheus
metric families, named by the kernel's contract (criteo_kernel.metric_names)."""
from __future__ import annotations

from criteo_kernel import metric_names as M
from criteo_kernel.schema import FEATURES

from .request_log import LABELS, REQUESTS


def families(snap: dict):
    """The monitor's metric families (criteo_kernel.metric_names) for one snapshot of its state."""
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    mv = ["model", "version"]

    def gauge(name, doc, labels=mv):
        return GaugeMetricFamily(name, doc, labels=labels)

    quality = {
        "auc": gauge(M.ROLLING_AUC, "AUC over the last labelled requests of the version"),
        "logloss": gauge(M.ROLLING_LOGLOSS, "Logloss over the last labelled requests of the version"),
        "predicted_ctr": gauge(M.ROLLING_PREDICTED_CTR, "Mean prediction over the labelled window"),
        "observed_ctr": gauge(M.ROLLING_OBSERVED_CTR, "Observed click rate over the labelled window"),
        "calibration": gauge(M.CALIBRATION_RATIO, "Predicted CTR / observed CTR over the labelled window"),
    }
    rows = gauge(M.ROLLING_LABELLED_REQUESTS, "Labelled rows in the quality window")
    drift_rows = gauge(M.DRIFT_WINDOW_REQUESTS, "Requests in the drift window")
    psi = gauge(M.FEATURE_PSI, "PSI of a feature: recent requests vs the version's training reference",
                labels=[*mv, "feature"])
    max_psi = gauge(M.MAX_FEATURE_PSI, "Largest feature PSI vs the version's training reference")
    loaded = gauge(M.REFERENCE_PROFILE_LOADED, "1 when the version's reference profile was found")
    logged = CounterMetricFamily(M.REQUESTS_LOGGED, "Request rows read from the request log", labels=mv)
    joined = CounterMetricFamily(M.LABELS_JOINED, "Request rows joined with their label", labels=mv)
    for (model, version), v in snap["versions"].items():
        lv = [model, str(version)]
        if v["quality"]:
            for key, family in quality.items():
                family.add_metric(lv, v["quality"][key])
        rows.add_metric(lv, v["labelled_rows"])
        drift_rows.add_metric(lv, v["drift_rows"])
        if v["drift"]:
            for feature in FEATURES:
                if feature in v["drift"]:
                    psi.add_metric([*lv, feature], v["drift"][feature])
            max_psi.add_metric(lv, max(v["drift"].values()))
        loaded.add_metric(lv, 1.0 if v["reference"] else 0.0)
        logged.add_metric(lv, v["logged"])
        joined.add_metric(lv, v["joined"])
    yield from quality.values()
    yield from (rows, drift_rows, psi, max_psi, loaded, logged, joined)
    if snap["retrains"] is not None:
        count = CounterMetricFamily(M.RETRAINS_TRIGGERED, "Full retrains model_monitoring triggered "
                                    "(records in the retrain log)", labels=["model"])
        last = gauge(M.LAST_RETRAIN_TRIGGERED,
                     "When model_monitoring last triggered a full retrain", labels=["model"])
        for model, r in sorted(snap["retrains"].items()):
            count.add_metric([model], r["count"])
            if r["last"] is not None:
                last.add_metric([model], r["last"])
        yield count
        yield last
    files = CounterMetricFamily(M.FILES_READ, "Request log part files read", labels=["kind"])
    for kind in (REQUESTS, LABELS):
        files.add_metric([kind], snap["files_read"].get(kind, 0))
    yield files
    yield GaugeMetricFamily(M.BAD_FILES,
                            "Part files and retrain records skipped as unreadable or malformed",
                            value=snap["bad_files"])
    pending = gauge(M.PENDING_ROWS, "Rows waiting to be joined", labels=["kind"])
    for kind, n in snap["pending"].items():
        pending.add_metric([kind], n)
    yield pending
    yield CounterMetricFamily(M.UNLABELLED_DROPPED, "Requests dropped while waiting for a label",
                              value=snap["dropped"])
    yield CounterMetricFamily(M.UNJOINED_LABELS_DROPPED, "Labels dropped while waiting for their request "
                              "(more than --max-pending-rows pending)", value=snap["dropped_labels"])
    yield CounterMetricFamily(M.SCAN_ERRORS, "Scans of the request log that failed",
                              value=snap["scan_errors"])
    if snap["last_scan"] is not None:
        yield GaugeMetricFamily(M.LAST_SCAN, "When the last scan ended",
                                value=snap["last_scan"])
        yield GaugeMetricFamily(M.SCAN_DURATION, "How long the last scan took",
                                value=snap["last_scan_seconds"])
