"""What every DAG of the pipeline shares: owner, retries, timeouts, and the sensors' behaviour.

Read from the environment when a DAG file is parsed (never from Variables, which would cost a
database round trip per parse): CRITEO_RETRY_DELAY_S, CRITEO_RAW_WAIT_TIMEOUT_S,
CRITEO_RAW_POKE_INTERVAL_S, CRITEO_SENSOR_MODE, CRITEO_LABEL_RETRY_DELAY_S,
CRITEO_PREVIOUS_DAY_TIMEOUT_S, CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S.
"""
from __future__ import annotations

import os
from datetime import timedelta

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=float(os.environ.get("CRITEO_RETRY_DELAY_S", "120"))),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=6),
}

RAW_WAIT_TIMEOUT_S = float(os.environ.get("CRITEO_RAW_WAIT_TIMEOUT_S", str(6 * 3600)))
RAW_POKE_INTERVAL_S = float(os.environ.get("CRITEO_RAW_POKE_INTERVAL_S", "300"))
SENSOR_MODE = os.environ.get("CRITEO_SENSOR_MODE", "reschedule")
# How long a daily run waits for the day before it (operators/sensors/previous_run.py): a day behind
# a failed one waits a day for it to be fixed and cleared.
PREVIOUS_DAY_TIMEOUT_S = float(os.environ.get("CRITEO_PREVIOUS_DAY_TIMEOUT_S", str(24 * 3600)))
PREVIOUS_DAY_POKE_INTERVAL_S = float(os.environ.get("CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S", "30"))
# Late labels are waited out by retries of criteo_request_log_to_raw, 30 min apart by default.
LABEL_RETRY_DELAY = timedelta(seconds=float(os.environ.get("CRITEO_LABEL_RETRY_DELAY_S", "1800")))


def run_date(context):
    """The run's logical date; manual runs in Airflow 3 may have none, then the run_after time."""
    return context.get("logical_date") or context["dag_run"].run_after


def check_runtime(cfg) -> None:
    """What each run checks in its first task, so that a wrong setting fails before any step runs,
    without retry, naming the setting: the runtime, the bucket (exists and can be read), and with
    criteo_runtime=kubernetes every pod setting (image, namespace, service account, ...), and the
    preprocess step's scale settings."""
    from airflow.sdk.exceptions import AirflowFailException

    from ..hooks.storage import BucketUnavailable, check_bucket
    from ..runtime import RUNTIMES

    if cfg.runtime not in RUNTIMES:
        raise AirflowFailException(f"criteo_runtime={cfg.runtime!r}: expected one of {RUNTIMES}")
    bad = cfg.preprocess.problems() + landing_problems()
    if bad:
        raise AirflowFailException("; ".join(bad))
    try:
        check_bucket(cfg.base_url)
    except BucketUnavailable as exc:
        raise AirflowFailException(str(exc)) from None
    if cfg.runtime == "kubernetes":
        from ..runtime.kubernetes import PodSettings

        settings = PodSettings.load(cfg.base_url)
        print(f"steps run as pods in namespace {settings.namespace} as {settings.service_account}, images "
              + ", ".join(f"{k}={v}" for k, v in settings.images.items()))
    elif cfg.runtime == "docker":
        from ..runtime.docker import DockerSettings

        docker = DockerSettings.load(cfg.base_url)
        print(f"steps run as containers on {docker.docker_url}, images "
              + ", ".join(f"{k}={v}" for k, v in docker.images.items()))


def landing_problems() -> list[str]:
    """The raw-day landing settings (criteo_raw_landing, criteo_raw_settle_s), checked up front."""
    from ..hooks.raw_data import LANDING_MODES
    from ..pipeline.config import setting

    bad = []
    mode, settle = setting("criteo_raw_landing").strip(), setting("criteo_raw_settle_s").strip()
    if mode not in LANDING_MODES:
        bad.append(f"criteo_raw_landing={mode!r}: expected one of {', '.join(LANDING_MODES)}")
    try:
        if float(settle) < 0:
            raise ValueError
    except ValueError:
        bad.append(f"criteo_raw_settle_s={settle!r}: expected seconds >= 0")
    return bad


def _run_type(context) -> str:
    run_type = context["dag_run"].run_type
    return str(getattr(run_type, "value", run_type)).lower()


def is_scheduled(context) -> bool:
    """The run was made by the scheduler from the DAG's schedule (not by hand, a backfill or an asset)."""
    return _run_type(context) == "scheduled"


def is_backfill(context) -> bool:
    return _run_type(context) == "backfill"
