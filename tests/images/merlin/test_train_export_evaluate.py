import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
import torch  # noqa: E402

from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS  # noqa: E402
from criteo_merlin.export import evaluate, export  # noqa: E402
from criteo_merlin.train import train  # noqa: E402
from criteo_merlin.train.dcn import DCN, DCNConfig, ServingDCN, load_checkpoint  # noqa: E402
from tests.fixtures.partitions import committed  # noqa: E402

pytestmark = pytest.mark.steps
SMALL = dict(epochs=2, batch_size=1024, lr=0.003, embedding_dim=8, cross_layers=3, mlp_dims=[64, 64],
             dropout=0.0, threads=2, seed=0)

@pytest.fixture(scope="module")
def trained(fitted, tmp_path_factory):
    root, _, _ = fitted
    out = tmp_path_factory.mktemp("train")
    parts = [str(root / "processed" / f"day={d}") for d in (0, 1)]
    res = train.train(parts, str(out / "scratch"), None, **SMALL)
    return root, out, res


def test_dcn_has_the_hugectr_sample_shape():
    m = DCN(DCNConfig([10] * 26))
    assert m.cfg.embedding_dim == 16 and len(m.cross) == 6 and m.cfg.mlp_dims == [1024, 1024]
    logits = m(torch.zeros(4, 26, dtype=torch.long), torch.zeros(4, 13))
    assert logits.shape == (4, 1)


def test_training_learns_and_warm_start_continues(trained):
    root, out, res = trained
    assert res["metrics"]["samples"] == 2 * 2 * 27000
    assert res["metrics"]["final_loss"] < 0.55           # below the CTR-only baseline (~0.54-0.6)
    model, ckpt = load_checkpoint(res["checkpoint"])
    warm = train.train([str(root / "processed" / "day=2")], str(out / "warm"), res["checkpoint"], **SMALL)
    assert warm["warm_start"] == res["checkpoint"]
    warm_model, _ = load_checkpoint(warm["checkpoint"])
    assert not torch.equal(model.embedding.weight, warm_model.embedding.weight)


def test_warm_start_refuses_a_checkpoint_of_another_workflow(trained, tmp_path):
    root, out, res = trained
    model, _ = load_checkpoint(res["checkpoint"])
    other = DCN(DCNConfig([v + 1 for v in model.cfg.vocab_sizes], embedding_dim=8, mlp_dims=[8]))
    from criteo_merlin.train.dcn import save_checkpoint

    save_checkpoint(other, str(tmp_path / "other.pt"))
    with pytest.raises(SystemExit, match="vocabulary sizes of another workflow"):
        train.train([str(root / "processed" / "day=2")], str(tmp_path / "x"), str(tmp_path / "other.pt"), **SMALL)


def test_onnx_export_matches_pytorch_on_real_rows(trained):
    root, out, res = trained
    pkg = out / "package"
    info = export.export(res["checkpoint"], str(root / "workflow"), str(pkg))
    assert info["parity_max_abs_diff"] < 1e-4
    for name in ("model.onnx", "model.py", "criteo_serving.py", "config.pbtxt", "checkpoint.pt",
                 "preprocessing/nvt/workflow.pkl", "preprocessing/serving/categories.npz", "export.json", "_SUCCESS"):
        assert (committed(pkg) / name).exists(), name
    import onnxruntime as ort

    t = pq.read_table(committed(root / "processed" / "day=2") / "eval").to_pandas()
    cats, dense = t[CAT_COLUMNS].to_numpy(np.int64), t[INT_COLUMNS].to_numpy(np.float32)
    model, _ = load_checkpoint(res["checkpoint"])
    with torch.no_grad():
        ref = ServingDCN(model.eval())(torch.from_numpy(cats), torch.from_numpy(dense)).numpy()
    (got,) = ort.InferenceSession(str(committed(pkg) / "model.onnx")).run(["ctr"], {"cat_ids": cats, "dense": dense})
    assert np.abs(ref - got).max() < 1e-4


def test_evaluate_scores_through_the_served_package(trained):
    root, out, res = trained
    pkg = out / "package"
    if not pkg.exists():
        export.export(res["checkpoint"], str(root / "workflow"), str(pkg))
    # the candidate is a package partition; the baseline a version folder (here: the package's own files)
    result = evaluate.evaluate([str(root / "extracted" / "day=2")], str(pkg), str(committed(pkg)),
                               str(out / "evaluation"))
    cm, bm = result["candidate_metrics"], result["baseline_metrics"]
    assert cm["rows"] == 3000 and cm == bm
    assert cm["auc"] > 0.6, cm  # a trained model beats chance on held-out rows of an unseen day
    assert (committed(out / "evaluation") / "evaluation.json").exists()
    assert result["smoke_rows"] == str(committed(out / "evaluation") / "smoke.npz")  # a file: inside the attempt


def test_the_serving_set_alone_serves_the_package_and_the_package_keeps_the_rest(trained, tmp_path):
    """A Triton version holds only the package's SERVED entries (deploy copies those): they must be
    all criteo_serving reads. The training artifacts (STORED) stay in the package for the lineage."""
    import shutil

    from criteo_kernel.artifacts import STORED, served

    root, out, res = trained
    pkg = out / "package"
    if not pkg.exists():
        export.export(res["checkpoint"], str(root / "workflow"), str(pkg))
    version = tmp_path / "version"
    for f in committed(pkg).rglob("*"):
        rel = f.relative_to(committed(pkg)).as_posix()
        if f.is_file() and served(rel):
            (version / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(f, version / rel)
    (version / "_SUCCESS").touch()   # deploy's marker
    left = [e for e in STORED.values() if (committed(pkg) / e).exists()]
    assert left == ["checkpoint.pt", "preprocessing"] and not (version / "checkpoint.pt").exists()
    assert not (version / "preprocessing" / "nvt").exists()
    result = evaluate.evaluate([str(root / "extracted" / "day=2")], str(pkg), str(version), str(tmp_path / "ev"))
    assert result["candidate_metrics"] == result["baseline_metrics"]   # the same predictions, row for row


def test_a_gpu_instance_without_the_cuda_provider_fails_naming_the_setting(trained):
    """A KIND_GPU instance (model.py passes the instance's device) runs onnxruntime's CUDA provider
    or refuses to load: never the CPU silently on a pod that holds a GPU. This onnxruntime has no
    CUDA provider (as the embedded default's), so it refuses, naming the setting and the package."""
    import onnxruntime as ort

    root, out, res = trained
    pkg = out / "package"
    if not pkg.exists():
        export.export(res["checkpoint"], str(root / "workflow"), str(pkg))
    import importlib.util

    spec = importlib.util.spec_from_file_location("criteo_serving_gpu_test", committed(pkg) / "criteo_serving.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert "CUDAExecutionProvider" not in ort.get_available_providers()
    with pytest.raises(RuntimeError, match="KIND_GPU .device 0. but this onnxruntime .* has no CUDAExecutionProvider"
                                           ".*onnxruntime-gpu.*criteo_triton_instance_kind=KIND_CPU"):
        module.CTRModel(str(committed(pkg)), gpu=0)
    assert module.CTRModel(str(committed(pkg))).session.get_providers() == ["CPUExecutionProvider"]


def test_past_the_threshold_the_export_writes_external_data_that_serves_the_same(trained, tmp_path, monkeypatch):
    """The threshold lowered from protobuf's 2 GiB to 0 (CRITEO_ONNX_EXTERNAL_DATA_BYTES): the package's
    weights go to model.onnx.data, the parity check and evaluate read them by path."""
    import onnxruntime as ort

    from criteo_kernel.onnx_size import EXTERNAL_DATA_ENV

    root, out, res = trained
    inline = out / "package"
    if not inline.exists():
        export.export(res["checkpoint"], str(root / "workflow"), str(inline))
    monkeypatch.setenv(EXTERNAL_DATA_ENV, "0")
    pkg = tmp_path / "package"
    info = export.export(res["checkpoint"], str(root / "workflow"), str(pkg))
    assert info["parity_max_abs_diff"] < 1e-4
    got_dir, inline_dir = committed(pkg), committed(inline)
    assert (got_dir / "model.onnx").stat().st_size < 100_000 < (got_dir / "model.onnx.data").stat().st_size
    assert not (inline_dir / "model.onnx.data").exists()
    assert info["onnx_bytes"] == (got_dir / "model.onnx").stat().st_size + (got_dir / "model.onnx.data").stat().st_size
    t = pq.read_table(committed(root / "processed" / "day=2") / "eval").to_pandas()
    cats, dense = t[CAT_COLUMNS].to_numpy(np.int64), t[INT_COLUMNS].to_numpy(np.float32)
    (want,) = ort.InferenceSession(str(inline_dir / "model.onnx")).run(["ctr"], {"cat_ids": cats, "dense": dense})
    (got,) = ort.InferenceSession(str(got_dir / "model.onnx")).run(["ctr"], {"cat_ids": cats, "dense": dense})
    assert np.abs(got - want).max() == 0
    result = evaluate.evaluate([str(root / "extracted" / "day=2")], str(pkg), str(inline_dir), str(tmp_path / "ev"))
    assert result["candidate_metrics"] == result["baseline_metrics"]
