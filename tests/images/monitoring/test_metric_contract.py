"""One contract for the monitor's metric names (criteo_kernel.metric_names): what the monitor
exports, what the sensors watch and what the Grafana dashboard queries are the same names."""
import json
import re
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily

from criteo_kernel import metric_names
from criteo_monitoring.monitor import RequestLogMonitor

from .conftest import MODEL, log_day

pytestmark = pytest.mark.unit
DASHBOARD = Path(__file__).resolve().parents[3] / "k8s" / "grafana" / "dashboards" / "criteo-serving.json"


def test_the_monitor_exports_exactly_the_contracts_names(raw_days, tmp_path):
    log_day(raw_days / "day_0", 0, tmp_path / "log")
    monitor = RequestLogMonitor(str(tmp_path / "log"), model=MODEL, window_rows=5000, min_rows=500,
                                retrain_log_url=str(tmp_path / "retrain_log"))
    monitor.scan()
    CollectorRegistry().register(monitor)
    families = list(monitor.collect())
    assert {f.name for f in families} == metric_names.ALL
    counters = {f.name for f in families if isinstance(f, CounterMetricFamily)}
    assert counters == metric_names.COUNTERS


def test_the_sensors_watch_names_of_the_contract():
    from operators.sensors.prometheus import FeatureDriftSensor, RollingAUCSensor

    assert {RollingAUCSensor.metric, FeatureDriftSensor.metric} <= metric_names.ALL


def test_every_criteo_series_the_dashboard_queries_is_exported():
    exprs = [t["expr"] for panel in json.loads(DASHBOARD.read_text())["panels"] for t in panel.get("targets", [])]
    queried = {name for expr in exprs for name in re.findall(r"\b(criteo_[a-z_]+)", expr)}
    exported = {metric_names.exported(name) for name in metric_names.ALL}
    assert queried and queried <= exported, queried - exported
