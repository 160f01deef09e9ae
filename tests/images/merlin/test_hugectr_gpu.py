"""The HugeCTR trainer with HugeCTR itself: only in the merlin image's hugectr target on a GPU
(`make test-hugectr` there); skipped everywhere else, saying so. Never run by this project's CI,
which has neither."""
import os

import numpy as np
import pytest

pytest.importorskip("nvtabular", reason="needs NVTabular to write the partitions HugeCTR reads")
pytest.importorskip("hugectr", reason="needs HugeCTR (NVIDIA's Merlin HugeCTR container and a GPU): "
                                      "make test-hugectr in the merlin image's hugectr target")

from criteo_merlin.export import export  # noqa: E402
from criteo_merlin.hugectr import hugectr_files, train_hugectr  # noqa: E402

pytestmark = [pytest.mark.steps, pytest.mark.hugectr]


def test_hugectr_trains_warm_starts_and_exports(for_hugectr, fitted, tmp_path):
    """In the image, on a GPU: a full run, an incremental run warm-started from it, both exported
    and served by the same code as the PyTorch model."""
    from criteo_merlin.export.triton.criteo_serving import CTRModel

    root, out, _ = for_hugectr
    first = train_hugectr.train([str(out / "day=0")], str(tmp_path / "t0"), None, 1, 1024, 0.001, 8, 2, [64])
    assert first["metrics"]["steps"] >= 1 and os.path.exists(tmp_path / "t0" / "model.onnx")
    export.export(first["checkpoint"], str(root / "workflow"), str(tmp_path / "p0"), trainer="hugectr")
    second = train_hugectr.train([str(out / "day=1")], str(tmp_path / "t1"), str(tmp_path / "p0" / "hugectr"),
                                 1, 1024, 0.001)
    assert second["warm_start"].endswith("hugectr")
    assert hugectr_files.find(str(tmp_path / "t1" / "hugectr")).iteration > \
        hugectr_files.find(str(tmp_path / "p0" / "hugectr")).iteration
    export.export(second["checkpoint"], str(root / "workflow"), str(tmp_path / "p1"), trainer="hugectr")
    rng = np.random.default_rng(0)
    p = CTRModel(str(tmp_path / "p1")).predict(rng.normal(size=(100, 13)).astype(np.float32) ** 2,
                                               rng.integers(-1, 2**31, size=(100, 26)).astype(np.int64))
    assert p.shape == (100,) and np.all((p >= 0) & (p <= 1))
