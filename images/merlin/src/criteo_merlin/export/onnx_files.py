"""model.onnx on disk, with its weights inline or, past the threshold, in model.onnx.data beside it
(criteo_kernel.onnx_size). Both trainers write through `save`; the export step moves PyTorch's own
output through `rewrite` and HugeCTR's through `copy`.

Every reader opens the model by path (onnx.load, onnx.checker.check_model, onnxruntime), so the
data file is found in the model's folder; a model past 2 GiB cannot be handled as bytes at all.
"""
from __future__ import annotations

import os
import shutil

import numpy as np

from criteo_kernel.artifacts import MODEL_ONNX, MODEL_ONNX_DATA
from criteo_kernel.onnx_size import EXTERNAL_TENSOR_MIN, external_data_threshold


def serialized_bytes(model) -> int:
    """The size of `model` serialized with its weights inline, from the initializers' shapes and the
    (small) nodes' own sizes: ModelProto.ByteSize() itself fails past 2 GiB under upb's protobuf."""
    from onnx import helper

    graph = model.graph
    weights = sum(int(np.prod(t.dims, dtype=np.int64)) * helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
                  for t in graph.initializer)
    rest = sum(p.ByteSize() for part in (graph.node, graph.input, graph.output, graph.value_info) for p in part)
    return weights + rest


def save(model, path: str, threshold: int | None = None) -> bool:
    """Write `model` (an onnx.ModelProto) at `path`, its initializers of EXTERNAL_TENSOR_MIN bytes or
    more in one MODEL_ONNX_DATA file beside it when the model is larger than `threshold` (default:
    criteo_kernel.onnx_size.external_data_threshold()); check the written model. True when the data
    went external. `model`'s tensors are moved to the file, so it is spent afterwards."""
    import onnx

    threshold = external_data_threshold() if threshold is None else threshold
    data = os.path.join(os.path.dirname(os.path.abspath(path)), MODEL_ONNX_DATA)
    if os.path.exists(data):  # onnx appends to an existing data file (external_data_helper.save_external_data)
        os.remove(data)
    external = serialized_bytes(model) > threshold
    if external:
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                        location=MODEL_ONNX_DATA, size_threshold=EXTERNAL_TENSOR_MIN)
    else:
        onnx.save_model(model, path)
    onnx.checker.check_model(path)  # by path: the only way a model past 2 GiB can be checked
    return external


def rewrite(src: str, dst: str, threshold: int | None = None) -> bool:
    """torch.onnx.export's output at `src` -> `dst` in this layout. Past 2 GiB the TorchScript
    exporter writes one external file per tensor, named after it, into src's folder
    (torch/csrc/jit/serialization/export.cpp, CreateExternalFile); a model under the threshold
    that torch wrote inline is moved as it is."""
    import onnx

    threshold = external_data_threshold() if threshold is None else threshold
    if os.listdir(os.path.dirname(os.path.abspath(src))) == [os.path.basename(src)] \
            and os.path.getsize(src) <= threshold:
        shutil.move(src, dst)
        return False
    return save(onnx.load(src), dst, threshold)  # onnx.load reads torch's external files beside src


def files(folder: str) -> list[str]:
    """The model's files in `folder`: model.onnx, and model.onnx.data when it has one."""
    return [name for name in (MODEL_ONNX, MODEL_ONNX_DATA) if os.path.exists(os.path.join(folder, name))]


def copy(src_folder: str, dst_folder: str) -> list[str]:
    """Copy the model's files from one folder to another; the names copied."""
    names = files(src_folder)
    for name in names:
        shutil.copy(os.path.join(src_folder, name), os.path.join(dst_folder, name))
    return names


def total_bytes(folder: str) -> int:
    return sum(os.path.getsize(os.path.join(folder, name)) for name in files(folder))
