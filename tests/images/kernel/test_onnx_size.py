import pytest

from criteo_kernel.onnx_size import EXTERNAL_DATA_ENV, PROTOBUF_LIMIT, external_data_threshold, model_bytes

pytestmark = pytest.mark.unit


def test_the_threshold_is_protobufs_limit_unless_the_environment_lowers_it(monkeypatch):
    monkeypatch.delenv(EXTERNAL_DATA_ENV, raising=False)
    assert external_data_threshold() == PROTOBUF_LIMIT == 2**31 - 1
    monkeypatch.setenv(EXTERNAL_DATA_ENV, " 4096 ")
    assert external_data_threshold() == 4096
    for bad in ("2GiB", "-1", str(2**31)):
        monkeypatch.setenv(EXTERNAL_DATA_ENV, bad)
        with pytest.raises(ValueError, match=f"{EXTERNAL_DATA_ENV}=.*whole number of bytes"):
            external_data_threshold()


def test_model_bytes_are_the_float32_tables():
    # the figure: 35M rows at E=16 is past protobuf's 2 GiB
    assert model_bytes(35_000_000, 16) == 35_000_000 * 64 > PROTOBUF_LIMIT
    assert model_bytes(33_000_000, 16) < PROTOBUF_LIMIT
