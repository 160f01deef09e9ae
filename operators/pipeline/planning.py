"""Run plans: where every step of one DAG run writes, and with which settings, decided once, up front.

A plan is a pure function of (configuration, logical date, params, the model repository's state).
It fixes each step's *outputs* (partitions named by the run key, so a rerun of the same day or
window writes to the same places and deploy recognises the version it already made: reruns and
backfills are idempotent) and its settings (hyperparameters, suites, the gate's thresholds), and
names the production version a run descends from. A step's *inputs* are not in the plan: each
task takes them from its upstream tasks' declared outputs (TFX-style), see operators/tasks/training.py.
"""
from __future__ import annotations

from datetime import date, datetime
from typing import Protocol

from criteo_kernel.artifacts import REFERENCE_PROFILE, stored_artifacts
from criteo_kernel.onnx_size import model_bytes
from criteo_kernel.signature import NUM_CATEGORICAL
from criteo_kernel.trainers import HUGECTR, LEGACY, PYTORCH, TRAIN_STEP

from .config import Settings
from .layout import Layout, day_for_date, fingerprint


class Repository(Protocol):
    """What a plan reads of the model repository (operators.hooks.model_repository.ModelRepositoryHook)."""

    def production_version(self) -> int | None: ...

    def find_by_run_key(self, run_key: str) -> int | None: ...

    def lineage(self, version: int) -> dict: ...


class NoProductionModel(RuntimeError):
    pass


# trainer -> (its step in operators/runtime/catalogue.py, the artifact of a version it warm-starts
# from: its role in criteo_kernel.artifacts.STORED)
TRAINERS = {PYTORCH: (TRAIN_STEP[PYTORCH], "checkpoint"), HUGECTR: (TRAIN_STEP[HUGECTR], "hugectr")}
# Runtimes with the HugeCTR image: the embedded default runs local processes, which have no HugeCTR.
HUGECTR_RUNTIMES = ("kubernetes", "docker")


class TrainerChoiceError(ValueError):
    """The trainer asked for cannot train this run (no retry can change that)."""


def choose_trainer(requested: str, runtime: str, production_trainer: str | None = None) -> str:
    """The run's trainer. `requested`: the `trainer` Param (auto, pytorch or hugectr).

    A full retrain (`production_trainer` None) trains from scratch with the one asked for; auto is
    hugectr on the Kubernetes runtime (GPU pods) and pytorch elsewhere. An incremental run warm-starts
    from production, so it keeps production's trainer; asking for another one is a switch, which only
    a full retrain can make.
    """
    if requested not in ("auto", *TRAINERS):
        raise TrainerChoiceError(f"trainer={requested!r}: expected auto, {' or '.join(TRAINERS)}")
    if production_trainer is not None:
        if requested not in ("auto", production_trainer):
            raise TrainerChoiceError(
                f"trainer={requested}: production was trained by {production_trainer}, and an incremental run "
                f"warm-starts from it with the same trainer. Switching to {requested} needs a full retrain: "
                f"trigger criteo_full_retrain with trainer={requested}")
        trainer = production_trainer
    else:
        trainer = requested if requested != "auto" else (HUGECTR if runtime == "kubernetes" else PYTORCH)
    if trainer == HUGECTR and runtime not in HUGECTR_RUNTIMES:
        raise TrainerChoiceError(
            f"trainer=hugectr needs HugeCTR's GPU image (criteo_runtime={' or '.join(HUGECTR_RUNTIMES)}); "
            f"criteo_runtime={runtime} runs local processes without HugeCTR: use trainer=pytorch")
    return trainer


# The `precision` Param: what each trainer can train in (the PyTorch step's --precision).
PRECISIONS = {PYTORCH: ("fp32", "bf16"), HUGECTR: ("fp32",)}


def choose_precision(requested: str, trainer: str) -> str:
    """The run's training precision. `requested`: the `precision` Param (fp32 or bf16); bf16 is the
    PyTorch trainer's opt-in autocast mode (fp32 master weights and checkpoint)."""
    if requested not in PRECISIONS[PYTORCH]:
        raise TrainerChoiceError(f"precision={requested!r}: expected {' or '.join(PRECISIONS[PYTORCH])}")
    if requested not in PRECISIONS[trainer]:
        raise TrainerChoiceError(
            f"precision={requested} with trainer={trainer}: the HugeCTR trainer (train_hugectr) trains in "
            f"{' or '.join(PRECISIONS[trainer])} only; use precision=fp32, or trainer=pytorch for bf16")
    return requested


def _trainer_plan(trainer: str, parent_artifacts: dict | None, precision: str = "fp32") -> dict:
    """The plan's entries that depend on the trainer (and its precision); `parent_artifacts`: the
    parent version's training artifacts (`_artifacts`), None for a run from scratch."""
    step, warm = TRAINERS[trainer]
    if parent_artifacts is not None and not parent_artifacts.get(warm):
        raise NoProductionModel(f"the production version's lineage names no {warm} to warm-start trainer={trainer} "
                                f"from (its artifacts: {parent_artifacts}); trigger criteo_full_retrain")
    return {"trainer": trainer, "train_step": step, "precision": choose_precision(precision, trainer),
            "warm_start": parent_artifacts[warm] if parent_artifacts is not None else None}


def _artifacts(layout: Layout, version: int, lineage: dict) -> dict:
    """A deployed version's training artifacts in the artifact store, {role: URL}: the Triton
    repository holds only what serves (operators/hooks/model_repository.py), so the warm start,
    the workflow and the reference profile are read where its lineage says."""
    return stored_artifacts(lineage, layout.version_dir(version))


def _precision_args(trainer: dict) -> dict:
    """The train step's precision flag: none for fp32 (the default; train_hugectr has no such flag)."""
    return {"--precision": trainer["precision"]} if trainer["precision"] != "fp32" else {}


def _common(layout: Layout, run_key: str, days: list[int], params: dict, baseline_dir: str | None,
            docs_run: str, reference: str | None) -> dict:
    """docs_run: this DAG run's folder under data_docs/ (layout.data_docs_run); reference: the
    reference profile raw days are validated and checked for drift against (production's), if any."""
    cand = layout.candidate(run_key)
    docs = f"{layout.data_docs}/{docs_run}"
    return {
        "settings": layout.settings.to_dict(),   # decided once: every task of the run gets these
        "run_key": run_key,
        "days": days,
        "raw_url": layout.raw,
        "landing": layout.settings.landing.mode,
        "settle_s": layout.settings.landing.settle_s,
        "reference": reference,
        "export_args": {"--output": f"{cand}/package"},
        "evaluate_args": {"--baseline": baseline_dir, "--output": f"{cand}/evaluation",
                          "--max-rows": params.get("max_eval_rows") or None},
        "per_day": [{"day": d,
                     "extract_args": {"--output": layout.extracted(d)},
                     "validate_args": {"--suite": ["raw_day", "drift"], "--data-docs": f"{docs}/day={d}",
                                       "--run-name": f"{run_key}.day{d}", "--reference": reference,
                                       "--profile-out": f"{layout.validation(run_key)}/day={d}/profile.json"}}
                    for d in days],
        "validate_processed_args": {"--suite": "processed_day", "--data-docs": f"{docs}/processed",
                                    "--run-name": f"{run_key}.processed"},
        "gate": {"auc_floor": float(params["auc_floor"]), "max_auc_drop": float(params["max_auc_drop"])},
    }


def _parent(hook: Repository, run_key: str) -> int | None:
    """The version this run descends from: production now, or for a rerun of a deployed run the
    parent it had then (so a rerun does not warm-start from itself)."""
    already = hook.find_by_run_key(run_key)
    return hook.lineage(already).get("parent_version") if already is not None else hook.production_version()


def plan_incremental(settings: Settings, logical_date: date | datetime, params: dict, hook: Repository,
                     docs_run: str = "manual/run") -> dict:
    layout = Layout(settings)
    day = day_for_date(logical_date, settings.landing.day0, settings.landing.num_days)
    run_key = f"incremental-day{day}"
    parent = _parent(hook, run_key)
    if parent is None:
        raise NoProductionModel(
            f"no production version of {settings.serving.model_name} in {layout.model_dir()}: an incremental run "
            "warm-starts from one; trigger criteo_full_retrain first")
    parent_lineage = hook.lineage(parent)
    workflow_id = parent_lineage["workflow_id"]
    parent_dir = layout.version_dir(parent)
    stored = _artifacts(layout, parent, parent_lineage)
    # versions from before the HugeCTR trainer record none: PyTorch made them
    trainer = _trainer_plan(choose_trainer(str(params.get("trainer", "auto")), settings.runtime.name,
                                           parent_lineage.get("trainer", LEGACY)), stored,
                            str(params.get("precision", "fp32")))
    # The day is validated against, and the new version ships, the window it descends from.
    plan = _common(layout, run_key, [day], params, parent_dir, docs_run, stored.get("reference_profile"))
    plan.update({
        "day": day,
        "mode": "incremental",
        "parent_version": parent,
        "workflow_id": workflow_id,
        **trainer,
        "preprocess_args": {"--output-root": layout.processed_root(workflow_id),
                            "--workflow": stored["workflow"], **settings.runtime.preprocess.args(),
                            "--hugectr": trainer["trainer"] == HUGECTR},
        "train_args": {"--output": f"{layout.candidate(run_key)}/train",
                       "--warm-start": trainer["warm_start"], "--epochs": int(params["epochs"]),
                       "--batch-size": int(params["batch_size"]), "--lr": float(params["learning_rate"]),
                       **_precision_args(trainer)},
    })
    plan["export_args"]["--trainer"] = trainer["trainer"]
    plan["extract_args"] = plan["per_day"][0]["extract_args"]
    plan["validate_args"] = plan["per_day"][0]["validate_args"]
    return plan


class ModelTooLarge(ValueError):
    """The vocabulary the run's params allow makes a model too large to serve (no retry can change that)."""


def check_model_size(max_vocab: int, embedding_dim: int, max_model_gib: float) -> int | None:
    """The bytes of the largest model a full retrain with these params can train, refused past
    criteo_max_model_gib, naming what to change. Only max_vocab bounds the vocabulary before the
    workflow is fit: with 0 (every value seen in the window) nothing is known here, and None is
    returned. An incremental run keeps its parent's workflow, so its model is the size of one that
    already served."""
    if max_vocab <= 0:
        return None
    size = model_bytes(NUM_CATEGORICAL * max_vocab, embedding_dim)
    limit = int(max_model_gib * 2**30)
    if size > limit:
        fits = limit // model_bytes(NUM_CATEGORICAL, embedding_dim)
        raise ModelTooLarge(
            f"max_vocab={max_vocab} with embedding_dim={embedding_dim} allows {NUM_CATEGORICAL} x {max_vocab} "
            f"embedding rows, {size / 2**30:.2f} GiB of float32 tables: more than criteo_max_model_gib="
            f"{max_model_gib:g}, the largest model Triton's replicas are sized to hold. Lower the max_vocab param "
            f"to at most {fits} (or embedding_dim), or raise the criteo_max_model_gib Variable with the Triton "
            "pods' memory (k8s/serving/base/triton.yaml resources)")
    return size


def window_days(settings: Settings, logical_date: date | datetime, end_day: int, window: int) -> list[int]:
    if end_day < 0:
        end_day = day_for_date(logical_date, settings.landing.day0, settings.landing.num_days)
    if window < 1:
        raise ValueError(f"window_days must be >= 1, got {window}")
    if end_day >= settings.landing.num_days:
        raise ValueError(f"end_day {end_day} is outside day_0..day_{settings.landing.num_days - 1}")
    return list(range(max(0, end_day - window + 1), end_day + 1))


def plan_full(settings: Settings, logical_date: date | datetime, params: dict, hook: Repository,
              docs_run: str = "manual/run") -> dict:
    layout = Layout(settings)
    days = window_days(settings, logical_date, int(params["end_day"]), int(params["window_days"]))
    hyper = {k: params[k] for k in ("epochs", "batch_size", "learning_rate", "mlp_dims", "embedding_dim",
                                    "cross_layers", "max_vocab")}
    trainer = _trainer_plan(choose_trainer(str(params.get("trainer", "auto")), settings.runtime.name), None,
                            str(params.get("precision", "fp32")))
    check_model_size(int(params["max_vocab"]), int(params["embedding_dim"]), settings.serving.max_model_gib)
    if trainer["trainer"] != PYTORCH:  # PyTorch's run keys stay those of the releases before HugeCTR
        hyper["trainer"] = trainer["trainer"]
    if trainer["precision"] != "fp32":  # likewise fp32's run keys stay those from before the choice
        hyper["precision"] = trainer["precision"]
    run_key = f"full-day{days[0]}-{days[-1]}-{fingerprint(hyper)}"
    parent = _parent(hook, run_key)
    parent_dir = layout.version_dir(parent) if parent is not None else None
    reference = None if parent is None else _artifacts(layout, parent, hook.lineage(parent)).get("reference_profile")
    plan = _common(layout, run_key, days, params, parent_dir, docs_run, reference)
    cand = layout.candidate(run_key)
    plan.update({
        "mode": "full",
        **trainer,
        "parent_version": parent,
        "workflow_id": run_key,
        "hyperparameters": hyper,
        # The new model's reference profile: learned from the window's days as validated.
        "reference_args": {"--output": f"{cand}/{REFERENCE_PROFILE}"},
        "preprocess_args": {"--output-root": layout.processed_root(run_key), "--fit-workflow": layout.workflow(run_key),
                            "--max-vocab": int(params["max_vocab"]), **settings.runtime.preprocess.args(),
                            "--hugectr": trainer["trainer"] == HUGECTR},
        "train_args": {"--output": f"{cand}/train",
                       "--epochs": int(params["epochs"]), "--batch-size": int(params["batch_size"]),
                       "--lr": float(params["learning_rate"]), "--mlp-dims": params["mlp_dims"],
                       "--embedding-dim": int(params["embedding_dim"]),
                       "--cross-layers": int(params["cross_layers"]), **_precision_args(trainer)},
    })
    plan["export_args"]["--trainer"] = trainer["trainer"]
    return plan
