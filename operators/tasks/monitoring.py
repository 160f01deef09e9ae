"""The model_monitoring DAG's tasks: what to watch, whether to retrain, the trigger and its record.

Cheap to import (the DAG file imports it at parse time). The decisions themselves are pure
functions in operators/pipeline/retraining.py; these tasks feed them the Airflow context, the
Variables, the model repository and the raw folder.

Settings: the first task (production_version) decides the run's settings once and hands the
others what they need. Each threshold is a DAG Param; a null Param falls back to the Airflow
Variable `criteo_monitor_<name>`, then to the registry's default (operators/pipeline/config.py).
"""
from __future__ import annotations

import logging
from datetime import UTC, datetime

from airflow.sdk import Param, task

from ..pipeline.config import MONITOR_PREFIX
from ..pipeline.retraining import LAST_RETRAIN_VARIABLE, MONITOR_SETTINGS, TARGET_DAG

log = logging.getLogger(__name__)

SENSOR_TASKS = ("auc_degraded", "drift_detected")
ACTIVE_STATES = ["queued", "running"]


def monitor_params() -> dict[str, Param]:
    """The DAG's Params: typed, nullable (null = the Variable, else the built-in default)."""
    out = {}
    for spec in MONITOR_SETTINGS:
        json_type = "integer" if spec.type is int else "number"
        out[spec.name[len(MONITOR_PREFIX):]] = Param(
            None, type=[json_type, "null"], title=spec.title, **spec.bounds,
            description=f"{spec.meaning} Empty: Variable {spec.name}, else {spec.default}.")
    return out


def thresholds_table() -> str:
    """The thresholds as the DAG's doc_md shows them, from the settings registry."""
    rows = [f"| `{spec.name[len(MONITOR_PREFIX):]}` | `{spec.name}` | {spec.default} |" for spec in MONITOR_SETTINGS]
    return "\n".join(["| Param | Variable | default |", "|---|---|---|", *rows])


# -- tasks ------------------------------------------------------------------------------------------
@task(multiple_outputs=True)
def production_version(**context) -> dict:
    """The production model version and the settings this run watches it with.

    Skips the whole run (every downstream task) when no version is in production yet.
    """
    from airflow.sdk.exceptions import AirflowSkipException

    from ..hooks.model_repository import ModelRepositoryHook
    from ..pipeline.layout import Layout
    from ..pipeline.retraining import resolve_settings
    from .defaults import decide_settings

    settings = decide_settings()
    model, repository = settings.serving.model_name, settings.storage.model_repository
    version = ModelRepositoryHook(Layout(settings)).production_version()
    if version is None:
        msg = (f"no production version of {model} in {repository}: nothing serves, so nothing to monitor; "
               f"skipping this run")
        print(msg)
        raise AirflowSkipException(msg)
    thresholds = resolve_settings(context["params"], settings.monitoring.thresholds)
    sources = thresholds.pop("sources")
    watch = {"model": model, "version": str(version), "prometheus_url": settings.monitoring.prometheus_url,
             **thresholds, "settings": settings.to_dict()}
    print(f"watching {model} version {version} in Prometheus {watch['prometheus_url']}: "
          + ", ".join(f"{k}={thresholds[k]:g} ({sources[k]})" for k in sources))
    if thresholds["sensor_timeout_s"] >= 1800:
        print(f"WARNING: sensor_timeout_s={thresholds['sensor_timeout_s']} is not below the 30 min schedule: "
              "runs will queue up behind each other")
    return watch


def _last_retrain_at() -> str | None:
    from airflow.sdk import Variable

    try:
        return Variable.get(LAST_RETRAIN_VARIABLE, default=None)
    except Exception as exc:  # a broken value must not stop the decision
        log.warning("cannot read Variable %s: %s", LAST_RETRAIN_VARIABLE, exc)
        return None


def _fired(ti) -> dict[str, dict]:
    """The events of the sensors that fired this run, by task id."""
    events = {task_id: ti.xcom_pull(task_ids=task_id) for task_id in SENSOR_TASKS}
    return {t: e for t, e in events.items() if isinstance(e, dict) and e.get("status") == "fired"}


@task.short_circuit(trigger_rule="one_success")
def decide_retrain(**context):
    """Trigger criteo_full_retrain? Only if a sensor fired, no retrain is queued or running, and the
    cooldown since the last one this DAG triggered has passed. Returns the retrain's conf, or False
    (then trigger_full_retrain is skipped)."""
    from ..hooks.raw_data import RawDataHook
    from ..pipeline.config import Settings
    from ..pipeline.retraining import decide

    ti = context["ti"]
    watch = ti.xcom_pull(task_ids="production_version") or {}
    if not watch:
        print("NO RETRAIN: production_version did not run (skipped: nothing in production)")
        return False
    fired = _fired(ti)
    # Tasks cannot query the metadata database in Airflow 3: the Task SDK asks the API server.
    active = ti.get_dr_count(dag_id=TARGET_DAG, states=ACTIVE_STATES)
    settings = Settings.of(watch["settings"])
    raw_url = settings.storage.raw_url
    decision = decide(fired, active, _last_retrain_at(), datetime.now(UTC), float(watch["cooldown_h"]),
                      RawDataHook(raw_url).latest_day(settings.landing.num_days), int(watch["window_days"]), raw_url)
    print(("TRIGGER full retrain: " if decision.trigger else "NO RETRAIN: ") + decision.reason)
    if decision.trigger:
        print(f"{TARGET_DAG} conf: {decision.conf}")
        return decision.conf
    return False


@task
def trigger_full_retrain(retrain_conf: dict) -> None:
    """Queue criteo_full_retrain with decide_retrain's conf (end_day, window_days, reason).

    The same mechanism as TriggerDagRunOperator (the Task SDK's DagRunTriggerException: the task
    runner has the API server create the run), without that operator's module at parse time: it
    imports airflow.models, ~150 ms on every parse of this DAG file.
    """
    from airflow.sdk.exceptions import DagRunTriggerException

    now = datetime.now(UTC)
    run_id = f"monitoring__{now.isoformat()}"
    print(f"queueing {TARGET_DAG} run {run_id} with conf {retrain_conf}")  # the task runner pushes trigger_run_id
    raise DagRunTriggerException(trigger_dag_id=TARGET_DAG, dag_run_id=run_id, conf=dict(retrain_conf),
                                 logical_date=now,
                                 reset_dag_run=False, skip_when_already_exists=False, wait_for_completion=False,
                                 allowed_states=["success"], failed_states=["failed"], poke_interval=60,
                                 deferrable=False, note=retrain_conf.get("reason"))


@task
def record_retrain(**context) -> dict:
    """Remember when this DAG last triggered a retrain (the cooldown starts now), and log it in the
    bucket's retrain log, which the monitor counts as criteo_retrains_triggered_total."""
    from airflow.sdk import Variable

    from criteo_kernel import retrain_log

    from ..hooks.storage import storage_path, write_text_atomic
    from ..pipeline.config import Settings
    from ..pipeline.layout import Layout

    ti = context["ti"]
    at = datetime.now(UTC).isoformat(timespec="seconds")
    # The cooldown first: a bucket that cannot be written must not let the next run retrain again.
    Variable.set(LAST_RETRAIN_VARIABLE, at,
                 description="When model_monitoring last triggered criteo_full_retrain (cooldown start); "
                             "delete it to allow a retrain at once")
    print(f"{LAST_RETRAIN_VARIABLE} = {at}")
    watch = ti.xcom_pull(task_ids="production_version") or {}
    conf = ti.xcom_pull(task_ids="decide_retrain") or {}
    fired = list(_fired(ti))
    run_id = ti.xcom_pull(task_ids="trigger_full_retrain", key="trigger_run_id")
    if not run_id:
        raise RuntimeError("trigger_full_retrain left no trigger_run_id XCom: cannot name the queued "
                           f"{TARGET_DAG} run in the retrain log")
    settings = Settings.of(watch["settings"])
    version = watch.get("version")
    record = retrain_log.RetrainRecord(
        model=watch["model"], version=int(version) if version else None, at=at,
        run_id=run_id, triggers=fired, reason=str(conf.get("reason", "")), monitoring_run_id=context["run_id"])
    url = retrain_log.record_url(Layout(settings).retrain_log, record)
    path = storage_path(url)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, record.to_json())
    print(f"retrain log: {url} ({TARGET_DAG} run {run_id}, fired: {', '.join(fired) or 'none'})")
    return {"at": at, "record": url, "run_id": run_id}
