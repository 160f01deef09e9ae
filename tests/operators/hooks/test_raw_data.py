"""The raw landing folder: which days have landed, and whether whole (the landing contract)."""
import pytest

from operators.hooks.raw_data import RawDataHook

pytestmark = pytest.mark.unit


def test_latest_raw_day(tmp_path):
    assert RawDataHook(str(tmp_path / "missing")).latest_day() is None
    raw = tmp_path / "raw"
    raw.mkdir()
    assert RawDataHook(str(raw)).latest_day() is None
    for name in ("day_0", "day_1.gz", "day_3", "day_12.gz", "day_4.tmp", "notes.txt", ".staging-day_30", "day_30"):
        (raw / name).touch()
    assert RawDataHook(str(raw)).latest_day() == 30
    assert RawDataHook(str(raw)).latest_day(num_days=24) == 12  # day_30 is outside day_0..day_23


def test_landing_of_a_file_without_manifest_waits_until_it_settles(tmp_path):
    day = tmp_path / "day_2"
    day.write_text("1\t2\n")
    hook = RawDataHook(str(tmp_path))
    mtime = day.stat().st_mtime
    waiting = hook.landing(2, "settle", settle_s=30, now=mtime + 10)
    assert not waiting.complete and waiting.url == str(day)
    assert "changed 10s ago; landed once unchanged for 30s (criteo_raw_settle_s)" in waiting.reason
    assert hook.landing(2, "settle", settle_s=30, now=mtime + 31).complete
    manifest_only = hook.landing(2, "manifest", settle_s=0)
    assert not manifest_only.complete and "waiting for its manifest" in manifest_only.reason
    assert hook.landing(3, "settle").url is None


def test_landing_with_a_manifest_is_at_once_and_checks_the_size(tmp_path):
    from criteo_kernel import landing

    day = tmp_path / "day_2"
    day.write_text("1\t2\n" * 10)
    landing.write_manifest(str(day))
    hook = RawDataHook(str(tmp_path))
    assert hook.landing(2, "manifest", settle_s=3600).complete
    with day.open("a") as fh:  # the manifest of a file being rewritten: not landed until they agree
        fh.write("1\t2\n")
    state = hook.landing(2, "settle", settle_s=0)
    assert not state.complete and "has 44 bytes, its manifest says 40: still being written" in state.reason


def test_a_directory_under_the_day_name_is_no_raw_day(tmp_path):
    from operators.hooks.raw_data import NotARawDay

    (tmp_path / "day_4").mkdir()
    with pytest.raises(NotARawDay, match="day_4 is a directory, not a raw day file"):
        RawDataHook(str(tmp_path)).landing(4)
    with pytest.raises(ValueError, match="criteo_raw_landing='soon'"):
        RawDataHook(str(tmp_path)).landing(4, "soon")
