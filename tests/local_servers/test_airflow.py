"""local_servers/airflow.py's pieces that need no running Airflow (the whole of `make airflow` is
run by tests/live/test_make_airflow.py)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_servers import airflow as local_airflow

pytestmark = pytest.mark.unit


def test_port_of_reads_both_forms_of_the_variables():
    assert local_airflow._port_of("127.0.0.1:8001") == 8001
    assert local_airflow._port_of("http://127.0.0.1:9090") == 9090
    with pytest.raises(ValueError, match="names no port"):
        local_airflow._port_of("http://prometheus.monitoring.svc")


def test_seeding_leaves_a_bucket_with_days_alone(tmp_path):
    (tmp_path / "raw").mkdir()
    (tmp_path / "raw" / "day_3").write_text("x")
    said = local_airflow.seed_raw_days(str(tmp_path), days=10, rows=10)
    assert "holds 1 days already" in said and sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["day_3"]


def test_stop_with_nothing_running_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-m", "local_servers.airflow", "stop", "--work-dir", str(tmp_path)],
                         capture_output=True, text=True, timeout=60, cwd=local_airflow.REPO_ROOT)
    assert out.returncode == 0 and "nothing to stop" in out.stdout


def test_a_stale_pid_file_is_not_a_running_supervisor(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    paths = local_airflow.Paths(tmp_path)
    paths.pid.write_text(str(proc.pid))               # that process has exited
    assert local_airflow._running_pid(paths) is None
    paths.pid.write_text(str(os.getpid()))
    assert local_airflow._running_pid(paths) == os.getpid()


def test_settings_keep_the_password_and_secret_of_a_home(tmp_path):
    first = local_airflow.LocalAirflow(tmp_path, {}, port=18080)
    (tmp_path / "passwords.json").write_text(f'{{"admin": "{first.password}"}}')
    again = local_airflow.LocalAirflow(tmp_path, {}, port=18080)
    assert again.password == first.password
    assert again.env["AIRFLOW__API_AUTH__JWT_SECRET"] == first.env["AIRFLOW__API_AUTH__JWT_SECRET"]
    assert again.env["AIRFLOW__CORE__EXECUTION_API_SERVER_URL"] == "http://127.0.0.1:18080/execution/"


def test_the_dag_ids_of_the_dags_folder_are_read_without_importing_it(tmp_path):
    assert local_airflow.dag_ids_in(local_airflow.REPO_ROOT / "dags") == [
        "criteo_full_retrain", "criteo_incremental_training", "criteo_request_log_to_raw", "model_monitoring"]
    (tmp_path / "broken.py").write_text('import no_such_module\nDAG(dag_id="a_dag")\n')
    assert local_airflow.dag_ids_in(tmp_path) == ["a_dag"]


def test_ready_waits_for_every_dag_and_a_timeout_names_the_missing_ones(tmp_path, monkeypatch):
    """`make airflow` is ready only once the REST API lists every DAG; else the error names the
    DAGs missing, the import errors and the DAG processor's log."""
    (tmp_path / "a.py").write_text('DAG(dag_id="a")\n')
    (tmp_path / "b.py").write_text('DAG(dag_id="b")\n')
    af = local_airflow.LocalAirflow(tmp_path / "home", {}, port=1, password="x", dags_folder=tmp_path)
    listed = [[], ["a"], ["a", "b"]]
    calls = []

    def call(method, path, body=None):
        calls.append(path)
        if path.startswith("/api/v2/importErrors"):
            return {"import_errors": [{"filename": "b.py", "stack_trace": "Traceback\nNameError: x\n"}]}
        return {"dags": [{"dag_id": d} for d in (listed.pop(0) if len(listed) > 1 else listed[0])]}

    monkeypatch.setattr(af, "call", call)
    monkeypatch.setattr(local_airflow.time, "sleep", lambda s: None)
    assert af.wait_for_dags(timeout_s=60) == ["a", "b"]
    assert calls.count("/api/v2/dags?limit=100") == 3
    listed[:] = [["a"]]
    with pytest.raises(RuntimeError, match=r"(?s)did not list b within 0s .*import error: b.py: NameError: x"
                                           r".*see the DAG processor's log: .*dag-processor.log"):
        af.wait_for_dags(timeout_s=0)


def test_revive_starts_an_exited_component_again_and_stops_a_crash_loop(tmp_path):
    """revive() on real processes standing in for the components: one that exits is started again with
    the same command and its exit recorded; one that keeps exiting is given up on, naming its log."""
    from local_servers.process import ServerProcess

    airflow = local_airflow.LocalAirflow(tmp_path / "home", env=dict(os.environ), password="x")
    lasting = ServerProcess("api-server", ["sleep", "60"], tmp_path / "api.log")
    crash = "import sys, time; print('boom'); time.sleep(0.3); sys.exit(3)"
    crashing = ServerProcess("scheduler", [sys.executable, "-c", crash], tmp_path / "scheduler.log", ready=lambda: True)
    airflow.processes = [lasting.start(), crashing]
    try:
        crashing.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"])
        crashing.proc.wait()
        said = []
        assert airflow.revive(say=said.append, crash_loop=(3, 600)) == ["scheduler"]
        assert [(name, code) for _, name, code in airflow.restarts] == [("scheduler", 3)]
        assert "scheduler exited (code 3); starting it again" in said[0] and str(tmp_path / "scheduler.log") in said[0]
        crashing.proc.wait(timeout=30)
        assert airflow.revive(say=said.append, crash_loop=(3, 600)) == ["scheduler"]
        crashing.proc.wait(timeout=30)
        with pytest.raises(RuntimeError, match=r"(?s)scheduler exited 3 times within 600s \(last exit code 3\).*boom"):
            airflow.revive(say=said.append, crash_loop=(3, 600))
        assert lasting.running and len(airflow.exited_groups) == 3
    finally:
        airflow.stop()
    assert not lasting.running


SCHEDULER_EXIT = Path(__file__).parent / "data" / "scheduler_exit_airflow_3.3.2_sqlite_backfill.log"


def test_the_known_scheduler_exit_is_recognised_from_its_log_and_nothing_else_is():
    """The end of a real scheduler log (CI's live layer, Airflow 3.3.2 on SQLite) and lookalikes."""
    tail = SCHEDULER_EXIT.read_text()
    assert "SQLite" in local_airflow.known_exit("scheduler", tail)
    assert local_airflow.known_exit("triggerer", tail) is None
    assert local_airflow.known_exit("scheduler", tail.replace("_schedule_all_dag_runs", "_do_scheduling")) is None
    assert local_airflow.known_exit("scheduler", "sqlalchemy.exc.OperationalError: database is locked") is None


def test_revive_in_tests_restarts_only_known_exits_and_leaves_components_held_down(tmp_path):
    """With only_known (the tests' Airflow.wait), a scheduler that exited as the known defect does is
    started again and said why; an exit with another log raises naming it; a held component stays down."""
    from local_servers.process import ServerProcess

    airflow = local_airflow.LocalAirflow(tmp_path / "home", env=dict(os.environ), password="x")
    log = tmp_path / "scheduler.log"
    log.write_text(SCHEDULER_EXIT.read_text())
    scheduler = ServerProcess("scheduler", ["sleep", "60"], log)
    triggerer = ServerProcess("triggerer", ["sleep", "60"], tmp_path / "triggerer.log")
    airflow.processes = [scheduler, triggerer]
    try:
        for proc in airflow.processes:
            proc.proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(1)"])
            proc.proc.wait()
        airflow.held.add("triggerer")
        said = []
        assert airflow.revive(say=said.append, only_known=True) == ["scheduler"]
        assert "a failed `backfill create` deleted runs the scheduler was scheduling" in said[0]
        assert scheduler.running and not triggerer.running

        airflow.held.discard("triggerer")
        with pytest.raises(RuntimeError, match=r"triggerer exited \(code 1\), and not for a known Airflow defect"):
            airflow.revive(say=said.append, only_known=True)
        assert not triggerer.running and [name for _, name, _ in airflow.restarts] == ["scheduler"]

        # the restarted scheduler dies with nothing new in its log: the old exit above it is not its cause
        airflow.held.add("triggerer")
        scheduler.proc.kill()
        scheduler.proc.wait(timeout=30)
        with pytest.raises(RuntimeError, match=r"scheduler exited \(code -9\), and not for a known Airflow defect"):
            airflow.revive(say=said.append, only_known=True)
    finally:
        airflow.stop()
