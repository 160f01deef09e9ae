"""A run's identity: the fingerprint of what it read, and what changed between two runs."""
import pytest

from operators.pipeline.identity import changes, run_inputs

pytestmark = pytest.mark.unit

DAY = {"url": "gs://b/raw/day_3", "bytes": 100, "sha256": "a" * 64, "generation": "17", "lines": 9}


def test_fingerprint_is_of_the_inputs_not_their_order():
    one = run_inputs([DAY, {**DAY, "url": "gs://b/raw/day_4"}], "w1", 4, {"--lr": 0.1, "--epochs": 1})
    two = run_inputs([{**DAY, "url": "gs://b/raw/day_4"}, DAY], "w1", 4, {"--epochs": 1, "--lr": 0.1})
    assert one["fingerprint"] == two["fingerprint"] and len(one["fingerprint"]) == 16
    assert run_inputs(DAY, "w1", 4, {})["raw"] == [{k: DAY[k] for k in ("url", "bytes", "sha256", "generation")}]


@pytest.mark.parametrize("change", [
    {"raw": {**DAY, "sha256": "b" * 64}}, {"raw": {**DAY, "bytes": 101}}, {"raw": {**DAY, "generation": "18"}},
    {"workflow_id": "w2"}, {"parent_version": 5}, {"hyperparameters": {"--lr": 0.2}},
])
def test_every_input_changes_the_fingerprint(change):
    base = {"raw": DAY, "workflow_id": "w1", "parent_version": 4, "hyperparameters": {"--lr": 0.1}}
    old, new = run_inputs(**base), run_inputs(**{**base, **change})
    assert old["fingerprint"] != new["fingerprint"]
    assert changes(old, new)


def test_changes_say_what_differs():
    old = run_inputs(DAY, "w1", 4, {})
    new = run_inputs({**DAY, "bytes": 200, "sha256": "c" * 64}, "w1", 5, {})
    assert changes(old, new) == [f"gs://b/raw/day_3 changed (bytes 100 -> 200, sha256 {'a' * 64} -> {'c' * 64})",
                                 "parent_version 4 -> 5"]
    assert changes(None, new) == ["the earlier version recorded no inputs"]
    assert changes(old, old) == []
