"""The criteo_request_log_to_raw DAG's plan: which day of the request log becomes which raw day.

Cheap to import (the DAG file imports it at parse time).
"""
from __future__ import annotations

from airflow.sdk import task


@task(multiple_outputs=True)
def plan_request_log_day(**context) -> dict:
    """The logical date's Criteo day, and the request_log_to_day step's arguments (request log -> raw/day_N)."""
    from airflow.sdk.exceptions import AirflowFailException

    from ..pipeline.layout import DayOutOfRange, Layout, day_for_date
    from .defaults import decide_settings, run_date

    settings = decide_settings()
    layout = Layout(settings)
    landing = settings.landing
    try:
        day = day_for_date(run_date(context), landing.day0, landing.num_days)
    except DayOutOfRange as exc:
        raise AirflowFailException(str(exc)) from None
    args = {"--request-log": layout.request_log, "--day": day, "--output": layout.raw,
            "--day0": landing.day0.isoformat()}
    print(f"day_{day}: {layout.request_log} (date partitions of {run_date(context):%Y-%m-%d}) "
          f"-> {layout.raw}/day_{day}")
    return {"day": day, "to_day_args": args, "settings": settings.to_dict()}
