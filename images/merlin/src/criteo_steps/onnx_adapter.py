"""hugectr2onnx's model -> the served signature (criteo_kernel.signature), so that the version's
serving code, evaluate and Triton treat a HugeCTR model exactly like the PyTorch one.

hugectr2onnx (HugeCTR v25.03, onnx_converter/hugectr2onnx/graph_builder.py) names the ONNX inputs
after the graph's tensors: `dense` FLOAT [N, 13] and, with the embeddings converted, `data1` INT64
[N, 26, 1] holding keys *offset by the cumulative slot_size_array* (its tests add the offsets to
the per-slot ids before inference, as the Parquet reader did in training); the output is the
label tensor's name, FLOAT [N, 1], a probability (the loss becomes a Sigmoid). The adapter puts
in front of it: `cat_ids` INT64 [N, 26] (per-column ids, as the PyTorch model takes them) + the
offsets, reshaped to [N, 26, 1]; and renames the output `ctr`.
"""
from __future__ import annotations

import numpy as np

from criteo_kernel.signature import NUM_CATEGORICAL, NUM_DENSE, ONNX_CATEGORICAL_INPUT, ONNX_DENSE_INPUT, OUTPUT


class SignatureError(ValueError):
    pass


def _dims(value_info) -> list:
    return [d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim]


def _elem(value_info) -> int:
    return value_info.type.tensor_type.elem_type


def signature(model) -> dict:
    """{"inputs": {name: (elem_type, dims)}, "outputs": {...}} of a loaded ONNX model (graph inputs
    that are initializers excluded)."""
    inits = {i.name for i in model.graph.initializer}
    return {"inputs": {i.name: (_elem(i), _dims(i)) for i in model.graph.input if i.name not in inits},
            "outputs": {o.name: (_elem(o), _dims(o)) for o in model.graph.output}}


def check_served_signature(model) -> None:
    """The served ONNX signature: cat_ids INT64 [N,26], dense FLOAT [N,13] -> ctr FLOAT [N,1]."""
    from onnx import TensorProto

    want = {"inputs": {ONNX_CATEGORICAL_INPUT: (TensorProto.INT64, [None, NUM_CATEGORICAL]),
                       ONNX_DENSE_INPUT: (TensorProto.FLOAT, [None, NUM_DENSE])},
            "outputs": {OUTPUT: (TensorProto.FLOAT, [None, 1])}}
    got = signature(model)
    if got != want:
        raise SignatureError(f"the ONNX model's signature is {got}, not the served one {want}")


def adapt(model, slot_sizes: list[int]):
    """The hugectr2onnx model wrapped to the served signature (a new onnx.ModelProto)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    sig = signature(model)
    keys = [n for n, (t, d) in sig["inputs"].items() if t == TensorProto.INT64 and len(d) == 3]
    dense = [n for n, (t, d) in sig["inputs"].items() if t == TensorProto.FLOAT and len(d) == 2]
    if len(keys) != 1 or len(dense) != 1 or len(sig["inputs"]) != 2:
        raise SignatureError(f"expected hugectr2onnx's inputs (dense FLOAT [N,13] and one INT64 [N,26,1] key "
                             f"input, embeddings converted), got {sig['inputs']}")
    (key,), (dense_name,) = keys, dense
    if sig["inputs"][key][1][1:] != [len(slot_sizes), 1] or sig["inputs"][dense_name][1][1:] != [NUM_DENSE]:
        raise SignatureError(f"input shapes {sig['inputs']} do not match {len(slot_sizes)} slots and {NUM_DENSE} "
                             "dense features")
    if len(sig["outputs"]) != 1:
        raise SignatureError(f"expected one output (the probability), got {sig['outputs']}")
    (out_name,) = sig["outputs"]

    out = onnx.ModelProto()
    out.CopyFrom(model)
    g = out.graph
    offsets = np.concatenate([[0], np.cumsum(slot_sizes)[:-1]]).astype(np.int64)
    prefix = [
        helper.make_node("Add", [ONNX_CATEGORICAL_INPUT, "slot_offsets"], ["offset_keys"], name="add_slot_offsets"),
        helper.make_node("Reshape", ["offset_keys", "key_shape"], [key], name="keys_to_slots"),
    ]
    if dense_name != ONNX_DENSE_INPUT:
        prefix.append(helper.make_node("Identity", [ONNX_DENSE_INPUT], [dense_name], name="dense_input"))
    for i, node in enumerate(prefix):
        g.node.insert(i, node)
    g.node.append(helper.make_node("Identity", [out_name], [OUTPUT], name="ctr_output"))
    g.initializer.extend([numpy_helper.from_array(offsets, "slot_offsets"),
                          numpy_helper.from_array(np.array([-1, len(slot_sizes), 1], dtype=np.int64), "key_shape")])
    kept = [i for i in g.input if i.name not in (key, dense_name)]
    del g.input[:]
    g.input.extend([
        helper.make_tensor_value_info(ONNX_CATEGORICAL_INPUT, TensorProto.INT64, ["batch", len(slot_sizes)]),
        helper.make_tensor_value_info(ONNX_DENSE_INPUT, TensorProto.FLOAT, ["batch", NUM_DENSE]), *kept])
    del g.output[:]
    g.output.extend([helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["batch", 1])])
    onnx.checker.check_model(out)
    return out
