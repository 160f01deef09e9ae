"""The served ONNX signature (criteo_kernel.signature), checked on every model a version ships,
whichever trainer made it: PyTorch's export (criteo_merlin.export.export) or HugeCTR's saved files converted
by criteo_merlin.hugectr.hugectr_onnx.
"""
from __future__ import annotations

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
