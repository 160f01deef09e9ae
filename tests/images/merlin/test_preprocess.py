import json
import subprocess
import sys

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS  # noqa: E402
from tests.fixtures.partitions import committed  # noqa: E402

pytestmark = pytest.mark.steps


def _serving(root):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[3] / "images/merlin/src/criteo_merlin/export/triton/criteo_serving.py"
    spec = importlib.util.spec_from_file_location("criteo_serving", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.Preprocessor(str(committed(root / "workflow") / "serving"))


def test_full_fit_then_incremental_transform(fitted):
    root, full, incr = fitted
    assert full["fitted"] and not incr["fitted"]
    assert sorted(full["days"]) == ["day=0", "day=1"] and list(incr["days"]) == ["day=2"]
    assert (committed(root / "workflow") / "_SUCCESS").exists()
    assert (committed(root / "workflow") / "nvt" / "workflow.pkl").exists()
    assert full["embedding_sizes"] == incr["embedding_sizes"]
    for day in ("day=0", "day=1", "day=2"):
        part = committed(root / "processed" / day)
        assert (part / "_SUCCESS").exists()
        meta = json.loads((part / "_preprocess.json").read_text())
        t = pq.read_table(part / "train")
        assert t.num_rows == meta["rows"]["train"] == 27000
        for c in CAT_COLUMNS:
            ids = t.column(c).to_numpy()
            assert ids.dtype == np.int64 and ids.min() >= 0 and ids.max() < full["embedding_sizes"][c]
        dense = np.stack([t.column(c).to_numpy() for c in INT_COLUMNS], 1)
        assert np.isfinite(dense).all()
    # normalised on the fitted days
    t0 = pq.read_table(committed(root / "processed" / "day=0") / "train")
    t1 = pq.read_table(committed(root / "processed" / "day=1") / "train")
    both = np.concatenate([np.stack([t.column(c).to_numpy() for c in INT_COLUMNS], 1) for t in (t0, t1)])
    assert np.allclose(both.mean(0), 0, atol=0.05) and np.allclose(both.std(0), 1, atol=0.05)


def test_serving_tables_reproduce_the_workflow_encoding(fitted):
    """Raw day-2 rows through the exported lookup tables == NVTabular's output for those rows."""
    root, _, _ = fitted
    from criteo_merlin.preprocess.decoding import decode_extracted

    raw = decode_extracted(str(next((committed(root / "extracted" / "day=2") / "train").glob("*.parquet"))), "t")
    pre = _serving(root)
    cat_ids, dense = pre.transform(raw[INT_COLUMNS].to_numpy(), raw[CAT_COLUMNS].to_numpy())
    out = pq.read_table(committed(root / "processed" / "day=2") / "train").to_pandas()
    assert (cat_ids == out[CAT_COLUMNS].to_numpy()).all()
    assert np.allclose(dense, out[INT_COLUMNS].to_numpy(), atol=1e-5)


def test_saved_workflow_loads_in_a_new_process(fitted):
    root, _, _ = fitted
    code = ("import nvtabular as nvt, sys; w = nvt.Workflow.load(sys.argv[1]); "
            "print(sorted(w.output_schema.column_names)[:2])")
    out = subprocess.run([sys.executable, "-c", code, str(committed(root / "workflow") / "nvt")], capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "C1" in out.stdout
