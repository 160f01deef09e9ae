"""Where everything lives under the base URL, and which Criteo day a run processes.

    raw/day_N[.gz]                                  input, as Criteo publishes it
    work/extracted/day=N/                           text columns, train/ + eval/ slices
    work/processed/<workflow id>/day=N/             NVTabular output
    work/workflows/<workflow id>/                   fitted workflow (full retrain)
    work/candidates/<run key>/{train,package,evaluation}/
    work/validation/<run key>/day=N/profile.json   the day's data profile (validate step)
    model_repository/<model>/config.pbtxt, <model>/<version>/...   Triton's repository
    data_docs/<dag id>/<run id>/day=N/, processed/  Great Expectations data docs, one site per validation
    request_log/{requests,labels}/date=D/hour=H/    served traffic and its labels (criteo_request_log_url)
    retrain_log/<model>/<run id>.json               each retrain model_monitoring triggered (criteo_kernel.retrain_log)

Logical date -> day: day_N with N = (logical date - criteo_day0_date) in days. With the defaults,
the run for 2026-01-01 processes day_0 and 2026-01-24 processes day_23. A date outside
[0, criteo_num_days) is an error naming the mapping, not a silent wrap-around.
"""
from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date, datetime

from criteo_kernel import retrain_log

from .config import Settings

_UNSAFE_RUN_ID = re.compile(r"[^A-Za-z0-9._=-]")


class DayOutOfRange(ValueError):
    pass


def day_for_date(logical: date | datetime, day0: date, num_days: int) -> int:
    d = logical.date() if isinstance(logical, datetime) else logical
    n = (d - day0).days
    if not 0 <= n < num_days:
        raise DayOutOfRange(
            f"logical date {d} maps to day_{n}, outside day_0..day_{num_days - 1} "
            f"(criteo_day0_date={day0}, criteo_num_days={num_days})")
    return n


@dataclass(frozen=True)
class Layout:
    settings: Settings

    @property
    def raw(self) -> str:
        return self.settings.storage.raw_url

    def extracted(self, day: int) -> str:
        return f"{self.settings.storage.base_url}/work/extracted/day={day}"

    def processed_root(self, workflow_id: str) -> str:
        return f"{self.settings.storage.base_url}/work/processed/{workflow_id}"

    def processed(self, workflow_id: str, day: int) -> str:
        return f"{self.processed_root(workflow_id)}/day={day}"

    def workflow(self, workflow_id: str) -> str:
        return f"{self.settings.storage.base_url}/work/workflows/{workflow_id}"

    def validation(self, run_key: str) -> str:
        return f"{self.settings.storage.base_url}/work/validation/{run_key}"

    def candidate(self, run_key: str) -> str:
        return f"{self.settings.storage.base_url}/work/candidates/{run_key}"

    @property
    def request_log(self) -> str:
        return self.settings.storage.request_log_url

    @property
    def retrain_log(self) -> str:
        return retrain_log.folder(self.settings.storage.base_url)

    @property
    def data_docs(self) -> str:
        return f"{self.settings.storage.base_url}/data_docs"

    @property
    def model_repository(self) -> str:
        return self.settings.storage.model_repository

    @property
    def model_name(self) -> str:
        return self.settings.serving.model_name

    def model_dir(self) -> str:
        return f"{self.model_repository}/{self.settings.serving.model_name}"

    def version_dir(self, version: int) -> str:
        return f"{self.model_dir()}/{version}"


def data_docs_run(dag_id: str, run_id: str) -> str:
    """A DAG run's folder of data docs sites under data_docs/: <dag_id>/<run_id>, made safe."""
    return f"{safe_run_id(dag_id)}/{safe_run_id(run_id)}"


def safe_run_id(run_id: str) -> str:
    """A run (or DAG) id as a folder name: every char outside [A-Za-z0-9._=-] becomes `_`."""
    return _UNSAFE_RUN_ID.sub("_", run_id)


def fingerprint(payload: dict) -> str:
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:10]
