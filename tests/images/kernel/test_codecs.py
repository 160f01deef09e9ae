"""The raw field codecs: hex hashes, integers, labels; errors name the source, the column and the rule."""
import numpy as np
import pyarrow as pa
import pytest

from criteo_kernel.codecs import DecodeError, decode_hex_column, decode_label, encode_hex, parse_int_column

pytestmark = pytest.mark.unit


def test_hex_round_trip_and_missing():
    values = np.array([0, 1, 0xDEADBEEF, 2**32 - 1], dtype=np.uint64)
    text = [bytes(r).decode() for r in encode_hex(values)]
    assert text == ["00000000", "00000001", "deadbeef", "ffffffff"]
    arr = pa.array(text + ["", None])
    assert decode_hex_column(arr).tolist() == [0, 1, 0xDEADBEEF, 2**32 - 1, -1, -1]


@pytest.mark.parametrize("bad", ["DEADBEEF", "xyz", "123456789", "12345g78"])
def test_bad_hex_names_column_and_value(bad):
    with pytest.raises(DecodeError, match=r"day_9: column C7: 1 value\(s\) are not 8 lowercase hex"):
        decode_hex_column(pa.array(["deadbeef", bad]), "C7", "day_9")


def test_int_column_parse_and_error():
    assert np.isnan(parse_int_column(pa.array(["3", "", "-2"]), "I2")[1])
    assert parse_int_column(pa.array(["3", "", "-2"]), "I2")[[0, 2]].tolist() == [3.0, -2.0]
    with pytest.raises(DecodeError, match="column I4: not an integer"):
        parse_int_column(pa.array(["1", "abc"]), "I4", "day_1")


def test_labels_decode_and_anything_else_is_named():
    assert decode_label(pa.array(["0", "1", "1"])).tolist() == [0, 1, 1]
    with pytest.raises(DecodeError, match=r"day_3: column label: 2 value\(s\) are not 0 or 1 \(first at row 1: '2'\)"):
        decode_label(pa.array(["0", "2", "", "1"]), "day_3")
