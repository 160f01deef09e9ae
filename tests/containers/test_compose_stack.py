"""The compose stack (docker-compose.yaml) up on the engine with Debian's docker-compose 1.29: Airflow 3
(API server, scheduler, DAG processor, triggerer) on PostgreSQL, Triton, the GCS emulator,
Prometheus and the monitor, every image the one `make images` built (the service bases' local
stand-ins for postgres, prometheus and fake-gcs-server). A test override puts every service on the
host network with loopback addresses and free ports, as this engine allows nothing else; Grafana
has no build here and the inference client needs a replayed day, so both stay in profiles.

Through the stack's own REST API: a full retrain, then the daily run of the next day, each step a
sibling container started by the scheduler's task; Triton in its container serves the new version;
the UI's login in Chromium; `docker-compose down` leaves no container.
"""
from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from .conftest import REPO, TAG, podman

pytestmark = pytest.mark.containers
PROJECT = "criteo-compose-test"
S = "localhost/criteo-standin"
DAY0 = "2026-01-01"
AIRFLOW_SERVICES = ("airflow-init", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor",
                    "airflow-triggerer")


def free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def override(ports: dict[str, int], secrets_: dict[str, str], sock: str, work: Path) -> dict:
    """Every service on the host network at 127.0.0.1 and the given ports, the built images."""
    p = ports
    prometheus_yml = work / "prometheus.yml"
    prometheus_yml.write_text(yaml.safe_dump({"global": {"scrape_interval": "5s"}, "scrape_configs": [
        {"job_name": "criteo-monitor", "static_configs": [{"targets": [f"127.0.0.1:{p['monitor']}"]}]},
        {"job_name": "triton", "static_configs": [{"targets": [f"127.0.0.1:{p['triton_metrics']}"]}]}]}))
    airflow_env = {
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN":
            f"postgresql+psycopg2://airflow:{secrets_['POSTGRES_PASSWORD']}@127.0.0.1:{p['postgres']}/airflow",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"http://127.0.0.1:{p['airflow']}/execution/",
        "AIRFLOW_VAR_CRITEO_DOCKER_NETWORK": "host",
        "AIRFLOW_VAR_CRITEO_DOCKER_GPUS": "0",
        "AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL": f"127.0.0.1:{p['triton_grpc']}",
        "AIRFLOW_VAR_CRITEO_PROMETHEUS_URL": f"http://127.0.0.1:{p['prometheus']}",
        "AIRFLOW_VAR_CRITEO_DAY0_DATE": DAY0,
        "AIRFLOW_VAR_CRITEO_RAW_SETTLE_S": "0",
    }
    host = {"network_mode": "host"}
    services = {
        "postgres": {**host, "image": f"{S}/postgres:16",
                     "command": ["postgres", "-c", "listen_addresses=127.0.0.1", "-c", f"port={p['postgres']}"],
                     "healthcheck": {"test": ["CMD", "pg_isready", "-h", "127.0.0.1", "-p", str(p["postgres"]),
                                              "-U", "airflow"], "interval": "2s", "retries": 60}},
        "volume-init": dict(host),
        **{name: {**host, "environment": dict(airflow_env)} for name in AIRFLOW_SERVICES},
        "triton": {**host, "command": [
            "/bin/sh", "-c", "exec tritonserver --model-repository=/data/bucket/model_repository "
            "--model-control-mode=explicit --load-model=criteo_dcn --exit-on-error=false --strict-readiness=false "
            f"--http-address=127.0.0.1 --http-port={p['triton_http']} --grpc-address=127.0.0.1 "
            f"--grpc-port={p['triton_grpc']} --metrics-address=127.0.0.1 --metrics-port={p['triton_metrics']} "
            "--allow-gpu-metrics=false --metrics-config=summary_latencies=true"]},
        "inference-client": {**host, "profiles": ["replay"]},
        "monitor": {**host, "command": [
            "monitor", "--request-log", "/data/bucket/request_log", "--model-repository",
            "/data/bucket/model_repository", "--retrain-log", "/data/bucket/retrain_log",
            "--port", str(p["monitor"]), "--host", "127.0.0.1"]},
        "prometheus": {**host, "image": f"{S}/prometheus:v2.53.0",
                       "command": ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus",
                                   f"--web.listen-address=127.0.0.1:{p['prometheus']}"],
                       "volumes": [f"{prometheus_yml}:/etc/prometheus/prometheus.yml:ro"]},
        "grafana": {**host, "profiles": ["grafana"]},
        "gcs": {**host, "image": f"{S}/fake-gcs-server:1.52",
                "command": ["-scheme", "http", "-host", "127.0.0.1", "-port", str(p["gcs"]), "-backend", "memory"]},
        "step-merlin": {**host, "volumes": ["bucket:/data/bucket"]},
        "step-hugectr": dict(host),
        "step-validator": dict(host),
    }
    services["airflow-apiserver"]["command"] = ["airflow", "api-server", "--host", "127.0.0.1",
                                                "--port", str(p["airflow"])]
    services["airflow-scheduler"]["volumes"] = [f"{sock}:/var/run/docker.sock"]
    return {"services": services}


class Stack:
    def __init__(self, work: Path, engine: dict[str, str]):
        self.work = work
        names = ["postgres", "airflow", "triton_http", "triton_grpc", "triton_metrics", "monitor", "prometheus", "gcs"]
        self.ports = dict(zip(names, free_ports(len(names)), strict=True))
        self.secrets = {"POSTGRES_PASSWORD": secrets.token_hex(12), "AIRFLOW_ADMIN_PASSWORD": secrets.token_hex(12),
                        "AIRFLOW_JWT_SECRET": secrets.token_hex(32)}
        sock = engine["DOCKER_HOST"].removeprefix("unix://")
        (work / "override.yaml").write_text(yaml.safe_dump(override(self.ports, self.secrets, sock, work)))
        self.env = {**os.environ, **engine, **self.secrets, "DOCKER_GID": "0", "CRITEO_IMAGE_TAG": TAG,
                    "CODE_REVISION": "compose-test", "COMPOSE_PROJECT_NAME": PROJECT}
        # compose merges the override's lists into the file's, so the published ports (which the host
        # network refuses: docker-py's "network_mode is incompatible with port_bindings") are taken out
        # of the merged configuration compose itself prints
        merged = subprocess.run(["docker-compose", "-f", str(REPO / "docker-compose.yaml"), "-f",
                                 str(work / "override.yaml"), "config"], env=self.env, cwd=REPO, check=True,
                                capture_output=True, text=True).stdout
        config = yaml.safe_load(merged)
        for service in config["services"].values():
            service.pop("ports", None)
        (work / "stack.yaml").write_text(yaml.safe_dump(config))
        self.url = f"http://127.0.0.1:{self.ports['airflow']}"
        self.token: str | None = None

    def compose(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        cmd = ["docker-compose", "-f", str(self.work / "stack.yaml"), "--project-directory", str(REPO), *args]
        proc = subprocess.run(cmd, env=self.env, cwd=REPO, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                                 f"{proc.stderr[-3000:]}\n{self.logs()}")
        return proc

    def logs(self) -> str:
        proc = subprocess.run(["docker-compose", "-f", str(self.work / "stack.yaml"), "--project-directory",
                               str(REPO), "logs", "--no-color", "--tail", "30"],
                              env=self.env, cwd=REPO, capture_output=True, text=True, timeout=120)
        return proc.stdout[-12000:]

    def api(self, method: str, path: str, body=None):
        if self.token is None:
            resp = httpx.post(f"{self.url}/auth/token", json={"username": "admin",
                              "password": self.secrets["AIRFLOW_ADMIN_PASSWORD"]}, timeout=30)
            assert resp.status_code in (200, 201), resp.text
            self.token = resp.json()["access_token"]
        resp = httpx.request(method, f"{self.url}/api/v2{path}", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"})
        assert resp.status_code < 300, f"{method} {path}: {resp.status_code} {resp.text[:500]}"
        return resp.json()

    def wait_for(self, what: str, ok, timeout: float, every: float = 3):
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = ok()
                if value:
                    return value
            except (httpx.HTTPError, AssertionError):
                pass
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout:.0f} s\n{self.logs()}")
            time.sleep(every)

    def run_dag(self, dag_id: str, logical_date: str, conf: dict, timeout: float = 1200) -> dict:
        run = self.api("POST", f"/dags/{dag_id}/dagRuns", {"logical_date": logical_date, "conf": conf})
        path = f"/dags/{dag_id}/dagRuns/{run['dag_run_id']}"

        def finished():
            state = self.api("GET", path)["state"]
            return state if state in ("success", "failed") else None

        state = self.wait_for(f"{dag_id} run", finished, timeout, every=5)
        tis = self.api("GET", f"{path}/taskInstances?limit=100")["task_instances"]
        return {"state": state, "tasks": {t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""):
                                          t["state"] for t in tis}}


@pytest.fixture(scope="module")
def stack(images, engine, tmp_path_factory):
    st = Stack(tmp_path_factory.mktemp("compose"), engine)
    st.compose("down", "-v", "--remove-orphans", check=False)
    try:
        st.compose("up", "-d", timeout=900)
        st.wait_for("the API server", lambda: httpx.get(f"{st.url}/api/v2/version", timeout=5).status_code == 200,
                    timeout=300)
        # three synthetic days landed in the bucket volume, written by the merlin image as its user
        st.compose("run", "--rm", "step-merlin", "synth", "--out", "/data/bucket/raw", "--days", "0-2",
                   "--rows", "10000")
        yield st
    finally:
        st.compose("down", "-v", "--remove-orphans", check=False, timeout=300)


def test_a_full_retrain_and_a_daily_run_through_the_stacks_rest_api(stack):
    st = stack
    st.wait_for("the DAGs parsed", lambda: {d["dag_id"] for d in st.api("GET", "/dags?limit=50")["dags"]} >=
                {"criteo_full_retrain", "criteo_incremental_training"}, timeout=300)
    for dag_id in ("criteo_full_retrain", "criteo_incremental_training"):
        st.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
    small = {"epochs": 2, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048, "auc_floor": 0.55}
    full = st.run_dag("criteo_full_retrain", "2026-01-02T00:00:00Z", {"end_day": 1, "window_days": 2, **small})
    assert full["state"] == "success", full["tasks"]
    daily = st.run_dag("criteo_incremental_training", "2026-01-03T00:00:00Z", {"auc_floor": 0.55})
    assert daily["state"] == "success", daily["tasks"]
    # every step ran as a sibling container of its image (the runtime removes those that succeeded)
    events = podman("events", "--stream=false", "--since", "30m", "--filter", "event=create",
                    "--format", "{{.Image}}").stdout.split()
    assert {f"localhost/criteo-{n}:{TAG}" for n in ("merlin", "validator")} <= set(events), set(events)
    # Triton, in its container, serves the daily run's version (2) of the model
    ready = f"http://127.0.0.1:{st.ports['triton_http']}/v2/models/criteo_dcn/versions/2/ready"
    st.wait_for("Triton serving version 2", lambda: httpx.get(ready, timeout=5).status_code == 200, timeout=120)


def test_the_uis_login_works_in_chromium(stack):
    from playwright.sync_api import sync_playwright

    from tests.live.test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{stack.url}/auth/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", stack.secrets["AIRFLOW_ADMIN_PASSWORD"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{stack.url}/", timeout=60_000)
            page.goto(f"{stack.url}/dags")
            page.get_by_text("criteo_full_retrain", exact=True).first.wait_for(timeout=60_000)
            shots = REPO / ".data" / "test-artifacts" / "compose"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "dag-list.png"))
        finally:
            browser.close()


def test_down_leaves_no_container(stack):
    stack.compose("down", "-v", "--remove-orphans", timeout=300)
    left = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                  "--format", "{{.Names}}").stdout
    assert left.strip() == ""
    assert "criteo-bucket" not in podman("volume", "ls", "--format", "{{.Name}}").stdout
