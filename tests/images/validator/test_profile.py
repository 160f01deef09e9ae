"""Unit tests of day profiles, reference merging, learned bounds and PSI (no GX)."""
import numpy as np
import pytest

from criteo_kernel import profiles
from criteo_validator import profile

pytestmark = pytest.mark.unit


def _day(ctr=0.25, rows=1000, shift=0, nf=0.2):
    rng = np.random.default_rng(0)
    hist = np.bincount(profile.int_bins(rng.integers(0, 1000, 5000).astype(float) * (10 ** shift)),
                       minlength=profile.INT_BINS)
    return {"profile_version": 1, "kind": "day", "source": "x", "rows": rows, "positives": int(ctr * rows),
            "ctr": ctr, "null_fraction": {c: nf for c in profile.FEATURES}, "profiled_rows": 5000,
            "int": {c: {"min": -2.0, "max": 999.0 * 10 ** shift, "hist": hist.tolist()} for c in profile.INT_COLUMNS},
            "cat": {c: {"hist": [10] * profile.CAT_BUCKETS} for c in profile.CAT_COLUMNS}}


def test_int_bins_are_fixed_log2():
    v = np.array([-5, 0, 1, 2, 3, 4, 1023, 1024, 2.0**60])
    assert profile.int_bins(v).tolist() == [0, 1, 2, 3, 3, 4, 11, 12, profile.INT_BINS - 1]


def test_merge_and_parameters():
    ref = profile.merge([_day(0.2, 1000, nf=0.1), _day(0.3, 3000, nf=0.3)])
    assert ref["days"] == 2 and ref["rows"]["min"] == 1000 and ref["ctr"]["mean"] == pytest.approx(0.25)
    p = profile.parameters(ref, min_rows=10)
    assert p["rows_hard_min"] == 100 and p["rows_soft_max"] == 6000
    assert p["ctr_hard_min"] == pytest.approx(0.05) and p["ctr_hard_max"] == pytest.approx(0.9)
    assert p["I1_soft_min"] == -2 and p["I1_hard_max"] == pytest.approx(9990)
    assert p["C1_null_hard_max"] == pytest.approx(0.55) and p["C1_null_soft_min"] == pytest.approx(0.05)
    d = profile.default_parameters(10)
    assert d["rows_hard_min"] == 10 and d["C1_null_hard_max"] == 0.995


def test_psi_detects_a_shift_and_not_noise():
    ref = profile.merge([_day()])
    same = profile.drift(_day(), ref)
    assert max(same.values()) == 0
    shifted = profile.drift(_day(shift=3), ref)
    assert shifted["psi(I1)"] > 1.0 and shifted["psi(C1)"] == 0
    assert max(profile.drift(_day(shift=3), None).values()) == 0  # no reference: nothing to compare


def test_save_load_roundtrip(tmp_path):
    ref = profile.merge([_day()])
    profiles.save(ref, str(tmp_path / "a" / "ref.json"))
    assert profiles.load(str(tmp_path / "a" / "ref.json")) == ref
    assert profiles.load(str(tmp_path / "missing.json")) is None
    (tmp_path / "old.json").write_text('{"profile_version": 0}')
    with pytest.raises(ValueError, match="profile_version"):
        profiles.load(str(tmp_path / "old.json"))


# ------------------------------------------------------------------------------------------
# column shapes: distinct values, top share, zero share
# ------------------------------------------------------------------------------------------

def _frames(cats: list, ints: list):
    import pandas as pd

    text = pd.DataFrame({"C1": cats, "I1": [None if v is None else str(v) for v in ints]})
    return text, pd.DataFrame({"I1": pd.to_numeric(text["I1"])})


def _shapes(chunks: list) -> dict:
    b = profile.ProfileBuilder()
    for cats, ints in chunks:
        b.add(*_frames(cats, ints))
    day = b.finish({"rows": b.rows, "positives": 0, "missing": {}}, "x")
    return {k: (day[k]["C1"], day[k]["I1"]) for k in ("present", "distinct", "top_share")} | \
        {"zero_share": day["zero_share"]["I1"], "empty column": (day["distinct"]["C2"], day["top_share"]["C2"])}


def test_column_shapes_are_counted_exactly_over_chunks():
    a, b, c = "0000000a", "0000000b", "0000000c"
    cats = [a, a, b, None, a, c, b, a, None, a]
    ints = [0, 0, 7, None, 0, 3, 7, None, 0, 5]
    whole = _shapes([(cats, ints)])
    assert whole == {"present": (8, 8), "distinct": (3, 4), "top_share": (5 / 8, 4 / 8), "zero_share": 4 / 8,
                     "empty column": (0, 0.0)}
    assert _shapes([(cats[:3], ints[:3]), (cats[3:7], ints[3:7]), (cats[7:], ints[7:])]) == whole


def test_distinct_counts_are_bounded_keeping_the_frequent_values(monkeypatch):
    monkeypatch.setattr(profile, "DISTINCT_CAP", 4)
    frequent = "000000ff"
    chunks = [([frequent] * 5 + [f"0000000{i}" for i in range(k, k + 3)], [1] * 8) for k in (0, 3, 6)]
    shapes = _shapes(chunks)
    assert shapes["distinct"][0] == 4  # a lower bound past the cap (10 distinct)
    assert shapes["top_share"][0] == pytest.approx(15 / 24)  # the frequent value is never dropped


def _shaped_day(distinct: int, present: int, top: float = 0.2, zero: float = 0.3, profiled: int = 5000):
    day = _day()
    day.update({"profiled_rows": profiled, "present": {c: present for c in profile.FEATURES},
                "distinct": {c: distinct for c in profile.FEATURES},
                "top_share": {c: top for c in profile.FEATURES},
                "zero_share": {c: zero for c in profile.INT_COLUMNS}})
    return day


def test_merge_spans_the_column_shapes_over_days():
    ref = profile.merge([_shaped_day(1000, 4000, top=0.1, profiled=4000), _shaped_day(1200, 5000, top=0.2),
                         _day()])  # a day profiled before column shapes counts for none of them
    assert ref["distinct"]["C1"]["min"] == 1000 and ref["distinct"]["C1"]["max"] == 1200
    assert ref["present"]["I1"]["min"] == 4000 and ref["present"]["I1"]["max"] == 5000
    assert ref["top_share"]["C1"]["mean"] == pytest.approx(0.15) and ref["zero_share"]["I1"]["max"] == 0.3
    assert ref["profiled_rows_per_day"]["min"] == 4000 and "zero_share" not in ref["top_share"]


def test_distinct_bounds_are_sized_to_the_values_the_day_saw():
    ref = profile.merge([_shaped_day(1000, 4000), _shaped_day(1200, 5000)])
    smaller = profile.day_parameters(_shaped_day(0, 2500), ref)
    # 2500 of the reference's 5000 values: at least half its smallest count expected
    assert smaller["C1_distinct_hard_min"] == pytest.approx(50)
    assert smaller["C1_distinct_soft_min"] == pytest.approx(250) and smaller["C1_distinct_soft_max"] == 2400
    larger = profile.day_parameters(_shaped_day(0, 10_000), ref)
    assert larger["C1_distinct_hard_min"] == pytest.approx(100)  # more values never lower the floor
    assert larger["C1_distinct_soft_max"] == pytest.approx(2 * 1200 * 10_000 / 4000)


def test_without_a_reference_only_a_single_value_among_1000_fails():
    for present, floor in ((999, 0), (1000, 2)):
        p = profile.day_parameters(_shaped_day(1, present), None)
        assert p["C7_distinct_hard_min"] == floor and p["I3_distinct_hard_min"] == floor
        assert p["C7_top_hard_max"] == 1.0 and p["I3_zero_hard_max"] == 1.0


def test_share_bounds_jump_by_half_or_shrink_the_rest_fivefold():
    ref = profile.merge([_shaped_day(50, 5000, top=0.1, zero=0.85), _shaped_day(50, 5000, top=0.2, zero=0.9)])
    p = profile.day_parameters(_shaped_day(50, 5000), ref)
    assert p["C1_top_hard_max"] == pytest.approx(0.7)  # +0.5 comes first
    assert (p["C1_top_soft_min"], p["C1_top_soft_max"]) == pytest.approx((0.0, 0.3))
    assert p["I1_zero_hard_max"] == pytest.approx(0.98)  # the non-zero 10% shrunk to 2%
    assert (p["I1_zero_soft_min"], p["I1_zero_soft_max"]) == pytest.approx((0.75, 0.98))
    empty = profile.day_parameters(_shaped_day(0, 0), ref)  # no value present: nothing to judge
    assert (empty["C1_top_hard_max"], empty["C1_top_soft_min"], empty["C1_distinct_hard_min"]) == (1.0, 0.0, 0)


def test_a_reference_from_before_column_shapes_gives_the_format_defaults():
    old = profile.merge([_day(), _day(0.3)])
    assert not {"distinct", "top_share", "zero_share", "present"} & set(old)
    day = _shaped_day(1, 5000, top=1.0, zero=1.0)
    assert profile.day_parameters(day, old) == profile.day_parameters(day, None)
    assert profile.parameters(old)["C1_distinct_hard_min"] == profile.default_parameters()["C1_distinct_hard_min"]


def test_day_facts_name_the_shapes():
    facts = profile.day_facts(_shaped_day(7, 100, top=0.5, zero=0.25))
    assert facts["distinct(C3)"] == 7 and facts["top_share(I2)"] == 0.5 and facts["zero_share(I13)"] == 0.25
    assert "zero_share(C1)" not in facts and facts["null_fraction(C1)"] == 0.2
    assert set(profile.day_facts(_day())) == {f"null_fraction({c})" for c in profile.FEATURES}
