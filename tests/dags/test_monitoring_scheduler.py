"""model_monitoring under Airflow's own processes, not dag.test(): a scheduler (LocalExecutor), a
DAG processor, a triggerer and the API server, on a database of their own, driven through the
REST API with a real login. The deferrable sensor waits in the real triggerer, against a real
Prometheus scraping an exporter whose AUC is low.

1. unpausing the DAG lets the scheduler create its scheduled run, with the settings from the
   Airflow Variables: `auc_degraded` defers, fires in the triggerer, and the run queues one
   criteo_full_retrain (paused here, so it stays queued);
2. a run triggered through the REST API with a Params conf finds that retrain queued and does
   not trigger another.
"""
import os

import pytest

from tests.fixtures.airflow import Airflow
from tests.fixtures.model_repository import MODEL, make_bucket

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def airflow(tmp_path_factory):
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from local_servers.process import free_port
    from local_servers.prometheus import LocalPrometheus

    root = tmp_path_factory.mktemp("scheduler")
    base = make_bucket(root / "bucket")
    registry = CollectorRegistry()
    Gauge("criteo_rolling_auc", "AUC", ["model", "version"], registry=registry).labels(MODEL, "1").set(0.55)
    Gauge("criteo_max_feature_psi", "PSI", ["model", "version"], registry=registry).labels(MODEL, "1").set(0.05)
    port = free_port()
    exporter, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    prometheus = LocalPrometheus([f"127.0.0.1:{port}"], work_dir=root / "prometheus", scrape_interval_s=1.0)
    prometheus.start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRITEO_"))}
    env.update({
        "AIRFLOW_VAR_CRITEO_BASE_URL": str(base),
        "AIRFLOW_VAR_CRITEO_PROMETHEUS_URL": prometheus.url,
        # the scheduled run's settings: from Variables (its Params are empty)
        "AIRFLOW_VAR_CRITEO_MONITOR_SUSTAINED_S": "3",
        "AIRFLOW_VAR_CRITEO_MONITOR_SENSOR_TIMEOUT_S": "20",
        "AIRFLOW_VAR_CRITEO_MONITOR_POLL_INTERVAL_S": "1",
        "AIRFLOW_VAR_CRITEO_MONITOR_WINDOW_DAYS": "2",
    })
    af = Airflow(root / "airflow_home", env)
    af.bucket = base
    try:
        af.start()
        yield af
    finally:
        af.stop()
        prometheus.stop()
        exporter.shutdown()
        exporter.server_close()


def test_the_scheduled_run_fires_in_the_triggerer_and_queues_one_retrain(airflow):
    airflow.wait("the DAG processor to parse model_monitoring",
                 lambda: airflow.call("GET", "/api/v2/dags?dag_id_pattern=model_monitoring")["total_entries"])
    airflow.call("PATCH", "/api/v2/dags/model_monitoring", {"is_paused": False})
    scheduled = airflow.wait("the scheduled run", lambda: [r for r in airflow.runs("model_monitoring")
                                                             if r["run_type"] == "scheduled"])[0]
    run = airflow.finished_run("model_monitoring", scheduled["dag_run_id"])
    states = airflow.task_states("model_monitoring", run["dag_run_id"])
    assert run["state"] == "success", (states, airflow.logs())
    assert states == {"production_version": "success", "auc_degraded": "success", "drift_detected": "skipped",
                      "decide_retrain": "success", "trigger_full_retrain": "success", "record_retrain": "success"}
    log = airflow.task_log("model_monitoring", run["dag_run_id"], "auc_degraded")
    assert "deferred to the triggerer" in log and "FIRED" in log, log[-3000:]
    # the wait ran in the triggerer process: it writes the trigger's own log beside the task's
    folder = airflow.home / "logs" / "dag_id=model_monitoring" / f"run_id={run['dag_run_id']}" / "task_id=auc_degraded"
    trigger_logs = list(folder.glob("attempt=1.log.trigger.*.log"))
    assert trigger_logs and "condition met: criteo_rolling_auc" in trigger_logs[0].read_text(), list(folder.iterdir())
    (retrain,) = airflow.runs("criteo_full_retrain")
    assert retrain["state"] == "queued" and retrain["conf"]["end_day"] == 3 and retrain["conf"]["window_days"] == 2
    assert retrain["conf"]["reason"].startswith("model_monitoring: auc_degraded fired")
    # record_retrain logged it in the bucket, for the monitor's criteo_retrains_triggered_total
    from criteo_kernel.retrain_log import RetrainRecord

    (path,) = (airflow.bucket / "retrain_log" / MODEL).iterdir()
    record = RetrainRecord.parse(str(path), path.read_text())
    assert (record.run_id, record.monitoring_run_id, record.triggers) == \
        (retrain["dag_run_id"], run["dag_run_id"], ["auc_degraded"])

    # 2. by hand through the REST API, with Params: the retrain is still queued, so no second one
    manual = airflow.call("POST", "/api/v2/dags/model_monitoring/dagRuns", {
        "logical_date": None, "conf": {"sustained_s": 2, "sensor_timeout_s": 10, "poll_interval_s": 1,
                                       "cooldown_h": 0}})
    run = airflow.finished_run("model_monitoring", manual["dag_run_id"])
    states = airflow.task_states("model_monitoring", run["dag_run_id"])
    assert run["state"] == "success" and states["auc_degraded"] == "success", states
    assert states["decide_retrain"] == "success" and states["trigger_full_retrain"] == "skipped", states
    decision = airflow.task_log("model_monitoring", run["dag_run_id"], "decide_retrain")
    assert "already queued or running" in decision, decision[-3000:]
    assert len(airflow.runs("criteo_full_retrain")) == 1
