"""Run plans: every input and output of every step of one DAG run, decided once, up front.

A plan is a pure function of (configuration, logical date, params, the model repository's state).
Its run key names the run's outputs, so a rerun of the same day or window writes to the same
partitions and deploy recognises the version it already made: reruns and backfills are idempotent.
"""
from __future__ import annotations

from datetime import date, datetime

from .config import PipelineConfig
from .layout import Layout, day_for_date, fingerprint
from .model_repository import ModelRepositoryHook


REFERENCE_PROFILE = "reference_profile.json"


class NoProductionModel(RuntimeError):
    pass


def _common(layout: Layout, run_key: str, days: list[int], workflow_url: str, processed_root: str,
            params: dict, baseline_dir: str | None, docs_run: str, reference: str | None) -> dict:
    """docs_run: this DAG run's folder under data_docs/ (see data_docs_run); reference: the reference
    profile raw days are validated and checked for drift against (production's), if any."""
    cand = layout.candidate(run_key)
    docs = f"{layout.data_docs}/{docs_run}"
    return {
        "run_key": run_key,
        "days": days,
        "raw_url": layout.raw,
        "package": f"{cand}/package",
        "export_args": {"--checkpoint": f"{cand}/train/checkpoint.pt", "--workflow": workflow_url,
                        "--output": f"{cand}/package"},
        "evaluate_args": {"--eval": [layout.extracted(d) for d in days], "--candidate": f"{cand}/package",
                          "--baseline": baseline_dir, "--output": f"{cand}/evaluation",
                          "--max-rows": params.get("max_eval_rows") or None},
        # evaluate's declared output: held-out rows + offline predictions, deploy's smoke inference
        "smoke_rows": f"{cand}/evaluation/smoke.npz",
        "per_day": [{"day": d,
                     "extract_args": {"--input": layout.raw, "--day": d, "--output": layout.extracted(d)},
                     "validate_args": {"--input": layout.extracted(d), "--suite": ["raw_day", "drift"],
                                       "--data-docs": f"{docs}/day={d}", "--run-name": f"{run_key}.day{d}",
                                       "--reference": reference,
                                       "--profile-out": f"{layout.validation(run_key)}/day={d}/profile.json"}}
                    for d in days],
        "validate_processed_args": {"--input": [f"{processed_root}/day={d}" for d in days],
                                    "--suite": "processed_day", "--data-docs": f"{docs}/processed",
                                    "--run-name": f"{run_key}.processed"},
        "gate": {"auc_floor": float(params["auc_floor"]), "max_auc_drop": float(params["max_auc_drop"])},
        "workflow_url": workflow_url,
        "processed_root": processed_root,
    }


def data_docs_run(dag_id: str, run_id: str) -> str:
    """The run's folder under data_docs/: <dag_id>/<run_id>, made safe for paths and URLs."""
    from .data_docs import safe_run_id

    return f"{safe_run_id(dag_id)}/{safe_run_id(run_id)}"


def plan_incremental(cfg: PipelineConfig, logical_date: date | datetime, params: dict,
                     hook: ModelRepositoryHook | None = None, docs_run: str = "manual/run") -> dict:
    layout = Layout(cfg)
    hook = hook or ModelRepositoryHook(layout)
    day = day_for_date(logical_date, cfg.day0, cfg.num_days)
    run_key = f"incremental-day{day}"
    already = hook.find_by_run_key(run_key)
    # A rerun of a deployed day trains from the same parent as the first time, not from itself.
    parent = hook.lineage(already).get("parent_version") if already is not None else hook.production_version()
    if parent is None:
        raise NoProductionModel(
            f"no production version of {cfg.model_name} in {layout.model_dir()}: an incremental run "
            "warm-starts from one; trigger criteo_full_retrain first")
    parent_lineage = hook.lineage(parent)
    parent_dir = layout.version_dir(parent)
    workflow_id = parent_lineage["workflow_id"]
    workflow_url = f"{parent_dir}/preprocessing"
    reference = f"{parent_dir}/{REFERENCE_PROFILE}"
    plan = _common(layout, run_key, [day], workflow_url, layout.processed_root(workflow_id), params, parent_dir,
                   docs_run, reference)
    cand = layout.candidate(run_key)
    plan["export_args"]["--reference-profile"] = reference  # the window it descends from
    plan.update({
        "day": day,
        "mode": "incremental",
        "parent_version": parent,
        "workflow_id": workflow_id,
        "preprocess_args": {"--extracted": [layout.extracted(day)], "--output-root": layout.processed_root(workflow_id),
                            "--workflow": workflow_url},
        "train_args": {"--train": [layout.processed(workflow_id, day)], "--output": f"{cand}/train",
                       "--warm-start": f"{parent_dir}/checkpoint.pt", "--epochs": int(params["epochs"]),
                       "--batch-size": int(params["batch_size"]), "--lr": float(params["learning_rate"])},
    })
    plan["extract_args"] = plan["per_day"][0]["extract_args"]
    plan["validate_args"] = plan["per_day"][0]["validate_args"]
    return plan


def window_days(cfg: PipelineConfig, logical_date: date | datetime, end_day: int, window: int) -> list[int]:
    if end_day < 0:
        end_day = day_for_date(logical_date, cfg.day0, cfg.num_days)
    if window < 1:
        raise ValueError(f"window_days must be >= 1, got {window}")
    if end_day >= cfg.num_days:
        raise ValueError(f"end_day {end_day} is outside day_0..day_{cfg.num_days - 1}")
    return list(range(max(0, end_day - window + 1), end_day + 1))


def plan_full(cfg: PipelineConfig, logical_date: date | datetime, params: dict,
              hook: ModelRepositoryHook | None = None, docs_run: str = "manual/run") -> dict:
    layout = Layout(cfg)
    hook = hook or ModelRepositoryHook(layout)
    days = window_days(cfg, logical_date, int(params["end_day"]), int(params["window_days"]))
    hyper = {k: params[k] for k in ("epochs", "batch_size", "learning_rate", "mlp_dims", "embedding_dim",
                                    "cross_layers", "max_vocab")}
    run_key = f"full-day{days[0]}-{days[-1]}-{fingerprint(hyper)}"
    already = hook.find_by_run_key(run_key)
    parent = hook.lineage(already).get("parent_version") if already is not None else hook.production_version()
    parent_dir = layout.version_dir(parent) if parent is not None else None
    reference = f"{parent_dir}/{REFERENCE_PROFILE}" if parent_dir else None
    plan = _common(layout, run_key, days, layout.workflow(run_key), layout.processed_root(run_key), params, parent_dir,
                   docs_run, reference)
    cand = layout.candidate(run_key)
    # The new model's reference profile: learned from the window's days as validated.
    plan["reference_args"] = {"--profiles": [p["validate_args"]["--profile-out"] for p in plan["per_day"]],
                              "--output": f"{cand}/{REFERENCE_PROFILE}"}
    plan["export_args"]["--reference-profile"] = f"{cand}/{REFERENCE_PROFILE}"
    plan.update({
        "mode": "full",
        "parent_version": parent,
        "workflow_id": run_key,
        "hyperparameters": hyper,
        "preprocess_args": {"--extracted": [layout.extracted(d) for d in days],
                            "--output-root": layout.processed_root(run_key), "--fit-workflow": layout.workflow(run_key),
                            "--max-vocab": int(params["max_vocab"])},
        "train_args": {"--train": [layout.processed(run_key, d) for d in days], "--output": f"{cand}/train",
                       "--epochs": int(params["epochs"]), "--batch-size": int(params["batch_size"]),
                       "--lr": float(params["learning_rate"]), "--mlp-dims": params["mlp_dims"],
                       "--embedding-dim": int(params["embedding_dim"]),
                       "--cross-layers": int(params["cross_layers"])},
    })
    return plan
