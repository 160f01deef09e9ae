"""model_monitoring's decisions, as pure functions of plain values (unit-tested without Airflow).

- `resolve_settings`: each threshold from the DAG Param, else the Variable `criteo_monitor_<name>`,
  else the registry's default (operators/pipeline/config.py);
- `decide`: whether to trigger criteo_full_retrain now, and exactly why (or why not).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from .config import MONITOR_PREFIX, REGISTRY

if TYPE_CHECKING:
    from collections.abc import Mapping

log = logging.getLogger(__name__)

TARGET_DAG = "criteo_full_retrain"
LAST_RETRAIN_VARIABLE = "criteo_monitor_last_retrain_at"
MONITOR_SETTINGS = [spec for spec in REGISTRY.values() if spec.kind == "monitor"]

def resolve_settings(params: dict, thresholds: Mapping[str, str | None]) -> dict:
    """Each threshold from the Param, else the run's Variable `criteo_monitor_<name>` (`thresholds`,
    from Settings.monitoring), else the registry's default."""
    out, sources = {}, {}
    for spec in MONITOR_SETTINGS:
        name = spec.name[len(MONITOR_PREFIX):]
        value, source = params.get(name), "param"
        if value is None:
            value, source = thresholds.get(name), f"Variable {spec.name}"
        if value is None:
            value, source = spec.default, "default"
        try:
            out[name] = spec.type(float(value)) if spec.type is int else spec.type(value)
        except (TypeError, ValueError):
            raise ValueError(f"setting {name}: {value!r} (from {source}) is not a {spec.type.__name__}") from None
        sources[name] = source
    out["sources"] = sources
    return out


@dataclass
class Decision:
    trigger: bool
    reason: str
    conf: dict | None = None
    details: list[str] = field(default_factory=list)


def _parse_time(text: str | None) -> datetime | None:
    if not text:
        return None
    try:
        t = datetime.fromisoformat(str(text).strip())
    except ValueError:
        log.warning("ignoring %s=%r: not an ISO-8601 time", LAST_RETRAIN_VARIABLE, text)
        return None
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def decide(fired: dict[str, dict], active_retrains: int, last_retrain_at: str | None, now: datetime,
           cooldown_h: float, latest_day: int | None, window_days: int, raw_url: str = "the raw folder") -> Decision:
    """Whether to trigger a full retrain now, and exactly why (or why not).

    :param fired: events of the sensors that fired, by task id (empty: none fired).
    :param active_retrains: criteo_full_retrain runs queued or running now.
    :param last_retrain_at: when this DAG last triggered one (ISO time; None: never).
    :param latest_day: the latest raw Criteo day present (None: none).
    """
    if not fired:
        return Decision(False, "no sensor fired: the served model looks healthy")
    why = "; ".join(f"{task_id} fired: {ev.get('reason') or ev.get('query')}" for task_id, ev in sorted(fired.items()))
    if active_retrains:
        return Decision(False, f"{why}; but {active_retrains} {TARGET_DAG} run(s) already queued or running: "
                               f"not triggering another")
    last = _parse_time(last_retrain_at)
    if last is not None:
        age = now - last
        if age < timedelta(hours=cooldown_h):
            left = timedelta(hours=cooldown_h) - age
            return Decision(False, f"{why}; but in cooldown: the last retrain was triggered at "
                                   f"{last.isoformat(timespec='seconds')} ({age.total_seconds() / 3600:.2f} h ago, "
                                   f"cooldown {cooldown_h:g} h, {left.total_seconds() / 60:.0f} min left)")
    if latest_day is None:
        return Decision(False, f"{why}; but no raw Criteo day (day_N[.gz]) in {raw_url} to retrain on")
    since = ("never triggered before" if last is None else
             f"last triggered at {last.isoformat(timespec='seconds')}, "
             f"{(now - last).total_seconds() / 3600:.2f} h ago >= cooldown {cooldown_h:g} h")
    first = max(0, latest_day - window_days + 1)
    reason = f"{why}; no {TARGET_DAG} run queued or running; {since}"
    conf = {"end_day": int(latest_day), "window_days": int(window_days),
            "reason": f"model_monitoring: {why}"}
    return Decision(True, f"{reason}: retraining on day_{first}..day_{latest_day}", conf)
