"""The whole pipeline on gs://: `criteo_base_url` on the GCS emulator (fake-gcs-server), nothing on
local disk. A full retrain and a daily run (steps as local processes reading and writing gs://
through fsspec/gcsfs, Airflow's side through ObjectStoragePath); the raw-day sensor watching the
bucket; the data docs published to the bucket and served from it by the plugin; deploy into
gs://.../model_repository, with a real Triton serving from it. A missing bucket fails the run's
first task naming the URL.
"""
import json
import os
from datetime import UTC, datetime, timedelta

import pytest

from criteo_kernel import storage

pytestmark = pytest.mark.e2e
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 20_000
BASE = "gs://criteo-gcs-e2e/pipeline"
SMALL_MODEL = {"epochs": 1, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048, "auc_floor": 0.55}
TRITON: dict = {}


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    from local_servers.gcs import LocalGcsEmulator
    from local_servers.stack import ServingStack
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime
    from tests.dags.test_training_e2e import forget_earlier_runs

    forget_earlier_runs(["criteo_full_retrain", "criteo_incremental_training"])
    work = tmp_path_factory.mktemp("gcs_e2e")
    saved = dict(os.environ)
    with LocalGcsEmulator(work_dir=work / "gcs") as gcs:
        try:
            gcs.create_bucket("criteo-gcs-e2e")
            os.environ.update(gcs.env())
            os.environ.update({"AIRFLOW_VAR_CRITEO_BASE_URL": BASE, "AIRFLOW_VAR_CRITEO_RUNTIME": "local",
                               "AIRFLOW_VAR_CRITEO_DAY0_DATE": DAY0.date().isoformat()})
            # Criteo days land in the bucket's raw/ (as a transfer job would put them there)
            LocalProcessRuntime().run(STEPS["synth"], ["--out", str(work / "landing"), "--days", "0-2",
                                                       "--rows", str(ROWS)])
            import fsspec

            fs = fsspec.filesystem("gs")
            for day in range(3):
                fs.put(str(work / "landing" / f"day_{day}"), f"{BASE}/raw/day_{day}")
            with ServingStack(BASE, work / "services", monitor=False, prometheus=False) as stack:
                TRITON["grpc_url"] = stack.triton.grpc_url
                yield fs
        finally:
            os.environ.clear()
            os.environ.update(saved)


def run(dagbag, dag_id, day, conf=None):
    from operators.deploy import ensure_deploy_pool

    ensure_deploy_pool()   # the deploy task's pool, as every setup creates it
    dr = dagbag.get_dag(dag_id).test(logical_date=DAY0 + timedelta(days=day), run_conf=conf)
    return dr, {ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): ti.state
                for ti in dr.get_task_instances()}


def test_a_full_retrain_and_a_daily_run_on_gs(dagbag, bucket, monkeypatch):
    from operators.hooks.triton import TritonHook

    # The full retrain preprocesses on 2 dask workers, which read the extracts from the bucket in
    # place and write the processed parts into it themselves (with GPUs: dask-cuda workers).
    with monkeypatch.context() as scaled:
        scaled.setenv("AIRFLOW_VAR_CRITEO_PREPROCESS_WORKERS", "2")
        dr, states = run(dagbag, "criteo_full_retrain", 1, {"end_day": 1, "window_days": 2, **SMALL_MODEL})
    assert dr.state == "success", states
    preprocess = dr.get_task_instance("preprocess").xcom_pull(task_ids="preprocess")
    assert preprocess["cluster"]["workers"] == 2 and preprocess["partitions"][0].startswith("gs://")
    parts = bucket.ls(f"{storage.resolve(preprocess['partitions'][0])}/train")  # the result names the partition
    assert parts and all(p.endswith(".parquet") for p in parts), parts
    dr, states = run(dagbag, "criteo_incremental_training", 2, {"auc_floor": 0.55})
    assert dr.state == "success", states
    fs = bucket
    model = f"{BASE}/model_repository/criteo_dcn"
    versions = sorted(int(p.rsplit("/", 1)[-1]) for p in fs.ls(model) if p.rsplit("/", 1)[-1].isdigit())
    assert versions == [1, 2]
    lineage = json.loads(fs.cat_file(f"{model}/2/lineage.json"))
    assert lineage["mode"] == "incremental" and lineage["parent_version"] == 1
    # warm start from the parent's checkpoint in the artifact store, where its lineage names it
    parent = json.loads(fs.cat_file(f"{model}/1/lineage.json"))
    package = f"{BASE}/work/candidates/{parent['run_key']}/package"
    attempt = json.loads(fs.cat_file(f"{package}/_COMMITTED"))["attempt"]
    checkpoint = f"{package}/{attempt}/checkpoint.pt"
    assert lineage["training"]["warm_start"] == parent["artifacts"]["checkpoint"] == checkpoint
    assert fs.find(f"{package}/_RETAINED/{attempt}")  # deploy pinned the attempt the lineage names
    assert fs.exists(parent["artifacts"]["checkpoint"])
    assert fs.exists(f"{parent['artifacts']['workflow']}/nvt/workflow.pkl")
    for name in ("model.onnx", "model.py", "preprocessing/serving/categories.npz", "_SUCCESS"):
        assert fs.exists(f"{model}/2/{name}"), name
    from tests.fixtures.model_repository import assert_serving_only

    for v in versions:  # only what Triton loads: it localizes every kept version on each load
        prefix = f"{model.removeprefix('gs://')}/{v}/"
        assert_serving_only({p[len(prefix):]: info["size"] for p, info in fs.find(prefix, detail=True).items()})
    # Triton serves the bucket's model repository: the production version, and nothing else
    assert TritonHook(TRITON["grpc_url"]).ready_versions("criteo_dcn") == [2]
    deploy = dr.get_task_instance("deploy").xcom_pull(task_ids="deploy")
    assert deploy["promoted"] and deploy["smoke"]["served_version"] == 2 and deploy["smoke"]["max_abs_diff"] <= 1e-4
    # every artifact went to the bucket: extracted and processed partitions, data docs sites
    assert fs.exists(f"{BASE}/work/extracted/day=2/_COMMITTED")   # published by a commit, no folder rename
    summaries = fs.glob(f"{BASE}/data_docs/*/*/*/.attempt-*/_summary.json")
    assert len(summaries) >= 5, summaries   # day 0, 1, processed; day 2 + processed
    assert all(json.loads(fs.cat_file(s))["success"] for s in summaries)


def test_the_plugin_serves_the_data_docs_from_the_bucket(dagbag, bucket):
    from airflow.api_fastapi.app import create_app, purge_cached_app

    from tests.plugins.test_plugin import PREFIX, client_for

    app = create_app(apps="core")
    try:
        client = client_for(app)
        index = client.get(f"{PREFIX}/")
        assert index.status_code == 200 and "criteo_incremental_training" in index.text
        (summary,) = [s for s in bucket.glob(
            f"{BASE}/data_docs/criteo_incremental_training/*/*/.attempt-*/_summary.json") if "processed" not in s][:1]
        # the site's logical path (what links carry); the plugin reads it inside the committed attempt
        site = summary[len(BASE.removeprefix("gs://")) + len("/data_docs/"):].rsplit("/", 2)[0]
        page = json.loads(bucket.cat_file(summary))["page"]
        resp = client.get(f"{PREFIX}/site/{site}/{page}")
        assert resp.status_code == 200 and "<html" in resp.text.lower()
    finally:
        purge_cached_app()


def test_a_missing_day_in_the_bucket_stops_at_the_sensor(dagbag, bucket):
    dr, states = run(dagbag, "criteo_incremental_training", 5, {"auc_floor": 0.55})
    assert dr.state == "failed" and states["wait_for_raw_day"] == "failed", states
    assert states["extract"] == "upstream_failed"


def test_a_missing_bucket_fails_the_first_task_naming_the_url(dagbag, bucket, monkeypatch):
    from operators.hooks.storage import BucketUnavailable, check_bucket

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", "gs://no-such-bucket/pipeline")
    with pytest.raises(BucketUnavailable, match=r"criteo_base_url=gs://no-such-bucket/pipeline: the bucket "
                                                r"gs://no-such-bucket does not exist"):
        check_bucket("gs://no-such-bucket/pipeline")
    dr, states = run(dagbag, "criteo_incremental_training", 2, {"auc_floor": 0.55})
    assert dr.state == "failed" and states["plan_incremental_run"] == "failed", states
    assert dr.get_task_instance("plan_incremental_run").try_number == 1   # no retry
