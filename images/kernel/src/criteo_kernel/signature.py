"""The served model's signature: what Triton takes and returns, and the ONNX graph inside.

Triton model `criteo_dcn` (python backend): inputs `dense_raw` FP32 [13] (the raw integer
counts, NaN = missing) and `cat_hash` INT64 [26] (the 32-bit hashes, -1 = missing); output `ctr`
FP32 [1]. Inside, the exported lookup tables turn those into the ONNX graph's inputs `cat_ids`
INT64 [26] and `dense` FP32 [13], whose output is `ctr`.
"""
from __future__ import annotations

from .schema import CAT_COLUMNS, INT_COLUMNS

MODEL_NAME = "criteo_dcn"       # the default; the Variable criteo_model_name may name another
DENSE_INPUT = "dense_raw"
CATEGORICAL_INPUT = "cat_hash"
OUTPUT = "ctr"
ONNX_CATEGORICAL_INPUT = "cat_ids"
ONNX_DENSE_INPUT = "dense"
NUM_DENSE = len(INT_COLUMNS)
NUM_CATEGORICAL = len(CAT_COLUMNS)
MAX_BATCH_SIZE = 8192
