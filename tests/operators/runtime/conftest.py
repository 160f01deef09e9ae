"""The pod runtime's settings as a run's first task reads them: Variables with pinned step images."""
import pytest

from operators.runtime.catalogue import IMAGES

PINNED = {name: f"europe-docker.pkg.dev/p/criteo/{name}:0.10.0" for name in IMAGES}


@pytest.fixture
def settings_env(monkeypatch):
    env = {"criteo_base_url": "gs://criteo-bucket/pipeline", "criteo_kubernetes_namespace": "criteo",
           "criteo_kubernetes_service_account": "criteo-steps",
           **{f"criteo_image_{name}": ref for name, ref in PINNED.items()}}
    for key, value in env.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", value)
    return monkeypatch
