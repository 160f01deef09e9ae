"""
### Criteo full retrain (weekly, or by hand)

Fits a new NVTabular workflow on a window of Criteo days and trains the DCN from scratch.

```
plan -> wait_for_raw_days[] -> extract[] -> validate[] (GX gate, per day) -> learn_reference
  -> train_evaluate_deploy: preprocess (fit workflow on the window) -> validate_processed (GX gate)
       -> train (from scratch) -> export -> evaluate (vs production, same rows) -> blessing_gate -> deploy
```

Each task takes its inputs from its upstream tasks' outputs: each day's extract reads the file its
sensor found, learn_reference merges the profiles the validations wrote, deploy ships the package
the blessing names.

**Trigger by hand** from the UI with the form: `end_day` (-1 = by hand, the latest raw day in the
bucket; on schedule or in a backfill, the day of the run's logical date), `window_days`, `epochs`,
`batch_size`, `learning_rate`, model sizes, `trainer` (`auto`: HugeCTR on `criteo_runtime=kubernetes`,
PyTorch elsewhere; a full retrain is how production changes trainer, since daily runs keep its
trainer). The monitoring sensors trigger it the same way when the
served model degrades.

A scheduled run whose logical date falls outside the data set (`criteo_day0_date`,
`criteo_num_days`) is **skipped**, its plan task's log saying why: unpausing the DAG long after the
data set's dates shows a skipped run, not a failed one.

A candidate the **blessing_gate** does not bless (held-out AUC below `auc_floor`, 0.70 by default,
or more than `max_auc_drop` below production's on the same rows) fails that task without retry,
naming the AUC and the floor: nothing is deployed and production is untouched. Give the run more
data or epochs (`window_days`, `epochs`), or a lower `auc_floor` if the floor is too strict for the days.

Any day of the window failing a **hard** expectation stops the run before training; production stays
untouched. Soft expectations (drift, learned soft bounds) only warn. Each validation publishes a
Great Expectations data docs site: open it from the task's **Data docs** extra link, or browse all
runs under **Browse → Data docs**. `learn_reference` saves the window's data
profile with the new model: later days are validated and checked for drift against it.
Each `wait_for_raw_days` sensor takes a day only once it has landed whole (its manifest, or unchanged
for `criteo_raw_settle_s`; on `gs://` the object), as in `criteo_incremental_training`.
The same window and hyperparameters give the same run key; with the same raw files (size, sha256,
generation) a rerun creates no duplicate version, and with a corrected file it makes a new version
that replaces the earlier one (its lineage names both inputs' fingerprints).
"""
from __future__ import annotations

from datetime import datetime

from airflow.sdk import DAG, Param

from operators.sensors.raw_day import RawDaySensor
from operators.step import CriteoStepOperator
from operators.tasks.defaults import DEFAULT_ARGS, RAW_POKE_INTERVAL_S, RAW_WAIT_TIMEOUT_S, SENSOR_MODE
from operators.tasks.training import (
    TRAINING_PARAMS,
    day_of,
    extract_args,
    per_day_plans,
    plan_full_retrain,
    train_evaluate_deploy,
    validate_args,
)

with DAG(
    dag_id="criteo_full_retrain",
    description="Weekly or on demand: fit the workflow on a window of days, train the DCN from scratch, deploy",
    schedule="@weekly",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    default_args=DEFAULT_ARGS,
    params={
        "end_day": Param(-1, type="integer", minimum=-1, title="Last day of the window",
                         description="Criteo day number. -1: triggered by hand, the latest raw day in the "
                                     "bucket; scheduled or backfilled, the day of the run's logical date."),
        "window_days": Param(7, type="integer", minimum=1, maximum=24, title="Window (days)",
                             description="How many days, ending at end_day, to fit and train on."),
        **TRAINING_PARAMS,
        "mlp_dims": Param("1024,1024", type="string", pattern=r"^\d+(,\d+)*$", title="MLP sizes",
                          description="Hidden layer widths of the DCN's deep part (HugeCTR sample: 1024,1024)."),
        "embedding_dim": Param(16, type="integer", minimum=2, maximum=256, title="Embedding size"),
        "cross_layers": Param(6, type="integer", minimum=0, maximum=16, title="Cross layers"),
        "max_vocab": Param(0, type="integer", minimum=0, title="Max vocabulary per column",
                           description="Categorify max_size; 0 keeps every value seen in the window. A bound "
                                       "whose model (26 x max_vocab x embedding_dim float32) is past the "
                                       "criteo_max_model_gib Variable is refused before the run starts."),
    },
    doc_md=__doc__,
    tags=["criteo", "training", "full-retrain"],
) as dag:
    plan = plan_full_retrain()
    days = per_day_plans(plan["per_day"])
    raw_days = RawDaySensor.partial(task_id="wait_for_raw_days", raw_url=plan["raw_url"], landing=plan["landing"],
                                    settle_s=plan["settle_s"],
                                    timeout=RAW_WAIT_TIMEOUT_S, poke_interval=RAW_POKE_INTERVAL_S,
                                    mode=SENSOR_MODE).expand(day=days.map(day_of))
    extract = CriteoStepOperator.partial(task_id="extract", step="extract", settings=plan["settings"]).expand(
        arguments=raw_days.output.zip(days).map(extract_args))
    validate = CriteoStepOperator.partial(task_id="validate", step="validate", settings=plan["settings"],
                                          retries=0).expand(
        arguments=extract.output.zip(days).map(validate_args))
    learn_reference = CriteoStepOperator(
        task_id="learn_reference", step="reference", settings=plan["settings"], arguments=plan["reference_args"],
        inputs={"--profiles": validate.output["profile"]},
        doc_md="Merge the window's day profiles into the reference profile the new model ships with: "
               "later days are validated (learned bounds) and checked for drift against it.")

    learn_reference >> train_evaluate_deploy(plan, extracted=extract.output["output"],
                                             raw_inputs=extract.output["input"], validation=validate.output,
                                             reference_profile=learn_reference.output["output"], mode="full",
                                             hyperparameters=plan["hyperparameters"])
