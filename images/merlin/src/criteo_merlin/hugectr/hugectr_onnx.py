"""HugeCTR's saved DCN -> the served ONNX model (criteo_kernel.signature), with no hugectr2onnx.

train_hugectr saves `graph.json` (model.graph_to_json), the dense weights (`*_dense_N.model`) and
one sparse folder per embedding (`*0_sparse_N.model/{key,emb_vector}`; criteo_merlin.hugectr.hugectr_files).
hugectr_saved reads them with numpy; this module writes the same function the PyTorch export serves: inputs
`cat_ids` INT64 [N,26] (per-column ids) and `dense` FLOAT [N,13], output `ctr` FLOAT [N,1].

The ONNX model uses opset 13 and IR version 7, and only onnx.helper / numpy_helper functions that
onnx 1.14 already has (make_node, make_graph, make_tensor_value_info, make_model, make_opsetid,
numpy_helper.from_array; no onnx.mapping), so that onnxruntime 1.15 (Merlin 24.06's pins) loads it as
well as current onnxruntime does.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from criteo_kernel.signature import NUM_CATEGORICAL, NUM_DENSE, ONNX_CATEGORICAL_INPUT, ONNX_DENSE_INPUT, OUTPUT

from .hugectr_dcn import DCNGraph
from .hugectr_saved import (
    EMBEDDINGS,
    HugeCTRFileError,
    Plan,
    graph_layers,
    plan,
    read_dense,
    read_embedding,
    read_graph_json,
    tensor_names,
)

OPSET = 13
IR_VERSION = 7           # opset 13's IR version: onnxruntime 1.15 and current ones load it


def slot_offsets(slot_sizes: Sequence[int]) -> np.ndarray:
    """What HugeCTR's reader adds to each column's id (pybind/add_input.cpp): the exclusive cumsum."""
    return np.concatenate([[0], np.cumsum(np.asarray(slot_sizes, dtype=np.int64))[:-1]]).astype(np.int64)


# --- the ONNX model ----------------------------------------------------------------------------

def build(p: Plan, weights: dict, tables: list[np.ndarray], slot_sizes: Sequence[int]):
    """The ONNX model (onnx.ModelProto) of the planned graph with the given weights."""
    from onnx import helper, numpy_helper

    nodes, inits = [], []

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def node(op: str, inputs: list[str], output: str, **attrs) -> str:
        nodes.append(helper.make_node(op, inputs, [output], name=f"{op}_{len(nodes)}", **attrs))
        return output

    names: dict[str, str] = {}          # HugeCTR tensor -> ONNX tensor

    def t(name: str) -> str:            # internal names cannot meet the served ones
        return f"hugectr/{name}"

    emb_index = 0
    for cfg in p.layers:
        kind = cfg["type"]
        if kind == "Data":
            names[cfg["dense"]["top"]] = ONNX_DENSE_INPUT
            keys = cfg["sparse"][0]["top"]         # the reader's keys: id + the slot's offset
            offsets = const("slot_offsets", slot_offsets(slot_sizes))
            names[keys] = node("Add", [ONNX_CATEGORICAL_INPUT, offsets], t(keys))
            continue
        bottoms = [names.get(b, b) for b in tensor_names(cfg.get("bottom", []))]   # the label is no ONNX tensor
        tops = tensor_names(cfg.get("top", []))
        top = t(tops[0])
        if kind in EMBEDDINGS:
            table = const(t(tops[0] + "/table"), tables[emb_index])
            emb_index += 1
            names[tops[0]] = node("Gather", [table, bottoms[0]], top, axis=0)     # [N, slots, E]
        elif kind == "Reshape":
            shape = const(t(tops[0] + "/shape"), np.array([-1, int(cfg["leading_dim"])], dtype=np.int64))
            names[tops[0]] = node("Reshape", [bottoms[0], shape], top)
        elif kind == "Concat":
            names[tops[0]] = node("Concat", bottoms, top, axis=1)
        elif kind == "Slice":
            for name, (lo, hi) in zip(tops, cfg["ranges"], strict=True):
                if (lo, hi) == (0, p.widths[tensor_names(cfg["bottom"])[0]]):
                    names[name] = node("Identity", [bottoms[0]], t(name))
                else:
                    args = [const(t(f"{name}/{k}"), np.array([v], dtype=np.int64))
                            for k, v in (("starts", lo), ("ends", hi), ("axes", 1))]
                    names[name] = node("Slice", [bottoms[0], *args], t(name))
        elif kind == "MultiCross":
            x0 = x = bottoms[0]
            n = int(cfg["mc_param"]["num_layers"])
            for i in range(n):
                w = const(t(f"{tops[0]}/weight{i}"), weights[(tops[0], f"weight{i}")].reshape(-1, 1))
                b = const(t(f"{tops[0]}/bias{i}"), weights[(tops[0], f"bias{i}")])
                dot = node("MatMul", [x, w], t(f"{tops[0]}/dot{i}"))                # [N, 1]
                scaled = node("Mul", [x0, dot], t(f"{tops[0]}/scaled{i}"))
                shifted = node("Add", [x, b], t(f"{tops[0]}/shifted{i}"))
                x = node("Add", [scaled, shifted], top if i == n - 1 else t(f"{tops[0]}/x{i + 1}"))
            names[tops[0]] = x
        elif kind == "InnerProduct":
            w = const(t(tops[0] + "/weight"), weights[(tops[0], "weight")])           # [in, out]
            b = const(t(tops[0] + "/bias"), weights[(tops[0], "bias")])               # [out]
            names[tops[0]] = node("Gemm", [bottoms[0], w, b], top)
        elif kind == "ReLU":
            names[tops[0]] = node("Relu", bottoms, top)
        elif kind == "Dropout":
            names[tops[0]] = node("Identity", bottoms, top)
        elif kind == "BinaryCrossEntropyLoss":
            node("Sigmoid", [bottoms[0]], OUTPUT)
    return _model(nodes, inits)


def _model(nodes: list, inits: list):
    """The ModelProto of the graph's nodes and initializers, with the served signature; checked here
    when it can be serialized (under 2 GiB), else by onnx_files.save once written."""
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        nodes, "criteo_dcn_hugectr",
        [helper.make_tensor_value_info(ONNX_CATEGORICAL_INPUT, TensorProto.INT64, ["batch", NUM_CATEGORICAL]),
         helper.make_tensor_value_info(ONNX_DENSE_INPUT, TensorProto.FLOAT, ["batch", NUM_DENSE])],
        [helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1])],
        inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                              producer_name="criteo_merlin.hugectr.hugectr_onnx")
    model.ir_version = IR_VERSION
    from criteo_kernel.onnx_size import PROTOBUF_LIMIT

    from ..export.onnx_files import serialized_bytes

    # past 2 GiB onnx can check the model only by path: onnx_files.save checks it once written
    if serialized_bytes(model) <= PROTOBUF_LIMIT:
        onnx.checker.check_model(model)
    return model


def _layout(p: Plan) -> list:
    return [(w.layer, w.name, w.shape) for w in p.dense] + [("embedding", top, vec) for top, vec in p.embeddings]


def convert(graph: DCNGraph, dense_model: str, sparse_models: Sequence[str], graph_json: str | None = None):
    """The served ONNX model (onnx.ModelProto) from HugeCTR's saved files. `graph` gives the slot
    sizes (the reader's slot_size_array, which graph.json does not hold) and the architecture;
    `graph_json`, the file HugeCTR wrote, when given, is the layer order read and must describe the
    same weights as `graph` (else another run's files were mixed in)."""
    if len(graph.slot_sizes) != NUM_CATEGORICAL or graph.num_dense != NUM_DENSE:
        raise HugeCTRFileError(f"the served model takes {NUM_CATEGORICAL} ids and {NUM_DENSE} dense features, the "
                               f"graph {len(graph.slot_sizes)} and {graph.num_dense}")
    declared = plan(graph_layers(graph))
    p = plan(read_graph_json(graph_json)) if graph_json else declared
    if graph_json and (_layout(p) != _layout(declared) or p.slots != declared.slots):
        raise HugeCTRFileError(f"{graph_json} describes other weights than the architecture in config.json: "
                               f"{_layout(p)} != {_layout(declared)}")
    if p.num_dense != NUM_DENSE or p.slots != NUM_CATEGORICAL:
        raise HugeCTRFileError(f"the graph's inputs are not {NUM_DENSE} dense features and {NUM_CATEGORICAL} slots")
    if len(sparse_models) != len(p.embeddings):
        raise HugeCTRFileError(f"{len(sparse_models)} sparse folder(s) for {len(p.embeddings)} embedding(s)")
    weights = read_dense(dense_model, p)
    rows = int(sum(graph.slot_sizes))
    tables = [read_embedding(folder, vec, rows) for folder, (_, vec) in zip(sparse_models, p.embeddings, strict=True)]
    return build(p, weights, tables, graph.slot_sizes)
