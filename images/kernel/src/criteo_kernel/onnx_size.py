"""When a model.onnx keeps its weights in ONNX external data, and how big a model may be.

protobuf serializes and parses one message of at most 2 GiB - 1 byte, and an ONNX model is one
ModelProto. Past that, ONNX's external data format keeps the tensors' bytes in a file beside the
model, which then holds only their location, offset and length (onnx/onnx
docs/ExternalData.md). Both export paths write it the same way: every initializer of 1 KiB or more
in one file, `MODEL_ONNX_DATA` (model.onnx.data), beside model.onnx, whenever the serialized model
would be larger than `external_data_threshold()` (criteo_merlin.export.onnx_files). Everything that
reads the model opens it by path, never by bytes: onnx.load, onnx.checker.check_model and
onnxruntime.InferenceSession then find the data file in the model's folder.

Once the weights are external, protobuf's limit is gone (the offsets are 64-bit); what remains is
memory: the exporter and each serving replica hold the whole model. `model_bytes` is the
embedding tables' share, what the plan checks against criteo_max_model_gib
(operators/pipeline/planning.py) before a full retrain trains a model it could not serve.
"""
from __future__ import annotations

import os

PROTOBUF_LIMIT = 2**31 - 1           # bytes: the largest message protobuf serializes or parses
# Overrides the threshold (bytes), so tests and the bench can write external data with small models.
EXTERNAL_DATA_ENV = "CRITEO_ONNX_EXTERNAL_DATA_BYTES"
EXTERNAL_TENSOR_MIN = 1024           # bytes: smaller tensors stay inline (onnx.save_model's own default)
FLOAT32 = 4


def external_data_threshold() -> int:
    """The serialized size (bytes) above which model.onnx keeps its weights in MODEL_ONNX_DATA:
    protobuf's limit, or $CRITEO_ONNX_EXTERNAL_DATA_BYTES."""
    raw = os.environ.get(EXTERNAL_DATA_ENV, "").strip()
    if not raw:
        return PROTOBUF_LIMIT
    try:
        value = int(raw)
    except ValueError:
        value = -1
    if not 0 <= value <= PROTOBUF_LIMIT:
        raise ValueError(f"{EXTERNAL_DATA_ENV}={raw!r}: expected a whole number of bytes, 0 to {PROTOBUF_LIMIT} "
                         "(protobuf's limit)")
    return value


def model_bytes(embedding_rows: int, embedding_dim: int) -> int:
    """The float32 embedding tables of a DCN with `embedding_rows` rows in all: the bulk of its ONNX
    model (the dense layers are a few MB), whichever trainer made it."""
    return embedding_rows * embedding_dim * FLOAT32
