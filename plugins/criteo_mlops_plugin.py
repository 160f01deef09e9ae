"""Airflow plugin of the Criteo MLOps pipeline.

Macros: `{{ macros.criteo_mlops.criteo_day(logical_date) }}` gives the Criteo day number a date
maps to (see operators/layout.py), for use in templates and the UI's rendered fields.
"""
from __future__ import annotations

from airflow.plugins_manager import AirflowPlugin


def criteo_day(logical_date) -> int:
    from operators.config import PipelineConfig
    from operators.layout import day_for_date

    cfg = PipelineConfig.load()
    return day_for_date(logical_date, cfg.day0, cfg.num_days)


class CriteoMLOpsPlugin(AirflowPlugin):
    name = "criteo_mlops"
    macros = [criteo_day]
