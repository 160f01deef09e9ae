"""Pieces both training DAGs share: default task arguments, common Params, the plan and gate tasks.

Cheap to import: nothing heavy is imported at module level (DAG files import this at parse time).
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from datetime import timedelta

from airflow.sdk import Param, task

DEFAULT_ARGS = {
    "owner": "ml-platform",
    "retries": 2,
    "retry_delay": timedelta(seconds=float(os.environ.get("CRITEO_RETRY_DELAY_S", "120"))),
    "retry_exponential_backoff": True,
    "execution_timeout": timedelta(hours=6),
}

# Sensor behaviour is read from the environment at parse time (never from Variables, which would
# cost a database round trip per parse).
RAW_WAIT_TIMEOUT_S = float(os.environ.get("CRITEO_RAW_WAIT_TIMEOUT_S", str(6 * 3600)))
RAW_POKE_INTERVAL_S = float(os.environ.get("CRITEO_RAW_POKE_INTERVAL_S", "300"))
SENSOR_MODE = os.environ.get("CRITEO_SENSOR_MODE", "reschedule")

TRAINING_PARAMS = {
    "epochs": Param(1, type="integer", minimum=1, maximum=100, title="Epochs",
                    description="Passes over the training rows."),
    "batch_size": Param(4096, type="integer", minimum=64, maximum=262144, title="Batch size",
                        description="Training batch size (HugeCTR's DCN sample uses 4096-16384)."),
    "learning_rate": Param(0.001, type="number", exclusiveMinimum=0, maximum=1, title="Learning rate",
                           description="Adam / SparseAdam learning rate."),
    "auc_floor": Param(0.70, type="number", minimum=0, maximum=1, title="AUC floor",
                       description="Blessing: the candidate's held-out AUC must reach this."),
    "max_auc_drop": Param(0.01, type="number", minimum=0, maximum=1, title="Max AUC drop vs production",
                          description="Blessing: the candidate may trail production's AUC on the same rows by at most this."),
    "max_eval_rows": Param(1_000_000, type="integer", minimum=1000, title="Max evaluation rows",
                           description="Cap on the held-out rows scored for the blessing."),
}


def run_date(context):
    """The run's logical date; manual runs in Airflow 3 may have none, then the run_after time."""
    return context.get("logical_date") or context["dag_run"].run_after


def _docs_run(context) -> str:
    from operators.planning import data_docs_run

    return data_docs_run(context["dag"].dag_id, context["run_id"])


@contextmanager
def _no_retry_on_bad_plan():
    """A run that cannot be planned (no production model, day out of range) will not fix itself."""
    from airflow.sdk.exceptions import AirflowFailException

    from operators.planning import NoProductionModel

    try:
        yield
    except (NoProductionModel, ValueError) as exc:
        raise AirflowFailException(str(exc)) from None


@task(multiple_outputs=True)
def plan_incremental_run(**context) -> dict:
    """Map the logical date to its Criteo day and decide every step's inputs and outputs."""
    from operators.config import PipelineConfig
    from operators.planning import plan_incremental

    with _no_retry_on_bad_plan():
        plan = plan_incremental(PipelineConfig.load(), run_date(context), context["params"],
                                docs_run=_docs_run(context))
    print(f"run {plan['run_key']}: day_{plan['day']}, warm start from version {plan['parent_version']}")
    return plan


@task(multiple_outputs=True)
def plan_full_retrain(**context) -> dict:
    """Resolve the window of days and decide every step's inputs and outputs."""
    from operators.config import PipelineConfig
    from operators.planning import plan_full

    with _no_retry_on_bad_plan():
        plan = plan_full(PipelineConfig.load(), run_date(context), context["params"], docs_run=_docs_run(context))
    print(f"run {plan['run_key']}: days {plan['days']}, production version {plan['parent_version']}")
    return plan


@task
def per_day_plans(per_day: list[dict]) -> list[dict]:
    """The window's per-day plans as a list the per-day tasks are mapped over."""
    return list(per_day)


def day_of(item: dict) -> int:
    return item["day"]


def extract_args_of(item: dict) -> dict:
    return item["extract_args"]


def validate_args_of(item: dict) -> dict:
    return item["validate_args"]



@task.short_circuit
def blessing_gate(evaluation: dict, gate: dict) -> bool:
    """Deploy only a blessed candidate: AUC floor and no worse than production by more than the delta."""
    from operators.blessing import judge

    verdict = judge(evaluation, gate["auc_floor"], gate["max_auc_drop"])
    for reason in verdict.reasons:
        print(("BLESSED: " if verdict.blessed else "NOT BLESSED: ") + reason)
    return verdict.blessed


def train_evaluate_deploy(plan, validation, mode: str, **lineage_extra):
    """preprocess -> train -> export -> evaluate -> blessing_gate -> deploy, the same in both DAGs.

    `plan` is the plan task's output; `validation` the validate task(s), whose results go into the
    lineage. Returns (first, last) task so the caller can wire the chain in.
    """
    from operators.deploy import DeployModelOperator
    from operators.steps import CriteoStepOperator

    preprocess = CriteoStepOperator(task_id="preprocess", step="preprocess", arguments=plan["preprocess_args"])
    validate_processed = CriteoStepOperator(task_id="validate_processed", step="validate", retries=0,
                                            arguments=plan["validate_processed_args"],
                                            doc_md="GX gate on the NVTabular output: no nulls, ids within the "
                                                   "vocabulary, finite normalised features.")
    train = CriteoStepOperator(task_id="train", step="train", arguments=plan["train_args"])
    export = CriteoStepOperator(task_id="export", step="export", arguments=plan["export_args"])
    evaluate = CriteoStepOperator(task_id="evaluate", step="evaluate", arguments=plan["evaluate_args"])
    blessed = blessing_gate(evaluate.output, plan["gate"])
    deploy = DeployModelOperator(
        task_id="deploy",
        package=plan["package"],
        run_key=plan["run_key"],
        smoke_rows=plan["smoke_rows"],
        lineage={"mode": mode, "days": plan["days"], "workflow_id": plan["workflow_id"],
                 "parent_version": plan["parent_version"], "validation": validation.output,
                 "processed_validation": validate_processed.output,
                 "training": train.output, "evaluation": evaluate.output, "export": export.output,
                 "gate": plan["gate"], **lineage_extra},
    )
    validation >> preprocess >> validate_processed >> train >> export >> evaluate >> blessed >> deploy
    return preprocess, deploy
