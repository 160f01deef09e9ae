"""The monitor's window math: the validator's bins, the evaluate step's AUC, PSI against a reference."""
import math

import numpy as np
import pytest

from criteo_monitoring.metrics import FEATURES, Ring, VersionWindow, feature_bins
from criteo_monitoring.traffic import read_batches

from .conftest import day_profile

pytestmark = pytest.mark.unit


def window_of(path, size=100_000):
    window = VersionWindow(size)
    for b in read_batches(str(path)):
        window.add_requests(feature_bins(b.ints, b.cat_hash))
    return window


def test_bins_are_the_validators_bins(raw_days):
    """Histograms of the request window equal the validator's profile of the same rows, bin for bin."""
    profile = day_profile(raw_days / "day_0")
    hists = window_of(raw_days / "day_0").histograms()
    for c in FEATURES:
        kind = "int" if c.startswith("I") else "cat"
        assert hists[c].tolist() == profile[kind][c]["hist"], c
    assert hists["C1"].sum() > 0 and hists["I1"].sum() > 0


def test_psi_is_near_zero_on_the_reference_and_high_on_drifted_days(raw_days):
    reference = day_profile(raw_days / "day_0")
    same = window_of(raw_days / "day_0").drift(reference, min_rows=1000)
    assert max(same.values()) < 1e-9  # the very rows of the reference
    fresh = window_of(raw_days / "day_2.gz").drift(reference, min_rows=1000)  # same world, other rows
    drifted = window_of(raw_days / "day_1").drift(reference, min_rows=1000)
    assert max(fresh.values()) < 0.25 < max(drifted.values())
    assert set(drifted) == set(FEATURES)
    assert window_of(raw_days / "day_1").drift(None, min_rows=1000) is None
    assert window_of(raw_days / "day_1").drift(reference, min_rows=10**6) is None  # too few rows: not reported


def test_quality_over_the_last_rows_only():
    from criteo_merlin.export.evaluate import log_loss, roc_auc

    rng = np.random.default_rng(0)
    window = VersionWindow(1000)
    assert window.quality(min_rows=100) is None
    y_old = rng.integers(0, 2, 3000).astype(np.int8)
    window.add_labelled(rng.random(3000), y_old)          # pushed out by what follows
    y = rng.integers(0, 2, 1000).astype(np.int8)
    p = np.clip(0.3 * y + 0.5 * rng.random(1000), 0.01, 0.99).astype(np.float32)
    for i in range(0, 1000, 300):  # in several pieces, wrapping the ring
        window.add_labelled(p[i:i + 300], y[i:i + 300])
    q = window.quality(min_rows=100)
    assert q["rows"] == 1000
    assert q["auc"] == pytest.approx(roc_auc(y, p)) and q["auc"] > 0.8
    assert q["logloss"] == pytest.approx(log_loss(y, p))
    assert q["observed_ctr"] == pytest.approx(y.mean()) and q["predicted_ctr"] == pytest.approx(p.mean(), rel=1e-6)
    assert q["calibration"] == pytest.approx(p.mean() / y.mean(), rel=1e-6)
    zero = VersionWindow(10)
    zero.add_labelled(np.full(10, 0.1), np.zeros(10))
    assert math.isnan(zero.quality(min_rows=5)["calibration"]) and math.isnan(zero.quality(min_rows=5)["auc"])


def test_ring_keeps_the_newest_rows():
    ring = Ring(5, None, np.int64)
    ring.add(np.arange(3))
    assert sorted(ring.values()) == [0, 1, 2]
    ring.add(np.arange(3, 9))
    assert sorted(ring.values()) == [4, 5, 6, 7, 8] and len(ring) == 5 and ring.count == 9
    ring.add(np.arange(100, 102))
    assert sorted(ring.values()) == [6, 7, 8, 100, 101]
