"""HugeCTR's saved files -> the served ONNX model (criteo_merlin.hugectr.hugectr_onnx), without HugeCTR.

The files are written here in HugeCTR's layout as read in its source (v24.06.00 / v25.03.00; see
the module's docstring): graph.json as graph_to_json writes it (the Slice layer graph_analysis adds
included), the dense file raw float32 (per cross layer w then b; per InnerProduct W [in, out]
row-major then b), the sparse folder's `key` int64 and `emb_vector` float32 x E in the same order,
the keys offset by the cumulative slot sizes. The converted model runs in onnxruntime and is
compared with a numpy forward pass written here, and with the PyTorch DCN holding the same weights.
"""
import copy
import json

import numpy as np
import pytest

pytest.importorskip("onnx", reason="the merlin image's code runs in the step environment: make test-steps")
pytest.importorskip("onnxruntime", reason="the merlin image's code runs in the step environment: make test-steps")
import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from criteo_merlin.export.onnx_adapter import check_served_signature  # noqa: E402
from criteo_merlin.hugectr.hugectr_dcn import DCNGraph  # noqa: E402
from criteo_merlin.hugectr.hugectr_onnx import IR_VERSION, OPSET, convert  # noqa: E402
from criteo_merlin.hugectr.hugectr_saved import HugeCTRFileError, graph_layers  # noqa: E402

pytestmark = pytest.mark.steps

SLOTS = [3, 5, 2, 7, 4, 6, 2, 3, 9, 5, 4, 3, 2, 8, 6, 5, 3, 2, 4, 7, 3, 5, 6, 2, 4, 3]
E = 4
GRAPH = DCNGraph(SLOTS, embedding_dim=E, cross_layers=2, mlp_dims=[8, 4], dropout=0.5)
D = 13 + 26 * E
OFFSETS = np.concatenate([[0], np.cumsum(SLOTS)[:-1]]).astype(np.int64)
VOCAB = sum(SLOTS)

# What model.graph_to_json writes for GRAPH (one GPU, Adam), spelled out by hand from
# HugeCTR/src/pybind/add_dense_layer.cpp save_graph_to_json and model_compile.cpp graph_analysis:
# concat1 feeds MultiCross and fc1, so a Slice is inserted before MultiCross and both readers renamed.
HUGECTR_GRAPH_JSON = {"layers": [
    {"type": "Data", "label": {"top": "label", "label_dim": 1}, "dense": {"top": "dense", "dense_dim": 13},
     "sparse": [{"top": "data1", "nnz_per_slot": [1] * 26, "is_fixed_length": True, "slot_num": 26}]},
    {"type": "DistributedSlotSparseEmbeddingHash", "bottom": "data1", "top": "sparse_embedding1",
     "sparse_embedding_hparam": {"workspace_size_per_gpu_in_mb": 16, "max_vocabulary_size_global": 87381,
                                 "embedding_vec_size": E, "combiner": "sum"},
     "optimizer": {"update_type": "Global", "type": "Adam",
                   "adam_hparam": {"beta1": 0.9, "beta2": 0.999, "epsilon": 1e-8}}},
    {"type": "Reshape", "bottom": "sparse_embedding1", "top": "reshape1", "leading_dim": 26 * E, "time_step": 0},
    {"type": "Concat", "bottom": ["dense", "reshape1"], "top": "concat1", "axis": 1},
    {"type": "Slice", "bottom": "concat1", "top": ["concat1_slice0", "concat1_slice1"], "ranges": [[0, D], [0, D]]},
    {"type": "MultiCross", "bottom": "concat1_slice0", "top": "multicross1", "mc_param": {"num_layers": 2}},
    {"type": "InnerProduct", "bottom": "concat1_slice1", "top": "fc1", "fc_param": {"num_output": 8}},
    {"type": "ReLU", "bottom": "fc1", "top": "relu1"},
    {"type": "Dropout", "bottom": "relu1", "top": "dropout1", "rate": 0.5},
    {"type": "InnerProduct", "bottom": "dropout1", "top": "fc2", "fc_param": {"num_output": 4}},
    {"type": "ReLU", "bottom": "fc2", "top": "relu2"},
    {"type": "Dropout", "bottom": "relu2", "top": "dropout2", "rate": 0.5},
    {"type": "Concat", "bottom": ["multicross1", "dropout2"], "top": "concat2", "axis": 1},
    {"type": "InnerProduct", "bottom": "concat2", "top": "logit", "fc_param": {"num_output": 1}},
    {"type": "BinaryCrossEntropyLoss", "bottom": ["logit", "label"], "top": "loss"},
]}


def random_weights(graph: DCNGraph, seed: int = 0) -> dict:
    """Weights in HugeCTR's shapes: table [vocab, E]; cross (w [d], b [d]) per layer; InnerProducts
    (W [in, out], b [out]), the MLP's then the head's."""
    rng = np.random.default_rng(seed)
    d = graph.x0_width
    fcs, width = [], d
    for h in graph.mlp_dims:
        fcs.append((rng.normal(0, 0.3, (width, h)), rng.normal(0, 0.1, h)))
        width = h
    fcs.append((rng.normal(0, 0.3, (d + width, 1)), rng.normal(0, 0.1, 1)))
    return {"table": rng.normal(0, 0.5, (sum(graph.slot_sizes), graph.embedding_dim)).astype(np.float32),
            "cross": [(rng.normal(0, 0.1, d).astype(np.float32), rng.normal(0, 0.1, d).astype(np.float32))
                      for _ in range(graph.cross_layers)],
            "fcs": [(w.astype(np.float32), b.astype(np.float32)) for w, b in fcs]}


def write_hugectr_files(folder, weights: dict, keys=None, graph_json: dict | None = HUGECTR_GRAPH_JSON) -> dict:
    """graph.json, dcn_dense_10.model and dcn0_sparse_10.model/{key,emb_vector} as HugeCTR saves
    them; `keys`: the keys the table holds (its order is the hash table's, not sorted)."""
    folder.mkdir(parents=True, exist_ok=True)
    if graph_json is not None:
        (folder / "graph.json").write_text(json.dumps(graph_json, indent=2))
    dense = folder / "dcn_dense_10.model"
    parts = []
    for w, b in weights["cross"]:                       # MultiCross: w0 b0 w1 b1 ...
        parts += [w, b]
    for w, b in weights["fcs"]:                         # InnerProduct: W [in, out] row-major, then b
        parts += [w.reshape(-1), b]
    np.concatenate(parts).astype("<f4").tofile(dense)
    sparse = folder / "dcn0_sparse_10.model"
    sparse.mkdir()
    if keys is None:
        keys = np.random.default_rng(1).permutation(len(weights["table"]))
    keys = np.asarray(keys, dtype=np.int64)
    keys.astype("<i8").tofile(sparse / "key")
    weights["table"][keys].astype("<f4").tofile(sparse / "emb_vector")
    return {"graph": str(folder / "graph.json") if graph_json is not None else None, "dense": str(dense),
            "sparse": [str(sparse)]}


def reference(weights: dict, cats: np.ndarray, dense: np.ndarray, slot_sizes=SLOTS, held=None) -> np.ndarray:
    """The DCN in numpy (float64): HugeCTR's forward on those weights, outside training."""
    offsets = np.concatenate([[0], np.cumsum(slot_sizes)[:-1]])
    keys = cats + offsets
    table = weights["table"].astype(np.float64)
    if held is not None:                                # keys the table does not hold embed to zeros
        table = np.where(np.isin(np.arange(len(table)), held)[:, None], table, 0.0)
    x0 = np.concatenate([dense.astype(np.float64), table[keys].reshape(len(cats), -1)], axis=1)
    x = x0
    for w, b in weights["cross"]:
        x = x0 * (x @ w.astype(np.float64))[:, None] + x + b
    h = x0
    for w, b in weights["fcs"][:-1]:
        h = np.maximum(h @ w + b, 0.0)                  # Dropout: the identity outside training
    w, b = weights["fcs"][-1]
    logit = np.concatenate([x, h], axis=1) @ w + b
    return 1.0 / (1.0 + np.exp(-logit))


def batch(n: int, seed: int = 2, slot_sizes=SLOTS):
    rng = np.random.default_rng(seed)
    cats = np.stack([rng.integers(0, s, size=n) for s in slot_sizes], 1).astype(np.int64)
    return cats, rng.normal(size=(n, 13)).astype(np.float32)


def run(model, cats, dense) -> np.ndarray:
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    (out,) = sess.run(["ctr"], {"cat_ids": cats, "dense": dense})
    return out


def test_the_converted_model_is_the_dcn_on_hugectrs_files(tmp_path):
    weights = random_weights(GRAPH)
    files = write_hugectr_files(tmp_path / "hugectr", weights)
    model = convert(GRAPH, files["dense"], files["sparse"], graph_json=files["graph"])
    cats, dense = batch(500)
    got = run(model, cats, dense)
    want = reference(weights, cats, dense)
    assert got.shape == (500, 1) and got.dtype == np.float32
    assert np.abs(got - want).max() < 1e-5
    assert 0.05 < want.std()                            # the weights make the inputs matter
    # the same model from the architecture alone (no graph.json): graph_layers is graph_to_json's order
    assert np.abs(run(convert(GRAPH, files["dense"], files["sparse"]), cats, dense) - want).max() < 1e-5


def test_the_model_has_the_served_signature_and_loads_on_old_runtimes(tmp_path):
    files = write_hugectr_files(tmp_path / "hugectr", random_weights(GRAPH))
    model = convert(GRAPH, files["dense"], files["sparse"], graph_json=files["graph"])
    check_served_signature(model)
    onnx.checker.check_model(model)
    # opset 13 / IR 7: what onnxruntime 1.15 (Merlin 24.06's pin) loads as well as current ones
    assert [(o.domain, o.version) for o in model.opset_import] == [("", OPSET)] == [("", 13)]
    assert model.ir_version == IR_VERSION == 7
    assert {n.op_type for n in model.graph.node} <= {"Add", "Gather", "Reshape", "Concat", "Identity", "Slice",
                                                     "MatMul", "Mul", "Gemm", "Relu", "Sigmoid"}
    saved = tmp_path / "model.onnx"
    onnx.save(model, str(saved))
    cats, dense = batch(7)
    assert run(onnx.load(str(saved)), cats, dense).shape == (7, 1)


def test_graph_layers_is_what_graph_to_json_writes():
    """DCNGraph's layers in graph.json's form equal the hand-written HugeCTR file, but for the
    fields graph_to_json takes from the solver (workspace, vocabulary, optimizer)."""
    written = copy.deepcopy(HUGECTR_GRAPH_JSON["layers"])
    written[1].pop("optimizer")
    for k in ("workspace_size_per_gpu_in_mb", "max_vocabulary_size_global"):
        written[1]["sparse_embedding_hparam"].pop(k)
    assert graph_layers(GRAPH) == written


def test_keys_the_table_does_not_hold_embed_to_zeros(tmp_path):
    """HugeCTR outside training: a key missing from the hash table adds 0 to its slot's sum
    (forward_per_gpu_functor.cu, get_mark): its embedding is zeros."""
    weights = random_weights(GRAPH)
    held = np.array([k for k in np.random.default_rng(5).permutation(VOCAB) if k % 3], dtype=np.int64)
    model = convert(GRAPH, **_args(write_hugectr_files(tmp_path / "some", weights, keys=held)))
    cats, dense = batch(400)
    assert (~np.isin(cats + OFFSETS, held)).any(axis=1).mean() > 0.5   # most rows meet an unseen key
    got = run(model, cats, dense)
    assert np.abs(got - reference(weights, cats, dense, held=held)).max() < 1e-5
    # the same as a table holding every key, the unseen ones with zero vectors
    zeroed = dict(weights, table=np.where(np.isin(np.arange(VOCAB), held)[:, None], weights["table"], 0.0))
    full = convert(GRAPH, **_args(write_hugectr_files(tmp_path / "zeroed", zeroed)))
    assert np.abs(run(full, cats, dense) - got).max() < 1e-6
    # and not what the trained vectors would give
    everything = convert(GRAPH, **_args(write_hugectr_files(tmp_path / "all", weights)))
    assert np.abs(run(everything, cats, dense) - got).max() > 1e-3


def _args(files: dict) -> dict:
    return {"dense_model": files["dense"], "sparse_models": files["sparse"], "graph_json": files["graph"]}


@pytest.mark.parametrize("arch", [dict(cross_layers=0, mlp_dims=[8]), dict(cross_layers=3, mlp_dims=[]),
                                  dict(cross_layers=0, mlp_dims=[])])
def test_other_architectures(tmp_path, arch):
    graph = DCNGraph(SLOTS, embedding_dim=3, **arch)
    weights = random_weights(graph, seed=3)
    files = write_hugectr_files(tmp_path / "h", weights, graph_json={"layers": graph_layers(graph)})
    cats, dense = batch(200)
    got = run(convert(graph, **_args(files)), cats, dense)
    assert np.abs(got - reference(weights, cats, dense)).max() < 1e-5


def test_a_file_that_does_not_match_the_graph_is_refused_naming_it(tmp_path):
    weights = random_weights(GRAPH)
    files = write_hugectr_files(tmp_path / "hugectr", weights)
    expected = 4 * (2 * 2 * D + (D * 8 + 8) + (8 * 4 + 4) + ((D + 4) * 1 + 1))
    data = open(files["dense"], "rb").read()
    assert len(data) == expected
    with open(files["dense"], "wb") as fh:
        fh.write(data[:-4])
    with pytest.raises(HugeCTRFileError, match=rf"dcn_dense_10\.model: {expected - 4} bytes, the graph expects "
                                               rf"{expected}"):
        convert(GRAPH, **_args(files))
    with open(files["dense"], "wb") as fh:
        fh.write(data + b"\0" * 8)
    with pytest.raises(HugeCTRFileError, match=rf"{expected + 8} bytes, the graph expects {expected}"):
        convert(GRAPH, **_args(files))
    with open(files["dense"], "wb") as fh:
        fh.write(data)
    vec = tmp_path / "hugectr" / "dcn0_sparse_10.model" / "emb_vector"
    vec.write_bytes(vec.read_bytes()[:-2])
    with pytest.raises(HugeCTRFileError, match=rf"emb_vector: {VOCAB * E * 4 - 2} bytes, the graph expects "
                                               rf"{VOCAB * E * 4}"):
        convert(GRAPH, **_args(files))


def test_keys_of_another_workflow_and_a_mismatched_graph_are_refused(tmp_path):
    weights = random_weights(GRAPH)
    files = write_hugectr_files(tmp_path / "a", dict(weights, table=np.zeros((VOCAB + 1, E), np.float32)),
                                keys=np.arange(VOCAB + 1))
    with pytest.raises(HugeCTRFileError, match=rf"key: 1 key\(s\) outside 0\.\.{VOCAB - 1}"):
        convert(GRAPH, **_args(files))
    files = write_hugectr_files(tmp_path / "b", weights)
    other = DCNGraph(SLOTS, embedding_dim=E, cross_layers=2, mlp_dims=[8, 5])   # config.json != graph.json
    with pytest.raises(HugeCTRFileError, match="graph.json describes other weights"):
        convert(other, **_args(files))
    v2 = copy.deepcopy(HUGECTR_GRAPH_JSON)
    v2["layers"][5]["mc_param"]["projection_dim"] = 4
    (tmp_path / "b" / "graph.json").write_text(json.dumps(v2))
    with pytest.raises(HugeCTRFileError, match="DCN v2"):
        convert(GRAPH, **_args(files))
    mean = copy.deepcopy(HUGECTR_GRAPH_JSON)
    mean["layers"][1]["sparse_embedding_hparam"]["combiner"] = "mean"
    (tmp_path / "b" / "graph.json").write_text(json.dumps(mean))
    with pytest.raises(HugeCTRFileError, match="combiner 'mean'"):
        convert(GRAPH, **_args(files))


def test_the_pytorch_dcn_with_the_same_weights_is_the_same_model(tmp_path):
    """criteo_merlin.train.dcn is the same function: its parameters written as HugeCTR's files convert to
    a model that predicts what ServingDCN (the PyTorch export's graph) does."""
    torch = pytest.importorskip("torch")
    from criteo_merlin.train.dcn import DCN, DCNConfig, ServingDCN

    torch.manual_seed(0)
    model = DCN(DCNConfig(SLOTS, embedding_dim=E, num_cross_layers=2, mlp_dims=[8, 4], dropout=0.5)).eval()
    with torch.no_grad():
        for layer in model.cross:       # away from the initial values (b = 0, w ~ 0.01), so each term shows
            layer.w.normal_(0, 0.1)
            layer.b.normal_(0, 0.1)
        model.embedding.weight.normal_(0, 0.5)
    linears = [m for m in model.mlp if isinstance(m, torch.nn.Linear)] + [model.head]
    weights = {"table": model.embedding.weight.detach().numpy().copy(),
               "cross": [(c.w.detach().numpy().copy(), c.b.detach().numpy().copy()) for c in model.cross],
               # torch's Linear holds [out, in]; HugeCTR's InnerProduct [in, out]
               "fcs": [(lin.weight.detach().numpy().T.copy(), lin.bias.detach().numpy().copy()) for lin in linears]}
    files = write_hugectr_files(tmp_path / "hugectr", weights)
    cats, dense = batch(300)
    got = run(convert(GRAPH, **_args(files)), cats, dense)
    with torch.no_grad():
        want = ServingDCN(model)(torch.from_numpy(cats), torch.from_numpy(dense)).numpy()
    assert np.abs(got - want).max() < 1e-5 and 0.05 < want.std()


def test_past_the_threshold_the_weights_go_to_one_data_file_beside_the_model(tmp_path, monkeypatch):
    """train_hugectr's save (criteo_merlin.export.onnx_files), the threshold lowered from protobuf's 2 GiB
    to 0 through its environment variable: what a model past 2 GiB gets."""
    from criteo_kernel.onnx_size import EXTERNAL_DATA_ENV
    from criteo_merlin.export import onnx_files

    weights = random_weights(GRAPH)
    files = write_hugectr_files(tmp_path / "hugectr", weights)
    out = tmp_path / "out"
    out.mkdir()
    path = str(out / "model.onnx")
    monkeypatch.setenv(EXTERNAL_DATA_ENV, "0")
    assert onnx_files.save(convert(GRAPH, files["dense"], files["sparse"], graph_json=files["graph"]), path)
    assert sorted(p.name for p in out.iterdir()) == ["model.onnx", "model.onnx.data"]
    assert (out / "model.onnx.data").stat().st_size >= VOCAB * E * 4          # the table at least
    graph_only = onnx.load(path, load_external_data=False).graph
    external = {t.name for t in graph_only.initializer if t.data_location == onnx.TensorProto.EXTERNAL}
    assert {e.value for t in graph_only.initializer for e in t.external_data if e.key == "location"} == \
        {"model.onnx.data"}
    # every tensor of 1 KiB or more (the table among them), none inline
    assert external == {t.name for t in graph_only.initializer if not t.raw_data} and len(external) >= 1
    assert all(len(t.raw_data) < 1024 for t in graph_only.initializer)
    cats, dense = batch(300)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])   # by path: finds the data file
    (got,) = sess.run(["ctr"], {"cat_ids": cats, "dense": dense})
    assert np.abs(got - reference(weights, cats, dense)).max() < 1e-5
    assert np.abs(run(onnx.load(path), cats, dense) - got).max() == 0    # onnx.load reads it back too
    # saved again under the threshold: one file, the old data file gone (onnx would append to it)
    monkeypatch.delenv(EXTERNAL_DATA_ENV)
    assert not onnx_files.save(convert(GRAPH, files["dense"], files["sparse"]), path)
    assert [p.name for p in out.iterdir()] == ["model.onnx"]
    assert np.abs(run(onnx.load(path), cats, dense) - got).max() < 1e-6


def test_rewrite_gathers_one_file_per_tensor_into_the_data_file(tmp_path):
    """What torch.onnx.export writes past 2 GiB: one external file per tensor, named after it, beside
    the model (torch/csrc/jit/serialization/export.cpp, CreateExternalFile); here written by onnx's own
    all_tensors_to_one_file=False, the same layout. rewrite leaves model.onnx + model.onnx.data."""
    from criteo_merlin.export import onnx_files

    weights = random_weights(GRAPH)
    files = write_hugectr_files(tmp_path / "hugectr", weights)
    scratch, pkg = tmp_path / "scratch", tmp_path / "pkg"
    scratch.mkdir()
    pkg.mkdir()
    onnx.save_model(convert(GRAPH, files["dense"], files["sparse"]), str(scratch / "model.onnx"),
                    save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=1024)
    assert len(list(scratch.iterdir())) > 2
    assert onnx_files.rewrite(str(scratch / "model.onnx"), str(pkg / "model.onnx"), threshold=0)
    assert sorted(p.name for p in pkg.iterdir()) == ["model.onnx", "model.onnx.data"]
    cats, dense = batch(100)
    (got,) = ort.InferenceSession(str(pkg / "model.onnx")).run(["ctr"], {"cat_ids": cats, "dense": dense})
    assert np.abs(got - reference(weights, cats, dense)).max() < 1e-5
