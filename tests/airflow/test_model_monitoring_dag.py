"""model_monitoring: the decision logic (unit), and the whole DAG through dag.test() against a real
Prometheus scraping a real exporter whose AUC is low: the run triggers criteo_full_retrain (a
queued DagRun with the expected conf, checked in the database), a second run within the cooldown
does not, nor does one while a retrain is queued."""
import os
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

MODEL = "criteo_dcn"
NOW = datetime(2026, 11, 24, 12, 0, tzinfo=timezone.utc)


# -- unit: the pure decision ----------------------------------------------------------------------
FIRED = {"auc_degraded": {"status": "fired", "reason": 'criteo_rolling_auc{version="1"} stayed < 0.7'}}


@pytest.mark.unit
def test_no_sensor_fired_no_retrain():
    from operators.monitoring_tasks import decide

    d = decide({}, 0, None, NOW, 6, 3, 7)
    assert not d.trigger and d.conf is None and "no sensor fired" in d.reason


@pytest.mark.unit
def test_triggers_with_the_latest_day_and_the_window():
    from operators.monitoring_tasks import decide

    d = decide(FIRED, 0, None, NOW, 6, 9, 7)
    assert d.trigger
    assert d.conf == {"end_day": 9, "window_days": 7,
                      "reason": 'model_monitoring: auc_degraded fired: criteo_rolling_auc{version="1"} stayed < 0.7'}
    assert "never triggered before" in d.reason and "day_3..day_9" in d.reason
    both = decide({**FIRED, "drift_detected": {"status": "fired", "reason": "psi"}}, 0, None, NOW, 6, 1, 7)
    assert both.trigger and "drift_detected fired: psi" in both.conf["reason"] and "day_0..day_1" in both.reason


@pytest.mark.unit
def test_no_retrain_while_one_is_queued_or_running():
    from operators.monitoring_tasks import decide

    d = decide(FIRED, 1, None, NOW, 6, 9, 7)
    assert not d.trigger and "1 criteo_full_retrain run(s) already queued or running" in d.reason


@pytest.mark.unit
def test_cooldown():
    from operators.monitoring_tasks import decide

    recent = (NOW - timedelta(hours=2)).isoformat()
    d = decide(FIRED, 0, recent, NOW, 6, 9, 7)
    assert not d.trigger and "in cooldown" in d.reason and "2.00 h ago, cooldown 6 h, 240 min left" in d.reason
    old = (NOW - timedelta(hours=7)).isoformat()
    d = decide(FIRED, 0, old, NOW, 6, 9, 7)
    assert d.trigger and "7.00 h ago >= cooldown 6 h" in d.reason
    assert decide(FIRED, 0, "not a time", NOW, 6, 9, 7).trigger  # a broken value does not block forever
    assert decide(FIRED, 0, recent, NOW, 0, 9, 7).trigger        # cooldown 0: off


@pytest.mark.unit
def test_no_raw_day_no_retrain():
    from operators.monitoring_tasks import decide

    d = decide(FIRED, 0, None, NOW, 6, None, 7, raw_url="/bucket/raw")
    assert not d.trigger and "no raw Criteo day (day_N[.gz]) in /bucket/raw" in d.reason


@pytest.mark.unit
def test_latest_raw_day(tmp_path):
    from operators.monitoring_tasks import latest_raw_day

    assert latest_raw_day(str(tmp_path / "missing")) is None
    raw = tmp_path / "raw"
    raw.mkdir()
    assert latest_raw_day(str(raw)) is None
    for name in ("day_0", "day_1.gz", "day_3", "day_12.gz", "day_4.tmp", "notes.txt", ".staging-day_30", "day_30"):
        (raw / name).touch()
    assert latest_raw_day(str(raw)) == 30
    assert latest_raw_day(str(raw), num_days=24) == 12  # day_30 is outside day_0..day_23


@pytest.mark.unit
def test_settings_param_then_variable_then_default(monkeypatch):
    from operators.monitoring_tasks import resolve_settings

    variables = {"criteo_monitor_psi_threshold": "0.3", "criteo_monitor_sustained_s": "120"}
    s = resolve_settings({"auc_threshold": 0.65, "sustained_s": None}, variable=variables.get)
    assert (s["auc_threshold"], s["psi_threshold"], s["sustained_s"], s["cooldown_h"]) == (0.65, 0.3, 120, 6.0)
    assert s["sources"]["auc_threshold"] == "param" and s["sources"]["cooldown_h"] == "default"
    assert s["sources"]["psi_threshold"] == "Variable criteo_monitor_psi_threshold"
    assert isinstance(s["sustained_s"], int) and isinstance(s["auc_threshold"], float)
    with pytest.raises(ValueError, match="setting cooldown_h: 'soon' .from Variable criteo_monitor_cooldown_h"):
        resolve_settings({}, variable={"criteo_monitor_cooldown_h": "soon"}.get)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_MONITOR_WINDOW_DAYS", "3")  # the real lookup: env outside a task
    assert resolve_settings({})["window_days"] == 3


def make_bucket(base: Path, production: bool = True, days=range(4)) -> Path:
    """A model repository with version 1 complete (and, if `production`, pinned), raw day_N files."""
    from operators.model_repository import with_version_policy

    version = base / "model_repository" / MODEL / "1"
    version.mkdir(parents=True)
    (version / "_SUCCESS").touch()
    (version / "lineage.json").write_text('{"run_key": "x"}')
    if production:
        (base / "model_repository" / MODEL / "config.pbtxt").write_text(
            with_version_policy(f'name: "{MODEL}"\nbackend: "python"\n', 1))
    (base / "raw").mkdir()
    for d in days:
        (base / "raw" / f"day_{d}").touch()
    return base


@pytest.mark.unit
def test_no_production_version_skips_the_run(tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.monitoring_tasks import production_version

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(make_bucket(tmp_path, production=False)))
    with pytest.raises(AirflowSkipException, match=r"no production version of criteo_dcn in .*: nothing serves"):
        production_version.function(params={})
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_PROMETHEUS_URL", "http://127.0.0.1:1")
    (tmp_path / "model_repository" / MODEL / "config.pbtxt").write_text(with_policy(1))
    watch = production_version.function(params={"auc_threshold": 0.6})
    assert watch["version"] == "1" and watch["model"] == MODEL and watch["auc_threshold"] == 0.6
    assert watch["prometheus_url"] == "http://127.0.0.1:1" and watch["psi_threshold"] == 0.25


def with_policy(version):
    from operators.model_repository import with_version_policy

    return with_version_policy(f'name: "{MODEL}"\n', version)


@pytest.mark.unit
def test_dag_shape(dagbag):
    dag = dagbag.get_dag("model_monitoring")
    assert dag.max_active_runs == 1 and not dag.catchup
    assert dag.get_task("decide_retrain").trigger_rule == "one_success"
    assert dag.get_task("decide_retrain").upstream_task_ids == {"auc_degraded", "drift_detected"}
    assert dag.get_task("trigger_full_retrain").upstream_task_ids == {"decide_retrain"}
    assert dag.get_task("record_retrain").upstream_task_ids == {"trigger_full_retrain"}
    for sensor in ("auc_degraded", "drift_detected"):
        task = dag.get_task(sensor)
        assert task.soft_fail and task.deferrable and task.upstream_task_ids == {"production_version"}
    for name in ("auc_threshold", "psi_threshold", "sustained_s", "sensor_timeout_s", "poll_interval_s",
                 "cooldown_h", "window_days"):
        param = dag.params.get_param(name)
        assert param.value is None and param.description and f"criteo_monitor_{name}" in dag.doc_md, name


# -- end to end: dag.test() against a real Prometheus ----------------------------------------------
def db_runs(dag_id):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        return [(r.run_id, r.state, dict(r.conf or {}), r.run_type)
                for r in session.query(DagRun).filter(DagRun.dag_id == dag_id)]


def set_run_state(dag_id, run_id, state):
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == run_id).update(
            {DagRun.state: state}, synchronize_session=False)


def delete_runs(dag_id, run_ids=None):
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        for model in (TaskInstance, DagRun):
            q = session.query(model).filter(model.dag_id == dag_id)
            if run_ids is not None:
                q = q.filter(model.run_id.in_(run_ids))
            q.delete(synchronize_session=False)


def db_variable(key):
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.query(Variable).filter(Variable.key == key).one_or_none()
        return None if row is None else row.val


def delete_variable(key):
    from airflow.models.variable import Variable
    from airflow.utils.session import create_session

    with create_session() as session:
        session.query(Variable).filter(Variable.key == key).delete()


@pytest.fixture(scope="module")
def serving(tmp_path_factory):
    """The bucket (production version 1, raw day_0..day_3) and a real Prometheus scraping an exporter
    where version 1's rolling AUC is low and its drift is low."""
    from prometheus_client import CollectorRegistry, Gauge, start_http_server

    from operators.local_services.process import free_port
    from operators.local_services.prometheus import LocalPrometheus
    from operators.monitoring_tasks import LAST_RETRAIN_VARIABLE
    from operators.prometheus import PrometheusHook

    base = make_bucket(tmp_path_factory.mktemp("bucket"))
    registry = CollectorRegistry()
    Gauge("criteo_rolling_auc", "AUC", ["model", "version"], registry=registry).labels(MODEL, "1").set(0.55)
    Gauge("criteo_max_feature_psi", "PSI", ["model", "version"], registry=registry).labels(MODEL, "1").set(0.05)
    port = free_port()
    server, _ = start_http_server(port, addr="127.0.0.1", registry=registry)
    work = tmp_path_factory.mktemp("prometheus")
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_VAR_CRITEO_BASE_URL", "AIRFLOW_VAR_CRITEO_PROMETHEUS_URL")}
    # Queued retrains left by earlier sessions (triggered runs never start without a scheduler).
    for run_id, state, _, _ in db_runs("criteo_full_retrain"):
        if state == "queued":
            delete_runs("criteo_full_retrain", [run_id])
    delete_runs("model_monitoring")
    delete_variable(LAST_RETRAIN_VARIABLE)
    before = {r[0] for r in db_runs("criteo_full_retrain")}
    try:
        with LocalPrometheus([f"127.0.0.1:{port}"], work_dir=work, log_path=work / "prometheus.log",
                             scrape_interval_s=1.0) as prom:
            os.environ["AIRFLOW_VAR_CRITEO_BASE_URL"] = str(base)
            os.environ["AIRFLOW_VAR_CRITEO_PROMETHEUS_URL"] = prom.url
            deadline = time.time() + 30
            while not PrometheusHook(prom.url).query("criteo_rolling_auc"):
                assert time.time() < deadline, prom.process.tail()
                time.sleep(0.3)
            yield {"base": base, "prometheus": prom, "runs_before": before}
    finally:
        server.shutdown()
        server.server_close()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        created = [r[0] for r in db_runs("criteo_full_retrain") if r[0] not in before]
        if created:
            delete_runs("criteo_full_retrain", created)
        delete_runs("model_monitoring")
        delete_variable(LAST_RETRAIN_VARIABLE)


CONF = {"auc_threshold": 0.7, "psi_threshold": 0.25, "sustained_s": 3, "sensor_timeout_s": 6, "poll_interval_s": 1,
        "cooldown_h": 1, "window_days": 2}


def monitor(dagbag, minutes, capsys):
    """One model_monitoring run; its task states and what its tasks printed."""
    capsys.readouterr()
    dr = dagbag.get_dag("model_monitoring").test(logical_date=NOW + timedelta(minutes=minutes), run_conf=CONF)
    return dr, {ti.task_id: ti.state for ti in dr.get_task_instances()}, capsys.readouterr().out


def new_retrains(serving):
    return [r for r in db_runs("criteo_full_retrain") if r[0] not in serving["runs_before"]]


@pytest.mark.e2e
def test_low_auc_triggers_one_full_retrain_then_cooldown(dagbag, serving, capsys):
    from operators.monitoring_tasks import LAST_RETRAIN_VARIABLE

    active = [r for r in db_runs("criteo_full_retrain") if r[1] in ("queued", "running")]
    assert not active, f"another criteo_full_retrain run is active in the dev database: {active}"

    t0 = time.time()
    dr, states, log = monitor(dagbag, 0, capsys)
    assert dr.state == "success", states
    assert states == {"production_version": "success", "auc_degraded": "success", "drift_detected": "skipped",
                      "decide_retrain": "success", "trigger_full_retrain": "success", "record_retrain": "success"}
    fired = dr.get_task_instance("auc_degraded").xcom_pull(task_ids="auc_degraded")
    assert fired["status"] == "fired" and fired["value"] == 0.55
    assert fired["query"] == f'criteo_rolling_auc{{model="{MODEL}",version="1"}}'
    (retrain,) = new_retrains(serving)
    run_id, state, conf, run_type = retrain
    assert state == "queued" and run_type == "operator_triggered"
    assert conf["end_day"] == 3 and conf["window_days"] == 2 and set(conf) == {"end_day", "window_days", "reason"}
    assert conf["reason"].startswith("model_monitoring: auc_degraded fired: ") and "stayed < 0.7" in conf["reason"]
    last = db_variable(LAST_RETRAIN_VARIABLE)
    assert last and abs(datetime.fromisoformat(last).timestamp() - time.time()) < 120
    assert "TRIGGER full retrain: auc_degraded fired: " in log and "never triggered before" in log
    assert "DID NOT FIRE: criteo_max_feature_psi" in log and "(last 0.05, worst 0.05)" in log
    assert time.time() - t0 < 60

    # The retrain finished; a second run within the cooldown does not trigger another.
    set_run_state("criteo_full_retrain", run_id, "success")
    dr, states, log = monitor(dagbag, 30, capsys)
    assert dr.state == "success" and states["auc_degraded"] == "success", states
    assert states["decide_retrain"] == "success" and states["trigger_full_retrain"] == "skipped", states
    assert states["record_retrain"] == "skipped" and db_variable(LAST_RETRAIN_VARIABLE) == last
    assert "NO RETRAIN: auc_degraded fired: " in log
    assert "but in cooldown: the last retrain was triggered at" in log
    assert len(new_retrains(serving)) == 1

    # Past the cooldown, but a retrain is queued (the scheduler has not started it): no second one.
    set_run_state("criteo_full_retrain", run_id, "queued")
    delete_variable(LAST_RETRAIN_VARIABLE)
    dr, states, log = monitor(dagbag, 60, capsys)
    assert dr.state == "success" and states["trigger_full_retrain"] == "skipped", states
    assert "NO RETRAIN: auc_degraded fired: " in log
    assert "but 1 criteo_full_retrain run(s) already queued or running" in log
    assert len(new_retrains(serving)) == 1
