"""HugeCTR's saved DCN read with numpy (no HugeCTR, no hugectr2onnx): graph.json walked into the
plan of what the files hold, the dense weights file, the sparse folders. hugectr_onnx turns them
into the served ONNX model.

The layout, as read in NVIDIA-Merlin/HugeCTR at tags v24.06.00 and v25.03.00 (the files below are
the same in both for what is used here):

- graph.json (HugeCTR/src/pybind/add_dense_layer.cpp, save_graph_to_json; pybind/model.cpp,
  graph_to_json): {"layers": [Data, the embeddings, the dense layers in the order added]}. Before
  writing, Model::graph_analysis (pybind/model_compile.cpp) inserts a `Slice` layer for every tensor
  that more than one dense layer reads (here concat1, read by MultiCross and the first
  InnerProduct): top `<name>_slice<i>`, each range the whole width, placed before the first reader,
  whose bottoms are renamed. The file's order is the order the dense layers are built in.
- the dense file (core23_network.cpp, Network::download_params_to_host): the training network's
  weight buffer written raw, float32, no header. Its tensors are allocated in creation order
  (core23/details/unitary_buffer.cpp: insertion order, alignment sizeof(float) per
  trainable_layer.hpp, so no padding), i.e. layer by layer in graph.json's order, each layer's
  set_weight(i) in index order:
    InnerProduct (layers/fully_connected_layer.cu): weight {in, out} row-major (the cuBLAS call
      reads it as the column-major out x in matrix: y = x @ W), then bias {1, out};
    MultiCross v1, projection_dim 0 (layers/multi_cross_layer.cu): per cross layer i, weight
      {1, d} then bias {1, d} (set_weight(2i), set_weight(2i+1)): w0 b0 w1 b1 ...
  hugectr2onnx reads it the same way (onnx_converter/hugectr2onnx/hugectr_loader.py: one running
  offset over the layers in graph.json's order; InnerProduct in x out + out; MultiCross w, b per layer).
- a sparse folder (embeddings/distributed_slot_sparse_embedding_hash.cu, dump_parameters): `key`,
  the table's keys as int64 (long long, whatever the key type), and `emb_vector`, float32 x
  embedding_vec_size per key, in the same order; no header. The keys are the reader's: the
  Parquet reader adds the exclusive cumulative sum of DataReaderParams' slot_size_array to each
  column's id (pybind/add_input.cpp slot_offset; data_readers/parquet_data_converter.cu).
- the embedding lookup (embeddings/forward_per_gpu_functor.cu): combiner sum over each slot's keys;
  one key per slot (nnz_per_slot 1) gives that key's row, [N, slots, E]. Outside training the
  hash table is only read (HashTable::get_mark, hashtable/nv_hashtable.cu) and a key it does not
  hold contributes 0.0f to the sum: a key never trained on embeds to zeros. Here: table rows
  for keys absent from `key` are zeros (hugectr2onnx does the same: its row 0, reserved for
  "non-existing keys", is zeros).
- MultiCross v1 forward (MultiCrossForwardFunctor): x_{l+1} = x0 * (x_l . w_l) + x_l + b_l.
- Dropout (layers/dropout_layer.cu): inverted dropout (scale 1/(1-rate)) in training, a copy
  otherwise: the identity here.
- BinaryCrossEntropyLoss: its first bottom is the logit; the probability is Sigmoid(logit)
  (hugectr2onnx turns the loss into a Sigmoid too).
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from .hugectr_dcn import DCNGraph

EMBEDDINGS = ("DistributedSlotSparseEmbeddingHash",)
FLOAT32 = np.dtype("<f4")
INT64 = np.dtype("<i8")


class HugeCTRFileError(ValueError):
    """A saved file that does not match the graph, or a graph this converter does not handle."""


# --- the graph ---------------------------------------------------------------------------------

def graph_layers(graph: DCNGraph) -> list[dict]:
    """DCNGraph's layers as HugeCTR's graph.json lists them (save_graph_to_json after
    graph_analysis: the Slice layers for tensors read twice, the readers' bottoms renamed). The
    fields the converter reads, and the JSON names; the embedding's workspace, vocabulary and
    optimizer, which graph_to_json writes from the solver, are left out."""
    layers = graph.layers()
    usage: dict[str, int] = {}
    for layer in layers:
        if layer.kind not in ("Input", "SparseEmbedding"):
            for b in layer.bottom:
                usage[b] = usage.get(b, 0) + 1
    widths = graph.widths()
    sliced: dict[str, int] = {}
    out: list[dict] = []
    for layer in layers:
        p = layer.params
        if layer.kind == "Input":
            label, dense, sparse = layer.top
            out.append({"type": "Data", "label": {"top": label, "label_dim": p["label_dim"]},
                        "dense": {"top": dense, "dense_dim": p["dense_dim"]},
                        "sparse": [{"top": sparse, "nnz_per_slot": [1] * p["slots"], "is_fixed_length": True,
                                    "slot_num": p["slots"]}]})
            continue
        if layer.kind == "SparseEmbedding":
            out.append({"type": "DistributedSlotSparseEmbeddingHash", "bottom": layer.bottom[0], "top": layer.top[0],
                        "sparse_embedding_hparam": {"embedding_vec_size": p["embedding_vec_size"],
                                                    "combiner": p["combiner"]}})
            continue
        bottoms = []
        for b in layer.bottom:
            if usage.get(b, 0) > 1:
                if b not in sliced:
                    sliced[b] = 0
                    out.append({"type": "Slice", "bottom": b, "top": [f"{b}_slice{i}" for i in range(usage[b])],
                                "ranges": [[0, widths[b]]] * usage[b]})
                bottoms.append(f"{b}_slice{sliced[b]}")
                sliced[b] += 1
            else:
                bottoms.append(b)
        cfg: dict = {"type": layer.kind, "bottom": bottoms[0] if len(bottoms) == 1 else bottoms,
                     "top": layer.top[0] if len(layer.top) == 1 else list(layer.top)}
        if layer.kind == "Reshape":
            cfg.update(leading_dim=p["leading_dim"], time_step=0)
        elif layer.kind == "Concat":
            cfg["axis"] = 1
        elif layer.kind == "MultiCross":
            cfg["mc_param"] = {"num_layers": p["num_layers"]}
        elif layer.kind == "InnerProduct":
            cfg["fc_param"] = {"num_output": p["num_output"]}
        elif layer.kind == "Dropout":
            cfg["rate"] = p["dropout_rate"]
        out.append(cfg)
    return out


def read_graph_json(path: str) -> list[dict]:
    with open(path) as fh:
        try:
            return list(json.load(fh)["layers"])
        except (ValueError, KeyError, TypeError) as exc:
            raise HugeCTRFileError(f"{path}: not a HugeCTR graph (model.graph_to_json): {exc}") from None


def tensor_names(value) -> list[str]:
    return list(value) if isinstance(value, list) else [value]


@dataclass(frozen=True)
class Weight:
    layer: str           # the layer's top tensor
    name: str            # "weight" / "bias" (InnerProduct), "weight<i>" / "bias<i>" (MultiCross)
    shape: tuple[int, ...]

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))


@dataclass(frozen=True)
class Plan:
    """What the graph says the files hold: the layers, each tensor's width, the dense file's
    tensors in file order, and the embeddings (top, vector size)."""

    layers: list[dict]
    widths: dict
    dense: list[Weight]
    embeddings: list[tuple[str, int]]
    slots: int
    num_dense: int

    @property
    def dense_bytes(self) -> int:
        return 4 * sum(w.size for w in self.dense)


def plan(layers: list[dict]) -> Plan:
    """Walk the layers as HugeCTR builds them; refuse what this converter does not handle."""
    widths: dict = {}
    dense: list[Weight] = []
    embeddings: list[tuple[str, int]] = []
    slots = num_dense = None
    for cfg in layers:
        kind = cfg.get("type")
        if kind == "Data":
            if isinstance(cfg["label"]["top"], list):
                raise HugeCTRFileError("graph.json: more than one label is not the DCN's graph")
            widths[cfg["label"]["top"]] = int(cfg["label"]["label_dim"])
            num_dense = widths[cfg["dense"]["top"]] = int(cfg["dense"]["dense_dim"])
            if len(cfg["sparse"]) != 1:
                raise HugeCTRFileError(f"graph.json: {len(cfg['sparse'])} sparse inputs, the DCN has one")
            sp = cfg["sparse"][0]
            if max(sp["nnz_per_slot"]) != 1:
                raise HugeCTRFileError("graph.json: more than one key per slot; the served model takes one id "
                                       "per column")
            slots = int(sp["slot_num"])
            widths[sp["top"]] = (slots, 1)
            continue
        bottoms, tops = tensor_names(cfg.get("bottom", [])), tensor_names(cfg.get("top", []))
        missing = [b for b in bottoms if b not in widths]
        if missing:
            raise HugeCTRFileError(f"graph.json: layer {kind} {tops} reads {missing}, which no earlier layer writes")
        ins = [widths[b] for b in bottoms]
        if kind in EMBEDDINGS:
            hp = cfg["sparse_embedding_hparam"]
            if hp.get("combiner", "sum") != "sum":
                raise HugeCTRFileError(f"graph.json: embedding combiner {hp.get('combiner')!r}, not sum")
            vec = int(hp["embedding_vec_size"])
            widths[tops[0]] = (ins[0][0], vec)
            embeddings.append((tops[0], vec))
        elif kind == "Reshape":
            if cfg.get("selected") is not None or int(cfg.get("time_step") or 0) != 0:
                raise HugeCTRFileError("graph.json: only a plain Reshape [N, slots, E] -> [N, slots * E] is handled")
            if not isinstance(ins[0], tuple) or ins[0][0] * ins[0][1] != int(cfg["leading_dim"]):
                raise HugeCTRFileError(f"graph.json: Reshape {tops[0]} to {cfg['leading_dim']} from {ins[0]} is not "
                                       "the embeddings flattened per sample")
            widths[tops[0]] = int(cfg["leading_dim"])
        elif kind == "Concat":
            if any(isinstance(w, tuple) for w in ins) or int(cfg.get("axis", 1)) != 1:
                raise HugeCTRFileError(f"graph.json: Concat {tops[0]}: only 2-D inputs along axis 1 are handled")
            widths[tops[0]] = sum(ins)
        elif kind == "Slice":
            for top, (lo, hi) in zip(tops, cfg["ranges"], strict=True):
                if not 0 <= lo < hi <= ins[0]:
                    raise HugeCTRFileError(f"graph.json: Slice range {[lo, hi]} outside {bottoms[0]}'s width {ins[0]}")
                widths[top] = hi - lo
        elif kind == "MultiCross":
            mc = cfg.get("mc_param", {})
            if int(mc.get("projection_dim", 0) or 0):
                raise HugeCTRFileError("graph.json: MultiCross with projection_dim (DCN v2) is not the DCN (v1)")
            d = ins[0]
            for i in range(int(mc["num_layers"])):
                dense += [Weight(tops[0], f"weight{i}", (d,)), Weight(tops[0], f"bias{i}", (d,))]
            widths[tops[0]] = d
        elif kind == "InnerProduct":
            if isinstance(ins[0], tuple):
                raise HugeCTRFileError(f"graph.json: InnerProduct {tops[0]} on a 3-D input is not handled")
            n = int(cfg["fc_param"]["num_output"])
            dense += [Weight(tops[0], "weight", (ins[0], n)), Weight(tops[0], "bias", (n,))]
            widths[tops[0]] = n
        elif kind in ("ReLU", "Dropout"):
            widths[tops[0]] = ins[0]
        elif kind == "BinaryCrossEntropyLoss":
            if ins[0] != 1:
                raise HugeCTRFileError(f"graph.json: the loss reads {bottoms[0]} of width {ins[0]}, not a logit")
            widths[tops[0]] = 1
        else:
            raise HugeCTRFileError(f"graph.json: layer type {kind!r} is not handled by "
                                   "criteo_merlin.hugectr.hugectr_onnx (the DCN's layers only)")
    if slots is None or not embeddings or layers[-1].get("type") != "BinaryCrossEntropyLoss":
        raise HugeCTRFileError("graph.json: not the DCN's graph (Data, an embedding, ..., BinaryCrossEntropyLoss)")
    return Plan(layers, widths, dense, embeddings, slots, num_dense)


# --- the files ---------------------------------------------------------------------------------

def _read(path: str, dtype: np.dtype, expected_bytes: int | None, what: str) -> np.ndarray:
    actual = os.path.getsize(path)
    if expected_bytes is not None and actual != expected_bytes:
        raise HugeCTRFileError(f"{path}: {actual} bytes, the graph expects {expected_bytes} ({what})")
    if actual % dtype.itemsize:
        raise HugeCTRFileError(f"{path}: {actual} bytes is not a whole number of {dtype.itemsize}-byte values ({what})")
    return np.fromfile(path, dtype=dtype)


def read_dense(path: str, p: Plan) -> dict[tuple[str, str], np.ndarray]:
    """{(layer top, name): float32 array} from the dense file, in its order (see the module docstring)."""
    flat = _read(path, FLOAT32, p.dense_bytes,
                 " + ".join(f"{w.layer}.{w.name} {'x'.join(map(str, w.shape))}" for w in p.dense) + " float32")
    out, at = {}, 0
    for w in p.dense:
        out[(w.layer, w.name)] = flat[at:at + w.size].reshape(w.shape).astype(np.float32)
        at += w.size
    return out


def read_embedding(folder: str, vec_size: int, rows: int) -> np.ndarray:
    """The [rows, vec_size] table of one sparse folder: row k is key k's vector, zeros for the keys
    the folder does not hold (what HugeCTR's lookup gives outside training)."""
    key_path, vec_path = os.path.join(folder, "key"), os.path.join(folder, "emb_vector")
    for f in (key_path, vec_path):
        if not os.path.isfile(f):
            raise HugeCTRFileError(f"{f}: missing (a HugeCTR sparse folder holds key and emb_vector)")
    keys = _read(key_path, INT64, None, "int64 keys")
    vectors = _read(vec_path, FLOAT32, len(keys) * vec_size * 4,
                    f"{len(keys)} keys in {key_path} x {vec_size} float32").reshape(len(keys), vec_size)
    if len(keys):
        bad = keys[(keys < 0) | (keys >= rows)]
        if len(bad):
            raise HugeCTRFileError(f"{key_path}: {len(bad)} key(s) outside 0..{rows - 1} (the slots' cumulative "
                                   f"vocabulary), e.g. {int(bad[0])}: another workflow's slot sizes?")
        if len(np.unique(keys)) != len(keys):
            raise HugeCTRFileError(f"{key_path}: repeated keys")
    table = np.zeros((rows, vec_size), dtype=np.float32)
    table[keys] = vectors
    return table
