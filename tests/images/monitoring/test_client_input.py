"""The inference client's input side: reading a raw day, bad lines and values, the rate limiter."""
import time

import numpy as np
import pytest

from criteo_kernel.codecs import DecodeError
from criteo_monitoring.errors import ReplayError
from criteo_monitoring.rate_limiter import RateLimiter
from criteo_monitoring.traffic import count_rows, read_batches, resolve_input

pytestmark = pytest.mark.unit


def rows(path):
    return path.read_text().splitlines()


def test_batches_cover_the_day_in_order_whatever_the_chunk(raw_days):
    whole = list(read_batches(str(raw_days / "day_1"), chunk_rows=10**6))
    pieces = list(read_batches(str(raw_days / "day_1"), chunk_rows=777))
    assert len(whole) == 1 and len(pieces) == -(-6000 // 777)
    assert [b.first_row for b in pieces] == list(range(0, 6000, 777))
    for name in ("label", "cat_hash"):
        assert np.array_equal(np.concatenate([getattr(b, name) for b in pieces]), getattr(whole[0], name))
    assert np.array_equal(np.concatenate([b.ints for b in pieces]), whole[0].ints, equal_nan=True)
    first = rows(raw_days / "day_1")[0].split("\t")
    b = whole[0]
    assert b.label[0] == int(first[0])
    assert [("" if np.isnan(v) else str(int(v))) for v in b.ints[0]] == first[1:14]
    assert [("" if h < 0 else f"{h:08x}") for h in b.cat_hash[0]] == first[14:]
    assert b.dense_raw.dtype == np.float32


def test_gz_and_row_count(raw_days, tmp_path):
    gz = str(raw_days / "day_2.gz")
    assert sum(len(b) for b in read_batches(gz)) == count_rows(gz) == 6000
    (tmp_path / "day_9").write_bytes(b"0" + b"\t" * 39 + b"\n" + b"1" + b"\t" * 39)  # no final newline
    assert count_rows(str(tmp_path / "day_9")) == 2
    assert resolve_input(str(raw_days), 2).endswith("day_2.gz")
    with pytest.raises(ReplayError, match="is a folder: give --day"):
        resolve_input(str(raw_days), None)
    with pytest.raises(ReplayError, match="day_7: raw day file not found"):
        resolve_input(str(tmp_path / "day_7"), 7)


def test_lines_with_the_wrong_field_count_are_skipped_and_reported(raw_days, tmp_path):
    lines = rows(raw_days / "day_1")[:100]
    lines[10] = "\t".join(lines[10].split("\t")[:39])
    lines[20] = lines[20] + "\textra"
    (tmp_path / "day_1").write_text("\n".join(lines) + "\n")
    seen = []
    got = list(read_batches(str(tmp_path / "day_1"), on_malformed=lambda *a: seen.append(a)))
    assert sum(len(b) for b in got) == 98
    assert [(line, fields) for line, fields, _ in seen] == [(11, 39), (21, 41)]


@pytest.mark.parametrize("column,value,rule", [("label", "2", "not 0 or 1"),
                                               ("C7", "XYZ", "not 8 lowercase hex digits"),
                                               ("I5", "n/a", "not an integer")])
def test_a_value_that_breaks_the_format_names_file_column_and_rule(raw_days, tmp_path, column, value, rule):
    from criteo_kernel.schema import COLUMNS

    lines = rows(raw_days / "day_1")[:50]
    fields = lines[30].split("\t")
    fields[COLUMNS.index(column)] = value
    lines[30] = "\t".join(fields)
    (tmp_path / "day_1").write_text("\n".join(lines) + "\n")
    with pytest.raises(DecodeError) as err:
        list(read_batches(str(tmp_path / "day_1")))
    message = str(err.value)
    assert str(tmp_path / "day_1") in message and f"column {column}" in message and rule in message, message


def test_rate_limiter_spaces_the_starts():
    limiter = RateLimiter(50)  # 20 ms apart
    t0 = time.monotonic()
    for _ in range(11):
        limiter.wait()
    assert time.monotonic() - t0 >= 0.19  # 10 intervals at least; no upper bound asserted (a busy machine)
    unlimited = RateLimiter(0)
    t0 = time.monotonic()
    for _ in range(1000):
        unlimited.wait()
    assert time.monotonic() - t0 < 1.0
