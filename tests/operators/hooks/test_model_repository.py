"""The Triton model repository hook: push, the production pointer, reject, prune (local folder)."""
import json
from pathlib import Path

import pytest

from criteo_kernel import storage, triton_config
from criteo_kernel.triton_config import with_version_policy
from operators.hooks import model_repository
from operators.hooks.model_repository import ModelRepositoryHook
from operators.pipeline.config import Settings
from operators.pipeline.layout import Layout
from tests.fixtures import gcsfuse

pytestmark = pytest.mark.unit
CONFIG = triton_config.render()


@pytest.fixture
def hook(tmp_path):
    cfg = Settings.with_values(criteo_base_url=str(tmp_path), criteo_model_name="criteo_dcn")
    return ModelRepositoryHook(Layout(cfg))


def package(tmp_path, name="pkg"):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "config.pbtxt").write_text(CONFIG)
    (pkg / "model.onnx").write_bytes(b"onnx")
    (pkg / "_SUCCESS").touch()
    return str(pkg)


def test_pushed_version_serves_only_once_promoted(hook, tmp_path):
    pkg = package(tmp_path)
    v1 = hook.push(pkg, {"run_key": "a"})
    assert hook.production_version() is None and not (hook.model_dir / "config.pbtxt").exists()
    assert hook.set_production(v1) is None and hook.production_version() == v1
    v2 = hook.push(pkg, {"run_key": "b"}, extra_files={"smoke.npz": pkg + "/model.onnx"})
    assert (hook.model_dir / str(v2) / "smoke.npz").read_bytes() == b"onnx"
    assert hook.production_version() == v1  # pushed, not promoted
    assert hook.set_production(v2) == v1 and hook.production_version() == v2
    config = (hook.model_dir / "config.pbtxt").read_text()
    assert "specific: { versions: [ 2 ] }" in config and 'name: "criteo_dcn"' in config
    # no temp files left; the lock file is the local pointer's compare-and-swap (it stays, empty)
    assert [p.name for p in hook.model_dir.iterdir() if p.name.startswith(".")] == [model_repository.POINTER_LOCK]


def test_the_queue_delay_given_reaches_config_pbtxt(hook, tmp_path, monkeypatch):
    v1 = hook.push(package(tmp_path), {"run_key": "a"})
    hook.set_production(v1)   # the default: no queue delay
    assert (hook.model_dir / "config.pbtxt").read_text() == with_version_policy(CONFIG, v1)
    assert "max_queue_delay_microseconds: 0 }" in CONFIG
    # The hook reads no setting: the caller's value is what is written, whatever the Variable says.
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_MAX_QUEUE_DELAY_US", "999")
    ModelRepositoryHook(hook.layout, max_queue_delay_us=" 250 ").set_production(v1)  # a promotion
    assert (hook.model_dir / "config.pbtxt").read_text() == \
        with_version_policy(CONFIG, v1).replace("max_queue_delay_microseconds: 0", "max_queue_delay_microseconds: 250")


def test_the_instance_kind_given_reaches_config_pbtxt(hook, tmp_path):
    """KIND_GPU for the GPU overlays; the package as exported (and the default) stays KIND_CPU."""
    v1 = hook.push(package(tmp_path), {"run_key": "a"})
    hook.set_production(v1)
    assert "instance_group [ { kind: KIND_CPU count: 1 } ]" in (hook.model_dir / "config.pbtxt").read_text()
    ModelRepositoryHook(hook.layout, instance_kind="KIND_GPU").set_production(v1)
    assert (hook.model_dir / "config.pbtxt").read_text() == with_version_policy(CONFIG, v1).replace(
        "kind: KIND_CPU", "kind: KIND_GPU")
    assert "kind: KIND_CPU" in (hook.model_dir / str(v1) / "config.pbtxt").read_text()  # the version's own
    with pytest.raises(ValueError, match=r"criteo_triton_instance_kind='GPU': expected one of KIND_CPU, KIND_GPU"):
        ModelRepositoryHook(hook.layout, instance_kind="GPU")


@pytest.mark.parametrize("value", ["-1", "500us", "0.5", "", "1000001", "1e3"])
def test_an_invalid_queue_delay_is_rejected_naming_the_setting(hook, value):
    with pytest.raises(ValueError, match=r"criteo_triton_max_queue_delay_us=.*expected a whole number of micro"):
        ModelRepositoryHook(hook.layout, max_queue_delay_us=value)


def test_a_push_works_on_a_gcsfuse_mount(hook, tmp_path):
    """gcsfuse refuses a folder rename in a flat bucket (EMFILE): a version is copied into its folder,
    claimed first (criteo_kernel.storage.reserve_folder, the kernel's one such claim), `_SUCCESS` last."""
    assert model_repository.reserve_folder is storage.reserve_folder
    pkg = package(tmp_path)
    gcsfuse.install(tmp_path)
    try:
        v1 = hook.push(pkg, {"run_key": "a"})
        v2 = hook.push(pkg, {"run_key": "b"})
    finally:
        gcsfuse.uninstall()
    assert hook.versions() == [v1, v2] == [1, 2]
    assert (hook.model_dir / "2" / "model.onnx").read_bytes() == b"onnx" and hook.lineage(2)["run_key"] == "b"
    assert sorted(p.name for p in hook.model_dir.iterdir()) == ["1", "2"]  # no staging folder left


def test_cannot_promote_an_incomplete_version(hook, tmp_path):
    (hook.model_dir / "4").mkdir(parents=True)
    with pytest.raises(ValueError, match="version 4 .* is not complete"):
        hook.set_production(4)


def test_rejected_version_keeps_its_files_and_is_never_found_again(hook, tmp_path):
    pkg = package(tmp_path)
    v1 = hook.push(pkg, {"run_key": "a"})
    hook.set_production(v1)
    v2 = hook.push(pkg, {"run_key": "b"})
    hook.reject(v2, "smoke inference differed")
    assert hook.versions() == [v1] and hook.find_by_run_key("b") is None
    assert "smoke inference differed" in (hook.model_dir / str(v2) / "_REJECTED").read_text()
    assert (hook.model_dir / str(v2) / "model.onnx").exists()
    assert hook.push(pkg, {"run_key": "b"}) == 3  # numbers are never reused


def test_pointer_at_a_missing_version_is_an_error_not_a_guess(hook, tmp_path):
    v1 = hook.push(package(tmp_path), {"run_key": "a"})
    hook.set_production(v1)
    (hook.model_dir / "config.pbtxt").write_text(with_version_policy(CONFIG, 9))
    with pytest.raises(RuntimeError, match="pins version 9, which is not a complete version"):
        hook.production_version()


def test_prune_keeps_the_newest_and_always_production(hook, tmp_path):
    pkg = package(tmp_path)
    vs = [hook.push(pkg, {"run_key": k}) for k in "abcdef"]
    hook.set_production(vs[1])  # rolled back far: version 2 serves
    removed = hook.prune(keep=3)
    assert removed == [1, 3] and hook.versions() == [2, 4, 5, 6]
    assert hook.production_version() == 2
    with pytest.raises(ValueError):
        hook.prune(keep=0)


def test_lineage_records_the_version(hook, tmp_path):
    v = hook.push(package(tmp_path), {"run_key": "a", "days": [1]})
    assert json.loads((hook.model_dir / str(v) / "lineage.json").read_text())["version"] == v


def full_package(tmp_path, trainer: str) -> Path:
    """A package as export writes it for `trainer`, with training artifacts far bigger than the model."""
    big = b"\0" * (3 << 20)
    pkg = Path(package(tmp_path, f"pkg-{trainer}"))
    (pkg / "model.onnx").write_bytes(b"o" * 200_000)
    for name in ("model.py", "criteo_serving.py", "criteo_kernel/__init__.py", "criteo_kernel/schema.py",
                 "export.json", "reference_profile.json", "preprocessing/meta.json", "preprocessing/_SUCCESS",
                 "preprocessing/serving/continuous.json"):
        (pkg / name).parent.mkdir(parents=True, exist_ok=True)
        (pkg / name).write_text("{}")
    (pkg / "preprocessing/serving/categories.npz").write_bytes(b"t" * 100_000)
    (pkg / "preprocessing/nvt").mkdir()
    (pkg / "preprocessing/nvt/workflow.pkl").write_bytes(big)
    if trainer == "pytorch":
        (pkg / "checkpoint.pt").write_bytes(big)
    else:  # the HugeCTR graph, dense and sparse weights, and both Adam states of each
        (pkg / "hugectr/criteo_dcn0_sparse_0.model").mkdir(parents=True)
        for name in ("criteo_dcn.json", "criteo_dcn_dense_0.model", "criteo_dcn_opt_dense_0.model",
                     "criteo_dcn0_sparse_0.model/emb_vector", "criteo_dcn0_sparse_0.model/Adam.m",
                     "criteo_dcn0_sparse_0.model/Adam.v"):
            (pkg / "hugectr" / name).write_bytes(big)
    return pkg


@pytest.mark.parametrize("trainer", ["pytorch", "hugectr"])
def test_a_version_holds_what_triton_loads_and_the_lineage_names_the_rest(hook, tmp_path, trainer):
    """Triton localizes a model's whole folder on each load: the training artifacts stay in the package."""
    from criteo_kernel.artifacts import stored_artifacts
    from tests.fixtures.model_repository import assert_serving_only, version_files

    pkg = full_package(tmp_path, trainer)
    v = hook.push(str(pkg), {"run_key": "a"}, extra_files={"smoke.npz": str(pkg / "export.json")})
    files = version_files(hook.model_dir.path + f"/{v}")
    total = assert_serving_only(files)
    assert total < 400_000 and sum(p.stat().st_size for p in pkg.rglob("*") if p.is_file()) > 6 << 20
    assert sorted(files) == sorted([
        "config.pbtxt", "model.onnx", "model.py", "criteo_serving.py", "criteo_kernel/__init__.py",
        "criteo_kernel/schema.py", "export.json", "preprocessing/serving/continuous.json",
        "preprocessing/serving/categories.npz", "smoke.npz", "lineage.json", "_RESERVED", "_SUCCESS"])
    warm = {"pytorch": ("checkpoint", "checkpoint.pt"), "hugectr": ("hugectr", "hugectr")}[trainer]
    expected = {warm[0]: f"{pkg}/{warm[1]}", "workflow": f"{pkg}/preprocessing",
                "reference_profile": f"{pkg}/reference_profile.json"}
    assert hook.lineage(v)["artifacts"] == expected
    assert stored_artifacts(hook.lineage(v), "unused") == expected


def test_a_version_deployed_before_the_artifact_store_keeps_its_folder_as_their_place():
    from criteo_kernel.artifacts import stored_artifacts

    assert stored_artifacts({"run_key": "a"}, "gs://b/model_repository/criteo_dcn/3") == {
        "checkpoint": "gs://b/model_repository/criteo_dcn/3/checkpoint.pt",
        "hugectr": "gs://b/model_repository/criteo_dcn/3/hugectr",
        "workflow": "gs://b/model_repository/criteo_dcn/3/preprocessing",
        "reference_profile": "gs://b/model_repository/criteo_dcn/3/reference_profile.json"}


def test_a_push_that_fails_midway_leaves_no_version(hook, tmp_path, monkeypatch):
    pkg = package(tmp_path)
    (Path(pkg) / "model.py").write_text("# the python backend")
    v1 = hook.push(pkg, {"run_key": "a"})
    hook.set_production(v1)
    from airflow.sdk import ObjectStoragePath

    real_copy, calls = ObjectStoragePath.copy, []

    def flaky_copy(self, dst, *args, **kwargs):
        calls.append(self.name)
        if len(calls) == 2:
            raise OSError("connection reset while copying")
        return real_copy(self, dst, *args, **kwargs)

    monkeypatch.setattr(ObjectStoragePath, "copy", flaky_copy)
    with pytest.raises(OSError, match="connection reset"):
        hook.push(pkg, {"run_key": "b"})
    monkeypatch.undo()
    assert hook.versions() == [v1] and hook.production_version() == v1
    # nothing half-copied (the hidden lock file is the local pointer's compare-and-swap)
    assert sorted(p.name for p in hook.model_dir.iterdir()) == [model_repository.POINTER_LOCK, "1", "config.pbtxt"]
    assert hook.push(pkg, {"run_key": "b"}) == 2


def test_prune_removes_the_leftovers_of_a_killed_push_only_when_stale(hook, tmp_path):
    import time

    v1 = hook.push(package(tmp_path), {"run_key": "a"})
    hook.set_production(v1)
    stale = hook.model_dir / f".staging-2-{int(time.time()) - 7 * 3600}-0badf00d"
    live = hook.model_dir / f".staging-3-{int(time.time())}-c0ffee00"
    for d in (stale, live):
        (d / "preprocessing").mkdir(parents=True)
        (d / "model.onnx").write_bytes(b"half")
    assert hook.versions() == [1]  # neither is a version
    hook.prune(keep=5)
    assert not stale.exists() and live.exists()


def test_model_repository_push_is_atomic_and_idempotent_by_key(cfg, tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "preprocessing" / "serving").mkdir(parents=True)
    (pkg / "model.onnx").write_bytes(b"onnx")
    (pkg / "config.pbtxt").write_text('name: "criteo_dcn"')
    (pkg / "preprocessing" / "serving" / "x.json").write_text("{}")
    (pkg / "preprocessing" / "serving" / "_SUCCESS").touch()
    hook = ModelRepositoryHook(Layout(cfg))
    with pytest.raises(FileNotFoundError, match="not published"):
        hook.push(str(pkg), {"run_key": "a"})
    (pkg / "_SUCCESS").touch()
    model_dir = tmp_path / "model_repository" / "criteo_dcn"
    (model_dir / "2").mkdir(parents=True)  # a stray, incomplete folder: not a version, not reused
    assert hook.production_version() is None
    v = hook.push(str(pkg), {"run_key": "a"})
    assert v == 3 and hook.versions() == [3] and hook.find_by_run_key("a") == 3
    assert (model_dir / "3" / "preprocessing" / "serving" / "x.json").exists()
    assert hook.production_version() is None  # pushed, not promoted
    assert hook.set_production(3) is None and hook.production_version() == 3
    assert "specific: { versions: [ 3 ] }" in (model_dir / "config.pbtxt").read_text()
    assert (model_dir / "3" / "preprocessing" / "serving" / "_SUCCESS").exists()  # nested markers are content
    assert hook.lineage(3)["version"] == 3
    assert not [p for p in model_dir.iterdir() if p.name.startswith(".staging")]
