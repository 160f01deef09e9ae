import json
from datetime import date, datetime
from pathlib import Path

import pytest

from operators.hooks.model_repository import ModelRepositoryHook
from operators.pipeline.layout import DayOutOfRange, Layout, day_for_date
from operators.pipeline.planning import NoProductionModel, TrainerChoiceError, plan_full, plan_incremental, window_days

pytestmark = pytest.mark.unit
PARAMS = {"epochs": 1, "batch_size": 4096, "learning_rate": 0.001, "auc_floor": 0.7, "max_auc_drop": 0.01,
          "max_eval_rows": 100000, "end_day": -1, "window_days": 3, "mlp_dims": "1024,1024",
          "embedding_dim": 16, "cross_layers": 6, "max_vocab": 0}


def repo(cfg):
    return ModelRepositoryHook(Layout(cfg))


def _fake_version(cfg, version, **lineage):
    d = Path(Layout(cfg).version_dir(version))
    d.mkdir(parents=True)
    (d / "lineage.json").write_text(json.dumps({"version": version, **lineage}))
    (d / "_SUCCESS").touch()
    (d / "config.pbtxt").write_text('name: "criteo_dcn"\nbackend: "python"\n')
    ModelRepositoryHook(Layout(cfg)).set_production(version)


def test_day_mapping_is_documented_and_bounded():
    assert day_for_date(date(2026, 1, 1), date(2026, 1, 1), 24) == 0
    assert day_for_date(datetime(2026, 1, 24, 5), date(2026, 1, 1), 24) == 23
    with pytest.raises(DayOutOfRange, match="maps to day_24, outside day_0..day_23"):
        day_for_date(date(2026, 1, 25), date(2026, 1, 1), 24)
    with pytest.raises(DayOutOfRange):
        day_for_date(date(2025, 12, 31), date(2026, 1, 1), 24)


def test_incremental_needs_a_production_model(cfg):
    with pytest.raises(NoProductionModel, match="trigger criteo_full_retrain first"):
        plan_incremental(cfg, date(2026, 1, 4), PARAMS, repo(cfg))


def test_incremental_plan_warm_starts_from_production(cfg):
    _fake_version(cfg, 1, workflow_id="full-day0-2-abc", run_key="full-day0-2-abc")
    _fake_version(cfg, 2, workflow_id="full-day0-2-abc", run_key="incremental-day3", parent_version=1)
    plan = plan_incremental(cfg, date(2026, 1, 5), PARAMS, repo(cfg))
    assert plan["day"] == 4 and plan["run_key"] == "incremental-day4" and plan["parent_version"] == 2
    v2 = Layout(cfg).version_dir(2)
    assert plan["train_args"]["--warm-start"] == f"{v2}/checkpoint.pt"
    assert plan["preprocess_args"]["--workflow"] == f"{v2}/preprocessing"
    assert plan["preprocess_args"]["--output-root"].endswith("/work/processed/full-day0-2-abc")
    # the plan decides where extract writes; what it reads is the raw file wait_for_raw_day found
    assert plan["raw_url"] == f"{cfg.storage.base_url}/raw"
    assert plan["extract_args"] == {"--output": f"{cfg.storage.base_url}/work/extracted/day=4"}
    assert plan["evaluate_args"]["--baseline"] == v2
    # the day is validated against, and the new version ships, the parent's reference profile
    assert plan["reference"] == plan["validate_args"]["--reference"] == f"{v2}/reference_profile.json"


def test_a_plan_reads_the_parents_training_artifacts_where_its_lineage_names_them(cfg):
    """The Triton repository holds only what serves: warm start, workflow and reference profile
    are read from the artifact store (the parent's package), the baseline from its version."""
    store = f"{cfg.storage.base_url}/work/candidates/full-x/package"
    artifacts = {"checkpoint": f"{store}/checkpoint.pt", "workflow": f"{store}/preprocessing",
                 "reference_profile": f"{store}/reference_profile.json"}
    _fake_version(cfg, 1, workflow_id="full-x", run_key="full-x", artifacts=artifacts)
    plan = plan_incremental(cfg, date(2026, 1, 5), PARAMS, repo(cfg))
    assert plan["train_args"]["--warm-start"] == artifacts["checkpoint"]
    assert plan["preprocess_args"]["--workflow"] == artifacts["workflow"]
    assert plan["reference"] == plan["validate_args"]["--reference"] == artifacts["reference_profile"]
    assert plan["evaluate_args"]["--baseline"] == Layout(cfg).version_dir(1)
    full = plan_full(cfg, date(2026, 1, 5), PARAMS, repo(cfg))
    assert full["reference"] == artifacts["reference_profile"] and full["train_args"].get("--warm-start") is None
    # a parent whose lineage names no warm start for its trainer: a clear refusal, not a missing file later
    _fake_version(cfg, 2, workflow_id="full-x", run_key="full-y", trainer="hugectr", artifacts=artifacts)
    k8s = _on(cfg, "kubernetes")
    with pytest.raises(NoProductionModel, match="lineage names no hugectr to warm-start trainer=hugectr"):
        plan_incremental(k8s, date(2026, 1, 6), PARAMS, repo(k8s))


def test_rerun_of_a_deployed_day_keeps_its_original_parent(cfg):
    _fake_version(cfg, 1, workflow_id="w", run_key="full")
    _fake_version(cfg, 2, workflow_id="w", run_key="incremental-day3", parent_version=1)
    plan = plan_incremental(cfg, date(2026, 1, 4), PARAMS, repo(cfg))  # day 3 again
    assert plan["parent_version"] == 1


def test_full_plan_window_and_stable_run_key(cfg):
    assert window_days(cfg, date(2026, 1, 8), -1, 7) == [1, 2, 3, 4, 5, 6, 7]
    assert window_days(cfg, date(2026, 1, 3), -1, 7) == [0, 1, 2]
    p1 = plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2}, repo(cfg))
    p2 = plan_full(cfg, date(2026, 6, 1), {**PARAMS, "end_day": 2}, repo(cfg))
    p3 = plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "epochs": 2}, repo(cfg))
    assert p1["days"] == [0, 1, 2] and p1["run_key"] == p2["run_key"] != p3["run_key"]
    assert p1["parent_version"] is None and p1["evaluate_args"]["--baseline"] is None
    assert p1["preprocess_args"]["--fit-workflow"] == f"{cfg.storage.base_url}/work/workflows/{p1['run_key']}"
    assert [d["day"] for d in p1["per_day"]] == [0, 1, 2]
    with pytest.raises(ValueError, match="outside day_0..day_23"):
        plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 30}, repo(cfg))


def test_preprocess_scale_settings_become_the_steps_flags(cfg, monkeypatch):
    from operators.pipeline.config import PreprocessScale, Settings

    assert cfg.runtime.preprocess == PreprocessScale("auto", "1GB", "0.8")
    scaled = Settings.with_values(criteo_base_url=cfg.storage.base_url, criteo_preprocess_workers="4",
                                  criteo_dask_part_size="512 MiB", criteo_dask_device_memory_limit="60GB")
    assert scaled.runtime.preprocess.problems() == []
    full = plan_full(scaled, date(2026, 1, 3), PARAMS, repo(scaled))
    assert {k: full["preprocess_args"][k] for k in ("--workers", "--part-size", "--device-memory-limit")} == \
        {"--workers": "4", "--part-size": "512 MiB", "--device-memory-limit": "60GB"}
    _fake_version(cfg, 1, workflow_id=full["run_key"], run_key=full["run_key"])
    incr = plan_incremental(scaled, date(2026, 1, 4), PARAMS, repo(scaled))
    assert incr["preprocess_args"]["--workers"] == "4" and incr["preprocess_args"]["--part-size"] == "512 MiB"
    assert incr["settings"] == scaled.to_dict() == full["settings"]      # every task of the run gets these


def test_bad_preprocess_scale_settings_fail_the_first_task_naming_each(cfg):
    from operators.pipeline.config import PreprocessScale, Settings

    assert PreprocessScale("2", "500000", "1").problems() == []
    message = "\n".join(Settings.with_values(criteo_preprocess_workers="0", criteo_dask_part_size="big",
                                             criteo_dask_device_memory_limit="1.5").problems())
    assert "criteo_preprocess_workers='0': expected 'auto' or a whole number >= 1" in message
    assert "criteo_dask_part_size='big': expected a size" in message
    assert "criteo_dask_device_memory_limit='1.5': expected a fraction in (0, 1]" in message
    assert Settings.with_values(criteo_dask_device_memory_limit="0").problems() == [
        "criteo_dask_device_memory_limit='0': expected a fraction in (0, 1] of each GPU's memory or a size such as "
        "30GB"]


# -- the trainer: a Param, a default per runtime, kept by daily runs ------------------------------

def _on(cfg, runtime):
    from operators.pipeline.config import Settings

    return Settings.with_values(**{**cfg.to_dict(), "criteo_runtime": runtime})


def test_auto_trains_with_hugectr_on_kubernetes_and_pytorch_on_the_embedded_default(cfg):
    local = plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "trainer": "auto"}, repo(cfg))
    assert (local["trainer"], local["train_step"]) == ("pytorch", "train")
    assert local["export_args"]["--trainer"] == "pytorch" and local["preprocess_args"]["--hugectr"] is False
    # a PyTorch run keeps the run key of the releases before the trainer choice
    assert local["run_key"] == plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2}, repo(cfg))["run_key"]
    pods = plan_full(_on(cfg, "kubernetes"), date(2026, 1, 3), {**PARAMS, "end_day": 2, "trainer": "auto"}, repo(cfg))
    assert (pods["trainer"], pods["train_step"]) == ("hugectr", "train_hugectr")
    # HugeCTR reads its own layout: float32 columns, _metadata.json and _file_list.txt per split
    assert pods["preprocess_args"]["--hugectr"] is True and pods["export_args"]["--trainer"] == "hugectr"
    # a different trainer is a different run (and workflow, and processed partitions)
    assert pods["run_key"] != local["run_key"] and pods["workflow_id"] == pods["run_key"]
    chosen = plan_full(_on(cfg, "kubernetes"), date(2026, 1, 3), {**PARAMS, "end_day": 2, "trainer": "pytorch"},
                       repo(cfg))
    assert chosen["trainer"] == "pytorch" and chosen["run_key"] == local["run_key"]


def test_hugectr_is_refused_where_no_hugectr_image_runs(cfg):
    with pytest.raises(ValueError, match="trainer=hugectr needs HugeCTR's GPU image.*use trainer=pytorch"):
        plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "trainer": "hugectr"}, repo(cfg))


def test_a_daily_run_keeps_productions_trainer_and_warm_starts_from_its_files(cfg):
    _fake_version(cfg, 1, workflow_id="full-hugectr", run_key="full-hugectr", trainer="hugectr")
    k8s = _on(cfg, "kubernetes")
    plan = plan_incremental(k8s, date(2026, 1, 5), {**PARAMS, "trainer": "auto"}, repo(k8s))
    v1 = Layout(k8s).version_dir(1)
    assert (plan["trainer"], plan["train_step"]) == ("hugectr", "train_hugectr")
    assert plan["train_args"]["--warm-start"] == f"{v1}/hugectr" and plan["preprocess_args"]["--hugectr"] is True
    # a version from before the choice was trained by PyTorch
    _fake_version(cfg, 2, workflow_id="w", run_key="full-old")
    plan = plan_incremental(k8s, date(2026, 1, 6), {**PARAMS, "trainer": "auto"}, repo(k8s))
    assert plan["trainer"] == "pytorch" and plan["train_args"]["--warm-start"].endswith("/2/checkpoint.pt")


def test_switching_trainer_on_a_daily_run_asks_for_a_full_retrain(cfg):
    _fake_version(cfg, 1, workflow_id="w", run_key="full-old")
    k8s = _on(cfg, "kubernetes")
    with pytest.raises(ValueError, match="production was trained by pytorch.*trigger criteo_full_retrain with "
                                         "trainer=hugectr"):
        plan_incremental(k8s, date(2026, 1, 5), {**PARAMS, "trainer": "hugectr"}, repo(k8s))


# -- the precision: a Param, bf16 opt-in for the PyTorch trainer only -------------------------------

def test_fp32_plans_are_those_from_before_the_precision_choice(cfg):
    default = plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2}, repo(cfg))
    fp32 = plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "precision": "fp32"}, repo(cfg))
    assert default["precision"] == fp32["precision"] == "fp32"
    assert fp32["run_key"] == default["run_key"] and "--precision" not in fp32["train_args"]
    assert "precision" not in fp32["hyperparameters"]


def test_bf16_is_passed_to_the_pytorch_train_step_and_names_its_own_full_run(cfg):
    fp32 = plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2}, repo(cfg))
    bf16 = plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "precision": "bf16"}, repo(cfg))
    assert bf16["precision"] == "bf16" and bf16["train_args"]["--precision"] == "bf16"
    assert bf16["run_key"] != fp32["run_key"] and bf16["hyperparameters"]["precision"] == "bf16"
    _fake_version(cfg, 1, workflow_id="w", run_key="full-old")
    daily = plan_incremental(cfg, date(2026, 1, 5), {**PARAMS, "precision": "bf16"}, repo(cfg))
    assert daily["train_step"] == "train" and daily["train_args"]["--precision"] == "bf16"
    assert "--precision" not in plan_incremental(cfg, date(2026, 1, 5), PARAMS, repo(cfg))["train_args"]


def test_bf16_is_refused_for_the_hugectr_trainer(cfg):
    k8s = _on(cfg, "kubernetes")
    with pytest.raises(TrainerChoiceError, match="precision=bf16 with trainer=hugectr.*use precision=fp32"):
        plan_full(k8s, date(2026, 1, 3), {**PARAMS, "end_day": 2, "trainer": "hugectr", "precision": "bf16"},
                  repo(k8s))
    with pytest.raises(TrainerChoiceError, match="precision=bf16 with trainer=hugectr"):  # auto -> hugectr there
        plan_full(k8s, date(2026, 1, 3), {**PARAMS, "end_day": 2, "precision": "bf16"}, repo(k8s))
    _fake_version(cfg, 1, workflow_id="full-hugectr", run_key="full-hugectr", trainer="hugectr")
    with pytest.raises(TrainerChoiceError, match="precision=bf16 with trainer=hugectr"):
        plan_incremental(k8s, date(2026, 1, 5), {**PARAMS, "precision": "bf16"}, repo(k8s))
    assert plan_full(k8s, date(2026, 1, 3), {**PARAMS, "end_day": 2, "trainer": "hugectr", "precision": "fp32"},
                     repo(k8s))["precision"] == "fp32"
    with pytest.raises(TrainerChoiceError, match="precision='fp16': expected fp32 or bf16"):
        plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "precision": "fp16"}, repo(cfg))


# -- the model's size: what max_vocab allows must fit the serving replicas ------------------------

def test_a_full_retrain_whose_vocabulary_bound_is_too_large_to_serve_is_refused_naming_what_to_change(cfg):
    from operators.pipeline.config import Settings
    from operators.pipeline.planning import ModelTooLarge, check_model_size

    # the default 3 GiB: 26 x 1.9M rows x 16 float32 is 2.94 GiB (past protobuf's 2 GiB: external data)
    assert check_model_size(1_900_000, 16, cfg.serving.max_model_gib) == 26 * 1_900_000 * 16 * 4
    assert plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "max_vocab": 1_900_000}, repo(cfg))
    with pytest.raises(ModelTooLarge, match=r"max_vocab=2000000 with embedding_dim=16 allows 26 x 2000000 embedding "
                                            r"rows, 3.10 GiB .* criteo_max_model_gib=3,.* max_vocab param to at "
                                            r"most 1935832 .* criteo_max_model_gib Variable"):
        plan_full(cfg, date(2026, 1, 3), {**PARAMS, "end_day": 2, "max_vocab": 2_000_000}, repo(cfg))
    # a lowered limit refuses what the default allows; max_vocab=0 has no bound before the fit
    small = Settings.with_values(**{**cfg.to_dict(), "criteo_max_model_gib": "0.001"})
    assert small.problems() == []
    with pytest.raises(ModelTooLarge, match="max_vocab=1000 with embedding_dim=16 .* at most 645 "):
        plan_full(small, date(2026, 1, 3), {**PARAMS, "end_day": 2, "max_vocab": 1000}, repo(small))
    assert plan_full(small, date(2026, 1, 3), {**PARAMS, "end_day": 2, "max_vocab": 0}, repo(small))
    assert check_model_size(0, 16, 0.001) is None
    assert Settings.with_values(criteo_max_model_gib="0").problems() == [
        "criteo_max_model_gib=0.0: expected a size in GiB > 0"]
    assert Settings.with_values(criteo_max_model_gib="lots").problems() == [
        "criteo_max_model_gib='lots': expected a size in GiB > 0"]
