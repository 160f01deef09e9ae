"""The model_monitoring DAG's task logic: what to watch, and whether to retrain.

Cheap to import (the DAG file imports it at parse time): the pure functions (`resolve_settings`,
`latest_raw_day`, `decide`) take plain values and are unit-tested; the tasks around them read the
Airflow context, Variables and the model repository.

Settings: each is a DAG Param; a null Param falls back to the Airflow Variable
`criteo_monitor_<name>`, then to the built-in default below.
"""
from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from airflow.sdk import Param, task

log = logging.getLogger(__name__)

TARGET_DAG = "criteo_full_retrain"
LAST_RETRAIN_VARIABLE = "criteo_monitor_last_retrain_at"
SENSOR_TASKS = ("auc_degraded", "drift_detected")
ACTIVE_STATES = ["queued", "running"]

# name: (type, built-in default, title, description)
SETTINGS: dict[str, tuple[type, float | int, str, str]] = {
    "auc_threshold": (float, 0.70, "AUC floor",
                      "Retrain when the served version's rolling AUC stays below this."),
    "psi_threshold": (float, 0.25, "PSI ceiling",
                      "Retrain when the largest feature PSI stays above this (0.1 some drift, 0.25 significant)."),
    "sustained_s": (int, 600, "Sustained window (s)",
                    "How long a metric must stay bad before a sensor fires."),
    "sensor_timeout_s": (int, 1200, "Sensor timeout (s)",
                         "A sensor that has not fired by then ends skipped; keep it below the 30 min schedule."),
    "poll_interval_s": (int, 60, "Poll interval (s)", "Seconds between two Prometheus checks of a sensor."),
    "cooldown_h": (float, 6.0, "Cooldown (h)",
                   "No new retrain within this many hours of the last one this DAG triggered."),
    "window_days": (int, 7, "Retrain window (days)",
                    "window_days of the triggered criteo_full_retrain, ending at the latest raw day."),
}
_BOUNDS = {"auc_threshold": {"minimum": 0, "maximum": 1}, "psi_threshold": {"minimum": 0},
           "sustained_s": {"minimum": 1}, "sensor_timeout_s": {"minimum": 1}, "poll_interval_s": {"minimum": 1},
           "cooldown_h": {"minimum": 0}, "window_days": {"minimum": 1, "maximum": 24}}


def monitor_params() -> dict[str, Param]:
    """The DAG's Params: typed, nullable (null = the Variable, else the built-in default)."""
    out = {}
    for name, (typ, default, title, description) in SETTINGS.items():
        json_type = "integer" if typ is int else "number"
        out[name] = Param(None, type=[json_type, "null"], title=title, **_BOUNDS[name],
                          description=f"{description} Empty: Variable criteo_monitor_{name}, else {default:g}.")
    return out


def _variable(name: str) -> str | None:
    from operators.config import _var

    value = _var(name, "")
    return value if value not in (None, "") else None


def resolve_settings(params: dict, variable=_variable) -> dict:
    """Each setting from the Param, else the Variable `criteo_monitor_<name>`, else the default."""
    out, sources = {}, {}
    for name, (typ, default, _, _) in SETTINGS.items():
        value, source = params.get(name), "param"
        if value is None:
            value, source = variable(f"criteo_monitor_{name}"), f"Variable criteo_monitor_{name}"
        if value is None:
            value, source = default, "default"
        try:
            out[name] = typ(float(value)) if typ is int else typ(value)
        except (TypeError, ValueError):
            raise ValueError(f"setting {name}: {value!r} (from {source}) is not a {typ.__name__}") from None
        sources[name] = source
    out["sources"] = sources
    return out


_DAY = re.compile(r"^day_(\d+)(?:\.gz)?$")


def latest_raw_day(raw_url: str, num_days: int | None = None) -> int | None:
    """The highest N with `day_N` or `day_N.gz` in the raw folder (within day_0..day_{num_days-1})."""
    from operators.model_repository import storage_path

    folder = storage_path(raw_url)
    if not folder.exists():
        return None
    days = []
    for p in folder.iterdir():
        m = _DAY.match(p.name)
        if m and (num_days is None or int(m.group(1)) < num_days):
            days.append(int(m.group(1)))
    return max(days) if days else None


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
    return t if t.tzinfo else t.replace(tzinfo=timezone.utc)


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


# -- tasks ------------------------------------------------------------------------------------------
@task(multiple_outputs=True)
def production_version(**context) -> dict:
    """The production model version and the settings this run watches it with.

    Skips the whole run (every downstream task) when no version is in production yet.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from operators.config import PipelineConfig
    from operators.layout import Layout
    from operators.model_repository import ModelRepositoryHook
    from operators.prometheus import prometheus_url

    cfg = PipelineConfig.load()
    version = ModelRepositoryHook(Layout(cfg)).production_version()
    if version is None:
        msg = (f"no production version of {cfg.model_name} in {cfg.model_repository}: nothing serves, "
               f"so nothing to monitor; skipping this run")
        print(msg)
        raise AirflowSkipException(msg)
    settings = resolve_settings(context["params"])
    sources = settings.pop("sources")
    watch = {"model": cfg.model_name, "version": str(version), "prometheus_url": prometheus_url(), **settings}
    print(f"watching {cfg.model_name} version {version} in Prometheus {watch['prometheus_url']}: "
          + ", ".join(f"{k}={settings[k]:g} ({sources[k]})" for k in SETTINGS))
    if settings["sensor_timeout_s"] >= 1800:
        print(f"WARNING: sensor_timeout_s={settings['sensor_timeout_s']} is not below the 30 min schedule: "
              "runs will queue up behind each other")
    return watch


def _last_retrain_at() -> str | None:
    from airflow.sdk import Variable

    try:
        return Variable.get(LAST_RETRAIN_VARIABLE, default=None)
    except Exception as exc:  # a broken value must not stop the decision
        log.warning("cannot read Variable %s: %s", LAST_RETRAIN_VARIABLE, exc)
        return None


@task.short_circuit(trigger_rule="one_success")
def decide_retrain(**context):
    """Trigger criteo_full_retrain? Only if a sensor fired, no retrain is queued or running, and the
    cooldown since the last one this DAG triggered has passed. Returns the retrain's conf, or False
    (then trigger_full_retrain is skipped)."""
    from operators.config import PipelineConfig

    ti = context["ti"]
    watch = ti.xcom_pull(task_ids="production_version") or {}
    fired = {}
    for task_id in SENSOR_TASKS:
        event = ti.xcom_pull(task_ids=task_id)
        if isinstance(event, dict) and event.get("status") == "fired":
            fired[task_id] = event
    # Tasks cannot query the metadata database in Airflow 3: the Task SDK asks the API server.
    active = ti.get_dr_count(dag_id=TARGET_DAG, states=ACTIVE_STATES)
    cfg = PipelineConfig.load()
    settings = {k: watch.get(k) for k in SETTINGS} if watch else resolve_settings(context["params"])
    decision = decide(fired, active, _last_retrain_at(), datetime.now(timezone.utc), float(settings["cooldown_h"]),
                      latest_raw_day(cfg.raw_url, cfg.num_days), int(settings["window_days"]), cfg.raw_url)
    print(("TRIGGER full retrain: " if decision.trigger else "NO RETRAIN: ") + decision.reason)
    if decision.trigger:
        print(f"{TARGET_DAG} conf: {decision.conf}")
        return decision.conf
    return False


@task
def trigger_full_retrain(conf: dict) -> None:
    """Queue criteo_full_retrain with decide_retrain's conf (end_day, window_days, reason).

    The same mechanism as TriggerDagRunOperator (the Task SDK's DagRunTriggerException: the task
    runner has the API server create the run), without that operator's module at parse time: it
    imports airflow.models, ~150 ms on every parse of this DAG file.
    """
    from airflow.sdk.exceptions import DagRunTriggerException

    now = datetime.now(timezone.utc)
    run_id = f"monitoring__{now.isoformat()}"
    print(f"queueing {TARGET_DAG} run {run_id} with conf {conf}")  # the task runner pushes trigger_run_id
    raise DagRunTriggerException(trigger_dag_id=TARGET_DAG, dag_run_id=run_id, conf=dict(conf), logical_date=now,
                                 reset_dag_run=False, skip_when_already_exists=False, wait_for_completion=False,
                                 allowed_states=["success"], failed_states=["failed"], poke_interval=60,
                                 deferrable=False, note=conf.get("reason"))


@task
def record_retrain(**context) -> str:
    """Remember when this DAG last triggered a retrain (the cooldown starts now)."""
    from airflow.sdk import Variable

    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    Variable.set(LAST_RETRAIN_VARIABLE, at,
                 description="When model_monitoring last triggered criteo_full_retrain (cooldown start); "
                             "delete it to allow a retrain at once")
    print(f"{LAST_RETRAIN_VARIABLE} = {at}")
    return at
