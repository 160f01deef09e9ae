"""The sustained condition the monitoring trigger and sensor share (pure)."""
import math

import pytest

from operators.pipeline.condition import evaluate_condition, range_step

pytestmark = pytest.mark.unit


def series(values, labels=None, start=100.0, step=1.0):
    return {"metric": labels or {"version": "1"},
            "values": [[start + i * step, str(v)] for i, v in enumerate(values) if v is not None]}


def test_condition_needs_every_step_and_coverage():
    ok = evaluate_condition([series([0.6, 0.6, 0.65, 0.6, 0.61])], "<", 0.7, 100, 104, 1)
    assert ok.met and ok.value == 0.61 and ok.worst == 0.65 and ok.coverage == 1.0
    dip = evaluate_condition([series([0.8, 0.6, 0.6, 0.8, 0.8])], "<", 0.7, 100, 104, 1)
    assert not dip.met and "3 of 5 steps not < 0.7" in dip.reason
    young = evaluate_condition([series([None, None, 0.6, 0.6, 0.6])], "<", 0.7, 100, 104, 1)
    assert not young.met and "only 3 of 5 steps" in young.reason
    nan = evaluate_condition([series([0.6, math.nan, 0.6, 0.6, 0.6])], "<", 0.7, 100, 104, 1)
    assert not nan.met
    assert evaluate_condition([series([0.3] * 5)], ">", 0.25, 100, 104, 1).met
    empty = evaluate_condition([], ">", 0.25, 100, 104, 1, query="criteo_max_feature_psi")
    assert not empty.met and empty.reason == "no samples for criteo_max_feature_psi yet"
    two = evaluate_condition([series([0.9] * 5, {"v": "a"}), series([0.5] * 5, {"v": "b"})], "<", 0.7, 100, 104, 1)
    assert two.met and two.labels == {"v": "b"}
    assert range_step(600) == 60 and range_step(4) == 1
