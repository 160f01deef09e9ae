"""What every DAG of the pipeline shares: owner, retries, timeouts, the sensors' behaviour, and the
first task's decision of the run's settings.

The DAG-level values are read from the environment when a DAG file is parsed (the registry's
parse-time settings, operators/pipeline/config.py), never from Variables, which would cost a
database round trip per parse.
"""
from __future__ import annotations

from datetime import timedelta

from airflow.sdk import task

from ..pipeline.config import environment

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=float(environment("CRITEO_RETRY_DELAY_S"))),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=6),
}

RAW_WAIT_TIMEOUT_S = float(environment("CRITEO_RAW_WAIT_TIMEOUT_S"))
RAW_POKE_INTERVAL_S = float(environment("CRITEO_RAW_POKE_INTERVAL_S"))
SENSOR_MODE = environment("CRITEO_SENSOR_MODE")
# How long a daily run waits for the day before it (operators/sensors/previous_run.py).
PREVIOUS_DAY_TIMEOUT_S = float(environment("CRITEO_PREVIOUS_DAY_TIMEOUT_S"))
PREVIOUS_DAY_POKE_INTERVAL_S = float(environment("CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S"))
# Late labels are waited out by retries of criteo_request_log_to_raw.
LABEL_RETRY_DELAY = timedelta(seconds=float(environment("CRITEO_LABEL_RETRY_DELAY_S")))


def run_date(context):
    """The run's logical date; manual runs in Airflow 3 may have none, then the run_after time."""
    return context.get("logical_date") or context["dag_run"].run_after


def decide_settings():
    """The run's settings, read once and checked, by the run's first task: a wrong setting fails it
    without retry, naming each (the runtime and its pod or Docker settings, the bucket, landing,
    preprocess scale); a Variable that cannot be read fails it with a retry."""
    from airflow.sdk.exceptions import AirflowException, AirflowFailException

    from ..hooks.storage import BucketUnavailable, check_bucket
    from ..pipeline.config import SettingReadError, Settings
    from ..runtime import problems

    try:
        settings = Settings.load()
    except SettingReadError as exc:
        raise AirflowException(str(exc)) from exc
    bad = problems(settings)
    if bad:
        raise AirflowFailException("the pipeline's settings cannot work:\n- " + "\n- ".join(bad))
    try:
        check_bucket(settings.storage.base_url)
    except BucketUnavailable as exc:
        raise AirflowFailException(str(exc)) from None
    print(f"settings decided for this run: criteo_runtime={settings.runtime.name}, "
          f"criteo_base_url={settings.storage.base_url}"
          + "".join(f", {name}={settings.value(name)}" for name in settings.values
                    if name.startswith("criteo_image_") and settings.value(name)))
    return settings


@task
def run_settings() -> dict:
    """The run's settings, for DAGs whose first task is not a plan: pass `settings=` to its steps."""
    return decide_settings().to_dict()


def _run_type(context) -> str:
    run_type = context["dag_run"].run_type
    return str(getattr(run_type, "value", run_type)).lower()


def is_scheduled(context) -> bool:
    """The run was made by the scheduler from the DAG's schedule (not by hand, a backfill or an asset)."""
    return _run_type(context) == "scheduled"


def is_backfill(context) -> bool:
    return _run_type(context) == "backfill"
