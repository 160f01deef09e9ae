"""
### Model monitoring (every 30 minutes): retrain when the served model degrades

Watches the production model's live metrics in Prometheus (exported by the monitor from the
request log, labels `model` and `version`) and triggers `criteo_full_retrain` when they stay bad.

```
production_version -> auc_degraded   (rolling AUC < auc_threshold for sustained_s)  -> decide_retrain
                   -> drift_detected (max feature PSI > psi_threshold for sustained_s) ->   -> trigger_full_retrain
                                                                                               -> record_retrain
```

- **production_version**: the version `config.pbtxt` pins in the model repository, and the settings
  of this run. No production version: the whole run is skipped (nothing serves, nothing to watch).
- **auc_degraded** / **drift_detected**: deferrable sensors (they wait in the triggerer, not in a
  worker slot) on `criteo_rolling_auc{model,version}` and `criteo_max_feature_psi{model,version}`.
  A sensor fires only when *every* point of the last `sustained_s` seconds is bad: a brief dip does
  not retrain. One that has not fired after `sensor_timeout_s` ends **skipped** (soft_fail), its log
  saying why (the last value seen, or "no samples yet", or Prometheus unreachable). An unreachable
  Prometheus never fires a sensor and never fails the run: the sensor logs it and keeps waiting.
- **decide_retrain** (runs as soon as one sensor fired): triggers only if no `criteo_full_retrain`
  run is queued or running, and the cooldown since the last retrain this DAG triggered has passed;
  its log says exactly why it triggers or not.
- **trigger_full_retrain**: queues `criteo_full_retrain` with conf `{"end_day": <latest raw day
  present>, "window_days": <window_days>, "reason": ...}`; **record_retrain** then stores the time
  in the Variable `criteo_monitor_last_retrain_at` (delete it to allow a retrain at once) and
  writes `<base>/retrain_log/<model>/<run id>.json` (the run, the degraded version, the sensors that
  fired), which the monitor counts as `criteo_retrains_triggered_total` (Grafana: "Retrains triggered").

**Settings.** Each is a Param of the trigger form; left empty, it is read from the Airflow Variable
(or `AIRFLOW_VAR_<NAME>`), else the built-in default:

<!-- thresholds: generated from the settings registry -->

Prometheus is found at the Variable `criteo_prometheus_url` (default `http://127.0.0.1:9090`); the
raw days at `criteo_raw_url`. The deferred sensors need a running triggerer (`airflow triggerer`,
included in `airflow standalone` and the compose file).
"""
from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG

from operators.sensors.prometheus import FeatureDriftSensor, RollingAUCSensor
from operators.tasks.monitoring import (
    decide_retrain,
    monitor_params,
    production_version,
    record_retrain,
    thresholds_table,
    trigger_full_retrain,
)

with DAG(
    dag_id="model_monitoring",
    description="Every 30 min: watch the served model's rolling AUC and feature drift in Prometheus; "
                "trigger a full retrain when they stay bad",
    schedule="*/30 * * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(minutes=29),
    default_args={"owner": "ml-platform", "retries": 1, "retry_delay": timedelta(seconds=30)},
    params=monitor_params(),
    doc_md=__doc__.replace("<!-- thresholds: generated from the settings registry -->", thresholds_table()),
    tags=["criteo", "monitoring"],
) as dag:
    watch = production_version()
    sensor_args = dict(model=watch["model"], version=watch["version"], sustained_s=watch["sustained_s"],
                       poll_interval_s=watch["poll_interval_s"], timeout_s=watch["sensor_timeout_s"],
                       prometheus_url=watch["prometheus_url"], soft_fail=True, deferrable=True,
                       retries=0)  # a bad query will not fix itself; an unreachable Prometheus is waited out
    auc_degraded = RollingAUCSensor(task_id="auc_degraded", threshold=watch["auc_threshold"], **sensor_args,
                                    doc_md="Fires when the served version's rolling AUC stays below "
                                           "auc_threshold for sustained_s.")
    drift_detected = FeatureDriftSensor(task_id="drift_detected", threshold=watch["psi_threshold"], **sensor_args,
                                        doc_md="Fires when the served version's largest feature PSI stays above "
                                               "psi_threshold for sustained_s.")
    decision = decide_retrain()
    trigger = trigger_full_retrain(decision)

    [auc_degraded, drift_detected] >> decision >> trigger >> record_retrain()
