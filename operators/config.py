"""Pipeline settings, read at task run time (never at DAG parse time).

Each setting is an Airflow Variable, so it can be set in the UI or as AIRFLOW_VAR_<NAME> in the
environment; the defaults are the embedded default (local folder bucket, local processes).
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _var(name: str, default: str) -> str:
    from airflow.sdk import Variable

    try:
        return Variable.get(name, default=default)
    except Exception:  # no task context (unit tests, CLI helpers): environment only
        return os.environ.get(f"AIRFLOW_VAR_{name.upper()}", default)


@dataclass(frozen=True)
class PipelineConfig:
    base_url: str          # every artifact lives under here: a folder, or gs://bucket/prefix
    raw_url: str           # where the raw Criteo day_N[.gz] files land
    runtime: str           # "local" (subprocesses) or "kubernetes" (pods)
    day0: date             # the logical date that maps to day_0
    num_days: int          # days in the dataset (24 for Criteo Terabyte)
    model_name: str
    keep_versions: int = 5  # model versions kept in the Triton repository (production always is)
    request_log_url: str = ""  # served requests + labels (images/monitoring); default <base>/request_log

    @classmethod
    def load(cls) -> "PipelineConfig":
        base = _var("criteo_base_url", str(REPO_ROOT / ".data" / "bucket"))
        return cls(
            base_url=base.rstrip("/"),
            raw_url=_var("criteo_raw_url", base.rstrip("/") + "/raw").rstrip("/"),
            runtime=_var("criteo_runtime", "local"),
            day0=date.fromisoformat(_var("criteo_day0_date", "2026-01-01")),
            num_days=int(_var("criteo_num_days", "24")),
            model_name=_var("criteo_model_name", "criteo_dcn"),
            keep_versions=int(_var("criteo_keep_versions", "5")),
            request_log_url=_var("criteo_request_log_url", base.rstrip("/") + "/request_log").rstrip("/"),
        )

    @property
    def model_repository(self) -> str:
        return f"{self.base_url}/model_repository"
