"""End to end: the real DAGs, run with dag.test() on small synthetic Criteo days.

Order matters and the runs share one bucket, as in production: a full retrain, two daily runs,
a rerun of a day, a malformed day and a missing day.
"""
import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.partitions import committed

pytestmark = pytest.mark.e2e
DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 30_000
TRITON: dict = {}
SMALL_MODEL = {"epochs": 2, "learning_rate": 0.005, "mlp_dims": "128,128", "batch_size": 2048,
               "auc_floor": 0.6}


def forget_earlier_runs(dag_ids) -> None:
    """Start from no runs of these DAGs in the dev database (.airflow), as on a fresh install.

    Runs left by earlier sessions would count as "the day before" for wait_for_previous_day, and one
    made by an older version of a DAG lacks its newer tasks, which then never become runnable.
    """
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        for model in (TaskInstance, DagRun):
            session.query(model).filter(model.dag_id.in_(dag_ids)).delete(synchronize_session=False)


@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    forget_earlier_runs(["criteo_full_retrain", "criteo_incremental_training"])
    base = tmp_path_factory.mktemp("bucket")
    os.environ["AIRFLOW_VAR_CRITEO_BASE_URL"] = str(base)
    os.environ["AIRFLOW_VAR_CRITEO_DAY0_DATE"] = DAY0.date().isoformat()
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(base / "raw"), "--days", "0-3", "--rows", str(ROWS)])
    from local_servers.stack import ServingStack

    # deploy promotes each version on a real Triton serving the bucket's model repository
    with ServingStack(base, tmp_path_factory.mktemp("services"), monitor=False, prometheus=False) as stack:
        TRITON["grpc_url"] = stack.triton.grpc_url
        yield base
    os.environ.pop("AIRFLOW_VAR_CRITEO_BASE_URL", None)


def run(dagbag, dag_id, day, conf=None):
    from operators.deploy import ensure_deploy_pool

    ensure_deploy_pool()   # the deploy task's pool, as every setup creates it
    dr = dagbag.get_dag(dag_id).test(logical_date=DAY0 + timedelta(days=day), run_conf=conf)
    return dr, {ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): ti.state
                for ti in dr.get_task_instances()}


def versions(base):
    model = Path(base) / "model_repository" / "criteo_dcn"
    return sorted(int(p.name) for p in model.iterdir() if p.name.isdigit()) if model.exists() else []


def lineage(base, v):
    return json.loads((Path(base) / "model_repository" / "criteo_dcn" / str(v) / "lineage.json").read_text())


def test_full_retrain_then_two_incremental_days(dagbag, bucket):
    dr, states = run(dagbag, "criteo_full_retrain", 1, {"end_day": 1, "window_days": 2, **SMALL_MODEL})
    assert dr.state == "success", states
    assert versions(bucket) == [1]
    first = lineage(bucket, 1)
    assert first["mode"] == "full" and first["days"] == [0, 1] and first["parent_version"] is None
    assert first["evaluation"]["candidate_metrics"]["auc"] > 0.6
    assert all(v["success"] for v in first["validation"])
    assert first["code_revision"] and first["training"]["metrics"]["samples"] == 2 * 2 * ROWS * 9 // 10
    assert first["hyperparameters"]["mlp_dims"] == "128,128"
    # the trainer is part of the lineage; the embedded default's auto is PyTorch
    assert first["trainer"] == "pytorch" and first["export"]["trainer"] == "pytorch"
    assert first["precision"] == "fp32" and first["training"]["metrics"]["precision"] == "fp32"

    for day, expected in ((2, 2), (3, 3)):
        dr, states = run(dagbag, "criteo_incremental_training", day, {"auc_floor": 0.6})
        assert dr.state == "success", states
        assert states["deploy"] == "success"
        lin = lineage(bucket, expected)
        assert lin["mode"] == "incremental" and lin["days"] == [day] and lin["parent_version"] == expected - 1
        assert lin["workflow_id"] == first["workflow_id"] and lin["trainer"] == "pytorch"
        # warm start from the parent's checkpoint in the artifact store (its package), as its lineage names it
        parent = lineage(bucket, expected - 1)
        package = Path(parent["package"])  # the partition; the lineage names its committed attempt, retained
        attempt = json.loads((package / "_COMMITTED").read_text())["attempt"]
        assert lin["training"]["warm_start"] == parent["artifacts"]["checkpoint"] == \
            f"{parent['package']}/{attempt}/checkpoint.pt"
        assert (package / "_RETAINED" / attempt).is_dir()
        assert "/work/candidates/" in parent["package"] and Path(parent["artifacts"]["checkpoint"]).exists()
        assert lin["evaluation"]["candidate_metrics"]["auc"] > 0.6
        assert "baseline_metrics" in lin["evaluation"]
    from tests.fixtures.model_repository import assert_serving_only, version_files

    # the versions hold only what Triton loads; the training artifacts stay in the package
    version_dir = Path(bucket) / "model_repository" / "criteo_dcn" / "3"
    for name in ("model.onnx", "model.py", "criteo_serving.py", "preprocessing/serving/categories.npz",
                 "lineage.json", "_SUCCESS"):
        assert (version_dir / name).exists(), name
    for v in (1, 2, 3):
        assert_serving_only(version_files(version_dir.parent / str(v)))
    stored = lineage(bucket, 3)["artifacts"]
    assert sorted(stored) == ["checkpoint", "reference_profile", "workflow"]
    assert Path(stored["workflow"], "nvt", "workflow.pkl").exists() and Path(stored["checkpoint"]).exists()
    config = (Path(bucket) / "model_repository" / "criteo_dcn" / "config.pbtxt").read_text()
    assert "specific: { versions: [ 3 ] }" in config
    # Triton serves exactly the production version; the deploy's smoke inference matched offline
    from operators.hooks.triton import TritonHook

    assert TritonHook(TRITON["grpc_url"]).ready_versions("criteo_dcn") == [3]
    deploy = dr.get_task_instance("deploy").xcom_pull(task_ids="deploy")
    assert deploy["promoted"] and deploy["previous_version"] == 2 and deploy["smoke"]["served_version"] == 3
    assert deploy["smoke"]["rows"] > 0 and deploy["smoke"]["max_abs_diff"] <= 1e-4

    # data quality: the window's reference profile ships with v1 and is inherited by v2, v3;
    # the daily runs were validated (and drift-checked) against it; processed output was gated too
    profiles = {v: Path(lineage(bucket, v)["artifacts"]["reference_profile"]) for v in (1, 2, 3)}
    ref = json.loads(profiles[1].read_text())
    assert ref["kind"] == "reference" and ref["days"] == 2 and ref["rows"]["min"] == ROWS
    assert profiles[3].read_bytes() == profiles[1].read_bytes()
    (daily,) = lineage(bucket, 3)["validation"]
    assert daily["success"] and daily["reference"] == str(profiles[2])
    assert "drift" not in daily["skipped"] and daily["max_psi"] < 0.25
    assert lineage(bucket, 3)["processed_validation"]["success"]
    assert "drift" in first["validation"][0]["skipped"]  # nothing to compare the first window with
    sites = sorted(p.parent for p in (Path(bucket) / "data_docs").rglob("_summary.json"))
    assert [p.relative_to(Path(bucket) / "data_docs").parts[0] for p in sites].count("criteo_full_retrain") == 3
    for site in sites:  # day=0, day=1, processed of the full retrain; day=N + processed of each daily run
        summary = json.loads((site / "_summary.json").read_text())
        assert summary["success"] and (site / summary["page"]).exists() and (site / "index.html").exists()
    # every partition and version was published whole: no staging folder, and no attempt but the
    # one its partition's commit names (reruns of a day: tests/faults, identical rerun; tests/live,
    # backfill --reprocess-behavior completed)
    assert list(Path(bucket).rglob(".staging-*")) == []
    attempts = [p for p in Path(bucket).rglob(".attempt-*") if p.parent.name != "_RETAINED"]  # not the pins
    assert attempts and all(committed(p.parent) == p for p in attempts)


def test_a_malformed_day_stops_before_training(dagbag, bucket):
    good = (Path(bucket) / "raw" / "day_3").read_text().splitlines()[:5000]
    broken = [line.replace("\t", "\t", 1) for line in good]
    broken[10] = "2" + broken[10][1:]                      # label 2
    row = next(i for i in range(20, 200) if not broken[i].endswith("\t"))  # a row with a C26 value
    broken[row] = broken[row][:-8] + "NOTAHEX!"            # bad hex in C26
    (Path(bucket) / "raw" / "day_4").write_text("\n".join(broken) + "\n")
    before = versions(bucket)
    prod = (Path(bucket) / "model_repository" / "criteo_dcn" / str(before[-1]) / "model.onnx").read_bytes()
    dr, states = run(dagbag, "criteo_incremental_training", 4, {"auc_floor": 0.6})
    assert dr.state == "failed"
    assert states["validate"] == "failed"
    assert states["preprocess"] == states["train"] == states["deploy"] == "upstream_failed"
    assert versions(bucket) == before
    # why, for the UI: the failed task's result (pushed before failing) names columns and rules,
    # and the run's data docs page says FAILED
    ti = dr.get_task_instance("validate")
    result = ti.xcom_pull(task_ids="validate", key="step_result")
    failed = {(f["column"], f["expectation"]) for f in result["failed"]}
    assert ("label", "expect_column_values_to_be_in_set") in failed
    assert ("C26", "expect_column_values_to_match_regex") in failed
    site = Path(result["data_docs_site"])
    page = committed(site) / Path(result["data_docs_page"]).relative_to(site)
    assert page.exists() and "criteo_incremental_training" in page.parts
    summary = json.loads((committed(site) / "_summary.json").read_text())
    assert summary["success"] is False
    assert (Path(bucket) / "model_repository" / "criteo_dcn" / str(before[-1]) / "model.onnx").read_bytes() == prod
    from operators.hooks.triton import TritonHook

    assert TritonHook(TRITON["grpc_url"]).ready_versions("criteo_dcn") == [before[-1]]


def test_the_day_after_a_failed_day_waits_for_it(dagbag, bucket):
    """Day 4 failed validation (above): day 5 waits for it in wait_for_previous_day and never plans
    (here until the sensor's test timeout, 4 s), so nothing after a bad day trains on a stale chain."""
    before = versions(bucket)
    dr, states = run(dagbag, "criteo_incremental_training", 5, {"auc_floor": 0.6})
    assert dr.state == "failed"
    assert states["wait_for_previous_day"] == "failed"
    assert states["plan_incremental_run"] == states["deploy"] == "upstream_failed"
    assert versions(bucket) == before


def test_a_missing_day_waits_then_fails(dagbag, bucket):
    # day 7: no run of day 6 to wait for (day 5's, above, waited on day 4)
    dr, states = run(dagbag, "criteo_incremental_training", 7, {"auc_floor": 0.6})
    assert dr.state == "failed"
    assert states["wait_for_previous_day"] == "success"
    assert states["wait_for_raw_day"] == "failed"
    assert states["extract"] == "upstream_failed"
