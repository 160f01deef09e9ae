"""The drift bins and PSI the validator and the monitor share, and profiles read back as written."""
import numpy as np
import pytest

from criteo_kernel import profiles

pytestmark = pytest.mark.unit


def test_bins():
    assert profiles.int_bins(np.array([-2.0, 0, 1, 2, 3, 4, 2.0**60])).tolist() == [0, 1, 2, 3, 3, 4,
                                                                                     profiles.INT_BINS - 1]
    # a hash's bucket is its first two hex digits
    assert profiles.cat_buckets(np.array([0xDEADBEEF, 0x00FFFFFF, 0xFF000000])).tolist() == [0xDE, 0x00, 0xFF]


def test_psi():
    assert profiles.psi_value([10, 20, 30], [10, 20, 30]) == pytest.approx(0.0)
    assert profiles.psi_value([100, 0], [0, 100]) > 5          # a full shift, the empty bins floored
    assert profiles.psi_value([0, 0], [1, 2]) == 0.0           # nothing to compare with


def test_profiles_round_trip_and_versions_are_checked(tmp_path):
    url = str(tmp_path / "p" / "reference_profile.json")
    assert profiles.load(url) is None and profiles.load(None) is None
    profiles.save({"profile_version": profiles.PROFILE_VERSION, "rows": 3}, url)
    assert profiles.load(url)["rows"] == 3
    profiles.save({"profile_version": 99}, url)
    with pytest.raises(ValueError, match="profile_version 99, expected 1"):
        profiles.load(url)
