"""The HugeCTR trainer's parts that run without HugeCTR: what preprocess writes for its Parquet
reader, the window staged for a run, the slot sizes, the graph against the PyTorch DCN, warm-start
discovery and the package export makes. The rules checked are those read in HugeCTR v25.03's
source (criteo_merlin.hugectr.hugectr_data, hugectr_files); the conversion of its saved files to ONNX is
tests/images/merlin/test_hugectr_onnx.py.

What needs HugeCTR itself (its container, a GPU) is in test_hugectr_gpu.py.
"""
import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
import torch  # noqa: E402

from criteo_kernel import storage  # noqa: E402
from criteo_kernel.schema import CAT_COLUMNS, INT_COLUMNS, LABEL  # noqa: E402
from criteo_merlin.export import export  # noqa: E402
from criteo_merlin.hugectr import hugectr_data, hugectr_files, train_hugectr  # noqa: E402
from criteo_merlin.hugectr.hugectr_dcn import DCNGraph  # noqa: E402
from criteo_merlin.preprocess import preprocess  # noqa: E402
from criteo_merlin.train.dcn import DCN, DCNConfig, ServingDCN  # noqa: E402
from tests.fixtures.partitions import committed  # noqa: E402

pytestmark = pytest.mark.steps
try:
    import hugectr  # noqa: F401
    HUGECTR = True
except ImportError:
    HUGECTR = False


def test_each_split_has_the_file_list_and_metadata_the_reader_requires(for_hugectr):
    root, out, res = for_hugectr
    for day in ("day=0", "day=1"):
        assert json.loads((committed(out / day) / "_preprocess.json").read_text())["hugectr"] is True
        for split in ("train", "eval"):
            d = committed(out / day) / split
            lines = (d / "_file_list.txt").read_text().splitlines()
            files = sorted(f.name for f in d.glob("*.parquet"))
            assert int(lines[0]) == len(files) == len(lines) - 1 and sorted(lines[1:]) == files
            meta = json.loads((d / "_metadata.json").read_text())
            assert {s["file_name"]: s["num_rows"] for s in meta["file_stats"]} == {
                f: pq.ParquetFile(d / f).metadata.num_rows for f in files}
            names = pq.read_schema(d / files[0]).names
            assert [c["col_name"] for c in meta["cats"]] == CAT_COLUMNS
            assert [c["col_name"] for c in meta["conts"]] == INT_COLUMNS
            assert [c["col_name"] for c in meta["labels"]] == [LABEL]
            for c in meta["cats"] + meta["conts"] + meta["labels"]:
                assert names[c["index"]] == c["col_name"]
            schema = pq.read_schema(d / files[0])
            assert schema.field(LABEL).type == pa.float32()      # copied as float by the reader
            assert all(schema.field(c).type == pa.int64() for c in CAT_COLUMNS)
            assert all(schema.field(c).type == pa.float32() for c in INT_COLUMNS)


def test_the_hugectr_output_holds_the_same_values_as_the_default(for_hugectr):
    root, out, _ = for_hugectr
    for day in ("day=0", "day=1"):
        for split in ("train", "eval"):
            for f in sorted((committed(out / day) / split).glob("*.parquet")):
                a = pq.read_table(f).to_pandas()
                b = pq.read_table(committed(root / "processed" / day) / split / f.name).to_pandas()
                floats = [*INT_COLUMNS, LABEL]
                assert (a[floats].dtypes == np.float32).all() and b[LABEL].dtype != np.float32
                assert (a[floats].to_numpy() == b[floats].to_numpy().astype(np.float32)).all()
                assert a[CAT_COLUMNS].equals(b[CAT_COLUMNS]) and list(a.columns) == list(b.columns)


def test_hugectr_output_must_be_a_local_or_mounted_folder(fitted):
    root, _, _ = fitted
    with pytest.raises(SystemExit, match="reads no gs://"):
        preprocess.preprocess([str(root / "extracted" / "day=0")], "gs://bucket/processed", None,
                              str(root / "workflow"), hugectr=True)


def test_a_window_is_staged_under_unique_names_with_one_metadata(for_hugectr, tmp_path):
    _, out, _ = for_hugectr
    splits = [str(committed(out / d) / "train") for d in ("day=0", "day=1")]
    staged = hugectr_data.stage(splits, str(tmp_path / "train"))
    paths = hugectr_data.read_file_list(staged["file_list"])
    meta = json.loads((tmp_path / "train" / "_metadata.json").read_text())
    # the reader looks for _metadata.json in the folder of the list's first file, by base name
    assert os.path.dirname(paths[0]) == str(tmp_path / "train")
    assert len({os.path.basename(p) for p in paths}) == len(paths) == staged["files"]
    assert [s["file_name"] for s in meta["file_stats"]] == [os.path.basename(p) for p in paths]
    assert staged["rows"] == sum(pq.ParquetFile(p).metadata.num_rows for p in paths) == \
        sum(pq.ParquetFile(f).metadata.num_rows for s in splits for f in sorted(os.scandir(s), key=lambda e: e.name)
            if f.name.endswith(".parquet"))


def test_staging_refuses_what_the_reader_would_misread(for_hugectr, fitted, tmp_path):
    root, out, _ = for_hugectr
    with pytest.raises(hugectr_data.HugeCTRDataError, match="not preprocessed with --hugectr"):
        hugectr_data.stage([str(committed(root / "processed" / "day=0") / "train")], str(tmp_path / "a"))
    with pytest.raises(hugectr_data.HugeCTRDataError, match="column I1 is double"):
        hugectr_data.metadata_for(str(committed(root / "processed" / "day=0") / "train"))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(hugectr_data.HugeCTRDataError, match="no parquet files"):
        hugectr_data.metadata_for(str(empty))
    # a split whose metadata no longer describes its files (rewritten since)
    copy = tmp_path / "copy"
    import shutil
    shutil.copytree(committed(out / "day=0") / "train", copy)
    meta = json.loads((copy / "_metadata.json").read_text())
    meta["file_stats"][0]["num_rows"] += 1
    (copy / "_metadata.json").write_text(json.dumps(meta))
    with pytest.raises(hugectr_data.HugeCTRDataError, match="does not describe the files"):
        hugectr_data.stage([str(copy)], str(tmp_path / "c"))
    (tmp_path / "bad_list.txt").write_text("3\na.parquet\n")
    with pytest.raises(hugectr_data.HugeCTRDataError, match="number of files"):
        hugectr_data.read_file_list(str(tmp_path / "bad_list.txt"))


def test_slot_size_array_comes_from_the_fitted_workflow(for_hugectr, fitted):
    root, out, res = for_hugectr
    wf_sizes = json.loads((committed(root / "workflow") / "meta.json").read_text())["embedding_sizes"]
    slots = hugectr_data.slot_size_array(res["embedding_sizes"])
    assert slots == [wf_sizes[c] for c in CAT_COLUMNS] and len(slots) == 26
    # preprocess --hugectr declares it with each partition; train_hugectr reads it from there
    for day in ("day=0", "day=1"):
        assert json.loads((committed(out / day) / "_preprocess.json").read_text())["slot_size_array"] == slots
    plain = committed(root / "processed" / "day=0") / "_preprocess.json"
    assert "slot_size_array" not in json.loads(plain.read_text())
    # every id stays inside its slot, so id + the cumulative offset lands in the slot's own rows
    frame = pq.read_table(committed(out / "day=0") / "train").to_pandas()
    assert all(int(frame[c].max()) < s and int(frame[c].min()) >= 0 for c, s in zip(CAT_COLUMNS, slots, strict=True))
    with pytest.raises(hugectr_data.HugeCTRDataError, match="C26"):
        hugectr_data.slot_size_array({c: 3 for c in CAT_COLUMNS[:-1]})


@pytest.mark.parametrize("arch", [dict(embedding_dim=16, cross_layers=6, mlp_dims=[1024, 1024]),
                                  dict(embedding_dim=8, cross_layers=0, mlp_dims=[64]),
                                  dict(embedding_dim=4, cross_layers=2, mlp_dims=[])])
def test_the_hugectr_graph_is_the_pytorch_dcn(arch):
    slots = [int(v) for v in np.random.default_rng(1).integers(2, 500, size=26)]
    graph = DCNGraph(slots, arch["embedding_dim"], arch["cross_layers"], arch["mlp_dims"])
    model = DCN(DCNConfig(slots, embedding_dim=arch["embedding_dim"], num_cross_layers=arch["cross_layers"],
                          mlp_dims=arch["mlp_dims"]))
    widths, params = graph.widths(), graph.parameters()
    kinds = [layer.kind for layer in graph.layers()]
    assert kinds[:4] == ["Input", "SparseEmbedding", "Reshape", "Concat"] and kinds[-1] == "BinaryCrossEntropyLoss"
    assert kinds.count("InnerProduct") == len(arch["mlp_dims"]) + 1 == len(
        [m for m in model.mlp if isinstance(m, torch.nn.Linear)]) + 1
    assert kinds.count("Dropout") == len(arch["mlp_dims"])
    # x0: [dense, embeddings], the width every cross layer works on
    assert widths["concat1"] == graph.x0_width == 13 + 26 * arch["embedding_dim"]
    if arch["cross_layers"]:
        assert widths["multicross1"] == model.cross[0].w.numel()
        assert params["multicross1"] == sum(p.numel() for p in model.cross.parameters())
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)] + [model.head]
    fcs = [layer for layer in graph.layers() if layer.kind == "InnerProduct"]
    for fc, lin in zip(fcs, linears, strict=True):
        assert (widths[fc.bottom[0]], fc.params["num_output"]) == (lin.in_features, lin.out_features)
        assert params[fc.top[0]] == sum(p.numel() for p in lin.parameters())
    assert params["sparse_embedding1"] == model.embedding.weight.numel()
    assert sum(params.values()) == sum(p.numel() for p in model.parameters())
    assert widths["concat2"] == model.head.in_features and widths["logit"] == 1


def _save_like_hugectr(folder, prefix, iteration, sparse=True, opt=True):
    n = hugectr_files.names(prefix, iteration)
    (folder / n["dense"]).write_bytes(b"\0" * 8)
    if opt:
        (folder / n["dense_optimizer"]).write_bytes(b"\0" * 8)
        (folder / n["sparse_optimizer"][0]).write_bytes(b"\0" * 8)
    if sparse:
        (folder / n["sparse"][0]).mkdir()
        (folder / n["sparse"][0] / "key").write_bytes(b"\0" * 8)
        (folder / n["sparse"][0] / "emb_vector").write_bytes(b"\0" * 64)


def test_warm_start_finds_the_latest_complete_set_of_files(tmp_path):
    with pytest.raises(hugectr_files.WarmStartError, match="switching trainers needs a full retrain"):
        hugectr_files.find(str(tmp_path / "hugectr"))
    d = tmp_path / "hugectr"
    d.mkdir()
    (d / "graph.json").write_text("{}")
    (d / "config.json").write_text("{}")
    _save_like_hugectr(d, "dcn", 300)
    _save_like_hugectr(d, "dcn", 450, sparse=False)      # interrupted: no embedding saved
    found = hugectr_files.find(str(d))
    assert found.iteration == 300 and found.dense.endswith("dcn_dense_300.model")
    assert found.dense_optimizer.endswith("dcn_opt_dense_300.model")
    assert [os.path.basename(s) for s in found.sparse] == ["dcn0_sparse_300.model"]
    assert [os.path.basename(s) for s in found.sparse_optimizer] == ["dcn0_opt_sparse_300.model"]
    _save_like_hugectr(d, "dcn", 600, opt=False)
    found = hugectr_files.find(str(d))
    assert found.iteration == 600 and found.dense_optimizer is None and found.sparse_optimizer == ()
    assert "without optimizer states" in found.describe()
    (d / "config.json").unlink()
    with pytest.raises(hugectr_files.WarmStartError, match="config.json"):
        hugectr_files.find(str(d))
    (d / "graph.json").unlink()
    with pytest.raises(hugectr_files.WarmStartError, match="graph.json"):
        hugectr_files.find(str(d))
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(hugectr_files.WarmStartError, match="no complete HugeCTR model"):
        hugectr_files.find(str(empty))


@pytest.fixture(scope="module")
def hugectr_model(tmp_path_factory, fitted):
    """A model.onnx as train_hugectr writes it (the served signature; criteo_merlin.hugectr.hugectr_onnx
    converts HugeCTR's own files, tests/images/merlin/test_hugectr_onnx.py), here the PyTorch DCN
    on the fitted workflow's slots."""
    from criteo_merlin.train import torch_compat

    root, full, _ = fitted
    slots = [int(full["embedding_sizes"][c]) for c in CAT_COLUMNS]
    torch.manual_seed(0)
    model = DCN(DCNConfig(slots, embedding_dim=4, num_cross_layers=2, mlp_dims=[16])).eval()
    path = tmp_path_factory.mktemp("onnx") / "model.onnx"
    torch.onnx.export(ServingDCN(model).eval(), (torch.zeros(2, 26, dtype=torch.long), torch.zeros(2, 13)),
                      str(path), input_names=["cat_ids", "dense"], output_names=["ctr"],
                      dynamic_axes={"cat_ids": {0: "n"}, "dense": {0: "n"}, "ctr": {0: "n"}},
                      opset_version=13, **torch_compat.onnx_export_kwargs())
    return model, path, slots


@pytest.mark.parametrize("external", [False, True], ids=["inline", "external-data"])
def test_export_packages_a_hugectr_model_in_the_same_version_layout(hugectr_model, fitted, tmp_path, external):
    import onnx

    from criteo_merlin.export import onnx_files
    from criteo_merlin.export.triton.criteo_serving import CTRModel

    model, path, slots = hugectr_model
    root, _, _ = fitted
    trained = str(tmp_path / "train")
    with storage.staged_partition(trained) as staging:
        os.makedirs(os.path.join(staging, "hugectr"))
        # as train_hugectr writes it; threshold 0: the weights in model.onnx.data, as past 2 GiB
        assert onnx_files.save(onnx.load(str(path)), os.path.join(staging, "model.onnx"),
                               threshold=0 if external else None) == external
        files = tmp_path / "files"
        files.mkdir()
        (files / "graph.json").write_text("{}")
        _save_like_hugectr(files, "dcn", 40)
        for f in files.iterdir():
            shutil.move(f, os.path.join(staging, "hugectr", f.name))  # a folder: no rename on gcsfuse
        config = {"slot_sizes": slots, "embedding_dim": 4, "cross_layers": 2, "mlp_dims": [16], "dropout": 0.5}
        with open(os.path.join(staging, "hugectr", "config.json"), "w") as fh:
            json.dump(config, fh)
    res = export.export(trained, str(root / "workflow"), str(tmp_path / "package"), trainer="hugectr")
    pkg = committed(tmp_path / "package")
    have = {p.name for p in pkg.iterdir()}
    assert {"model.onnx", "model.py", "criteo_serving.py", "criteo_kernel", "config.pbtxt", "preprocessing",
            "hugectr", "export.json", "_SUCCESS"} <= have and "checkpoint.pt" not in have
    info = json.loads((pkg / "export.json").read_text())
    assert info["trainer"] == res["trainer"] == "hugectr" and info["model_config"] == config
    assert hugectr_files.find(str(pkg / "hugectr")).iteration == 40   # the next run's warm start
    served = CTRModel(str(pkg))
    rng = np.random.default_rng(0)
    p = served.predict(rng.normal(size=(64, 13)).astype(np.float32) ** 2,
                       rng.integers(-1, 2**31, size=(64, 26)).astype(np.int64))
    assert p.shape == (64,) and np.all((p >= 0) & (p <= 1))
    assert ("model.onnx.data" in have) == external and info["onnx_files"] == onnx_files.files(str(pkg))
    if external:  # the package's model is the trained one, its weights read from the data file
        assert (pkg / "model.onnx").stat().st_size < 100_000 < (pkg / "model.onnx.data").stat().st_size
        cats = rng.integers(0, 2, size=(32, 26)).astype(np.int64)
        dense = rng.normal(size=(32, 13)).astype(np.float32)
        with torch.no_grad():
            want = ServingDCN(model)(torch.from_numpy(cats), torch.from_numpy(dense)).numpy()
        (got,) = served.session.run(["ctr"], {"cat_ids": cats, "dense": dense})
        assert np.abs(got - want).max() < 1e-5
        return
    # a model that is not the served signature is refused, naming it
    from onnx import TensorProto, helper

    other = helper.make_model(helper.make_graph(
        [helper.make_node("Identity", ["dense"], ["label"])], "g",
        [helper.make_tensor_value_info("dense", TensorProto.FLOAT, [None, 13])],
        [helper.make_tensor_value_info("label", TensorProto.FLOAT, [None, 13])]))
    with storage.staged_partition(str(tmp_path / "bad")) as staging:
        onnx.save(other, os.path.join(staging, "model.onnx"))
    with pytest.raises(SystemExit, match="model.onnx: the ONNX model's signature"):
        export.export(str(tmp_path / "bad"), str(root / "workflow"), str(tmp_path / "package2"), trainer="hugectr")


def test_the_trainer_builds_its_graph_from_the_workflow_or_continues_the_parents(for_hugectr):
    _, out, res = for_hugectr
    part = str(out / "day=0")
    slots = hugectr_data.slot_size_array(res["embedding_sizes"])
    fresh = train_hugectr.graph_for(part, None, 8, 3, [64, 32], None)
    assert (fresh.slot_sizes, fresh.embedding_dim, fresh.cross_layers, fresh.mlp_dims, fresh.dropout) == \
        (slots, 8, 3, [64, 32], 0.5)
    parent = {"slot_sizes": slots, "embedding_dim": 4, "cross_layers": 1, "mlp_dims": [16], "dropout": 0.2}
    warm = train_hugectr.graph_for(part, parent, None, None, None, None)
    assert (warm.embedding_dim, warm.cross_layers, warm.mlp_dims, warm.dropout) == (4, 1, [16], 0.2)
    with pytest.raises(SystemExit, match="another workflow's"):
        train_hugectr.graph_for(part, {**parent, "slot_sizes": [s + 1 for s in slots]}, None, None, None, None)
    with pytest.raises(SystemExit, match="needs embedding_dim"):
        train_hugectr.graph_for(part, None, None, 3, [64], None)
    root = for_hugectr[0]
    with pytest.raises(SystemExit, match="not preprocessed for HugeCTR.*--hugectr"):
        train_hugectr.graph_for(str(root / "processed" / "day=0"), None, 8, 3, [64], None)


def test_train_hugectr_says_where_it_runs_when_hugectr_is_missing(for_hugectr, tmp_path):
    if HUGECTR:
        pytest.skip("HugeCTR is installed here (test_hugectr_gpu.py trains with it)")
    _, out, _ = for_hugectr
    with pytest.raises(SystemExit, match="HugeCTR runs only in the merlin image's hugectr target"):
        train_hugectr.train([str(out / "day=0")], str(tmp_path / "t"), None, 1, 1024, 0.001, 8, 2, [16])
    assert train_hugectr.iterations(10_000, 4096, 2) == 5 and train_hugectr.iterations(1, 4096, 1) == 1
