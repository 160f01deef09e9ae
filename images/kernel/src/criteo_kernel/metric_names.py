"""The monitor's Prometheus metrics: one contract for the exporter (criteo_monitoring.monitor), the
Airflow sensors that watch them (operators/sensors/prometheus.py) and the Grafana dashboard
(k8s/grafana/dashboards, checked by a test). A renamed metric is one diff here.

Counters are declared without their `_total` suffix, as prometheus_client's families take them;
`exported()` gives the name a query uses.
"""
from __future__ import annotations

# Per served version {model, version}: quality over the last labelled requests, drift vs the
# version's training reference.
ROLLING_AUC = "criteo_rolling_auc"
ROLLING_LOGLOSS = "criteo_rolling_logloss"
ROLLING_PREDICTED_CTR = "criteo_rolling_predicted_ctr"
ROLLING_OBSERVED_CTR = "criteo_rolling_observed_ctr"
CALIBRATION_RATIO = "criteo_calibration_ratio"
ROLLING_LABELLED_REQUESTS = "criteo_rolling_labelled_requests"
DRIFT_WINDOW_REQUESTS = "criteo_drift_window_requests"
FEATURE_PSI = "criteo_feature_psi"            # {model, version, feature}
MAX_FEATURE_PSI = "criteo_max_feature_psi"
REFERENCE_PROFILE_LOADED = "criteo_reference_profile_loaded"
REQUESTS_LOGGED = "criteo_requests_logged"    # counter
LABELS_JOINED = "criteo_labels_joined"        # counter
# Per model: the full retrains model_monitoring triggered (its retrain log).
RETRAINS_TRIGGERED = "criteo_retrains_triggered"  # counter
LAST_RETRAIN_TRIGGERED = "criteo_last_retrain_triggered_timestamp_seconds"
# The monitor's own health.
FILES_READ = "criteo_monitor_files_read"      # counter {kind}
BAD_FILES = "criteo_monitor_bad_files"
PENDING_ROWS = "criteo_monitor_pending_rows"  # {kind}
UNLABELLED_DROPPED = "criteo_monitor_unlabelled_dropped"  # counter
UNJOINED_LABELS_DROPPED = "criteo_monitor_unjoined_labels_dropped"  # counter
SCAN_ERRORS = "criteo_monitor_scan_errors"    # counter
LAST_SCAN = "criteo_monitor_last_scan_timestamp_seconds"
SCAN_DURATION = "criteo_monitor_scan_duration_seconds"

COUNTERS = frozenset({REQUESTS_LOGGED, LABELS_JOINED, RETRAINS_TRIGGERED, FILES_READ, UNLABELLED_DROPPED,
                      UNJOINED_LABELS_DROPPED, SCAN_ERRORS})
ALL = frozenset(value for name, value in dict(globals()).items()
                if name.isupper() and isinstance(value, str) and value.startswith("criteo_"))


def exported(name: str) -> str:
    """The series name Prometheus stores: a counter's gets `_total`."""
    return f"{name}_total" if name in COUNTERS else name
