"""Concurrent deploys on the model repository: the production pointer's compare-and-swap and the
create-only claim of version numbers, on a local folder and on gs:// (the GCS emulator,
fake-gcs-server: it must answer 412 to a conditional write that does not hold, as GCS does)."""
import multiprocessing
import threading
import time
import uuid

import pytest

from criteo_kernel import triton_config
from operators.hooks import model_repository
from operators.hooks.model_repository import ModelRepositoryHook, ProductionMoved
from operators.pipeline.config import Settings
from operators.pipeline.layout import Layout

pytestmark = pytest.mark.integration


def package(tmp_path, name="pkg"):
    pkg = tmp_path / name
    pkg.mkdir()
    (pkg / "config.pbtxt").write_text(triton_config.render())
    (pkg / "model.onnx").write_bytes(b"onnx")
    (pkg / "_SUCCESS").touch()
    return str(pkg)


def hook_on(base: str) -> ModelRepositoryHook:
    return ModelRepositoryHook(Layout(Settings.with_values(criteo_base_url=base, criteo_model_name="criteo_dcn")))


@pytest.fixture(params=["local", "gcs"])
def base(request, tmp_path, monkeypatch):
    """The bucket's base URL: a folder, or a fresh bucket on the emulator."""
    if request.param == "local":
        return str(tmp_path / "bucket")
    gcs = request.getfixturevalue("gcs")
    for key, value in gcs.env().items():
        monkeypatch.setenv(key, value)
    name = f"cas-{uuid.uuid4().hex[:10]}"
    gcs.create_bucket(name)
    return f"gs://{name}/prod"


def test_set_production_moves_the_pointer_only_from_the_expected_version(base, tmp_path):
    hook = hook_on(base)
    pkg = package(tmp_path)
    v1, v2, v3 = (hook.push(pkg, {"run_key": k}) for k in "abc")
    assert hook.set_production(v1, expected=None) is None
    with pytest.raises(ProductionMoved, match="expected version None, now version 1") as moved:
        hook.set_production(v2, expected=None)
    assert (moved.value.expected, moved.value.actual) == (None, 1) and hook.production_version() == v1
    with pytest.raises(ProductionMoved):
        hook.set_production(v3, expected=v2)
    assert hook.set_production(v2, expected=v1) == v1 and hook.production_version() == v2
    with pytest.raises(ProductionMoved):
        hook.clear_production(expected=v1)
    assert hook.production_version() == v2
    hook.clear_production(expected=v2)
    assert hook.production_version() is None


def test_a_pointer_written_between_the_read_and_the_write_is_not_overwritten(base, tmp_path, monkeypatch):
    """Another deploy moves the pointer after this one read it: the conditional write refuses (gs://: the
    generation changed, 412; local: the other writer waits for the lock, so it moves first or after)."""
    hook, other = hook_on(base), hook_on(base)
    pkg = package(tmp_path)
    v1, v2, v3 = (hook.push(pkg, {"run_key": k}) for k in "abc")
    hook.set_production(v1)
    real, calls = ModelRepositoryHook._check_expected, []

    def race(self, expected, actual):
        real(self, expected, actual)
        if self is hook and not calls:   # between this deploy's read and its write
            calls.append(1)
            if base.startswith("gs://"):
                other.set_production(v3, expected=v1)
            else:  # the lock is held: the other deploy waits, then finds production moved
                def late():
                    try:
                        other.set_production(v3, expected=v1)
                    except ProductionMoved as exc:
                        calls.append(exc)
                t = threading.Thread(target=late)
                t.start()
                t.join(timeout=1.0)
                assert t.is_alive(), "the other deploy wrote the pointer while this one held the lock"
                calls.append(t)

    monkeypatch.setattr(ModelRepositoryHook, "_check_expected", race)
    if base.startswith("gs://"):
        with pytest.raises(ProductionMoved, match="expected version 1, now version 3"):
            hook.set_production(v2, expected=v1)
        assert hook.production_version() == v3
    else:
        assert hook.set_production(v2, expected=v1) == v1
        calls[1].join(timeout=10)
        assert isinstance(calls[2], ProductionMoved) and (calls[2].expected, calls[2].actual) == (1, 2)
        assert hook.production_version() == v2


def test_the_emulator_refuses_a_write_whose_generation_does_not_hold(gcs, monkeypatch):
    """fake-gcs-server, like GCS: 412 for ifGenerationMatch=0 on an existing object and for a stale
    generation; what the pointer's compare-and-swap and the version claim rely on."""
    from google.api_core.exceptions import PreconditionFailed

    from operators.hooks.storage import gcs_blob, storage_path

    for key, value in gcs.env().items():
        monkeypatch.setenv(key, value)
    gcs.create_bucket("cas-412")
    blob = gcs_blob(storage_path("gs://cas-412/m/config.pbtxt"))
    blob.upload_from_string("a", if_generation_match=0)
    blob.reload()
    first = blob.generation
    with pytest.raises(PreconditionFailed):
        blob.upload_from_string("b", if_generation_match=0)
    blob.upload_from_string("c", if_generation_match=first)
    with pytest.raises(PreconditionFailed):
        blob.upload_from_string("d", if_generation_match=first)
    assert blob.download_as_bytes() == b"c"
    fs = storage_path("gs://cas-412/").fs
    fs.pipe_file("cas-412/m/1/_RESERVED", b"x", mode="create")
    with pytest.raises(FileExistsError):
        fs.pipe_file("cas-412/m/1/_RESERVED", b"y", mode="create")


def test_prune_removes_a_dead_push_claim_once_stale_and_never_a_live_one(base, tmp_path):
    import json

    from criteo_kernel.artifacts import RESERVED

    hook = hook_on(base)
    pkg = package(tmp_path)
    versions = [hook.push(pkg, {"run_key": k}) for k in "abcd"]
    hook.set_production(versions[-1])
    for number, age in ((5, model_repository.STALE_STAGING_S + 60), (6, 60)):
        (hook.model_dir / str(number)).mkdir(parents=True, exist_ok=True)
        (hook.model_dir / str(number) / RESERVED).write_text(json.dumps({"reserved_at_s": time.time() - age}))
        (hook.model_dir / str(number) / "model.onnx").write_text("half")
    assert hook.versions() == versions   # an incomplete claim is no version
    hook.prune(keep=2)
    assert hook.versions() == versions[-2:]
    assert not (hook.model_dir / "5" / RESERVED).exists() and (hook.model_dir / "6" / RESERVED).exists()
    assert hook.push(pkg, {"run_key": "e"}) == 7   # numbers claimed, live or dead, are not reused


def _push_many(base: str, env: dict, pkg: str, owner: str, count: int, barrier) -> list[int]:
    import os

    os.environ.update(env)
    hook = hook_on(base)
    barrier.wait(timeout=120)
    return [hook.push(pkg, {"run_key": f"{owner}-{i}", "run_id": owner}) for i in range(count)]


def test_two_processes_pushing_at_once_never_get_the_same_number(gcs, tmp_path):
    """Each version number claimed once, on the emulator: two deploy processes, started together."""
    from concurrent.futures import ProcessPoolExecutor

    from criteo_kernel.artifacts import RESERVED

    name = f"cas-{uuid.uuid4().hex[:10]}"
    gcs.create_bucket(name)
    base, pkg, count = f"gs://{name}/prod", package(tmp_path), 6
    ctx = multiprocessing.get_context("spawn")
    with ctx.Manager() as manager, ProcessPoolExecutor(2, mp_context=ctx) as pool:
        barrier = manager.Barrier(2)
        futures = [pool.submit(_push_many, base, gcs.env(), pkg, owner, count, barrier) for owner in ("p1", "p2")]
        got = [f.result(timeout=300) for f in futures]
    assert not set(got[0]) & set(got[1]) and len(set(got[0] + got[1])) == 2 * count, got
    import json
    import os

    os.environ.update(gcs.env())
    hook = hook_on(base)
    assert hook.versions() == sorted(got[0] + got[1])
    for owner, numbers in zip(("p1", "p2"), got, strict=True):
        for v in numbers:
            claim = json.loads((hook.model_dir / str(v) / RESERVED).read_text())
            assert claim["run_id"] == owner and hook.lineage(v)["run_id"] == owner and hook.lineage(v)["version"] == v


def test_a_failed_promotions_restore_leaves_a_pointer_another_deploy_moved(base, tmp_path):
    """serving._restore puts the previous version back only while the pointer names the version this
    promotion wrote: here another deploy moved it on, and its pointer stays."""
    from operators.hooks import serving

    hook = hook_on(base)
    pkg = package(tmp_path)
    v1, v2, v3 = (hook.push(pkg, {"run_key": k}) for k in "abc")
    hook.set_production(v2, expected=None)          # this promotion wrote v2 over nothing...
    hook.set_production(v3, expected=v2)            # ...and another deploy moved on to v3
    serving._restore(hook, [], "criteo_dcn", None, v2)
    assert hook.production_version() == v3
    serving._restore(hook, [], "criteo_dcn", v1, v2)
    assert hook.production_version() == v3
    serving._restore(hook, [], "criteo_dcn", v1, v3)   # still the promotion's own: restored
    assert hook.production_version() == v1
