import gzip
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

pytest.importorskip("nvtabular", reason="the merlin image's code runs in the step environment: make test-steps")
from criteo_kernel import storage  # noqa: E402
from criteo_merlin.ingest import extract, synth  # noqa: E402
from tests.fixtures.partitions import committed  # noqa: E402

pytestmark = pytest.mark.steps


def test_extract_splits_and_publishes(tmp_path):
    synth.main(["--out", str(tmp_path / "raw"), "--days", "0", "--rows", "2000", "--gz"])
    out = tmp_path / "ex" / "day=0"
    res = extract.extract(storage.find_day_file(str(tmp_path / "raw"), 0), str(out))
    assert res["rows"] == 2000 and res["eval_rows"] == 200 and res["malformed_rows"] == 0
    assert storage.is_published(str(out)) and (committed(out) / "_SUCCESS").exists()
    assert pq.read_table(committed(out) / "train").num_rows == 1800
    assert pq.read_table(committed(out) / "eval").schema.names[:3] == ["label", "I1", "I2"]
    # nothing beside the partition, and in it the commit and its one attempt
    assert [p.name for p in (tmp_path / "ex").iterdir()] == ["day=0"]
    assert sorted(p.name for p in out.iterdir()) == sorted(["_COMMITTED", committed(out).name])


def test_rerun_replaces_partition(tmp_path):
    synth.main(["--out", str(tmp_path / "raw"), "--days", "0", "--rows", "1000"])
    for _ in range(2):
        extract.extract(str(tmp_path / "raw" / "day_0"), str(tmp_path / "ex" / "day=0"))
    assert [p.name for p in (tmp_path / "ex").iterdir()] == ["day=0"]
    assert len(list((tmp_path / "ex" / "day=0").iterdir())) == 2  # the replaced attempt was collected
    assert pq.read_table(committed(tmp_path / "ex" / "day=0") / "train").num_rows == 900


def test_wrong_field_count_is_counted_not_guessed(tmp_path):
    good = "\t".join(["1"] + ["3"] * 13 + ["deadbeef"] * 26)
    bad = "\t".join(["0"] + ["3"] * 13 + ["deadbeef"] * 20)
    (tmp_path / "day_0").write_text("\n".join([good, bad, good]) + "\n")
    res = extract.extract(str(tmp_path / "day_0"), str(tmp_path / "ex"))
    assert res["rows"] == 2 and res["malformed_rows"] == 1
    stats = json.loads((committed(tmp_path / "ex") / "_extract.json").read_text())
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
    assert storage.is_published(str(tmp_path / "ex1"))

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


def clean_day(path, rows=3000, gz=False):
    synth.write_day(str(path), synth.day_table(*synth.generate_day(0, rows)), gz=gz)
    return path


def test_extract_records_what_it_read_and_the_manifest(tmp_path):
    """Size, sha256 and lines of the file read: the run's identity and the landing contract's check."""
    import hashlib

    from criteo_kernel import landing

    day = clean_day(tmp_path / "day_0")
    manifest = landing.write_manifest(str(day))
    res = extract.extract(str(day), str(tmp_path / "ex"))
    assert res["input"] == {"url": str(day), "bytes": day.stat().st_size, "generation": None, "lines": 3000,
                            "sha256": hashlib.sha256(day.read_bytes()).hexdigest()}
    assert res["manifest"] == {"url": f"{day}.manifest.json", **manifest.to_dict()}
    assert res["read_error"] is None and res["compression"] == "none"
    stats = json.loads((committed(tmp_path / "ex") / "_extract.json").read_text())
    assert stats["source_sha256"] == manifest.sha256 and stats["source_mtime"] == pytest.approx(day.stat().st_mtime)


def test_a_file_without_its_last_newline_is_reported_truncated(tmp_path):
    day = clean_day(tmp_path / "day_0")
    data = day.read_bytes()
    day.write_bytes(data[: len(data) // 2 + 17])  # cut inside a line, as a copy in progress leaves it
    res = extract.extract(str(day), str(tmp_path / "ex"))
    err = res["read_error"]
    assert err["kind"] == "truncated"
    assert err["message"].startswith(f"{day}: the file does not end with a newline: its last line is cut")
    assert "criteo-mlops manifest" in err["message"]


def test_gzip_content_without_the_gz_name_is_read_as_gzip(tmp_path, capsys):
    day = tmp_path / "day_0"
    clean_day(tmp_path / "day_0.gz", gz=True).rename(day)
    res = extract.extract(str(day), str(tmp_path / "ex"))
    assert res["rows"] == 3000 and res["read_error"] is None and res["compression"] == "gzip"
    assert f"WARNING: {day} is gzip but its name has no .gz: read as gzip. Name it day_0.gz" in capsys.readouterr().out


@pytest.mark.parametrize("case, message", [
    ("directory", "is a directory, not a raw day file"),
    ("gz_name_on_text", "is named .gz but is not gzip"),
    ("utf16", "is UTF-16 text: the Criteo format is UTF-8"),
    ("broken_manifest", "the landing manifest of"),
])
def test_what_is_no_raw_day_fails_as_bad_data_naming_the_fix(tmp_path, case, message):
    from criteo_kernel.result import DataError

    name = "day_0.gz" if case == "gz_name_on_text" else "day_0"
    path = tmp_path / name
    if case == "directory":
        (path / "part-0").mkdir(parents=True)
    elif case == "utf16":
        path.write_bytes("1\t2\n".encode("utf-16"))
    else:
        clean_day(path)
    if case == "broken_manifest":
        (tmp_path / "day_0.manifest.json").write_text('{"rows": "many"}')
    with pytest.raises(extract.BadRawFile, match=message) as err:
        extract.extract(str(path), str(tmp_path / "ex"))
    assert isinstance(err.value, DataError) and str(path) in str(err.value)
    assert not (tmp_path / "ex").exists()  # nothing published, not even half


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to run the step as another user (setpriv)")
def test_an_unreadable_file_fails_as_bad_data_naming_the_fix(tmp_path):
    """The step run as an unprivileged user on a file it may not read (root reads everything)."""
    import subprocess
    import sys
    import tempfile

    from criteo_kernel.result import BAD_DATA

    folder = tempfile.mkdtemp(prefix="unreadable-")
    try:
        os.chmod(folder, 0o755)
        day = clean_day(Path(folder) / "day_0", rows=100)
        os.chmod(day, 0o600)
        repo = Path(__file__).resolve().parents[3]
        env = {"PATH": os.environ["PATH"], "PYTHONPATH": f"{repo}/images/kernel/src:{repo}/images/merlin/src"}
        proc = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", sys.executable, "-m",
                               "criteo_merlin", "extract", "--input", str(day), "--output", f"{folder}/ex"],
                              capture_output=True, text=True, env=env, timeout=120)
        assert proc.returncode == BAD_DATA, proc.stdout + proc.stderr
        assert f"{day} cannot be read (Permission denied): give the user the steps run as read access" in proc.stderr
    finally:
        import shutil

        shutil.rmtree(folder, ignore_errors=True)
