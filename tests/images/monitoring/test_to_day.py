"""request_log_to_day: the request log of a day back into the raw Criteo day, byte for byte; and its refusals."""
import gzip
import os
import shutil

import pytest

from criteo_monitoring.request_log import LABELS, list_parts
from criteo_monitoring.to_day import ToDayError, to_day

from .conftest import DAY0, log_day

pytestmark = pytest.mark.unit


def test_a_logged_day_becomes_the_same_raw_file(raw_days, tmp_path):
    log_day(raw_days / "day_1", 1, tmp_path / "log", chunk_rows=1000)
    result = to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0)
    assert (tmp_path / "raw/day_1").read_bytes() == (raw_days / "day_1").read_bytes()
    assert result["rows"] == 6000 and result["unlabelled_rows"] == 0 and result["request_files"] == 24
    assert result["versions"] == {"1": 6000} and result["date"] == "2026-01-02" and not result["unchanged"]
    assert [f for f in os.listdir(tmp_path / "raw") if f.startswith(".")] == []
    # the landing manifest says the day is complete, and what it holds (criteo_kernel.landing)
    from criteo_kernel import landing

    assert landing.read_manifest(str(tmp_path / "raw/day_1")) == landing.describe(str(tmp_path / "raw/day_1"))
    # the same again: left as it is (a lost manifest is written again)
    (tmp_path / "raw/day_1.manifest.json").unlink()
    assert to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0)["unchanged"]
    assert landing.read_manifest(str(tmp_path / "raw/day_1")).rows == 6000


def test_gz_input_and_output(raw_days, tmp_path):
    log_day(raw_days / "day_2.gz", 2, tmp_path / "log")
    to_day(str(tmp_path / "log"), 2, str(tmp_path / "raw"), DAY0, gz=True)
    with gzip.open(raw_days / "day_2.gz") as a, gzip.open(tmp_path / "raw/day_2.gz") as b:
        assert a.read() == b.read()


def test_a_rerun_of_the_replay_is_kept_once(raw_days, tmp_path):
    log_day(raw_days / "day_1", 1, tmp_path / "log")
    log_day(raw_days / "day_1", 1, tmp_path / "log")  # same request ids, logged twice
    result = to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0)
    assert result["duplicate_rows"] == 6000 and result["rows"] == 6000
    assert (tmp_path / "raw/day_1").read_bytes() == (raw_days / "day_1").read_bytes()


def test_missing_labels_write_nothing(raw_days, tmp_path):
    log_day(raw_days / "day_1", 1, tmp_path / "log", labels=False)
    with pytest.raises(ToDayError, match=r"only 0 of 6000 logged requests have a label .* nothing was written"):
        to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0)
    assert not (tmp_path / "raw/day_1").exists()
    assert [f for f in os.listdir(tmp_path / "raw")] == []


def test_some_labels_late(raw_days, tmp_path):
    log_day(raw_days / "day_1", 1, tmp_path / "log")
    late = list_parts(str(tmp_path / "log"), LABELS)[-1]  # the day's last hour: its labels not in yet
    os.remove(late)
    with pytest.raises(ToDayError, match="labels may still be arriving"):
        to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0)
    result = to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0, min_label_coverage=0.9)
    assert 5500 < result["rows"] < 6000 and result["rows"] + result["unlabelled_rows"] == 6000


def test_an_existing_different_day_is_never_replaced_silently(raw_days, tmp_path):
    log_day(raw_days / "day_1", 1, tmp_path / "log")
    (tmp_path / "raw").mkdir()
    shutil.copy(raw_days / "day_0", tmp_path / "raw/day_1")
    before = (tmp_path / "raw/day_1").read_bytes()
    with pytest.raises(ToDayError, match=r"raw/day_1 exists with other content .* never replaced without --overwrite"):
        to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0)
    assert (tmp_path / "raw/day_1").read_bytes() == before
    to_day(str(tmp_path / "log"), 1, str(tmp_path / "raw"), DAY0, overwrite=True)
    assert (tmp_path / "raw/day_1").read_bytes() == (raw_days / "day_1").read_bytes()


def test_nothing_logged_for_the_day(tmp_path):
    with pytest.raises(ToDayError, match=r"no requests logged for day 4 \(partition date=2026-01-05\)"):
        to_day(str(tmp_path / "log"), 4, str(tmp_path / "raw"), DAY0)
