"""The test suite, laid out like the code it tests (tests/operators, tests/dags, tests/plugins,
tests/images/<image>), in layers each runnable alone: every test carries one of the markers

- `unit`: in-process, no server, no step subprocess (Great Expectations in-process counts);
- `integration`: against real local processes or apps: tritonserver, Prometheus, the GCS
  emulator, step subprocesses, Airflow's API server app;
- `e2e`: whole DAG runs on synthetic data (`dag.test()`, or Airflow's own scheduler);
- `kubernetes`: the pod runtime against a real Kubernetes control plane on 127.0.0.1
  (local_servers.kube: etcd, apiserver, controller-manager, scheduler) whose nodes are real
  kubelets with containerd running the built images (local_servers.kubelet);
- `steps`: the merlin image's code, which needs the step environment (.venv-steps: NVTabular,
  torch); elsewhere those modules are skipped, saying so;
- `faults`: input faults and infrastructure failures done for real on the real DAGs (tests/faults);
- `live`: the DAGs under a running Airflow, through its REST API, CLI and a browser (tests/live);
- `containers`: the built images as containers on the engine (Podman): the steps as containers of
  their images, the step tests inside the merlin image (tests/containers).

`make test-<layer>` runs one layer; all but `steps` in .venv, `steps` (with the kernel's unit
tests) in .venv-steps.
"""
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LAYERS = ("unit", "integration", "e2e", "steps", "kubernetes", "live", "faults", "containers")

# Set before anything imports Airflow or the DAG modules (they read these at import time).
os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")
os.environ["CRITEO_SENSOR_MODE"] = "poke"
os.environ["CRITEO_RAW_POKE_INTERVAL_S"] = "1"
os.environ.setdefault("CRITEO_RAW_WAIT_TIMEOUT_S", "4")  # make test-faults waits longer
# Days written by hand in the tests count as landed at once; the fault suite sets its own.
os.environ.setdefault("AIRFLOW_VAR_CRITEO_RAW_SETTLE_S", "0")
os.environ["CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S"] = "1"
os.environ["CRITEO_PREVIOUS_DAY_TIMEOUT_S"] = "4"
os.environ["CRITEO_RETRY_DELAY_S"] = "1"

# Real model versions, a real Triton and the GCS emulator, shared by the serving tests of the
# hooks, deploy and the inference client (built on first use only). The container engine, the
# built images and the compose stack: registered here, once, so that the stack is one per session
# for tests/containers and the database-restart fault in tests/faults. The fault table's fixture and
# the hooks that merge its rows: once, for every layer that records rows (faults, containers, kubernetes).
from .fixtures.compose import compose_stack  # noqa: E402,F401
from .fixtures.engine import engine, images  # noqa: E402,F401
from .fixtures.fault_table import fault_table, pytest_runtest_makereport, pytest_sessionfinish  # noqa: E402,F401
from .fixtures.prometheus import prom  # noqa: E402,F401
from .fixtures.serving import gcs, local_repo, packages, triton  # noqa: E402,F401


def pytest_collection_modifyitems(config, items):
    """A test in no layer would run in none of the Makefile's targets: refuse it."""
    unlayered = [item.nodeid for item in items if sum(item.get_closest_marker(m) is not None for m in LAYERS) != 1]
    if unlayered:
        raise pytest.UsageError(f"tests need exactly one of the markers {LAYERS}: {unlayered[:10]}")
    # The shared compose stack's tests run back to back (the stack is not left idle beside the
    # others), the one that takes it down (`compose_last`) right after them.
    def stack_order(item) -> int:
        if "compose_stack" not in item.fixturenames:
            return 2
        return 1 if item.get_closest_marker("compose_last") else 0

    items.sort(key=stack_order)


def pytest_sessionstart(session):
    """CRITEO_FAKE_GCSFUSE=1: every test's temporary folder acts as a gcsfuse mount of a flat bucket
    (tests/fixtures/gcsfuse.py: folder renames refused with EMFILE), in this process and in the step
    subprocesses it starts (through the environment, unless a test replaces PYTHONPATH)."""
    if os.environ.get("CRITEO_FAKE_GCSFUSE") != "1":
        return
    from .fixtures import gcsfuse

    root = str(session.config._tmp_path_factory.getbasetemp())
    gcsfuse.install(root)
    os.environ.update({k: v for k, v in gcsfuse.subprocess_env(root).items() if k in (gcsfuse.ENV, "PYTHONPATH")})
