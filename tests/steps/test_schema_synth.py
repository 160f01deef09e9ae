import gzip

import numpy as np
import pyarrow as pa
import pytest

from criteo_steps import synth
from criteo_steps.schema import DecodeError, decode_hex_column, encode_hex, parse_int_column


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


def _lines(path, opener=open):
    with opener(path, "rt") as fh:
        return fh.read().splitlines()


@pytest.mark.parametrize("gz", [False, True])
def test_generator_writes_exact_criteo_format(tmp_path, gz):
    args = ["--out", str(tmp_path), "--days", "0-1", "--rows", "5000", "--chunk-rows", "2000"]
    synth.main(args + (["--gz"] if gz else []))
    name = "day_1.gz" if gz else "day_1"
    lines = _lines(tmp_path / name, gzip.open if gz else open)
    assert len(lines) == 5000
    fields = [line.split("\t") for line in lines]
    assert {len(f) for f in fields} == {40}
    labels = {f[0] for f in fields}
    assert labels == {"0", "1"}
    ints = np.array([[v for v in f[1:14]] for f in fields])
    assert all(v == "" or v.lstrip("-").isdigit() for v in ints.ravel())
    assert (ints == "").mean(axis=0)[11] > 0.5           # I12 mostly missing, as in Criteo
    assert (ints[:, 1] == "-1").any() or (ints[:, 1] == "-2").any()  # I2 has negatives
    cats = np.array([f[14:] for f in fields])
    ok = np.vectorize(lambda v: v == "" or (len(v) == 8 and all(c in "0123456789abcdef" for c in v)))(cats)
    assert ok.all()
    assert (cats == "").any()
    assert len(set(cats[:, 2])) > 500 and len(set(cats[:, 8])) <= 3  # heavy and tiny vocabularies
    ctr = np.mean([f[0] == "1" for f in fields])
    assert 0.03 < ctr < 0.4


def test_drift_switch_shifts_features_and_clicks():
    base_l, base_i, base_c = synth.generate_day(5, 40000, seed=7, drift_from_day=None)
    drift_l, drift_i, drift_c = synth.generate_day(5, 40000, seed=7, drift_from_day=3)
    same_l, _, same_c = synth.generate_day(5, 40000, seed=7, drift_from_day=None)
    assert (base_c == same_c).all() and (base_l == same_l).all()      # deterministic
    assert np.nanmedian(drift_i[:, 0]) > 1.5 * np.nanmedian(base_i[:, 0])  # counts scale up
    top_base = np.bincount(np.unique(base_c[:, 4], return_inverse=True)[1]).argmax()
    assert np.unique(base_c[:, 4])[top_base] != np.unique(drift_c[:, 4])[
        np.bincount(np.unique(drift_c[:, 4], return_inverse=True)[1]).argmax()]  # popularity moves
    assert abs(base_l.mean() - drift_l.mean()) > 0.02  # the click function moves the CTR
