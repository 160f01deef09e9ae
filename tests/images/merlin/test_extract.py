import gzip
import json

import pyarrow.parquet as pq
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
from criteo_kernel import storage  # noqa: E402
from criteo_steps import extract, synth  # noqa: E402

pytestmark = pytest.mark.steps


def test_extract_splits_and_publishes(tmp_path):
    synth.main(["--out", str(tmp_path / "raw"), "--days", "0", "--rows", "2000", "--gz"])
    out = tmp_path / "ex" / "day=0"
    res = extract.extract(storage.find_day_file(str(tmp_path / "raw"), 0), str(out))
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


def test_unreadable_files_are_recorded_for_the_gate_not_crashed_on(tmp_path):
    """Truncated gzip, binary garbage, an empty file: extract publishes what it read and says why
    it stopped (`read_error`); the validation gate fails the day on it."""
    line = "\t".join(["1"] + ["3"] * 13 + ["deadbeef"] * 26) + "\n"
    data = gzip.compress(line.encode() * 50_000)
    (tmp_path / "day_1.gz").write_bytes(data[: len(data) // 2])
    res = extract.extract(str(tmp_path / "day_1.gz"), str(tmp_path / "ex1"))
    assert res["read_error"]["kind"] == "truncated_gzip" and "end-of-stream" in res["read_error"]["message"]
    assert res["read_error"]["after_rows"] == res["rows"]
    assert (tmp_path / "ex1" / "_SUCCESS").exists()

    (tmp_path / "day_2").write_bytes(bytes((i * 7919 + 13) % 256 for i in range(100_000)))
    res = extract.extract(str(tmp_path / "day_2"), str(tmp_path / "ex2"))
    assert res["read_error"]["kind"] in ("not_text", "invalid_utf8") and res["rows"] == 0
    assert res["read_error"]["message"].isascii()  # the bytes are escaped, not copied into logs

    (tmp_path / "day_3").write_bytes(b"")
    res = extract.extract(str(tmp_path / "day_3"), str(tmp_path / "ex3"))
    assert res["rows"] == 0 and res["read_error"] is None
    assert sorted(p.name for p in (tmp_path / "ex3").rglob("*.parquet")) == ["part-00000.parquet"] * 2


def test_empty_fields_are_counted_per_column_over_the_whole_day(tmp_path):
    rows = ["\t".join(["0", "" if i % 4 == 0 else "5"] + ["1"] * 12 + ["" if i % 10 == 0 else "deadbeef"] * 26)
            for i in range(1000)]
    (tmp_path / "day_0").write_text("\n".join(rows) + "\n")
    res = extract.extract(str(tmp_path / "day_0"), str(tmp_path / "ex"), block_mb=1)
    assert res["missing"]["I1"] == 250 and res["missing"]["I2"] == 0 and res["missing"]["C26"] == 100
    assert res["missing"]["label"] == 0
