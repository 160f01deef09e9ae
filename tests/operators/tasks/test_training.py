"""The training DAGs' plan tasks around the run's kind: what a scheduled run outside the data set
does (skipped, saying why), and what the full retrain's end_day=-1 means by hand and on schedule;
the blessing gate on a candidate it does not bless (daily: deploy skipped; full retrain: failed)."""
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

pytestmark = pytest.mark.unit
PARAMS = {"epochs": 1, "batch_size": 4096, "learning_rate": 0.001, "auc_floor": 0.7, "max_auc_drop": 0.01,
          "max_eval_rows": 100000, "end_day": -1, "window_days": 3, "mlp_dims": "64", "embedding_dim": 8,
          "cross_layers": 1, "max_vocab": 0}
NOW = datetime(2026, 11, 30, tzinfo=UTC)   # day_333 of a data set starting 2026-01-01


def context(run_type: str, logical_date: datetime, dag_id: str, **params) -> dict:
    return {"params": {**PARAMS, **params}, "logical_date": logical_date, "run_id": f"{run_type}__x",
            "dag": SimpleNamespace(dag_id=dag_id),
            "dag_run": SimpleNamespace(run_type=run_type, run_after=logical_date)}


@pytest.fixture
def bucket(tmp_path, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(tmp_path))
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_DAY0_DATE", "2026-01-01")
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_NUM_DAYS", "24")
    return tmp_path


@pytest.mark.parametrize("dag_id", ["criteo_incremental_training", "criteo_full_retrain"])
def test_a_scheduled_run_outside_the_data_set_is_skipped_saying_why(bucket, dag_id):
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.tasks.training import plan_full_retrain, plan_incremental_run

    plan = plan_incremental_run if dag_id == "criteo_incremental_training" else plan_full_retrain
    with pytest.raises(AirflowSkipException, match=r"logical date 2026-11-30 maps to day_333, outside "
                                                   r"day_0..day_23 .*: a scheduled run outside the data set "
                                                   r"has nothing to train, so it is skipped"):
        plan.function(**context("scheduled", NOW, dag_id))


def test_a_run_asked_for_by_hand_or_backfill_outside_the_data_set_still_fails(bucket):
    from airflow.sdk.exceptions import AirflowFailException

    from operators.tasks.training import plan_incremental_run

    for run_type in ("manual", "backfill"):
        with pytest.raises(AirflowFailException, match="maps to day_333, outside day_0..day_23"):
            plan_incremental_run.function(**context(run_type, NOW, "criteo_incremental_training"))


def test_end_day_default_by_hand_is_the_latest_raw_day_in_the_bucket(bucket):
    from airflow.sdk.exceptions import AirflowFailException

    from operators.tasks.training import plan_full_retrain

    with pytest.raises(AirflowFailException, match="end_day=-1 means the latest raw day in the bucket, and there "
                                                   "is none"):
        plan_full_retrain.function(**context("manual", NOW, "criteo_full_retrain"))
    (bucket / "raw").mkdir()
    for name in ("day_0", "day_1.gz", "day_2", "day_3", "day_30", "notes.txt"):
        (bucket / "raw" / name).write_text("")
    plan = plan_full_retrain.function(**context("manual", NOW, "criteo_full_retrain"))
    assert plan["days"] == [1, 2, 3]      # day_30 is outside the data set (24 days)
    # given explicitly, end_day is kept
    assert plan_full_retrain.function(**context("manual", NOW, "criteo_full_retrain", end_day=1))["days"] == [0, 1]
    # a backfill or scheduled run keeps -1 = the logical date's day
    backfill = plan_full_retrain.function(**context("backfill", datetime(2026, 1, 3, tzinfo=UTC),
                                                    "criteo_full_retrain"))
    assert backfill["days"] == [0, 1, 2]


EVALUATION = {"candidate_metrics": {"auc": 0.6612}, "baseline_metrics": None, "candidate": "pkg", "smoke_rows": "s"}
GATE = {"auc_floor": 0.7, "max_auc_drop": 0.01}


def test_a_full_retrain_that_blesses_nothing_fails_naming_the_auc_and_the_floor(capsys):
    """A red run, without retry: a green one with deploy skipped hid that no version was made."""
    from airflow.sdk.exceptions import AirflowFailException

    from operators.tasks.training import blessing_gate

    with pytest.raises(AirflowFailException, match=r"not blessed, nothing deployed, production unchanged: "
                                                   r"candidate AUC 0.6612 is below the floor 0.7000\. .*window_days"):
        blessing_gate.function(EVALUATION, GATE, "full")
    assert "NOT BLESSED: candidate AUC 0.6612 is below the floor 0.7000" in capsys.readouterr().out


def test_a_daily_run_that_blesses_nothing_skips_deploy_and_a_blessed_one_names_the_package(capsys):
    """Daily: not blessed -> False (short-circuit: deploy skipped, the next day goes on)."""
    from operators.tasks.training import blessing_gate

    assert blessing_gate.function(EVALUATION, GATE, "incremental") is False
    assert "NOT BLESSED: candidate AUC 0.6612 is below the floor 0.7000" in capsys.readouterr().out
    good = {**EVALUATION, "candidate_metrics": {"auc": 0.81}}
    for mode in ("incremental", "full"):
        blessing = blessing_gate.function(good, GATE, mode)
        assert blessing["blessed"] is True and (blessing["package"], blessing["smoke_rows"]) == ("pkg", "s")


def test_the_blessing_records_the_production_version_evaluate_compared_with():
    """The plan's parent_version reaches the blessing: deploy promotes only while it still serves."""
    from operators.tasks.training import blessing_gate

    good = {**EVALUATION, "candidate_metrics": {"auc": 0.81}}
    assert blessing_gate.function(good, GATE, "incremental", 4)["baseline_version"] == 4
    assert blessing_gate.function(good, GATE, "full", None)["baseline_version"] is None
