"""`make airflow` / `make airflow-stop` (python -m local_servers.airflow start|stop), as a user runs
them, on a bucket of its own: the servers come up on the Variables' addresses, the printed login
works, Triton serves the repository's production version from the start, and stop leaves nothing."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from local_servers.process import free_port, listening
from tests.fixtures.serving import set_policy

pytestmark = pytest.mark.live
REPO = Path(__file__).resolve().parents[2]


def _cli(command: str, work: Path, env: dict, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "local_servers.airflow", command, "--work-dir", str(work), *extra],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=900)


def test_make_airflow_starts_everything_and_make_airflow_stop_stops_it(packages, tmp_path):
    import httpx

    from operators.hooks.triton import TritonHook

    bucket, work = tmp_path / "bucket", tmp_path / "airflow"
    repo = bucket / "model_repository"
    packages.install(repo, 1, package=0)
    packages.install(repo, 2, package=1)
    set_policy(repo, 2, packages.packages[1] / "config.pbtxt")          # production: version 2
    api, grpc, prom = free_port(), free_port(), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRITEO_"))}
    env.update({"AIRFLOW_VAR_CRITEO_BASE_URL": str(bucket),
                "AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL": f"127.0.0.1:{grpc}",
                "AIRFLOW_VAR_CRITEO_PROMETHEUS_URL": f"http://127.0.0.1:{prom}"})
    started = _cli("start", work, env, "--port", str(api), "--days", "2", "--rows", "2000")
    try:
        assert started.returncode == 0, started.stdout + started.stderr + (work / "supervisor.log").read_text()
        info = json.loads((work / "ready.json").read_text())
        out = started.stdout
        assert f"http://127.0.0.1:{api}" in out and f"admin / {info['password']}" in out
        assert "make airflow-stop" in out and f"127.0.0.1:{grpc} (gRPC)" in out and f"127.0.0.1:{prom}" in out
        # each day with its landing manifest (criteo_kernel.landing): the sensors take them at once
        assert sorted(p.name for p in (bucket / "raw").iterdir()) == ["day_0", "day_0.manifest.json", "day_1",
                                                                     "day_1.manifest.json"]
        # the printed login works against the REST API; the DAGs are there
        token = httpx.post(f"{info['ui']}/auth/token", json={"username": "admin", "password": info["password"]},
                           timeout=30).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        # ready means every DAG of dags/ is listed: no waiting for the DAG processor after it
        dags = httpx.get(f"{info['ui']}/api/v2/dags", headers=headers, timeout=30).json()
        assert {d["dag_id"] for d in dags["dags"]} == {"criteo_full_retrain", "criteo_incremental_training",
                                                     "model_monitoring", "criteo_request_log_to_raw"}, dags
        # Triton at the Variable's address serves production from the start; Prometheus scrapes it
        assert TritonHook(f"127.0.0.1:{grpc}").ready_versions("criteo_dcn") == [2]
        targets = httpx.get(f"http://127.0.0.1:{prom}/api/v1/targets", timeout=30).json()["data"]["activeTargets"]
        assert len(targets) == 2, targets                                 # Triton's metrics and the monitor
        # the CLI environment it printed works
        cli = subprocess.run(["bash", "-c", f"source {work / 'env.sh'} && airflow dags list -o json"],
                             capture_output=True, text=True, timeout=120)
        assert "criteo_full_retrain" in cli.stdout, cli.stderr[-2000:]
        assert "graphviz" not in cli.stdout + cli.stderr, cli.stderr[-2000:]    # no warning on every command
        again = _cli("start", work, env, "--port", str(api))
        assert again.returncode == 0 and "already running" in again.stdout
    finally:
        stopped = _cli("stop", work, env)
    assert stopped.returncode == 0 and "stopped" in stopped.stdout, stopped.stdout + stopped.stderr
    for port in (api, grpc, prom):
        assert not listening(port), port
    with pytest.raises(ProcessLookupError):
        os.kill(info["pid"], 0)
    assert "nothing to stop" in _cli("stop", work, env).stdout
