"""A full retrain and a daily run with every step a real container of its built image
(criteo_runtime=docker: the Docker provider's DockerOperator through Podman's Docker API), beside
the same runs on the local runtime in the same test run: the same versions, lineage and blessing,
AUC within 0.002, and each runtime's wall time (written to .data/containers/timings.md).

The bucket is a host folder that both sides see at the same path: the step containers mount it
through a named volume bound to it (criteo_docker_volume / criteo_docker_mount_path), as compose
mounts its bucket volume. The containers run as their images' user (uid 50000, group 0): the
folders Airflow's side creates are group-writable (umask 002), as Airflow's own image runs as
group 0 too.
"""
from __future__ import annotations

import json
import os
import shutil
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.dags.test_training_e2e import forget_earlier_runs

from .conftest import REPO, podman

pytestmark = pytest.mark.containers
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 10_000
SMALL_MODEL = {"epochs": 2, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048, "auc_floor": 0.55}
RUNS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def raw_days(tmp_path_factory):
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    raw = tmp_path_factory.mktemp("raw")
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(raw), "--days", "0-2", "--rows", str(ROWS)])
    return raw


def docker_settings(images, engine, bucket: Path, volume: str) -> dict[str, str]:
    return {"criteo_runtime": "docker", "criteo_docker_url": engine["DOCKER_HOST"],
            "criteo_docker_volume": volume, "criteo_docker_mount_path": str(bucket), "criteo_docker_gpus": "0",
            # the engine here has host networking only: a container without a network would ask for a bridge
            "criteo_docker_network": "host",
            **{f"criteo_image_{name}": images[name] for name in ("merlin", "validator", "monitoring", "hugectr")}}


def run_both_dags(bucket: Path, raw: Path, settings: dict[str, str], services: Path) -> dict:
    """The full retrain (days 0-1) then the daily run of day 2 on `bucket`, deploying to a real
    Triton serving it; returns the runs' states, lineages and wall times."""
    from airflow.dag_processing.dagbag import DagBag

    from local_servers.stack import ServingStack

    forget_earlier_runs(["criteo_full_retrain", "criteo_incremental_training"])
    shutil.copytree(raw, bucket / "raw")
    for path in [bucket / "raw", *(bucket / "raw").rglob("*")]:  # landed as a group-writable upload would be
        path.chmod(0o775 if path.is_dir() else 0o664)
    env = {"criteo_base_url": str(bucket), "criteo_day0_date": DAY0.date().isoformat(), **settings}
    saved = {k: os.environ.get(f"AIRFLOW_VAR_{k.upper()}") for k in env}
    os.environ.update({f"AIRFLOW_VAR_{k.upper()}": v for k, v in env.items()})
    out: dict = {"states": {}, "seconds": {}}
    try:
        dagbag = DagBag(dag_folder=str(REPO / "dags"))
        with ServingStack(bucket, services, monitor=False, prometheus=False) as stack:
            os.environ["AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL"] = stack.triton.grpc_url
            for dag_id, day, conf in (("criteo_full_retrain", 1, {"end_day": 1, "window_days": 2, **SMALL_MODEL}),
                                      ("criteo_incremental_training", 2, {"auc_floor": 0.55})):
                t0 = time.monotonic()
                dr = dagbag.get_dag(dag_id).test(logical_date=DAY0 + timedelta(days=day), run_conf=conf)
                out["seconds"][dag_id] = time.monotonic() - t0
                out["states"][dag_id] = (dr.state, {ti.task_id: ti.state for ti in dr.get_task_instances()})
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(f"AIRFLOW_VAR_{k.upper()}", None)
            else:
                os.environ[f"AIRFLOW_VAR_{k.upper()}"] = v
        os.environ.pop("AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL", None)
    model = bucket / "model_repository" / "criteo_dcn"
    out["versions"] = sorted(int(p.name) for p in model.iterdir() if p.name.isdigit()) if model.exists() else []
    out["lineage"] = {v: json.loads((model / str(v) / "lineage.json").read_text()) for v in out["versions"]}
    return out


@pytest.fixture(scope="module")
def both_runtimes(images, engine, raw_days, tmp_path_factory):
    """The same two DAG runs on the local runtime and with every step a container, one after the other."""
    old_umask = os.umask(0o002)
    volume = f"criteo-test-bucket-{os.getpid()}"
    try:
        local = tmp_path_factory.mktemp("bucket-local")
        RUNS["local"] = run_both_dags(local, raw_days, {"criteo_runtime": "local"}, tmp_path_factory.mktemp("svc"))
        bucket = tmp_path_factory.mktemp("bucket-docker")
        bucket.chmod(0o775)
        podman("volume", "create", "--opt", "type=none", "--opt", "o=bind", "--opt", f"device={bucket}", volume)
        RUNS["docker"] = run_both_dags(bucket, raw_days, docker_settings(images, engine, bucket, volume),
                                       tmp_path_factory.mktemp("svc"))
        RUNS["docker"]["bucket"] = bucket
    finally:
        os.umask(old_umask)
        podman("volume", "rm", "-f", volume, check=False)
    write_timings()
    return RUNS


def write_timings() -> None:
    rows = ["| DAG run | local runtime (s) | steps as containers (s) | containers / local |", "|---|---|---|---|"]
    for dag_id in ("criteo_full_retrain", "criteo_incremental_training"):
        a, b = RUNS["local"]["seconds"].get(dag_id), RUNS["docker"]["seconds"].get(dag_id)
        if a and b:
            rows.append(f"| {dag_id} | {a:.0f} | {b:.0f} | {b / a:.2f}x |")
    out = REPO / ".data" / "containers"
    out.mkdir(parents=True, exist_ok=True)
    (out / "timings.md").write_text("\n".join(rows) + "\n")
    print("\n" + "\n".join(rows))


def test_both_dags_succeed_with_every_step_a_container(both_runtimes):
    for runtime in ("local", "docker"):
        for dag_id, (state, states) in both_runtimes[runtime]["states"].items():
            assert state == "success", (runtime, dag_id, states)
    assert both_runtimes["local"]["versions"] == both_runtimes["docker"]["versions"] == [1, 2]


def test_the_containers_give_the_local_runtimes_lineage_blessing_and_auc(both_runtimes):
    local, docker = both_runtimes["local"]["lineage"], both_runtimes["docker"]["lineage"]
    assert local[1]["hyperparameters"]["mlp_dims"] == "64,64"
    for v in (1, 2):
        a, b = local[v], docker[v]
        for key in ("mode", "days", "parent_version", "trainer", "precision", "hyperparameters"):
            assert a.get(key) == b.get(key), (v, key)
        assert a["training"]["metrics"]["samples"] == b["training"]["metrics"]["samples"]
        assert [r["success"] for r in a["validation"]] == [r["success"] for r in b["validation"]]
        assert a["blessing"]["blessed"] is b["blessing"]["blessed"] is True
        auc_a, auc_b = a["evaluation"]["candidate_metrics"]["auc"], b["evaluation"]["candidate_metrics"]["auc"]
        assert abs(auc_a - auc_b) <= 0.002, (v, auc_a, auc_b)
    # the daily run warm-started from version 1 in both
    assert docker[2]["training"]["warm_start"].endswith("criteo_dcn/1/checkpoint.pt")


def test_the_containers_wrote_the_bucket_as_their_images_user(both_runtimes):
    bucket = both_runtimes["docker"]["bucket"]
    written = list((bucket / "work" / "processed").rglob("*.parquet"))
    assert written and {p.stat().st_uid for p in written} == {50000}
    version = bucket / "model_repository" / "criteo_dcn" / "2"
    assert (version / "model.onnx").exists() and (version / "_SUCCESS").exists()
