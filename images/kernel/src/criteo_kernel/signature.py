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
# The dynamic batcher's max_queue_delay_microseconds: how long Triton holds a request that arrives
# while the model instance is idle, hoping for more to batch with it. 0: none. Triton still batches
# every request that queued while the instance was busy (the next execute takes them all, up to
# MAX_BATCH_SIZE), so under load requests are batched just the same; only a request that finds the
# instance idle no longer waits. With one instance, the wait cannot help: the instance would sit idle
# for it. Deploy writes the Variable criteo_triton_max_queue_delay_us over this default (see
# operators/hooks/model_repository.py); images/triton/README.md has the measurements.
MAX_QUEUE_DELAY_US = 0


def triton_config(name: str = MODEL_NAME, max_queue_delay_us: int = MAX_QUEUE_DELAY_US) -> str:
    """The model's config.pbtxt; deploy pins its version_policy to the production version and
    writes the queue delay setting into its dynamic_batching."""
    return f"""name: "{name}"
backend: "python"
max_batch_size: {MAX_BATCH_SIZE}
input [
  {{ name: "{DENSE_INPUT}" data_type: TYPE_FP32 dims: [ {NUM_DENSE} ] }},
  {{ name: "{CATEGORICAL_INPUT}" data_type: TYPE_INT64 dims: [ {NUM_CATEGORICAL} ] }}
]
output [
  {{ name: "{OUTPUT}" data_type: TYPE_FP32 dims: [ 1 ] }}
]
version_policy: {{ latest: {{ num_versions: 1 }} }}
instance_group [ {{ kind: KIND_CPU count: 1 }} ]
dynamic_batching {{ max_queue_delay_microseconds: {int(max_queue_delay_us)} }}
"""
