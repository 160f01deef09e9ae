"""The Prometheus condition trigger against a real Prometheus: its async run() driven directly
(asyncio), as the triggerer drives it."""
import re
import threading
import time

import pytest

from local_servers.process import free_port
from tests.fixtures.prometheus import AUC, MODEL, PSI, auc_query, psi_query, run_triggers, trigger

pytestmark = pytest.mark.integration


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

    from operators.triggers.prometheus import PrometheusConditionTrigger

    t = PrometheusConditionTrigger(prometheus_url="http://p:9090/", query="up", op=">", threshold=0.5,
                                   sustained_s=60, timeout_s=600, deadline=1234.5)
    classpath, kwargs = t.serialize()
    assert classpath == "operators.triggers.PrometheusConditionTrigger"
    again = import_string(classpath)(**kwargs)
    assert again.serialize() == (classpath, kwargs) and kwargs["deadline"] == 1234.5
    assert kwargs["prometheus_url"] == "http://p:9090"
    with pytest.raises(ValueError, match="op must be"):
        PrometheusConditionTrigger(prometheus_url="x", query="up", op="<=", threshold=1, sustained_s=1)
