"""The training DAGs' tasks: their Params, the plan tasks, the per-day wiring, the blessing gate, and
the train/evaluate/deploy task group both DAGs end with.

Artifacts flow from step to step: each task takes its inputs from its upstream tasks' declared
outputs (`task.output["<key>"]`, see operators/runtime/catalogue.py), and the plan only says
where each step writes and with which settings (operators/pipeline/planning.py).

Cheap to import: nothing heavy is imported at module level (DAG files import this at parse time).
"""
from __future__ import annotations

from contextlib import contextmanager

from airflow.sdk import Param, task, task_group

from criteo_kernel.trainers import TRAINERS

from .defaults import is_backfill, is_scheduled, run_date

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
                          description="Blessing: the candidate may trail production's AUC on the same rows "
                                      "by at most this."),
    "max_eval_rows": Param(1_000_000, type="integer", minimum=1000, title="Max evaluation rows",
                           description="Cap on the held-out rows scored for the blessing."),
    "trainer": Param("auto", type="string", enum=["auto", *TRAINERS], title="Trainer",
                     description="Who trains the DCN. auto: a full retrain uses hugectr on criteo_runtime=kubernetes "
                                 "(GPU pods, the merlin image's hugectr target) and pytorch elsewhere; a daily run "
                                 "keeps the trainer that made production (it warm-starts from its files). Asking a "
                                 "daily run for another trainer fails: switching needs a full retrain."),
    "precision": Param("fp32", type="string", enum=["fp32", "bf16"], title="Training precision",
                       description="fp32 (default), or bf16: the PyTorch trainer runs forward and backward under "
                                   "bfloat16 autocast, keeping float32 master weights and checkpoint. Faster only "
                                   "where the hardware multiplies bf16 (AMX / AVX512-BF16 CPUs, GPUs); no gain "
                                   "elsewhere. The hugectr trainer refuses bf16. A full retrain in bf16 is a "
                                   "different run (its run key names the precision)."),
}


@contextmanager
def _no_retry_on_bad_plan():
    """A run that cannot be planned (no production model, day out of range) will not fix itself."""
    from airflow.sdk.exceptions import AirflowFailException

    from ..pipeline.planning import NoProductionModel

    try:
        yield
    except (NoProductionModel, ValueError) as exc:
        raise AirflowFailException(str(exc)) from None


@contextmanager
def _skip_scheduled_runs_outside_the_data_set(context):
    """A scheduled run whose date maps outside day_0..day_{N-1} has nothing to train: it is skipped,
    saying why, instead of failing. Unpausing a DAG long after the data set's last day (the
    embedded default's dates are in 2026-01) then shows a skipped run, not a red one. A run asked
    for by hand or by a backfill for such a date still fails: someone asked for that day."""
    from airflow.sdk.exceptions import AirflowSkipException

    from ..pipeline.layout import DayOutOfRange

    try:
        yield
    except DayOutOfRange as exc:
        if not is_scheduled(context):
            raise
        raise AirflowSkipException(
            f"{exc}: a scheduled run outside the data set has nothing to train, so it is skipped. "
            "Backfill the data set's dates, or trigger by hand.") from None


def _plan(planner, context, resolve_params=None) -> dict:
    """Decide the run's settings (the one read of them), then run a planner on them and the model
    repository they name. `resolve_params(settings)`: the Params to plan with."""
    from ..hooks.model_repository import ModelRepositoryHook
    from ..pipeline.layout import Layout, data_docs_run
    from .defaults import decide_settings

    settings = decide_settings()
    repository = ModelRepositoryHook(Layout(settings))
    params = resolve_params(settings) if resolve_params else context["params"]
    with _no_retry_on_bad_plan(), _skip_scheduled_runs_outside_the_data_set(context):
        return planner(settings, run_date(context), params, repository,
                       docs_run=data_docs_run(context["dag"].dag_id, context["run_id"]))


def full_retrain_params(params: dict, scheduled_or_backfill: bool, latest_raw_day) -> dict:
    """The full retrain's Params with `end_day` resolved: -1 is the logical date's day for a
    scheduled run or a backfill, and the latest raw day in the bucket for a run triggered by hand
    (whose logical date is "now", usually outside the data set). `latest_raw_day()` is only asked then."""
    from airflow.sdk.exceptions import AirflowFailException

    if int(params["end_day"]) >= 0 or scheduled_or_backfill:
        return dict(params)
    latest = latest_raw_day()
    if latest is None:
        raise AirflowFailException("end_day=-1 means the latest raw day in the bucket, and there is none: "
                                   "land day_N files under criteo_raw_url, or give end_day")
    print(f"end_day=-1 on a run triggered by hand: the latest raw day in the bucket, day_{latest}")
    return {**params, "end_day": latest}


@task(multiple_outputs=True)
def plan_incremental_run(**context) -> dict:
    """Map the logical date to its Criteo day; decide where each step writes and with which settings."""
    from ..pipeline.planning import plan_incremental

    plan = _plan(plan_incremental, context)
    print(f"run {plan['run_key']}: day_{plan['day']}, warm start from version {plan['parent_version']}")
    return plan


@task(multiple_outputs=True)
def plan_full_retrain(**context) -> dict:
    """Resolve the window of days; decide where each step writes and with which settings."""
    from ..hooks.raw_data import RawDataHook
    from ..pipeline.planning import plan_full

    plan = _plan(plan_full, context, lambda settings: full_retrain_params(
        context["params"], is_scheduled(context) or is_backfill(context),
        lambda: RawDataHook(settings.storage.raw_url).latest_day(settings.landing.num_days)))
    print(f"run {plan['run_key']}: days {plan['days']}, production version {plan['parent_version']}")
    return plan


@task
def per_day_plans(per_day: list[dict]) -> list[dict]:
    """The window's per-day plans as a list the per-day tasks are mapped over."""
    return list(per_day)


# The per-day tasks of a window are mapped; these pair each day's plan with what its upstream
# produced (XComArg.zip), in map-index order. Plain module functions: Airflow serializes them.
def day_of(item: dict) -> int:
    return item["day"]


def extract_args(pair) -> dict:
    """(the raw file wait_for_raw_days found, the day's plan) -> extract's flags."""
    raw_file, item = pair
    return {**item["extract_args"], "--input": raw_file}


def validate_args(pair) -> dict:
    """(extract's result, the day's plan) -> validate's flags."""
    extracted, item = pair
    return {**item["validate_args"], "--input": extracted["output"]}


@task.short_circuit
def blessing_gate(evaluation: dict, gate: dict, mode: str = "incremental", baseline_version: int | None = None
                  ) -> dict | bool:
    """Bless the candidate, or not: AUC floor, and no worse than production by more than the delta
    (TFX Evaluator). The blessing names the package and smoke rows deploy consumes.

    Not blessed: a daily run (`incremental`) skips deploy and ends green, so the next day goes on
    (it waits only for this run to end) and warm-starts from production. A full retrain fails here,
    without retry, naming the AUC and the floor: the run was asked for to make a new production
    version, and a green run with nothing deployed hides that it made none.

    `baseline_version`: the production version evaluate compared with (the plan's parent_version),
    recorded in the blessing so deploy promotes only while it still serves."""
    from ..pipeline.blessing import judge

    verdict = judge(evaluation, gate["auc_floor"], gate["max_auc_drop"], baseline_version)
    for reason in verdict.reasons:
        print(("BLESSED: " if verdict.blessed else "NOT BLESSED: ") + reason)
    if verdict.blessed:
        return verdict.to_dict()
    if mode == "full":
        from airflow.sdk.exceptions import AirflowFailException

        raise AirflowFailException(
            "not blessed, nothing deployed, production unchanged: " + "; ".join(verdict.reasons) +
            ". Retrain with more data or epochs (window_days, epochs), or lower auc_floor / raise "
            "max_auc_drop in the trigger form if the gate is too strict for these days.")
    return False


@task_group(group_id="train_evaluate_deploy", prefix_group_id=False)
def train_evaluate_deploy(plan, extracted, raw_inputs, validation, reference_profile, mode: str, **lineage_extra):
    """preprocess -> validate_processed -> train -> export -> evaluate -> blessing_gate -> deploy.

    The tail both training DAGs share. `extracted`: the extracted day partitions (extract's
    outputs); `raw_inputs`: extract's `input` per day (size, sha256, generation: with the workflow,
    the parent and the hyperparameters, the run's fingerprint); `validation`: the validate
    task(s)' results, recorded in the lineage; `reference_profile`: the data profile the new
    version ships with.
    """
    from ..deploy import DeployModelOperator
    from ..step import CriteoStepOperator

    settings = plan["settings"]
    preprocess = CriteoStepOperator(task_id="preprocess", step="preprocess", settings=settings,
                                    arguments=plan["preprocess_args"], inputs={"--extracted": extracted})
    validate_processed = CriteoStepOperator(
        task_id="validate_processed", step="validate", retries=0, settings=settings,
        arguments=plan["validate_processed_args"],
        inputs={"--input": preprocess.output["partitions"]},
        doc_md="GX gate on the NVTabular output: no nulls, ids within the vocabulary, finite normalised features.")
    train = CriteoStepOperator(
        task_id="train", step=plan["train_step"], settings=settings, arguments=plan["train_args"],
        inputs={"--train": preprocess.output["partitions"]},
        doc_md="The plan's trainer: step `train` (PyTorch DCN) or `train_hugectr` (HugeCTR, GPU pods; "
               "exported through hugectr2onnx). Both give the same version layout.")
    export = CriteoStepOperator(task_id="export", step="export", settings=settings, arguments=plan["export_args"],
                                inputs={"--checkpoint": train.output["checkpoint"],
                                        "--workflow": preprocess.output["workflow"],
                                        "--reference-profile": reference_profile})
    evaluate = CriteoStepOperator(task_id="evaluate", step="evaluate", settings=settings,
                                  arguments=plan["evaluate_args"],
                                  inputs={"--candidate": export.output["package"], "--eval": extracted})
    blessed = blessing_gate(evaluate.output, plan["gate"], mode, plan["parent_version"])
    DeployModelOperator(
        task_id="deploy",
        settings=settings,
        blessing=blessed,
        run_key=plan["run_key"],
        inputs={"raw": raw_inputs, "workflow_id": plan["workflow_id"], "parent_version": plan["parent_version"],
                "hyperparameters": plan["train_args"]},
        lineage={"mode": mode, "trainer": plan["trainer"], "precision": plan["precision"], "days": plan["days"],
                 "workflow_id": plan["workflow_id"],
                 "parent_version": plan["parent_version"], "validation": validation,
                 "processed_validation": validate_processed.output,
                 "training": train.output, "evaluation": evaluate.output, "export": export.output,
                 "gate": plan["gate"], **lineage_extra},
    )
    # The processed-data gate stops training on broken output; its result is not an input of train.
    validate_processed >> train
