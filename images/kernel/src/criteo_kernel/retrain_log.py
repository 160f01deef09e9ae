"""The retrain log: one JSON record per full retrain that model_monitoring triggered.

    <base>/retrain_log/<model>/<triggered run id>.json

model_monitoring's `record_retrain` task writes a record (whole: one rename, one upload on GCS) once
`criteo_full_retrain` is queued; the monitor (images/monitoring) reads the folder and exports
`criteo_retrains_triggered_total{model}`, which the Grafana dashboard plots. The log lives in the
bucket, beside the request log, rather than in Airflow's database: the monitor then needs no Airflow
credentials, and the record outlives a rebuilt Airflow. A file is named after the triggered run
alone, so a retried task rewrites the same record instead of counting its retrain twice.
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime

from . import storage

FOLDER = "retrain_log"
SUFFIX = ".json"
_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]")


@dataclass(frozen=True)
class RetrainRecord:
    """One triggered retrain: the degraded version, what fired, and the run it queued."""

    model: str
    version: int | None      # the production version the sensors watched (None: unknown)
    at: str                  # when it was triggered, ISO-8601 with a UTC offset
    run_id: str              # the criteo_full_retrain run queued
    triggers: list[str] = field(default_factory=list)  # the sensors that fired, e.g. ["auc_degraded"]
    reason: str = ""
    monitoring_run_id: str = ""

    def file_name(self) -> str:
        return f"{_UNSAFE.sub('_', self.run_id)}{SUFFIX}"

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    def timestamp(self) -> float:
        return _parse_time(self.at).timestamp()

    @classmethod
    def parse(cls, url: str, text: str) -> RetrainRecord:
        """The record in `text`; ValueError naming the file and the field when it is not one."""
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ValueError(f"{url}: not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ValueError(f"{url}: expected a JSON object (a retrain record)")
        for key in ("model", "at", "run_id"):
            if not isinstance(data.get(key), str) or not data[key]:
                raise ValueError(f"{url}: field {key!r} is {data.get(key)!r}; expected a non-empty string")
        try:
            at = _parse_time(data["at"])
        except ValueError:
            raise ValueError(f"{url}: field 'at' is {data['at']!r}; expected an ISO-8601 time") from None
        if at.tzinfo is None:
            raise ValueError(f"{url}: field 'at' is {data['at']!r}; expected a UTC offset (e.g. +00:00)")
        version = data.get("version")
        if version is not None and (not isinstance(version, int) or isinstance(version, bool) or version < 1):
            raise ValueError(f"{url}: field 'version' is {version!r}; expected a model version (int >= 1) or null")
        triggers = data.get("triggers", [])
        if not isinstance(triggers, list) or not all(isinstance(t, str) for t in triggers):
            raise ValueError(f"{url}: field 'triggers' is {triggers!r}; expected a list of sensor task ids")
        return cls(model=data["model"], version=version, at=data["at"], run_id=data["run_id"], triggers=triggers,
                   reason=str(data.get("reason", "")), monitoring_run_id=str(data.get("monitoring_run_id", "")))


def folder(base_url: str) -> str:
    return storage.join(base_url, FOLDER)


def record_url(log_url: str, record: RetrainRecord) -> str:
    return storage.join(log_url, _UNSAFE.sub("_", record.model), record.file_name())


def list_records(fs, root: str) -> list[str]:
    """The paths of every record under the log's root path on `fs` (none when it does not exist)."""
    return sorted(fs.glob(f"{root}/*/*{SUFFIX}"))


def _parse_time(text: str) -> datetime:
    """An ISO-8601 time; a trailing Z too, which Python 3.10's fromisoformat (the merlin image's,
    where the kernel runs as well) does not take."""
    return datetime.fromisoformat(text[:-1] + "+00:00" if text.endswith("Z") else text)
