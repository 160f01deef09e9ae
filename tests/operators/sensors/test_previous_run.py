"""wait_for_previous_day's condition: when a daily run may go on (operators/sensors/previous_run.py)."""
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest

from operators.sensors.previous_run import PreviousRun, PreviousRunSensor, previous_run_done

pytestmark = pytest.mark.unit
DAG = "criteo_incremental_training"


@pytest.mark.parametrize("counts, done, says", [
    (PreviousRun(any=0, success=0, failed=0), True, "no run of criteo_incremental_training for 2026-01-03"),
    (PreviousRun(any=1, success=1, failed=0), True, "succeeded"),
    (PreviousRun(any=1, success=0, failed=1), False, "failed: this day waits, so that days apply in order. "
                                                      "Fix that day's raw file and clear that day's whole run"),
    (PreviousRun(any=1, success=0, failed=0), False, "is queued or running: waiting for it"),
])
def test_the_day_before_decides(counts, done, says):
    ok, why = previous_run_done(counts, DAG, "2026-01-03")
    assert ok is done and says in why


class FakeTI:
    """The Task SDK's run counts, from a table of (logical date, state) of this DAG's runs."""

    def __init__(self, runs):
        self.runs, self.asked = runs, []

    def get_dr_count(self, dag_id, logical_dates=None, run_ids=None, states=None):
        self.asked.append((dag_id, tuple(logical_dates), tuple(states or ())))
        return sum(1 for when, state in self.runs if when in logical_dates and (not states or state in states))


def test_the_sensor_asks_for_the_run_one_interval_before():
    sensor = PreviousRunSensor(task_id="wait_for_previous_day")
    day3, day4 = datetime(2026, 1, 3, tzinfo=UTC), datetime(2026, 1, 4, tzinfo=UTC)
    ti = FakeTI([(day3, "running")])
    context = {"logical_date": day4, "ti": ti, "dag": SimpleNamespace(dag_id=DAG)}
    assert sensor.poke(context) is False
    assert {when for _, (when,), _ in ti.asked} == {day3} and {d for d, _, _ in ti.asked} == {DAG}
    ti.runs = [(day3, "success")]
    assert sensor.poke(context) is True
    assert sensor.poke({**context, "logical_date": None}) is True   # a run without a logical date
