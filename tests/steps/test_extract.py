import gzip
import json

import pyarrow.parquet as pq
import pytest

from criteo_steps import extract, synth


def test_extract_splits_and_publishes(tmp_path):
    synth.main(["--out", str(tmp_path / "raw"), "--days", "0", "--rows", "2000", "--gz"])
    out = tmp_path / "ex" / "day=0"
    res = extract.extract(extract.find_day_file(str(tmp_path / "raw"), 0), str(out))
    assert res["rows"] == 2000 and res["eval_rows"] == 200 and res["malformed_rows"] == 0
    assert (out / "_SUCCESS").exists()
    assert pq.read_table(out / "train").num_rows == 1800
    assert pq.read_table(out / "eval").schema.names[:3] == ["label", "I1", "I2"]
    # no staging folders left behind
    assert [p.name for p in (tmp_path / "ex").iterdir()] == ["day=0"]


def test_rerun_replaces_partition(tmp_path):
    synth.main(["--out", str(tmp_path / "raw"), "--days", "0", "--rows", "1000"])
    for _ in range(2):
        extract.extract(str(tmp_path / "raw" / "day_0"), str(tmp_path / "ex" / "day=0"))
    assert [p.name for p in (tmp_path / "ex").iterdir()] == ["day=0"]
    assert pq.read_table(tmp_path / "ex" / "day=0" / "train").num_rows == 900


def test_wrong_field_count_is_counted_not_guessed(tmp_path):
    good = "\t".join(["1"] + ["3"] * 13 + ["deadbeef"] * 26)
    bad = "\t".join(["0"] + ["3"] * 13 + ["deadbeef"] * 20)
    (tmp_path / "day_0").write_text("\n".join([good, bad, good]) + "\n")
    res = extract.extract(str(tmp_path / "day_0"), str(tmp_path / "ex"))
    assert res["rows"] == 2 and res["malformed_rows"] == 1
    stats = json.loads((tmp_path / "ex" / "_extract.json").read_text())
    assert stats["malformed_examples"][0]["fields"] == 34


def test_missing_and_truncated_files_fail_with_file_name(tmp_path):
    with pytest.raises(extract.ExtractError, match=r"raw day 4 not found: expected .*day_4 or .*day_4.gz"):
        extract.find_day_file(str(tmp_path), 4)
    data = gzip.compress(("\t".join(["1"] + ["3"] * 13 + ["deadbeef"] * 26) + "\n").encode() * 5000)
    (tmp_path / "day_1.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(extract.ExtractError, match=r"day_1.gz: cannot be read"):
        extract.extract(str(tmp_path / "day_1.gz"), str(tmp_path / "ex1"))
    assert not (tmp_path / "ex1").exists()
