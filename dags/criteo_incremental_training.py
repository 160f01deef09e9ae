"""
### Criteo incremental training (daily)

One run = one Criteo day. The logical date maps to `day_N` with
`N = logical date - criteo_day0_date` (Variable, default 2026-01-01 -> day_0).

```
wait_for_previous_day -> plan -> wait_for_raw_day -> extract -> validate (GX gate)
  -> train_evaluate_deploy: preprocess (saved NVTabular workflow) -> validate_processed (GX gate)
       -> train (warm start from production) -> export (ONNX + Triton package) -> evaluate
       -> blessing_gate (AUC floor, no worse than production) -> deploy (new Triton model version)
```

Each task takes its inputs from its upstream tasks' outputs: extract reads the file the sensor
found, train the partitions preprocess wrote, deploy the package the blessing names.

* Days apply in order, however the runs are made (schedule, backfill, by hand):
  **wait_for_previous_day** holds day N until this DAG's run of day N-1 has ended, so day N plans,
  and picks the production version it warm-starts from, only after day N-1 deployed (or was not
  blessed). A day behind a failed day waits for it (`CRITEO_PREVIOUS_DAY_TIMEOUT_S`, 24 h, then it
  fails naming the day it waited for): fix the failed day's raw file and clear that day's whole run
  (**Clear Run**, all tasks), or mark its run successful to skip it.
* A bad day stops at **validate** (a hard expectation of the `raw_day` suite failed); training and
  deploy never run and the production version is untouched. The task log lists each failed
  expectation with its column, rule and observed values; the task's **Data docs** extra link opens
  the run's Great Expectations page (all runs: **Browse → Data docs**; this run's: the run's **Data docs** tab).
* **wait_for_raw_day** takes a day only once it has landed whole: on `gs://` the object (visible
  only once uploaded); in a folder, once its manifest `day_N.manifest.json` is written
  (`criteo-mlops manifest FILE`, the writer's last step) or once the file has not changed for
  `criteo_raw_settle_s` (60 s; `criteo_raw_landing=manifest` waits for the manifest). A directory
  under the day's name fails at once. Extract fails at once (no retry), naming the file and the fix,
  on what is no raw day (unreadable, a `.gz` name on text, UTF-16); gzip content without `.gz` is read
  with a warning to rename it; a file without its last newline, or one whose rows, size or sha256
  differ from its manifest, fails `validate`.
* Soft expectations warn without stopping: drift against the production model's reference profile
  (PSI per feature), and the soft learned bounds.
* A scheduled run whose logical date maps outside `day_0..day_{criteo_num_days-1}` is **skipped**,
  its plan task's log saying why (unpausing long after the data set's dates gives a skipped run,
  not a failed one); asked for by hand or in a backfill, such a date fails naming the day.
* `train` runs production's trainer (Param `trainer`, `auto`): PyTorch, or HugeCTR on GPU pods,
  warm-started from production's files. Asking for the other trainer fails the plan task without
  retry: switching trainers needs a full retrain (`criteo_full_retrain` with that `trainer`).
* Rerunning a day rewrites the same partitions. With the same raw file (size, sha256, generation),
  the same parent, workflow and Params, it creates no new model version; with a corrected file it
  makes a new version that goes through the gate and replaces the one made from the old file (its
  lineage names both fingerprints). If later days have deployed since, deploy refuses (no retry),
  since promoting the corrected day would drop them: run a full retrain over the window instead.
* Backfill: `airflow backfill create --dag-id criteo_incremental_training --from-date 2026-01-02 --to-date 2026-01-05`
  (the days run in order; a backfill runs several runs at once, its own `max_active_runs`, 10 by
  default, and the later ones wait in `wait_for_previous_day`; `--reprocess-behavior completed`
  reruns days already done, giving the same artifacts and no new version).
* A candidate the gate does not bless leaves `deploy` skipped and the run green: the next day goes
  on, warm-starting from production. The gate's log says why (`NOT BLESSED: ...`).

Settings (Airflow Variables): `criteo_base_url`, `criteo_raw_url`, `criteo_runtime` (local | kubernetes),
`criteo_day0_date`, `criteo_num_days`, `criteo_model_name`.
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG

from operators.sensors.previous_run import PreviousRunSensor
from operators.sensors.raw_day import RawDaySensor
from operators.step import CriteoStepOperator
from operators.tasks.defaults import (
    DEFAULT_ARGS,
    PREVIOUS_DAY_POKE_INTERVAL_S,
    PREVIOUS_DAY_TIMEOUT_S,
    RAW_POKE_INTERVAL_S,
    RAW_WAIT_TIMEOUT_S,
    SENSOR_MODE,
)
from operators.tasks.training import TRAINING_PARAMS, plan_incremental_run, train_evaluate_deploy

with DAG(
    dag_id="criteo_incremental_training",
    description="Daily: one Criteo day, warm-started from production, gated, deployed to Triton",
    schedule="@daily",
    start_date=datetime(2026, 1, 2),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params=TRAINING_PARAMS,
    doc_md=__doc__,
    tags=["criteo", "training", "incremental"],
) as dag:
    previous_day = PreviousRunSensor(task_id="wait_for_previous_day", timeout=PREVIOUS_DAY_TIMEOUT_S,
                                     poke_interval=PREVIOUS_DAY_POKE_INTERVAL_S, mode=SENSOR_MODE)
    plan = plan_incremental_run()
    previous_day >> plan
    raw_day = RawDaySensor(task_id="wait_for_raw_day", raw_url=plan["raw_url"], day=plan["day"],
                           landing=plan["landing"], settle_s=plan["settle_s"], timeout=RAW_WAIT_TIMEOUT_S,
                           poke_interval=RAW_POKE_INTERVAL_S, mode=SENSOR_MODE)
    extract = CriteoStepOperator(task_id="extract", step="extract", settings=plan["settings"],
                                 arguments=plan["extract_args"], inputs={"--input": raw_day.output})
    validate = CriteoStepOperator(task_id="validate", step="validate", settings=plan["settings"], retries=0,
                                  arguments=plan["validate_args"], inputs={"--input": extract.output["output"]})

    validate >> train_evaluate_deploy(plan, extracted=[extract.output["output"]], raw_inputs=[extract.output["input"]],
                                      validation=validate.output,
                                      reference_profile=plan["reference"], mode="incremental")
