"""Data profiles and the drift they measure: fixed bins, PSI, reading and writing a profile.

A profile holds per-feature histograms in fixed bins, so profiles of different days add up and
compare: integer counts in log2 bins, categorical hashes in 256 buckets by their top byte (the
first two of the 8 hex digits). The validator builds day profiles and merges a window of them into
the reference profile a model version ships (`reference_profile.json`); the data-quality gate and
the monitor both measure drift against it with `psi_value`, in these bins.
"""
from __future__ import annotations

import json
import math

import numpy as np

from . import storage

PROFILE_VERSION = 1
INT_BINS = 2 + 48  # [<0], [0], [1,2), [2,4), ... [2^47, inf)
CAT_BUCKETS = 256
PSI_EPS = 1e-4  # floor for empty bins, so one unseen bin does not make PSI infinite
PSI_MIN_ROWS = 1000  # below this many profiled rows PSI is noise
PSI_MAX = 0.25  # the conventional "major shift" threshold


def int_bins(v: np.ndarray) -> np.ndarray:
    """Fixed log2 bins of integer values: 0 = negative, 1 = zero, k >= 2 = [2^(k-2), 2^(k-1))."""
    out = np.empty(len(v), dtype=np.int64)
    neg, zero, pos = v < 0, v == 0, v > 0
    out[neg] = 0
    out[zero] = 1
    out[pos] = np.minimum(2 + np.floor(np.log2(np.maximum(v[pos], 1))).astype(np.int64), INT_BINS - 1)
    return out


def cat_buckets(hashes: np.ndarray) -> np.ndarray:
    """The bucket of each 32-bit hash (int64, >= 0): its top byte, i.e. its first two hex digits."""
    return (np.asarray(hashes, dtype=np.int64) >> 24) & 0xFF


def psi_value(expected, actual) -> float:
    """Population stability index of two histograms over the same bins (0 when either is empty)."""
    e_tot, a_tot = sum(expected), sum(actual)
    if not e_tot or not a_tot:
        return 0.0
    total = 0.0
    for e, a in zip(expected, actual, strict=False):
        pe, pa = max(e / e_tot, PSI_EPS), max(a / a_tot, PSI_EPS)
        total += (pa - pe) * math.log(pa / pe)
    return total


def load(url: str | None) -> dict | None:
    """A profile from a path or URL; None when url is None or names nothing."""
    if not url or not storage.exists(url):
        return None
    data = storage.read_json(url)
    if data.get("profile_version") != PROFILE_VERSION:
        raise ValueError(f"{url}: profile_version {data.get('profile_version')!r}, expected {PROFILE_VERSION}")
    return data


def save(profile: dict, url: str) -> None:
    """Write a profile; it appears whole."""
    storage.write_bytes(url, json.dumps(profile, indent=1).encode())
