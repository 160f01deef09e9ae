"""Preprocessing on a dask cluster (criteo_merlin.preprocess.scale_out).

What runs here: the cluster choice, the settings, the row-group pieces, the decoding on workers, and
a real dask LocalCluster of worker processes fitting and applying the NVTabular workflow, checked
against the in-process path. What cannot run here (no GPU, no cudf): the LocalCUDACluster and the
cudf frames; the GPU path shares every other line with the CPU cluster tested below.
"""
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
from criteo_kernel import storage  # noqa: E402
from criteo_kernel.artifacts import CATEGORY_TABLES, CONTINUOUS_STATS, SERVING_TABLES  # noqa: E402
from criteo_kernel.codecs import DecodeError  # noqa: E402
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS  # noqa: E402
from criteo_merlin.preprocess import scale_out  # noqa: E402
from criteo_merlin.preprocess.scale_out import ClusterPlan, PieceReader, plan_pieces  # noqa: E402
from tests.conftest import REPO  # noqa: E402
from tests.fixtures.partitions import committed  # noqa: E402

pytestmark = pytest.mark.steps
ROW_GROUP = 4000


@pytest.mark.parametrize("workers, gpus, rapids, expected", [
    ("auto", 0, False, ClusterPlan(1, False)),
    ("auto", 1, True, ClusterPlan(1, False)),
    ("auto", 4, True, ClusterPlan(4, True)),
    ("auto", 4, False, ClusterPlan(1, False, "4 GPUs visible but cudf/dask_cuda are not installed")),
    ("2", 0, False, ClusterPlan(2, False, "no GPU")),
    ("2", 8, True, ClusterPlan(2, True)),
    ("1", 0, False, ClusterPlan(1, False, "no GPU")),
])
def test_cluster_plan_follows_the_pods_gpus(workers, gpus, rapids, expected):
    plan = ClusterPlan.choose(workers, gpus=gpus, rapids=rapids)
    assert plan == expected
    assert plan.distributed == (expected.gpu or expected.workers > 1)


@pytest.mark.parametrize("workers, gpus, message", [
    ("0", 0, "--workers must be 'auto' or a whole number >= 1, got '0'"),
    ("many", 0, "got 'many'"),
    ("4", 2, "--workers 4 but the pod has 2 GPU(s)"),
])
def test_cluster_plan_rejects_impossible_worker_counts(workers, gpus, message):
    with pytest.raises(SystemExit, match=re.escape(message)):
        ClusterPlan.choose(workers, gpus=gpus, rapids=True)


def test_visible_gpus_counts_cuda_visible_devices(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1,3")
    assert scale_out.visible_gpus() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert scale_out.visible_gpus() == 0
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES")
    assert scale_out.visible_gpus() == 0  # this machine: no NVML driver, no GPU


def test_sizes_and_limits_parse_as_dask_does():
    assert scale_out.part_bytes("256MB") == 256_000_000 and scale_out.part_bytes("1GiB") == 2**30
    assert scale_out.device_memory_limit("0.8") == 0.8 and scale_out.device_memory_limit("30GB") == 30_000_000_000
    with pytest.raises(SystemExit, match="--part-size must be a size"):
        scale_out.part_bytes("big")
    with pytest.raises(SystemExit, match="--device-memory-limit must be a fraction"):
        scale_out.device_memory_limit("1.5")


@pytest.fixture(scope="module")
def regrouped(small_days, tmp_path_factory):
    """The shared extracted days, rewritten with small row groups so a file splits into pieces."""
    root = tmp_path_factory.mktemp("regrouped")
    for d in range(3):
        src, dst = committed(small_days / "extracted" / f"day={d}"), root / f"day={d}"
        with storage.staged_partition(str(dst)) as attempt:  # published as extract publishes
            shutil.copytree(src, attempt, dirs_exist_ok=True)
            for f in Path(attempt).glob("*/*.parquet"):
                pq.write_table(pq.read_table(f), f, row_group_size=ROW_GROUP)
    return root


def test_pieces_are_whole_row_groups_of_one_file(regrouped):
    files = scale_out.list_parquet(str(committed(regrouped / "day=0") / "train")) + \
        scale_out.list_parquet(str(committed(regrouped / "day=0") / "eval"))
    group = pq.ParquetFile(files[0]).metadata.row_group(0).total_byte_size
    pieces = plan_pieces(files, part_size=int(2.5 * group))
    train = [p for p in pieces if p.url == files[0]]
    assert [p.row_groups for p in train] == [(0, 1), (2, 3), (4, 5), (6,)]  # 27000 rows: 7 groups
    assert sum(p.rows for p in train) == 27000
    assert [p.row_groups for p in pieces if p.url == files[1]] == [(0,)]  # never spans files
    assert len(plan_pieces(files, part_size=1)) == 7 + 1  # a row group is never split


def test_a_bad_value_names_the_file_row_groups_and_column(regrouped, tmp_path):
    import pyarrow as pa

    good = scale_out.list_parquet(str(committed(regrouped / "day=0") / "eval"))[0]
    table = pq.read_table(good)
    cats = table.column("C3").to_pylist()
    cats[5] = "zz-not-hex"
    bad = tmp_path / "part-00000.parquet"
    pq.write_table(table.set_column(table.schema.get_field_index("C3"), "C3", pa.array(cats)), bad,
                   row_group_size=1000)
    piece = plan_pieces([str(bad)], part_size=1)[0]
    with pytest.raises(DecodeError) as err:
        PieceReader(gpu=False)(piece)
    assert str(err.value).startswith(f"{bad} (row group 0): column C3: 1 value(s) are not 8 lowercase hex digits")
    assert "'zz-not-hex'" in str(err.value)


def _step(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join(str(REPO / "images" / p / "src") for p in ("kernel", "merlin"))
    return subprocess.run([sys.executable, "-m", "criteo_merlin", "preprocess", *args], capture_output=True,
                          text=True, timeout=600, env=env, cwd=tmp_path)


def _result(proc) -> dict:
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("STEP_RESULT ")][-1]
    return json.loads(line[len("STEP_RESULT "):])


def test_two_worker_processes_give_the_in_process_outputs(fitted, regrouped, tmp_path):
    """The step's own CLI on a LocalCluster of 2 processes: full fit on days 0-1, then day 2
    incrementally, equal to the in-process run of the same days (the `fitted` fixture)."""
    ref, ref_full, _ = fitted
    out = tmp_path / "out"
    days = [str(regrouped / f"day={d}") for d in range(3)]
    full = _step(["--extracted", *days[:2], "--output-root", str(out / "processed"), "--fit-workflow",
                  str(out / "workflow"), "--max-vocab", "0", "--workers", "2", "--part-size", "300KB"], tmp_path)
    assert full.returncode == 0, full.stderr[-3000:]
    assert "preprocess: dask LocalCluster, 2 CPU worker process(es) (no GPU)" in full.stdout
    incr = _step(["--extracted", days[2], "--output-root", str(out / "processed"), "--workflow",
                  str(out / "workflow"), "--workers", "2", "--part-size", "300KB"], tmp_path)
    assert incr.returncode == 0, incr.stderr[-3000:]
    res = _result(full)
    assert res["cluster"]["workers"] == 2 and res["cluster"]["gpu"] is False
    # both worker processes decoded pieces (7 + 1 pieces a day, for the fit and for the transform)
    per_worker = res["cluster"]["pieces_decoded_per_worker"]
    assert len(per_worker) == 2 and min(per_worker) > 0, per_worker
    assert res["embedding_sizes"] == ref_full["embedding_sizes"] and res["fit_rows"] == ref_full["fit_rows"]

    mine, theirs = np.load(committed(out / "workflow") / SERVING_TABLES / CATEGORY_TABLES), \
        np.load(committed(ref / "workflow") / SERVING_TABLES / CATEGORY_TABLES)
    assert sorted(mine.files) == sorted(theirs.files)
    assert all((mine[k] == theirs[k]).all() for k in mine.files)
    stats = [json.loads((committed(r / "workflow") / SERVING_TABLES / CONTINUOUS_STATS).read_text())
             for r in (out, ref)]
    assert np.allclose([stats[0]["mean"][c] for c in INT_COLUMNS], [stats[1]["mean"][c] for c in INT_COLUMNS])
    assert np.allclose([stats[0]["std"][c] for c in INT_COLUMNS], [stats[1]["std"][c] for c in INT_COLUMNS])

    for day in ("day=0", "day=1", "day=2"):
        mine_dir, ref_dir = committed(out / "processed" / day), committed(ref / "processed" / day)
        assert (mine_dir / "_SUCCESS").exists()
        assert json.loads((mine_dir / "_preprocess.json").read_text())["rows"] == \
            json.loads((ref_dir / "_preprocess.json").read_text())["rows"]
        for split in ("train", "eval"):
            # parquet parts only, as the in-process path writes them: no _metadata, schema.pbtxt, .merlin
            assert all(p.suffix == ".parquet" for p in (mine_dir / split).iterdir()), list((mine_dir / split).iterdir())
            a, b = pq.read_table(mine_dir / split).to_pandas(), pq.read_table(ref_dir / split).to_pandas()
            assert list(a.columns) == list(b.columns) and len(a) == len(b)
            assert (a[CAT_COLUMNS].to_numpy() == b[CAT_COLUMNS].to_numpy()).all()
            assert np.allclose(a[INT_COLUMNS].to_numpy(), b[INT_COLUMNS].to_numpy(), atol=1e-5)
            assert (a["label"].to_numpy() == b["label"].to_numpy()).all()


def test_bad_data_on_a_worker_fails_the_step_naming_file_and_column(regrouped, tmp_path):
    import pyarrow as pa

    day = tmp_path / "day=7"
    shutil.copytree(regrouped / "day=0", day)
    f = next((committed(day) / "train").glob("*.parquet"))
    table = pq.read_table(f)
    labels = table.column("label").to_pylist()
    labels[ROW_GROUP * 3 + 2] = "7"
    pq.write_table(table.set_column(table.schema.get_field_index("label"), "label", pa.array(labels)), f,
                   row_group_size=ROW_GROUP)
    proc = _step(["--extracted", str(day), "--output-root", str(tmp_path / "processed"), "--fit-workflow",
                  str(tmp_path / "workflow"), "--max-vocab", "0", "--workers", "2", "--part-size", "1B"], tmp_path)
    assert proc.returncode != 0
    assert f"{f} (row group 3): column label: 1 value(s) are not 0 or 1 (first at row 2: '7')" in proc.stderr
    for folder in (tmp_path / "workflow", tmp_path / "processed" / "day=7"):  # nothing published, no attempt left
        assert not folder.exists() or list(folder.iterdir()) == []
