"""Deploy against a real Triton: push, promote (load + smoke inference), rollback and roll forward,
a smoke mismatch, Triton unreachable, and the same on a gs:// repository (GCS emulator).

DeployModelOperator runs its real execute() (outside a DAG run: the context it reads is the dag id
and run id) with the Variables as AIRFLOW_VAR_* in the environment.
"""
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from tests.fixtures.partitions import committed
from tests.fixtures.serving import MODEL, REPO

pytestmark = pytest.mark.integration


def smoke_file(path: Path, packages, package: int) -> str:
    """Held-out rows with package `package`'s offline predictions (what evaluate saves)."""
    np.savez(path, dense_raw=packages.dense_raw[:128], cat_hash=packages.cat_hash[:128],
             prediction=packages.predictions[package][:128], label=np.zeros(128, np.int8))
    return str(path)


def published(packages, i: int) -> str:
    """The package as export's result names it: the partition, which deploy reads through its commit."""
    return str(packages.packages[i].parent)


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    base = tmp_path / "bucket"
    (base / "model_repository").mkdir(parents=True)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(base))
    return base


@pytest.fixture
def server(bucket, tmp_path, monkeypatch):
    from local_servers.triton import LocalTriton

    triton = LocalTriton(str(bucket / "model_repository"), work_dir=tmp_path / "triton")
    triton.start()
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL", triton.grpc_url)
    yield triton
    triton.stop()


def settings() -> dict:
    """The run's settings as its plan carries them (the tests set them as AIRFLOW_VAR_*)."""
    from operators.pipeline.config import Settings

    return Settings.load().to_dict()


def repository():
    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout

    return ModelRepositoryHook(Layout(Settings.load()))


def deploy(packages, package: int, run_key: str, smoke: str, inputs: dict | None = None):
    from operators.deploy import DeployModelOperator

    # what the blessing gate hands deploy: the blessed package and its smoke rows (evaluate's outputs)
    blessing = {"blessed": True, "package": published(packages, package), "smoke_rows": smoke}
    op = DeployModelOperator(task_id="deploy", settings=settings(), blessing=blessing, run_key=run_key,
                             lineage={"mode": "full", "days": [0]}, inputs=inputs)
    return op.execute({"dag": SimpleNamespace(dag_id="criteo_full_retrain"), "run_id": f"manual__{run_key}"})


def served(server, packages, rows=64):
    from operators.hooks.triton import TritonHook

    hook = TritonHook(server.grpc_url)
    got, version = hook.infer(MODEL, packages.dense_raw[:rows], packages.cat_hash[:rows])
    return hook.ready_versions(MODEL), version, got


def test_deploy_ships_only_what_the_gate_blessed(bucket):
    from airflow.sdk.exceptions import AirflowFailException

    from operators.deploy import DeployModelOperator

    for blessing in ({"blessed": False, "package": str(bucket)}, {"blessed": True}, None):
        op = DeployModelOperator(task_id="deploy", settings=settings(), blessing=blessing, run_key="r", lineage={})
        with pytest.raises(AirflowFailException, match="deploy needs a blessed package"):
            op.execute({"dag": SimpleNamespace(dag_id="criteo_full_retrain"), "run_id": "manual__r"})
    assert list((bucket / "model_repository").iterdir()) == []


def test_deploy_rejects_a_bad_queue_delay_before_pushing(bucket, packages, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_MAX_QUEUE_DELAY_US", "half a millisecond")
    with pytest.raises(AirflowFailException, match="criteo_triton_max_queue_delay_us='half a millisecond': expected"):
        deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    assert list((bucket / "model_repository").iterdir()) == []   # nothing pushed


def test_deploy_rejects_a_bad_instance_kind_before_pushing(bucket, packages, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_INSTANCE_KIND", "GPU")
    with pytest.raises(AirflowFailException, match="criteo_triton_instance_kind='GPU': expected one of"):
        deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    assert list((bucket / "model_repository").iterdir()) == []   # nothing pushed


def test_deploy_rejects_a_bad_replicas_setting_before_pushing(bucket, packages, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_REPLICAS", "triton-replicas.criteo.svc")
    with pytest.raises(AirflowFailException, match="criteo_triton_replicas: 'triton-replicas.criteo.svc' is not "
                                                   "host:port. Nothing was deployed"):
        deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    assert list((bucket / "model_repository").iterdir()) == []   # nothing pushed


def test_deploy_promotes_then_rollback_and_roll_forward(server, packages, tmp_path):
    from criteo_kernel.artifacts import ROLLED_BACK
    from criteo_kernel.storage import RETAINED
    from operators.hooks.serving import rollback
    from operators.hooks.triton import TritonHook

    first = deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    assert first["version"] == 1 and first["created"] and first["promoted"] and first["previous_version"] is None
    pkg = committed(Path(published(packages, 0)))  # the attempt the version's lineage names: pinned by deploy
    assert [p.name for p in (pkg.parent / RETAINED / pkg.name).iterdir()] == [f"{MODEL}-run-a"]
    assert first["smoke"]["rows"] == 128 and first["smoke"]["max_abs_diff"] <= 1e-5
    ready, version, got = served(server, packages)
    assert ready == [1] and version == 1 and np.allclose(got, packages.predictions[0][:64], atol=1e-5)

    second = deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    assert second["version"] == 2 and second["previous_version"] == 1
    ready, version, got = served(server, packages)
    assert ready == [2] and version == 2 and np.allclose(got, packages.predictions[1][:64], atol=1e-5)

    # a rerun of run-b's deploy: nothing copied, still version 2
    again = deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    assert again["version"] == 2 and not again["created"] and repository().versions() == [1, 2]

    repo = repository()
    back = rollback(repo, TritonHook(server.grpc_url))
    assert back["version"] == 1 and back["previous_version"] == 2
    assert served(server, packages)[:2] == ([1], 1) and repo.production_version() == 1
    assert (repo.model_dir / "2" / ROLLED_BACK).exists()
    # rolled back: a rerun of run-b's deploy must not put it back
    rerun = deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    assert rerun["promoted"] is False and served(server, packages)[:2] == ([1], 1)
    # roll forward by hand: the mark goes
    forward = rollback(repo, TritonHook(server.grpc_url), to=2)
    assert forward["version"] == 2 and not (repo.model_dir / "2" / ROLLED_BACK).exists()
    assert served(server, packages)[:2] == ([2], 2)


def test_rollback_command_line(server, packages, tmp_path, bucket):
    import os

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    cli = [str(REPO / ".venv/bin/criteo-mlops")]
    env = dict(os.environ)
    out = subprocess.run([*cli, "rollback"], capture_output=True, text=True, env=env, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "version 1 serves again (was 2)" in out.stdout
    assert "smoke inference on 128 held-out rows matched" in out.stdout
    assert served(server, packages)[:2] == ([1], 1)
    listing = subprocess.run([*cli, "versions"], capture_output=True, text=True, env=env, timeout=120).stdout
    rows = {line.split()[0]: line for line in listing.splitlines() if line.strip()[:1].isdigit()}
    assert "<- production" in rows["1"] and "(rolled back)" in rows["2"] and "full" in rows["2"], listing
    bad = subprocess.run([*cli, "rollback", "--to", "7"], capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 1 and "version 7 is not a complete version" in bad.stderr
    assert served(server, packages)[:2] == ([1], 1)


def test_a_smoke_mismatch_rolls_back_and_fails_without_retry(server, packages, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    # version 2 is package 1, but its smoke rows carry package 0's predictions
    with pytest.raises(AirflowFailException) as err:
        deploy(packages, 1, "run-b", smoke_file(tmp_path / "wrong.npz", packages, 0))
    message = str(err.value)
    assert "version 2 was rolled back" in message and "differ from the offline ones" in message
    assert "Production stays at version 1" in message
    repo = repository()
    assert repo.production_version() == 1 and repo.versions() == [1]
    assert "differ from the offline ones" in (repo.model_dir / "2" / "_REJECTED").read_text()  # files kept
    ready, version, got = served(server, packages)
    assert ready == [1] and version == 1 and np.allclose(got, packages.predictions[0][:64], atol=1e-5)


def test_triton_unreachable_fails_retryably_and_the_retry_promotes(server, packages, tmp_path, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException

    from local_servers.process import free_port
    from operators.hooks.triton import TritonUnavailable

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    config_before = (repository().model_dir / "config.pbtxt").read_text()
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL", dead)
    with pytest.raises(TritonUnavailable) as err:  # not AirflowFailException: the task retries
        deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    assert not isinstance(err.value, AirflowFailException) and dead in str(err.value)
    repo = repository()
    # consistent: version 2 is pushed (complete) but not production; the pointer did not move
    assert repo.versions() == [1, 2] and repo.production_version() == 1
    assert (repo.model_dir / "config.pbtxt").read_text() == config_before
    assert served(server, packages)[:2] == ([1], 1)  # the previous version keeps serving

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL", server.grpc_url)  # Triton is back: the retry
    retry = deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    assert retry["version"] == 2 and not retry["created"] and retry["promoted"]
    assert served(server, packages)[:2] == ([2], 2)


@pytest.fixture
def second_replica(bucket, tmp_path, server, monkeypatch):
    """Another tritonserver on the same repository; criteo_triton_replicas names both, as the
    headless Service's addresses would (k8s/serving/base/triton.yaml)."""
    from local_servers.triton import LocalTriton

    other = LocalTriton(str(bucket / "model_repository"), work_dir=tmp_path / "triton-2")
    other.start()
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_REPLICAS", f"{server.grpc_url},{other.grpc_url}")
    yield other
    other.stop()


def test_deploy_loads_the_version_on_every_replica(server, second_replica, packages, tmp_path):
    """Explicit model control is per server: each replica loads the new version and answers the smoke
    inference; both serve it."""
    first = deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    assert first["smoke"]["replicas"] == [server.grpc_url, second_replica.grpc_url]
    second = deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    assert second["version"] == 2
    for replica in (server, second_replica):
        ready, version, got = served(replica, packages)
        assert ready == [2] and version == 2 and np.allclose(got, packages.predictions[1][:64], atol=1e-5)


def test_a_replica_that_fails_restores_the_previous_version_on_every_replica(server, packages, tmp_path, bucket,
                                                                              monkeypatch):
    """The second replica reads a repository of its own, a stale copy (its config.pbtxt still names
    version 1): it loads, but answers with version 1. Deploy fails without retry, the pointer goes
    back, and the first replica, which had loaded version 2, serves version 1 again."""
    import shutil

    from airflow.sdk.exceptions import AirflowFailException

    from local_servers.triton import LocalTriton

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    stale = tmp_path / "stale_repository"
    shutil.copytree(bucket / "model_repository", stale)
    with LocalTriton(str(stale), work_dir=tmp_path / "triton-stale") as other:
        monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_REPLICAS", f"{server.grpc_url},{other.grpc_url}")
        with pytest.raises(AirflowFailException, match="version 2 was rolled back: smoke inference was answered by "
                                                       "version 1, not 2. Production stays at version 1"):
            deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
        assert repository().production_version() == 1
        for replica in (server, other):
            assert served(replica, packages)[:2] == ([1], 1)


def test_a_replica_that_appears_during_the_promotion_loads_the_version_too(server, packages, tmp_path, bucket,
                                                                           monkeypatch):
    """A pod the autoscaler adds while deploy runs: its Triton read the old pointer at start and was
    not in the first list of replicas. Deploy lists the replicas again once the pointer has moved,
    and that replica loads the new version and passes the smoke inference too. (The changing list
    stands in for the headless Service's DNS answer; both tritonservers are real.)"""
    from local_servers.triton import LocalTriton, load_production
    from operators import deploy as deploy_module
    from operators.hooks.triton import TritonHook

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    with LocalTriton(str(bucket / "model_repository"), work_dir=tmp_path / "triton-late") as late:
        load_production(late)  # what the image's --load-model does at start: it reads the pointer, version 1
        assert served(late, packages)[:2] == ([1], 1)
        answers = iter([[server.grpc_url], [server.grpc_url, late.grpc_url]])
        monkeypatch.setattr(deploy_module, "triton_replicas",
                            lambda settings: [TritonHook(url) for url in
                                              next(answers, [server.grpc_url, late.grpc_url])])
        result = deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
        assert result["version"] == 2 and result["smoke"]["replicas"] == [server.grpc_url, late.grpc_url]
        for replica in (server, late):
            ready, version, got = served(replica, packages)
            assert ready == [2] and version == 2 and np.allclose(got, packages.predictions[1][:64], atol=1e-5)


def test_a_replica_that_appears_but_never_gets_ready_fails_retryably_and_restores_nothing(server, packages, tmp_path):
    """Every replica that answers serves the new version; the late one that does not is named, and
    the error is retryable (the retry promotes again and reaches it). Nothing goes back."""
    from local_servers.process import free_port
    from operators.hooks.serving import LateReplicaNotReady, promote
    from operators.hooks.triton import TritonHook, TritonUnavailable

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    dead = f"127.0.0.1:{free_port()}"
    with pytest.raises(LateReplicaNotReady, match=f"but {dead} appeared during the promotion and was not ready "
                                                  "after 1s") as err:
        promote(repository(), [TritonHook(server.grpc_url)], 1, late_ready_s=1,
                resolve=lambda: [TritonHook(server.grpc_url), TritonHook(dead)])
    assert isinstance(err.value, TritonUnavailable)  # the operator's retry
    assert repository().production_version() == 1 and served(server, packages)[:2] == ([1], 1)


def test_a_replica_down_changes_nothing_and_fails_retryably(server, packages, tmp_path, monkeypatch):
    from local_servers.process import free_port
    from operators.hooks.triton import TritonUnavailable

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    config_before = (repository().model_dir / "config.pbtxt").read_text()
    dead = f"127.0.0.1:{free_port()}"
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_REPLICAS", f"{server.grpc_url},{dead}")
    with pytest.raises(TritonUnavailable, match=dead):
        deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
    assert (repository().model_dir / "config.pbtxt").read_text() == config_before
    assert served(server, packages)[:2] == ([1], 1)


def test_a_version_being_pushed_is_never_loaded(server, packages, tmp_path, bucket):
    """What an interrupted push leaves (a hidden staging folder, or on an object store a numbered
    folder without _SUCCESS) is not a version: a reload serves production only."""
    import shutil

    from operators.hooks.triton import TritonHook

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
    model_dir = bucket / "model_repository" / MODEL
    shutil.copytree(packages.packages[1], model_dir / ".staging-2-1767225600-deadbeef")
    shutil.copytree(packages.packages[1], model_dir / "3")  # half-copied: no _SUCCESS
    (model_dir / "3" / "_SUCCESS").unlink(missing_ok=True)
    assert repository().versions() == [1]
    TritonHook(server.grpc_url).load_model(MODEL)
    assert served(server, packages)[:2] == ([1], 1)
    with pytest.raises(ValueError, match="version 3 .* is not complete"):
        repository().set_production(3)


@pytest.fixture
def gcs_bucket(gcs, monkeypatch):
    for key, value in gcs.env().items():
        monkeypatch.setenv(key, value)
    gcs.create_bucket("criteo-deploy")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", "gs://criteo-deploy/prod")
    return "gs://criteo-deploy/prod"


def test_deploy_to_a_gcs_repository_that_triton_serves(gcs_bucket, gcs, packages, tmp_path, monkeypatch):
    """The bucket is gs:// (the emulator): deploy copies the version in through ObjectStoragePath,
    marker last; Triton reads the repository from gs:// and serves it."""
    from google.cloud import storage

    from local_servers.triton import LocalTriton

    # Triton needs its repository to exist when it starts (as the bucket's setup makes it in production)
    storage.Client().bucket("criteo-deploy").blob("prod/model_repository/README").upload_from_string("models\n")
    triton = LocalTriton(f"{gcs_bucket}/model_repository", work_dir=tmp_path / "triton", env=gcs.env())
    triton.start()
    try:
        monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL", triton.grpc_url)
        first = deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))
        second = deploy(packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1))
        assert (first["version"], second["version"], second["previous_version"]) == (1, 2, 1)
        objects = gcs.list_objects("criteo-deploy", "prod/model_repository/criteo_dcn/")
        assert "prod/model_repository/criteo_dcn/2/_SUCCESS" in objects
        assert "prod/model_repository/criteo_dcn/2/model.onnx" in objects
        assert not [o for o in objects if "/.staging-" in o]
        ready, version, got = served(triton, packages)
        assert ready == [2] and version == 2 and np.allclose(got, packages.predictions[1][:64], atol=1e-5)
    finally:
        triton.stop()


def day_read(sha: str, size: int) -> dict:
    """What the run's inputs look like to deploy: extract's `input` per day, workflow, parent, settings."""
    return {"raw": [{"url": "/raw/day_3", "bytes": size, "sha256": sha * 64, "generation": None, "lines": 9}],
            "workflow_id": "w", "parent_version": None, "hyperparameters": {"--epochs": 1}}


def test_a_corrected_raw_day_replaces_its_version_and_identical_inputs_make_nothing(server, packages, tmp_path):
    """The half-day model must not stay in production once the whole day is rerun."""
    half = deploy(packages, 0, "incremental-day3", smoke_file(tmp_path / "s0.npz", packages, 0), day_read("a", 50))
    assert half["version"] == 1 and half["created"]
    whole = deploy(packages, 1, "incremental-day3", smoke_file(tmp_path / "s1.npz", packages, 1), day_read("b", 100))
    assert whole["version"] == 2 and whole["created"] and whole["promoted"]
    assert served(server, packages)[:2] == ([2], 2)
    repo = repository()
    lineage = repo.lineage(2)
    assert lineage["replaces"]["version"] == 1
    assert lineage["replaces"]["fingerprint"] == repo.lineage(1)["inputs"]["fingerprint"]
    assert lineage["inputs"]["fingerprint"] != lineage["replaces"]["fingerprint"]
    assert lineage["replaces"]["changes"] == [f"/raw/day_3 changed (bytes 50 -> 100, sha256 {'a' * 64} -> {'b' * 64})"]
    again = deploy(packages, 1, "incremental-day3", smoke_file(tmp_path / "s1.npz", packages, 1), day_read("b", 100))
    assert again["version"] == 2 and not again["created"] and repo.versions() == [1, 2]


def test_a_corrected_day_after_later_days_deployed_fails_and_leaves_production(server, packages, tmp_path):
    from airflow.sdk.exceptions import AirflowFailException

    deploy(packages, 0, "incremental-day3", smoke_file(tmp_path / "s0.npz", packages, 0), day_read("a", 50))
    deploy(packages, 1, "incremental-day4", smoke_file(tmp_path / "s1.npz", packages, 1), day_read("c", 70))
    with pytest.raises(AirflowFailException, match=r"run incremental-day3 made version 1, and its inputs changed "
                                                   r"since .* production is version 2, deployed after it"):
        deploy(packages, 0, "incremental-day3", smoke_file(tmp_path / "s0.npz", packages, 0), day_read("b", 100))
    assert repository().versions() == [1, 2] and served(server, packages)[:2] == ([2], 2)


def test_a_triton_load_from_gcs_downloads_the_serving_set_only(gcs, packages, tmp_path, monkeypatch):
    """Triton localizes the model's whole folder, every kept version, on each load (triton core
    backend_model.cc, LocalizePath(model_path, ...)): measured on the wire, through a counting proxy
    in front of the emulator, a load fetches the serving set of each version and nothing of the
    training artifacts, which stay in the artifact store where the lineage names them."""
    from google.cloud import storage

    from criteo_kernel.artifacts import DEPLOYED, TRITON_CONFIG, served
    from local_servers.triton import LocalTriton
    from operators.deploy import DeployModelOperator
    from operators.hooks.triton import TritonHook
    from tests.fixtures.counting_proxy import CountingProxy
    from tests.fixtures.model_repository import assert_serving_only

    for key, value in gcs.env().items():
        monkeypatch.setenv(key, value)
    gcs.create_bucket("criteo-load")  # a bucket of its own: the module's emulator serves other tests
    gcs_bucket = "gs://criteo-load/prod"
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", gcs_bucket)
    client = storage.Client()
    bucket = client.bucket("criteo-load")
    bucket.blob("prod/model_repository/README").upload_from_string("models\n")
    # the packages in the artifact store (the bucket), as export leaves them there
    stored_bytes = []
    for i in (0, 1):
        published(packages, i)
        files = [p for p in packages.packages[i].rglob("*") if p.is_file()]
        partition = packages.packages[i].parent  # the committed attempt with its commit object
        for p in (p for p in partition.rglob("*") if p.is_file()):
            bucket.blob(f"prod/work/candidates/run-{i}/package/{p.relative_to(partition)}").upload_from_filename(str(p))
        stored_bytes.append(sum(p.stat().st_size for p in files
                                if not served(p.relative_to(packages.packages[i]).as_posix())))
    assert min(stored_bytes) > 0  # the packages hold training artifacts (checkpoint, workflow) to leave out

    model = "prod/model_repository/criteo_dcn/"
    with CountingProxy(gcs.endpoint.removeprefix("http://"), "criteo-load") as proxy:
        triton = LocalTriton(f"{gcs_bucket}/model_repository", work_dir=tmp_path / "triton",
                             env={**gcs.env(), "CLOUD_STORAGE_EMULATOR_ENDPOINT": proxy.endpoint})
        triton.start()
        try:
            monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL", triton.grpc_url)
            for i in (0, 1):
                blessing = {"blessed": True, "package": f"{gcs_bucket}/work/candidates/run-{i}/package",
                            "smoke_rows": smoke_file(tmp_path / f"s{i}.npz", packages, i)}
                op = DeployModelOperator(task_id="deploy", settings=settings(), blessing=blessing,
                                         run_key=f"run-{i}", lineage={"mode": "full", "days": [0]})
                if i == 1:
                    proxy.reset()  # measure the second promotion's load: two versions in the folder
                result = op.execute({"dag": SimpleNamespace(dag_id="criteo_full_retrain"), "run_id": f"manual__{i}"})
            assert result["version"] == 2 and result["promoted"]
            assert TritonHook(triton.grpc_url).ready_versions(MODEL) == [2]
        finally:
            triton.stop()
        downloads = list(proxy.downloads)

    sizes = {b.name: b.size for b in client.list_blobs("criteo-load", prefix=model)}
    per_version = {v: {n[len(f"{model}{v}/"):]: s for n, s in sizes.items() if n.startswith(f"{model}{v}/")}
                   for v in (1, 2)}
    bound = sum(assert_serving_only(files) for files in per_version.values())
    names = [n for n, _ in downloads]
    assert f"{model}2/model.onnx" in names, names  # the proxy saw the load (Triton went through it)
    for name in names:
        assert name.startswith(model), f"a load fetched {name}, outside the model's folder"
        rel = name[len(model):]
        inner = rel.split("/", 1)[1] if "/" in rel else None
        assert rel == TRITON_CONFIG or (inner is not None and (served(inner) or inner in DEPLOYED)), \
            f"a load fetched {name}, which Triton never needs"
    fetched = sum(n for _, n in downloads)
    # every file of both versions, once each, and the model's config.pbtxt (read more than once)
    assert fetched <= bound + sizes[f"{model}{TRITON_CONFIG}"] * names.count(f"{model}{TRITON_CONFIG}")
    artifacts = repository().lineage(2)["artifacts"]
    # inside the package's committed attempt, which deploy retained
    attempt = packages.packages[1].name
    assert artifacts["checkpoint"] == f"{gcs_bucket}/work/candidates/run-1/package/{attempt}/checkpoint.pt"
    assert bucket.blob(f"prod/work/candidates/run-1/package/_RETAINED/{attempt}/{MODEL}-run-1").exists()
    assert bucket.blob(artifacts["checkpoint"].removeprefix("gs://criteo-load/")).exists()
    print(f"\ntritonserver load of {MODEL} version 2 (2 versions in the folder) fetched {len(downloads)} objects, "
          f"{fetched} bytes from the GCS emulator ({proxy.requests} requests in all); the training artifacts "
          f"left in the artifact store: {sum(stored_bytes)} bytes")
