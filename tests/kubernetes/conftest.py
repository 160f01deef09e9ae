import json

import pytest

from ..conftest import REPO
from ..dags.conftest import dagbag  # noqa: F401
from ..fixtures.kubernetes import kube, pod_settings  # noqa: F401

# The single-step DAGs (tests/kubernetes/dags) as a second bundle beside dags/, so dag.test()
# can serialize them.
BUNDLES = json.dumps([
    {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
    {"name": "pod-test-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
     "kwargs": {"path": str(REPO / "tests" / "kubernetes" / "dags")}},
])


@pytest.fixture(scope="session")
def pod_dagbag():
    import os

    os.environ["AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST"] = BUNDLES
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(dag_folder=str(REPO / "tests" / "kubernetes" / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag
