"""local_servers/airflow.py's pieces that need no running Airflow (the whole of `make airflow` is
run by tests/live/test_make_airflow.py)."""
import os
import subprocess
import sys

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
