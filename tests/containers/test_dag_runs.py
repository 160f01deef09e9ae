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

import os
from pathlib import Path

import pytest

from tests.fixtures.dag_runs import (
    assert_both_succeeded,
    assert_same_models,
    run_both_dags,
    synth_raw_days,
    write_timings,
)

from .conftest import REPO, podman

pytestmark = pytest.mark.containers
RUNS: dict[str, dict] = {}


@pytest.fixture(scope="module")
def raw_days(tmp_path_factory):
    return synth_raw_days(tmp_path_factory.mktemp("raw"))


def docker_settings(images, engine, bucket: Path, volume: str) -> dict[str, str]:
    return {"criteo_runtime": "docker", "criteo_docker_url": engine["DOCKER_HOST"],
            "criteo_docker_volume": volume, "criteo_docker_mount_path": str(bucket), "criteo_docker_gpus": "0",
            # the engine here has host networking only: a container without a network would ask for a bridge
            "criteo_docker_network": "host",
            **{f"criteo_image_{name}": images[name] for name in ("merlin", "validator", "monitoring", "hugectr")}}


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
    finally:
        os.umask(old_umask)
        podman("volume", "rm", "-f", volume, check=False)
    write_timings(RUNS, "docker", "steps as containers", REPO / ".data" / "containers" / "timings.md")
    return RUNS


def test_both_dags_succeed_with_every_step_a_container(both_runtimes):
    assert_both_succeeded(both_runtimes)


def test_the_containers_give_the_local_runtimes_lineage_blessing_and_auc(both_runtimes):
    assert_same_models(both_runtimes["local"]["lineage"], both_runtimes["docker"]["lineage"])


def test_the_containers_wrote_the_bucket_as_their_images_user(both_runtimes):
    bucket = both_runtimes["docker"]["bucket"]
    written = list((bucket / "work" / "processed").rglob("*.parquet"))
    assert written and {p.stat().st_uid for p in written} == {50000}
    version = bucket / "model_repository" / "criteo_dcn" / "2"
    assert (version / "model.onnx").exists() and (version / "_SUCCESS").exists()
