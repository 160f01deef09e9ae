"""docker-compose.yaml, checked with a real compose client (Debian's docker-compose 1.29, `config`
resolves and validates the file with no Docker engine) and against what it names: every image
builds from a Dockerfile here or is a pinned public image, every command names a real entry point,
and the Variables the DAGs need with criteo_runtime=docker are set and accepted."""
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
REQUIRED = {"POSTGRES_PASSWORD": "pg-secret", "AIRFLOW_ADMIN_PASSWORD": "admin-secret",
            "AIRFLOW_JWT_SECRET": "j" * 64, "DOCKER_GID": "998"}


def compose(*args, env=None):
    exe = shutil.which("docker-compose")
    assert exe, "Debian's docker-compose is installed by `make setup`"
    clean = {k: v for k, v in __import__("os").environ.items() if k not in REQUIRED}
    return subprocess.run([exe, "-f", str(REPO / "docker-compose.yaml"), *args], env={**clean, **(env or {})},
                          capture_output=True, text=True, timeout=120)


def volumes(service) -> dict[str, str]:
    """{target: source} of a service's mounts, from compose's short ("src:target:mode") or long syntax."""
    out = {}
    for v in service.get("volumes", []):
        if isinstance(v, dict):
            out[v["target"]] = v["source"]
        else:
            src, target = v.split(":")[:2]
            out[target] = src
    return out


def host_ips(service) -> list[str]:
    ips = []
    for p in service.get("ports", []):
        ips.append(p.get("host_ip") if isinstance(p, dict) else p.split(":")[0])
    return ips


@pytest.fixture(scope="module")
def config():
    out = compose("--profile", "images", "config", env=REQUIRED)
    assert out.returncode == 0, out.stderr
    return yaml.safe_load(out.stdout)


@pytest.mark.parametrize("missing", sorted(REQUIRED))
def test_compose_refuses_to_start_without_each_secret(missing):
    out = compose("config", "-q", env={k: v for k, v in REQUIRED.items() if k != missing})
    assert out.returncode != 0 and f"set {missing}" in out.stderr, out.stderr


def test_no_default_credentials(config):
    env = config["services"]["airflow-apiserver"]["environment"]
    assert env["AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE"] == "/opt/airflow/auth/passwords.json"
    assert "pg-secret" in env["AIRFLOW__DATABASE__SQL_ALCHEMY_CONN"]
    assert config["services"]["postgres"]["environment"]["POSTGRES_PASSWORD"] == "pg-secret"
    init = config["services"]["airflow-init"]
    assert init["environment"]["AIRFLOW_ADMIN_PASSWORD"] == "admin-secret"
    assert "airflow db migrate" in init["command"][-1]
    # published ports are on loopback only
    for name, service in config["services"].items():
        assert all(ip == "127.0.0.1" for ip in host_ips(service)), name


def test_every_image_is_built_here_or_pinned(config):
    for name, service in config["services"].items():
        image = service["image"]
        assert ":" in image and not image.endswith(":latest"), (name, image)
        if "build" in service:
            assert (REPO / service["build"]["dockerfile"]).is_file(), name
    built = {s["image"] for s in config["services"].values() if "build" in s}
    env = config["services"]["airflow-scheduler"]["environment"]
    for step_image in ("MERLIN", "VALIDATOR", "MONITORING"):
        assert env[f"AIRFLOW_VAR_CRITEO_IMAGE_{step_image}"] in built, step_image


def airflow_commands() -> set[str]:
    out = subprocess.run([str(Path(sys.executable).parent / "airflow"), "--help"], capture_output=True, text=True,
                         timeout=120)
    return {line.split()[0] for line in out.stdout.splitlines() if line.startswith("    ") and line.split()}


def test_every_command_names_a_real_entry_point(config):
    from criteo_kernel.commands import PACKAGES

    monitoring = PACKAGES["criteo_monitoring"].commands

    airflow = airflow_commands()
    for name, service in config["services"].items():
        command, image = service.get("command"), service["image"]
        if image.startswith("criteo-airflow:"):
            if name == "volume-init":  # as root: the volumes owned by Airflow's user, group-writable
                assert service["user"] == "0:0" and "chown 50000:0 /data/bucket " in command[-1]
                assert "/opt/airflow/auth" in command[-1] and "mkdir -p /data/bucket/model_repository" in command[-1]
            elif command[0] == "bash":   # airflow-init: the database, then the deploy pool in it
                assert "airflow db migrate && exec python -m operators.deploy create-pool" in command[-1], name
                usage = subprocess.run([sys.executable, "-m", "operators.deploy"], cwd=REPO, capture_output=True,
                                       text=True, timeout=120)
                assert usage.returncode == 1 and "create-pool" in usage.stderr, usage.stderr
            else:
                assert command[0] == "airflow" and command[1] in airflow, (name, command)
        elif image.startswith("criteo-monitoring:"):
            assert command[0] in monitoring, (name, command)   # the image's ENTRYPOINT: python -m criteo_monitoring
        elif image.startswith(("criteo-merlin:", "criteo-validator:")):
            assert command == ["--help"], name
        elif image.startswith("criteo-triton:"):
            assert "tritonserver" in (REPO / "images/triton/Dockerfile").read_text() and command is None
        elif image.startswith("prom/prometheus:"):
            config_file = Path(volumes(service)["/etc/prometheus/prometheus.yml"])
            assert config_file.is_file()
            scraped = yaml.safe_load(config_file.read_text())
            targets = {t for job in scraped["scrape_configs"] for c in job["static_configs"] for t in c["targets"]}
            assert targets == {"monitor:9109", "triton:8002"}


def test_the_variables_the_dags_need_are_set_and_accepted(config, monkeypatch):
    from operators.pipeline.config import Settings
    from operators.runtime import problems
    from operators.runtime.docker import DockerSettings

    env = config["services"]["airflow-scheduler"]["environment"]
    for key in [k for k in __import__("os").environ if k.startswith("AIRFLOW_VAR_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        if key.startswith("AIRFLOW_VAR_"):
            monkeypatch.setenv(key, str(value))
    cfg = Settings.load()
    assert problems(cfg) == [] and cfg.runtime.name == "docker"
    settings = DockerSettings.of(cfg)
    # the step containers join the stack's network and mount its bucket volume where Airflow sees it
    assert settings.network == config["networks"]["default"]["name"]
    assert settings.volume == config["volumes"]["bucket"]["name"]
    mounts = volumes(config["services"]["airflow-scheduler"])
    assert mounts[settings.mount_path] == "bucket" and cfg.storage.base_url.startswith(settings.mount_path)
    assert mounts["/var/run/docker.sock"] == "/var/run/docker.sock"
    assert env["AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL"] == "triton:8001" and "triton" in config["services"]
    assert env["AIRFLOW_VAR_CRITEO_PROMETHEUS_URL"] == "http://prometheus:9090" and "prometheus" in config["services"]
    for service in ("airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert service in config["services"]


def test_the_database_and_the_long_lived_airflow_services_restart_when_they_exit(config):
    """The scheduler, DAG processor and triggerer exit when PostgreSQL goes away under them (a
    restart, failover or crash); compose starts them again (tests/faults/test_database_restart.py
    runs it). The one-shot services must not restart."""
    services = config["services"]
    for name in ("postgres", "airflow-apiserver", "airflow-scheduler", "airflow-dag-processor", "airflow-triggerer"):
        assert services[name].get("restart") == "unless-stopped", (name, services[name].get("restart"))
    for name in ("volume-init", "airflow-init", "inference-client"):
        assert services[name].get("restart") == "no", (name, services[name].get("restart"))
