"""The blessing gate (TFX Evaluator): an absolute AUC floor, and no worse than production."""
import pytest

from operators.pipeline.blessing import judge

pytestmark = pytest.mark.unit


def test_blessing_gate():
    def ev(c, b=None):
        return {"candidate_metrics": {"auc": c}, **({"baseline_metrics": {"auc": b}} if b else {})}
    assert judge(ev(0.75), 0.7, 0.01).blessed
    assert not judge(ev(0.69), 0.7, 0.01).blessed
    assert judge(ev(0.745, 0.75), 0.7, 0.01).blessed
    v = judge(ev(0.73, 0.75), 0.7, 0.01)
    assert not v.blessed and "worse than production 0.7500" in v.reasons[0]
    assert not judge(ev(float("nan")), 0.7, 0.01).blessed


def test_the_blessing_names_what_deploy_ships():
    evaluation = {"candidate_metrics": {"auc": 0.8}, "candidate": "gs://b/work/candidates/k/package",
                  "smoke_rows": "gs://b/work/candidates/k/evaluation/smoke.npz"}
    blessing = judge(evaluation, 0.7, 0.01).to_dict()
    assert blessing["blessed"] and blessing["package"] == evaluation["candidate"]
    assert blessing["smoke_rows"] == evaluation["smoke_rows"]


def test_the_blessing_records_the_production_version_it_was_judged_against():
    evaluation = {"candidate_metrics": {"auc": 0.8}, "baseline_metrics": {"auc": 0.79}, "candidate": "p"}
    assert judge(evaluation, 0.7, 0.01, baseline_version=5).to_dict()["baseline_version"] == 5
    assert judge({"candidate_metrics": {"auc": 0.8}}, 0.7, 0.01).to_dict()["baseline_version"] is None
