"""The raw landing folder: which days have landed."""
import pytest


@pytest.mark.unit
def test_latest_raw_day(tmp_path):
    from operators.hooks.raw_data import RawDataHook

    assert RawDataHook(str(tmp_path / "missing")).latest_day() is None
    raw = tmp_path / "raw"
    raw.mkdir()
    assert RawDataHook(str(raw)).latest_day() is None
    for name in ("day_0", "day_1.gz", "day_3", "day_12.gz", "day_4.tmp", "notes.txt", ".staging-day_30", "day_30"):
        (raw / name).touch()
    assert RawDataHook(str(raw)).latest_day() == 30
    assert RawDataHook(str(raw)).latest_day(num_days=24) == 12  # day_30 is outside day_0..day_23
