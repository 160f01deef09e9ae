"""Unit tests of day profiles, reference merging, learned bounds and PSI (no GX)."""
import numpy as np
import pytest

from criteo_kernel import profiles
from criteo_validate import profile

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
