"""The fast path of preprocess against NVTabular itself: the fit from value counts against
Workflow.fit, the written output against Workflow.load + Workflow.transform, and the spot check."""
import glob
import os
import pickle

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
from criteo_kernel.schema import CAT_COLUMNS, COLUMNS, INT_COLUMNS, LABEL  # noqa: E402
from tests.fixtures.partitions import committed  # noqa: E402

pytestmark = pytest.mark.steps


def _train_files(root, days=(0, 1)):
    return sorted(f for d in days
                  for f in glob.glob(str(committed(root / "extracted" / f"day={d}") / "train" / "*.parquet")))


def _fit_fast(root, tmp_path, max_vocab=0, freq_threshold=0):
    """The workflow fitted from value counts (dictionary_fit), as the step fits it."""
    import nvtabular as nvt  # noqa: F401

    from criteo_merlin.preprocess import dictionary_fit
    from criteo_merlin.preprocess.decoding import Decoder
    from criteo_merlin.preprocess.workflow import HEAD_ROWS, build_workflow

    files = _train_files(root)
    decoder = Decoder(1 << 30)
    fast = build_workflow(max_vocab, freq_threshold, out_path=str(tmp_path / "fast"))
    counts = dictionary_fit.ValueCounts(COLUMNS)
    for f in files:
        counts.add(decoder.load(f))
    dictionary_fit.fit(fast, counts, decoder.load(files[0]).frame(0, HEAD_ROWS))
    return fast


def _fit_both(root, tmp_path, max_vocab=0, freq_threshold=0):
    import dask
    import nvtabular as nvt  # noqa: F401

    from criteo_merlin.preprocess.decoding import Decoder
    from criteo_merlin.preprocess.workflow import build_workflow, fit_dataset

    with dask.config.set(scheduler="synchronous"):
        reference = build_workflow(max_vocab, freq_threshold, out_path=str(tmp_path / "nvt"))
        reference.fit(fit_dataset(_train_files(root), Decoder(1 << 30)))
        fast = _fit_fast(root, tmp_path, max_vocab, freq_threshold)
    return reference, fast


def _schema(workflow):
    out = {}
    for c in workflow.output_schema.column_names:
        col = workflow.output_schema[c]
        props = {k: v for k, v in col.properties.items() if k != "cat_path"}  # a path under out_path
        out[c] = (col.dtype, col.tags, props)
    return out


@pytest.mark.parametrize("max_vocab,freq_threshold", [(0, 0), (200, 0), (0, 3)])
def test_the_fit_from_value_counts_is_workflow_fit(small_days, tmp_path, max_vocab, freq_threshold):
    from nvtabular import ops

    from criteo_merlin.preprocess.workflow import find_op

    reference, fast = _fit_both(small_days, tmp_path, max_vocab, freq_threshold)
    ref_cat, fast_cat = find_op(reference, ops.Categorify), find_op(fast, ops.Categorify)
    for c in CAT_COLUMNS:  # the vocabulary files NVTabular writes: values, frequencies, order, index
        want, got = pd.read_parquet(ref_cat.categories[c]), pd.read_parquet(fast_cat.categories[c])
        pd.testing.assert_frame_equal(got, want, check_exact=True)
        want_meta = pd.read_parquet(ref_cat.categories[c].replace("unique.", "meta."))
        got_meta = pd.read_parquet(fast_cat.categories[c].replace("unique.", "meta."))
        pd.testing.assert_frame_equal(got_meta, want_meta, check_exact=True)
    # the operator's state as Workflow.fit leaves it (paths aside)
    skip = {"categories", "out_path", "workflow_nodes"}
    assert {k: v for k, v in vars(fast_cat).items() if k not in skip} == \
        {k: v for k, v in vars(ref_cat).items() if k not in skip}
    ref_norm, fast_norm = find_op(reference, ops.Normalize), find_op(fast, ops.Normalize)
    for c in INT_COLUMNS:  # Workflow.fit sums float32 columns in float32: agreement to ~1e-7
        assert fast_norm.means[c] == pytest.approx(ref_norm.means[c], rel=1e-6, abs=1e-9)
        assert fast_norm.stds[c] == pytest.approx(ref_norm.stds[c], rel=1e-6)
    assert _schema(fast) == _schema(reference)
    assert fast_cat.fitted and fast_norm.fitted


def test_a_statistic_below_a_row_dependent_operator_is_refused(small_days, tmp_path):
    import nvtabular as nvt
    from nvtabular import ops

    from criteo_merlin.preprocess import dictionary_fit
    from criteo_merlin.preprocess.decoding import Decoder

    graph = INT_COLUMNS >> ops.LambdaOp(lambda col: col - col.mean()) >> ops.Normalize()
    workflow = nvt.Workflow(graph + CAT_COLUMNS + [LABEL])
    counts = dictionary_fit.ValueCounts(COLUMNS)
    dec = Decoder(1 << 30).load(_train_files(small_days)[0])
    counts.add(dec)
    with pytest.raises(dictionary_fit.UnsupportedGraph,
                       match=r"sits below (UDF|LambdaOp), whose output rows.*--engine nvt"):
        dictionary_fit.fit(workflow, counts, dec.frame(0, 100))


@pytest.mark.parametrize("max_vocab,freq_threshold", [(0, 0), (200, 0), (0, 3)])
def test_the_serving_tables_are_the_whole_graph_s_ids_of_every_key(small_days, tmp_path, max_vocab, freq_threshold):
    """serving_tables encodes each vocabulary at its own length through the Categorify operator;
    Workflow.transform of every key, and of an unseen one, in one frame through the whole graph
    gives the same ids."""
    from criteo_merlin.preprocess.serving_tables import serving_tables

    workflow = _fit_fast(small_days, tmp_path, max_vocab, freq_threshold)
    tables, cont = serving_tables(workflow)
    keys = {c: np.append(tables[f"{c}_keys"], 2**40) for c in CAT_COLUMNS}
    longest = max(len(k) for k in keys.values())
    frame = pd.DataFrame({**{c: np.resize(k, longest) for c, k in keys.items()},
                          **{c: np.zeros(longest) for c in INT_COLUMNS}, LABEL: np.zeros(longest, dtype=np.int8)})
    out = workflow.transform(frame)
    for c in CAT_COLUMNS:
        n = len(tables[f"{c}_keys"])
        assert n > 1 and -1 in tables[f"{c}_keys"]  # the missing value is a key of its own
        assert np.array_equal(out[c].to_numpy()[:n], tables[f"{c}_ids"]), c
        assert out[c].to_numpy()[n] == cont["oov_ids"][c], c
    if max_vocab:
        assert max(tables[f"{c}_ids"].max() for c in CAT_COLUMNS) == max_vocab - 1


def test_serving_tables_refuse_a_workflow_that_changes_values_before_categorify(small_days, tmp_path):
    import nvtabular as nvt
    from nvtabular import ops

    from criteo_merlin.preprocess.decoding import Decoder
    from criteo_merlin.preprocess.serving_tables import serving_tables

    cats = CAT_COLUMNS >> ops.LambdaOp(lambda col: col + 1) >> ops.Categorify(out_path=str(tmp_path))
    workflow = nvt.Workflow(cats + (INT_COLUMNS >> ops.Normalize()) + [LABEL])
    workflow.fit(nvt.Dataset(Decoder(1 << 30).load(_train_files(small_days)[0]).frame(0, 500), cpu=True))
    with pytest.raises(ValueError, match=r"serving tables need Categorify on the raw C1\.\.C26; this workflow's reads "
                                         r".* through \['(UDF|LambdaOp)'\]"):
        serving_tables(workflow)


def _read(partition, split):
    files = sorted(glob.glob(os.path.join(partition, split, "*.parquet")))
    return pd.concat([pq.read_table(f).to_pandas() for f in files], ignore_index=True)


def test_saved_workflow_transform_gives_the_written_output(fitted):
    """Workflow.load of the published workflow, then Workflow.transform of the decoded input, is
    byte for byte what the fast path wrote, for the fitted days and the incremental one."""
    import nvtabular as nvt

    from criteo_merlin.preprocess.decoding import decode_extracted

    root, _, _ = fitted
    workflow = nvt.Workflow.load(str(committed(root / "workflow") / "nvt"))
    for day in ("day=0", "day=1", "day=2"):
        for split in ("train", "eval"):
            raw = pd.concat([decode_extracted(f, f) for f in sorted(glob.glob(
                str(committed(root / "extracted" / day) / split / "*.parquet")))], ignore_index=True)
            want = workflow.transform(raw)
            got = _read(str(committed(root / "processed" / day)), split)
            assert list(got.columns) == list(want.columns)
            for c in got.columns:
                assert got[c].dtype == want[c].dtype, (day, split, c)
                assert np.array_equal(got[c].to_numpy(), want[c].to_numpy()), (day, split, c)


def test_the_spot_check_fails_the_step_before_anything_is_published(small_days, tmp_path, monkeypatch):
    from criteo_merlin.preprocess import preprocess
    from criteo_merlin.preprocess.serving_tables import CompiledWorkflow

    real = CompiledWorkflow.encode_cont

    def off_by_a_little(self, column, values):
        out = real(self, column, values)
        return out + 1e-9 if column == "I7" else out

    monkeypatch.setattr(CompiledWorkflow, "encode_cont", off_by_a_little)
    ex = [str(small_days / "extracted" / f"day={d}") for d in (0, 1)]
    with pytest.raises(RuntimeError, match=r"extracted/day=0/train/part-00000.parquet: column I7: the fast "
                                           r"transform differs from Workflow.transform at row 0"):
        preprocess.preprocess(ex, str(tmp_path / "processed"), str(tmp_path / "workflow"), None)
    # nothing published, no attempt left: at most the empty folders of the partitions it tried
    assert all(os.listdir(p) == [] for p in (tmp_path / "processed").glob("*"))


def test_one_workflow_transform_per_run_however_many_files(small_days, tmp_path, monkeypatch):
    """The spot check is one Workflow.transform call per run, with rows of every file, instead of
    one call per file."""
    import nvtabular as nvt

    from criteo_merlin.preprocess import preprocess

    src = committed(small_days / "extracted" / "day=0")
    many = tmp_path / "extracted" / "day=0"
    for split in ("train", "eval"):
        table = pq.read_table(next((src / split).glob("*.parquet")))
        (many / split).mkdir(parents=True)
        step = -(-table.num_rows // 6)
        for k in range(6):
            pq.write_table(table.slice(k * step, step), many / split / f"part-{k:05d}.parquet")
    (many / "_SUCCESS").write_text("")

    calls = []
    real = nvt.Workflow._transform_df  # where Workflow.transform of a pandas frame goes

    def counted(self, frame):
        calls.append(len(frame))
        return real(self, frame)

    monkeypatch.setattr(nvt.Workflow, "_transform_df", counted)
    res = preprocess.preprocess([str(many)], str(tmp_path / "processed"), str(tmp_path / "workflow"), None)
    assert len(calls) == 1
    assert res["checked_rows"] >= 12 * 16  # rows of each of the 12 files
    assert res["checked_rows"] <= calls[0]


def test_a_corrupt_dictionary_index_is_a_decode_error():
    import pyarrow as pa

    from criteo_kernel.codecs import DecodeError
    from criteo_merlin.preprocess.decoding import decode_table

    good = {c: pa.array(["1"] * 3) if c in INT_COLUMNS or c == LABEL else pa.array(["0000abcd"] * 3) for c in COLUMNS}
    bad = pa.DictionaryArray.from_arrays(pa.array([0, 1, 7], pa.int32()), pa.array(["0000abcd", "00001234"]),
                                         safe=False)
    table = pa.table({**good, "C5": bad})
    with pytest.raises(DecodeError, match="f.parquet: column C5: a dictionary index is out of range"):
        decode_table(table, "f.parquet")


def test_the_fitted_workflow_pickles_like_a_fitted_one(fitted):
    """What Workflow.save wrote is an ordinary fitted workflow (read back without criteo_merlin)."""
    root, _, _ = fitted
    with open(committed(root / "workflow") / "nvt" / "workflow.pkl", "rb") as fh:
        workflow = pickle.load(fh)
    assert all(node.op.fitted for node in workflow.graph.output_node.parents_with_dependencies
               if hasattr(node.op, "fitted"))

