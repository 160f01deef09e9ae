"""The Prometheus sensors against a real Prometheus, through the deferral path: execute() ->
TaskDeferred -> the trigger rebuilt from its serialized form, as the triggerer does ->
resume_execution() with the event; and the poking path with the same condition."""
import pytest

from local_servers.process import free_port
from operators.hooks.prometheus import PrometheusQueryError
from tests.fixtures.prometheus import AUC, MODEL, POLL, PSI, SUSTAINED, auc_query, psi_query, run_triggers

pytestmark = pytest.mark.integration


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
    from operators.sensors.prometheus import RollingAUCSensor

    sensor = RollingAUCSensor(task_id="auc_degraded", model=MODEL, version="sensor-low", threshold=0.7,
                              sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=15, prometheus_url=prom.url,
                              soft_fail=True)
    assert sensor.build_query() == auc_query("sensor-low")
    event = run_deferred(sensor)
    assert event["status"] == "fired" and event["value"] == AUC["sensor-low"]
    assert event["query"] == auc_query("sensor-low")


def test_auc_sensor_not_fired_is_skipped_with_soft_fail_and_says_why(prom, capsys):
    from airflow.sdk.exceptions import AirflowSensorTimeout, AirflowSkipException

    from operators.sensors.prometheus import RollingAUCSensor

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

    from operators.sensors.prometheus import FeatureDriftSensor

    kwargs = dict(model=MODEL, threshold=0.25, sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=3,
                  prometheus_url=prom.url, soft_fail=True)
    event = run_deferred(FeatureDriftSensor(task_id="drift_detected", version="drift", **kwargs))
    assert event["status"] == "fired" and event["query"] == psi_query("drift") and event["value"] == PSI["drift"]
    with pytest.raises(AirflowSkipException):
        run_deferred(FeatureDriftSensor(task_id="drift_detected", version="nodrift", **kwargs))


def test_sensor_with_unreachable_prometheus_is_skipped_not_failed(capsys):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.sensors.prometheus import RollingAUCSensor

    dead = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(AirflowSkipException):
        run_deferred(RollingAUCSensor(task_id="auc_degraded", model=MODEL, version="low", threshold=0.7,
                                      sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=1.5,
                                      prometheus_url=dead, soft_fail=True))
    out = capsys.readouterr().out
    assert "DID NOT FIRE" in out and f"last check: Prometheus at {dead} is unreachable" in out


def test_sensor_with_bad_promql_fails_even_with_soft_fail(prom):
    from operators.sensors.prometheus import PrometheusConditionSensor

    sensor = PrometheusConditionSensor(task_id="bad", query="criteo_rolling_auc{", op="<", threshold=0.7,
                                       sustained_s=SUSTAINED, poll_interval_s=POLL, timeout_s=10,
                                       prometheus_url=prom.url, soft_fail=True)
    with pytest.raises(PrometheusQueryError, match="parse error"):
        run_deferred(sensor)


def test_poking_sensor_uses_the_same_condition(prom, capsys):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.sensors.prometheus import PrometheusConditionSensor, RollingAUCSensor

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
