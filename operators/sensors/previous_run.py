"""Days apply in order: a run waits for its DAG's run of the previous day to finish.

`max_active_runs=1` orders scheduled runs only: a backfill runs up to its own max_active_runs (10 by
default) at once, and `depends_on_past` orders each task against its own past only (and makes
`airflow backfill create` demand a reprocess flag). So the daily DAG starts with this sensor: day N
plans (and picks the production version it warm-starts from) only once day N-1's run has ended, so
each day warm-starts from what the day before left in production, however the runs were made.
"""
from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from airflow.sdk import BaseSensorOperator


@dataclass(frozen=True)
class PreviousRun:
    """The state of the previous day's run, as counts of runs at that logical date."""

    any: int
    success: int
    failed: int


def previous_run_done(previous: PreviousRun, dag_id: str, when: str) -> tuple[bool, str]:
    """(may this run go on, why): no run or a successful run of the day before lets it go on."""
    if previous.any == 0:
        return True, f"no run of {dag_id} for {when}: nothing to wait for"
    if previous.success:
        return True, f"the run of {dag_id} for {when} succeeded"
    if previous.failed:
        return False, (f"the run of {dag_id} for {when} failed: this day waits, so that days apply in order. "
                       f"Fix that day's raw file and clear that day's whole run (extract too: it read the bad "
                       f"file), it reruns, then this day goes on; or mark its run successful to skip it")
    return False, f"the run of {dag_id} for {when} is queued or running: waiting for it, so that days apply in order"


class PreviousRunSensor(BaseSensorOperator):
    """Wait until this DAG's run for the previous interval (logical date - `interval`) has ended well.

    Goes on at once when there is no such run (the first day, or a day processed by another DAG);
    waits while it is queued or running, and while it has failed (the later days wait, as
    `depends_on_past` would have them); fails at `timeout` saying which run it waited for.

    :param interval: the DAG's schedule interval (one day for the daily DAG).
    """

    ui_color = "#e8f0fe"

    def __init__(self, *, interval: timedelta = timedelta(days=1), **kwargs):
        super().__init__(**kwargs)
        self.interval = interval
        self._last = ""

    def _previous(self, context):
        logical = context.get("logical_date")
        return None if logical is None else logical - self.interval

    def poke(self, context) -> bool:
        previous = self._previous(context)
        if previous is None:
            self.log.info("a run without a logical date has no previous day: going on")
            return True
        ti, dag_id = context["ti"], context["dag"].dag_id
        counts = PreviousRun(
            any=ti.get_dr_count(dag_id=dag_id, logical_dates=[previous]),
            success=ti.get_dr_count(dag_id=dag_id, logical_dates=[previous], states=["success"]),
            failed=ti.get_dr_count(dag_id=dag_id, logical_dates=[previous], states=["failed"]))
        done, why = previous_run_done(counts, dag_id, previous.isoformat())
        self._last = why
        self.log.info(why)
        return done

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSensorTimeout

        try:
            return super().execute(context)
        except AirflowSensorTimeout as exc:
            raise AirflowSensorTimeout(f"{self._last or 'the previous day never ended'} "
                                       f"(waited {self.timeout:g}s; {exc})") from None
