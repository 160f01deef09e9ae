"""The Prometheus sensors against a REAL Prometheus (Debian's binary, scrape interval 1 s) scraping a
real exporter run by the test (prometheus_client on a free port, its own registry, the monitor's
metric names). Each scenario uses its own `version` label, so the series do not interfere.

The trigger's async run() is exercised directly (asyncio), and the sensors through the deferral
path: execute() -> TaskDeferred -> the trigger rebuilt from its serialized form, as the triggerer
does -> resume_execution() with the event.
"""
import asyncio
import math
import re
import threading
import time

import pytest

from operators.local_services.process import free_port
from operators.prometheus import (PrometheusHook, PrometheusQueryError, PrometheusUnavailable, evaluate_condition,
                                  range_step)

pytestmark = pytest.mark.integration
MODEL = "criteo_dcn"
SUSTAINED = 4       # seconds the condition must hold (step 1 s: 5 points per window)
POLL = 0.5
# initial value of each scenario's series: AUC (criteo_rolling_auc) or PSI (criteo_max_feature_psi)
AUC = {"low": 0.55, "dip": 0.80, "high": 0.85, "sensor-low": 0.50, "sensor-high": 0.90, "poke-low": 0.52}
PSI = {"drift": 0.40, "nodrift": 0.05}


class Exporter:
    """The monitor's metrics contract, values set by the test."""

    def __init__(self):
        from prometheus_client import CollectorRegistry, Gauge, start_http_server

        self.registry = CollectorRegistry()
        labels = ["model", "version"]
        self.auc = Gauge("criteo_rolling_auc", "rolling AUC", labels, registry=self.registry)
        self.logloss = Gauge("criteo_rolling_logloss", "rolling logloss", labels, registry=self.registry)
        self.rows = Gauge("criteo_rolling_labelled_requests", "rows in the window", labels, registry=self.registry)
        self.max_psi = Gauge("criteo_max_feature_psi", "max PSI", labels, registry=self.registry)
        self.psi = Gauge("criteo_feature_psi", "PSI per feature", labels + ["feature"], registry=self.registry)
        self.port = free_port()
        self.server, self.thread = start_http_server(self.port, addr="127.0.0.1", registry=self.registry)

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def prom(tmp_path_factory):
    from operators.local_services.prometheus import LocalPrometheus

    exporter = Exporter()
    for version, value in AUC.items():
        exporter.auc.labels(MODEL, version).set(value)
        exporter.rows.labels(MODEL, version).set(5000)
    for version, value in PSI.items():
        exporter.max_psi.labels(MODEL, version).set(value)
        exporter.psi.labels(MODEL, version, "C1").set(value)
    work = tmp_path_factory.mktemp("prometheus")
    with LocalPrometheus([f"127.0.0.1:{exporter.port}"], work_dir=work, log_path=work / "prometheus.log",
                         scrape_interval_s=1.0) as server:
        hook = PrometheusHook(server.url)
        deadline = time.time() + 30
        while not hook.query('criteo_rolling_auc{version="low"}'):  # first scrape (~5 s after start)
            assert time.time() < deadline, server.process.tail()
            time.sleep(0.3)
        exporter.url, exporter.prometheus = server.url, server
        yield exporter
    exporter.stop()


def auc_query(version):
    return f'criteo_rolling_auc{{model="{MODEL}",version="{version}"}}'


def psi_query(version):
    return f'criteo_max_feature_psi{{model="{MODEL}",version="{version}"}}'


def trigger(url, query, op, threshold, timeout_s, sustained_s=SUSTAINED):
    from operators.triggers import PrometheusConditionTrigger

    return PrometheusConditionTrigger(prometheus_url=url, query=query, op=op, threshold=threshold,
                                      sustained_s=sustained_s, poll_interval_s=POLL, timeout_s=timeout_s)


async def first_event(trig):
    async for event in trig.run():
        return event.payload
    return None


def run_triggers(*triggers):
    async def all_of():
        return await asyncio.gather(*(first_event(t) for t in triggers))

    return asyncio.run(all_of())


# -- the condition itself (pure) ---------------------------------------------------------------------
def series(values, labels=None, start=100.0, step=1.0):
    return {"metric": labels or {"version": "1"},
            "values": [[start + i * step, str(v)] for i, v in enumerate(values) if v is not None]}


@pytest.mark.unit
def test_condition_needs_every_step_and_coverage():
    ok = evaluate_condition([series([0.6, 0.6, 0.65, 0.6, 0.61])], "<", 0.7, 100, 104, 1)
    assert ok.met and ok.value == 0.61 and ok.worst == 0.65 and ok.coverage == 1.0
    dip = evaluate_condition([series([0.8, 0.6, 0.6, 0.8, 0.8])], "<", 0.7, 100, 104, 1)
    assert not dip.met and "3 of 5 steps not < 0.7" in dip.reason
    young = evaluate_condition([series([None, None, 0.6, 0.6, 0.6])], "<", 0.7, 100, 104, 1)
    assert not young.met and "only 3 of 5 steps" in young.reason
    nan = evaluate_condition([series([0.6, math.nan, 0.6, 0.6, 0.6])], "<", 0.7, 100, 104, 1)
    assert not nan.met
    assert evaluate_condition([series([0.3] * 5)], ">", 0.25, 100, 104, 1).met
    empty = evaluate_condition([], ">", 0.25, 100, 104, 1, query="criteo_max_feature_psi")
    assert not empty.met and empty.reason == "no samples for criteo_max_feature_psi yet"
    two = evaluate_condition([series([0.9] * 5, {"v": "a"}), series([0.5] * 5, {"v": "b"})], "<", 0.7, 100, 104, 1)
    assert two.met and two.labels == {"v": "b"}
    assert range_step(600) == 60 and range_step(4) == 1


@pytest.mark.unit
def test_local_prometheus_config_and_missing_binary(tmp_path):
    from operators.local_services.prometheus import LocalPrometheus

    p = LocalPrometheus(["127.0.0.1:9100", "http://127.0.0.1:8002/metrics/custom"], work_dir=tmp_path,
                        scrape_interval_s=0.5)
    jobs = p.config()["scrape_configs"]
    assert [j["metrics_path"] for j in jobs] == ["/metrics", "/metrics/custom"]
    assert [j["static_configs"][0]["targets"] for j in jobs] == [["127.0.0.1:9100"], ["127.0.0.1:8002"]]
    assert p.config()["global"]["scrape_interval"] == "500ms" and p.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="expected 'host:port'"):
        LocalPrometheus(["nohost"], work_dir=tmp_path)
    missing = LocalPrometheus(["127.0.0.1:9100"], work_dir=tmp_path / "x", binary=str(tmp_path / "prometheus"))
    with pytest.raises(FileNotFoundError, match="run `make setup`"):
        missing.start()


# -- the hook --------------------------------------------------------------------------------------
def test_hook_queries_and_errors(prom):
    hook = PrometheusHook(prom.url)
    (row,) = hook.query(auc_query("low"))
    assert float(row["value"][1]) == AUC["low"] and row["metric"]["version"] == "low"
    now = time.time()
    (rng,) = hook.query_range(auc_query("low"), now - 3, now, 1)
    assert rng["values"] and all(v == str(AUC["low"]) for _, v in rng["values"])
    with pytest.raises(PrometheusQueryError, match=r"rejected 'sum\(criteo_rolling_auc': bad_data: .*parse error"):
        hook.query("sum(criteo_rolling_auc")
    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(PrometheusUnavailable, match=f"Prometheus at {dead} is unreachable"):
        PrometheusHook(dead).query("up")
    with pytest.raises(PrometheusUnavailable, match="unreachable"):
        asyncio.run(PrometheusHook(dead).aquery_range("up", now - 3, now, 1))


def test_add_target_reloads(prom):
    extra = Exporter()
    try:
        from prometheus_client import Gauge

        Gauge("criteo_probe", "probe", registry=extra.registry).set(7)
        prom.prometheus.add_target(f"http://127.0.0.1:{extra.port}/metrics")
        assert f"127.0.0.1:{extra.port}" in prom.prometheus.config_path.read_text()
        hook, deadline = PrometheusHook(prom.url), time.time() + 20
        while not hook.query("criteo_probe"):
            assert time.time() < deadline, "the added target was never scraped"
            time.sleep(0.3)
    finally:
        extra.stop()


# -- the trigger's run(), directly ------------------------------------------------------------------
def test_auc_trigger_fires_when_auc_stays_below(prom):
    (event,) = run_triggers(trigger(prom.url, auc_query("low"), "<", 0.7, timeout_s=15))
    assert event["status"] == "fired", event
    assert event["value"] == AUC["low"] and event["labels"]["version"] == "low"
    assert "stayed < 0.7 for the whole 4s window" in event["reason"]


def test_a_new_low_series_fires_only_once_it_covers_the_window(prom):
    prom.auc.labels(MODEL, "fresh").set(0.5)  # appears now: at first too young to fire
    t0 = time.time()
    (event,) = run_triggers(trigger(prom.url, auc_query("fresh"), "<", 0.7, timeout_s=15))
    assert event["status"] == "fired", event
    assert 2.5 <= time.time() - t0 < 10 and event["polls"] > 3, event


def test_auc_trigger_ignores_a_brief_dip_and_a_healthy_auc(prom, capsys):
    def dip():
        time.sleep(1.0)
        prom.auc.labels(MODEL, "dip").set(0.55)
        time.sleep(2.0)
        prom.auc.labels(MODEL, "dip").set(AUC["dip"])

    worker = threading.Thread(target=dip)
    worker.start()
    dipped, healthy = run_triggers(trigger(prom.url, auc_query("dip"), "<", 0.7, timeout_s=7),
                                   trigger(prom.url, auc_query("high"), "<", 0.7, timeout_s=7))
    worker.join()
    assert dipped["status"] == "timeout" and healthy["status"] == "timeout", (dipped, healthy)
    assert "steps not < 0.7" in healthy["last_reason"] and "last 0.85" in healthy["last_reason"]
    assert dipped["polls"] > 5
    # the dip was seen (some steps below, some not) but never for a whole window
    seen = re.findall(r'criteo_rolling_auc\{model="criteo_dcn",version="dip"\}: (\d+) of (\d+) steps not < 0.7',
                      capsys.readouterr().out)
    assert any(int(bad) < int(total) for bad, total in seen), seen


def test_drift_trigger_fires_above_threshold_only(prom):
    drifted, stable = run_triggers(trigger(prom.url, psi_query("drift"), ">", 0.25, timeout_s=6),
                                   trigger(prom.url, psi_query("nodrift"), ">", 0.25, timeout_s=6))
    assert drifted["status"] == "fired" and drifted["value"] == PSI["drift"], drifted
    assert stable["status"] == "timeout" and "not > 0.25" in stable["last_reason"], stable


def test_no_samples_keeps_waiting_and_says_why(prom, capsys):
    (event,) = run_triggers(trigger(prom.url, auc_query("never-served"), "<", 0.7, timeout_s=2))
    assert event["status"] == "timeout"
    assert event["last_reason"] == f"no samples for {auc_query('never-served')} yet"
    assert f"no samples for {auc_query('never-served')} yet" in capsys.readouterr().out


def test_unreachable_prometheus_never_fires_nor_crashes(capsys):
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (event,) = run_triggers(trigger(dead, auc_query("low"), "<", 0.7, timeout_s=2))
    assert event["status"] == "timeout" and event["polls"] >= 2
    assert f"Prometheus at {dead} is unreachable" in event["last_reason"]
    out = capsys.readouterr().out
    assert f"Prometheus at {dead} is unreachable" in out and "not firing, still waiting" in out


def test_bad_promql_ends_with_prometheus_error(prom):
    (event,) = run_triggers(trigger(prom.url, "criteo_rolling_auc{model=", "<", 0.7, timeout_s=10))
    assert event["status"] == "error" and event["polls"] == 1
    assert "bad_data" in event["message"] and "parse error" in event["message"]


def test_trigger_serializes_and_keeps_its_deadline():
    from airflow.sdk._shared.module_loading import import_string

    from operators.triggers import PrometheusConditionTrigger

    t = PrometheusConditionTrigger(prometheus_url="http://p:9090/", query="up", op=">", threshold=0.5,
                                   sustained_s=60, timeout_s=600, deadline=1234.5)
    classpath, kwargs = t.serialize()
    assert classpath == "operators.triggers.PrometheusConditionTrigger"
    again = import_string(classpath)(**kwargs)
    assert again.serialize() == (classpath, kwargs) and kwargs["deadline"] == 1234.5
    assert kwargs["prometheus_url"] == "http://p:9090"
    with pytest.raises(ValueError, match="op must be"):
        PrometheusConditionTrigger(prometheus_url="x", query="up", op="<=", threshold=1, sustained_s=1)


# -- the sensors, through the deferral path -------------------------------------------------------
def run_deferred(sensor, context=None):
    """What the task runner and the triggerer do: execute() defers; the trigger is rebuilt from its
    serialized form and run; the task resumes with the event."""
    from airflow.sdk._shared.module_loading import import_string
    from airflow.sdk.exceptions import TaskDeferred

    context = context or {}
    with pytest.raises(TaskDeferred) as deferred:
        sensor.execute(context)
    classpath, kwargs = deferred.value.trigger.serialize()
    assert deferred.value.timeout.total_seconds() > kwargs["timeout_s"]  # the trigger's deadline comes first
    (event,) = run_triggers(import_string(classpath)(**kwargs))
    return sensor.resume_execution(deferred.value.method_name, {"event": event}, context)


def test_auc_sensor_fires_through_deferral(prom):
    from operators.monitoring_sensors import RollingAUCSensor

    sensor = RollingAUCSensor(task_id="auc_degraded", model=MODEL, version="sensor-low", threshold=0.7,
                              sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=15, prometheus_url=prom.url,
                              soft_fail=True)
    assert sensor.build_query() == auc_query("sensor-low")
    event = run_deferred(sensor)
    assert event["status"] == "fired" and event["value"] == AUC["sensor-low"]
    assert event["query"] == auc_query("sensor-low")


def test_auc_sensor_not_fired_is_skipped_with_soft_fail_and_says_why(prom, capsys):
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

    from operators.monitoring_sensors import RollingAUCSensor

    kwargs = dict(model=MODEL, version="sensor-high", threshold=0.7, sustained_s=SUSTAINED, poll_interval_s=POLL,
                  timeout_s=2, prometheus_url=prom.url)
    with pytest.raises(AirflowSkipException):
        run_deferred(RollingAUCSensor(task_id="auc_degraded", soft_fail=True, **kwargs))
    out = capsys.readouterr().out
    assert f"DID NOT FIRE: {auc_query('sensor-high')} did not stay < 0.7 for 4s within 2s" in out
    assert "last 0.9" in out and "the task ends skipped" in out
    with pytest.raises(AirflowSensorTimeout, match="DID NOT FIRE"):  # without soft_fail: a timeout
        run_deferred(RollingAUCSensor(task_id="auc_degraded", **kwargs))


def test_drift_sensor_fires_and_not(prom):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.monitoring_sensors import FeatureDriftSensor

    kwargs = dict(model=MODEL, threshold=0.25, sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=3,
                  prometheus_url=prom.url, soft_fail=True)
    event = run_deferred(FeatureDriftSensor(task_id="drift_detected", version="drift", **kwargs))
    assert event["status"] == "fired" and event["query"] == psi_query("drift") and event["value"] == PSI["drift"]
    with pytest.raises(AirflowSkipException):
        run_deferred(FeatureDriftSensor(task_id="drift_detected", version="nodrift", **kwargs))


def test_sensor_with_unreachable_prometheus_is_skipped_not_failed(capsys):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.monitoring_sensors import RollingAUCSensor

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AirflowSkipException):
        run_deferred(RollingAUCSensor(task_id="auc_degraded", model=MODEL, version="low", threshold=0.7,
                                      sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=1.5,
                                      prometheus_url=dead, soft_fail=True))
    out = capsys.readouterr().out
    assert "DID NOT FIRE" in out and f"last check: Prometheus at {dead} is unreachable" in out


def test_sensor_with_bad_promql_fails_even_with_soft_fail(prom):
    from operators.monitoring_sensors import PrometheusConditionSensor

    sensor = PrometheusConditionSensor(task_id="bad", query="criteo_rolling_auc{", op="<", threshold=0.7,
                                       sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=10,
                                       prometheus_url=prom.url, soft_fail=True)
    with pytest.raises(PrometheusQueryError, match="parse error"):
        run_deferred(sensor)


def test_poking_sensor_uses_the_same_condition(prom, capsys):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.monitoring_sensors import PrometheusConditionSensor, RollingAUCSensor

    kwargs = dict(model=MODEL, threshold=0.7, sustained_s=SUSTAINED, poll_interval_s=POLL, prometheus_url=prom.url,
                  soft_fail=True, deferrable=False)
    event = RollingAUCSensor(task_id="auc_degraded", version="poke-low", timeout_s=10, **kwargs).execute({})
    assert event["status"] == "fired" and event["value"] == AUC["poke-low"]
    with pytest.raises(AirflowSkipException, match="DID NOT FIRE"):
        RollingAUCSensor(task_id="auc_degraded", version="high", timeout_s=1.5, **kwargs).execute({})
    assert "not < 0.7" in capsys.readouterr().out
    bad = PrometheusConditionSensor(task_id="bad", query="sum(", op="<", threshold=0.7, sustained_s=SUSTAINED,
                                    poll_interval_s=POLL, timeout_s=2, prometheus_url=prom.url, soft_fail=True,
                                    deferrable=False)
    with pytest.raises(PrometheusQueryError, match="parse error"):  # fails, even with soft_fail
        bad.execute({})
