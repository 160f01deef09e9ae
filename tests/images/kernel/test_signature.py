"""The served model's signature, and the Triton config rendered from it."""
import pytest

from criteo_kernel import signature
from criteo_kernel.schema import CAT_COLUMNS, COLUMNS, INT_COLUMNS, NUM_FIELDS, day_file_names, day_of_file

pytestmark = pytest.mark.unit


def test_the_triton_config_declares_the_signature():
    text = signature.triton_config()
    assert 'name: "criteo_dcn"' in text and 'backend: "python"' in text
    assert f"max_batch_size: {signature.MAX_BATCH_SIZE}" in text
    assert '{ name: "dense_raw" data_type: TYPE_FP32 dims: [ 13 ] }' in text
    assert '{ name: "cat_hash" data_type: TYPE_INT64 dims: [ 26 ] }' in text
    assert '{ name: "ctr" data_type: TYPE_FP32 dims: [ 1 ] }' in text
    assert "version_policy: { latest: { num_versions: 1 } }" in text   # deploy pins it to production
    # no wait for more requests by default (a request that finds the model idle runs at once);
    # deploy writes the Variable criteo_triton_max_queue_delay_us over it
    assert "dynamic_batching { max_queue_delay_microseconds: 0 }" in text and signature.MAX_QUEUE_DELAY_US == 0
    other = signature.triton_config(max_queue_delay_us=500)
    assert other == text.replace("max_queue_delay_microseconds: 0", "max_queue_delay_microseconds: 500")


def test_the_criteo_schema():
    assert NUM_FIELDS == 40 and COLUMNS[0] == "label" and len(INT_COLUMNS) == 13 and len(CAT_COLUMNS) == 26
    assert day_file_names(7) == ["day_7", "day_7.gz"]
    assert [day_of_file(n) for n in ("day_7", "day_12.gz", "day_4.tmp", ".staging-day_1", "notes")] == \
        [7, 12, None, None, None]
