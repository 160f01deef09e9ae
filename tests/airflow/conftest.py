"""Airflow-side tests: run in the Airflow environment (.venv)."""
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# Set before anything imports Airflow or the DAG modules (they read these at import time).
os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["CRITEO_SENSOR_MODE"] = "poke"
os.environ["CRITEO_RAW_POKE_INTERVAL_S"] = "1"
os.environ["CRITEO_RAW_WAIT_TIMEOUT_S"] = "4"
os.environ["CRITEO_RETRY_DELAY_S"] = "1"

import pytest  # noqa: E402


@pytest.fixture(scope="session")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))
