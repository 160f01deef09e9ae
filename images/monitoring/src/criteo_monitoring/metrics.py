"""What the monitor computes over the rolling window of one model version.

- Quality, over the last `size` labelled rows: AUC and logloss (criteo_kernel.metrics, as the
  evaluate step computes them, so offline and online numbers are the same metric), predicted CTR (mean
  prediction), observed CTR, and calibration = predicted / observed CTR (1 is calibrated).
- Drift, over the last `size` requests (no label needed): PSI of each feature against the
  version's training reference profile (`reference_profile.json`, learned by the full retrain),
  in the drift bins the validator uses too (criteo_kernel.profiles: log2 bins for counts, 256 hash
  buckets for categoricals), so the online PSI is the same number the data-quality gate reports.

Nothing is reported before `min_rows` rows are in a window (PSI: at least 1000): a metric over a
handful of rows is noise, and a sensor must not act on it. PSI's noise floor is about
(buckets - 1) * (1/window + 1/reference rows), so the drift window should hold 20x the 256 hash
buckets or more (the default window is 5000 rows: a floor near 0.05-0.1, against a 0.25 threshold).
"""
from __future__ import annotations

import math

import numpy as np

from criteo_kernel.metrics import log_loss, roc_auc
from criteo_kernel.profiles import CAT_BUCKETS, INT_BINS, PSI_MIN_ROWS, cat_buckets, int_bins, psi_value
from criteo_kernel.schema import FEATURES, INT_COLUMNS

MISSING = -1


def feature_bins(ints: np.ndarray, cat_hash: np.ndarray) -> np.ndarray:
    """[n, 39] int16 bin of each feature value (-1: missing), the validator's bins.

    ints: float64 [n, 13] with NaN for missing; cat_hash: int64 [n, 26] with -1 for missing.
    """
    n = len(ints)
    out = np.full((n, len(FEATURES)), MISSING, dtype=np.int16)
    for j in range(len(INT_COLUMNS)):
        v = ints[:, j]
        ok = np.isfinite(v)
        out[ok, j] = int_bins(v[ok])
    cats = np.asarray(cat_hash, dtype=np.int64)
    ok = cats >= 0
    out[:, len(INT_COLUMNS):] = np.where(ok, cat_buckets(np.where(ok, cats, 0)), MISSING)
    return out


class Ring:
    """The last `size` rows of a fixed-width array."""

    def __init__(self, size: int, width: int | None, dtype):
        self.size = size
        self.data = np.empty((size,) if width is None else (size, width), dtype=dtype)
        self.count = 0  # rows ever added
        self.pos = 0

    def add(self, rows: np.ndarray) -> None:
        self.count += len(rows)
        rows = rows[-self.size:]
        n = len(rows)
        end = self.pos + n
        if end <= self.size:
            self.data[self.pos:end] = rows
        else:
            k = self.size - self.pos
            self.data[self.pos:] = rows[:k]
            self.data[:n - k] = rows[k:]
        self.pos = end % self.size

    def __len__(self) -> int:
        return min(self.count, self.size)

    def values(self) -> np.ndarray:
        return self.data[:len(self)]


class VersionWindow:
    """Rolling windows of one (model, version)."""

    def __init__(self, size: int):
        self.size = size
        self.predictions = Ring(size, None, np.float32)
        self.labels = Ring(size, None, np.int8)
        self.bins = Ring(size, len(FEATURES), np.int16)

    def add_requests(self, bins: np.ndarray) -> None:
        self.bins.add(bins)

    def add_labelled(self, predictions: np.ndarray, labels: np.ndarray) -> None:
        self.predictions.add(np.asarray(predictions, np.float32))
        self.labels.add(np.asarray(labels, np.int8))

    def quality(self, min_rows: int) -> dict | None:
        """AUC, logloss, CTRs and calibration over the labelled window (None below min_rows)."""
        n = len(self.labels)
        if n < min_rows:
            return None
        y, p = self.labels.values(), self.predictions.values()
        observed, predicted = float(y.mean()), float(p.mean())
        return {"rows": n, "auc": roc_auc(y, p), "logloss": log_loss(y, p), "predicted_ctr": predicted,
                "observed_ctr": observed, "calibration": predicted / observed if observed > 0 else math.nan}

    def histograms(self) -> dict[str, np.ndarray]:
        bins = self.bins.values()
        out = {}
        for j, c in enumerate(FEATURES):
            col = bins[:, j]
            col = col[col != MISSING]
            out[c] = np.bincount(col, minlength=INT_BINS if c in INT_COLUMNS else CAT_BUCKETS)
        return out

    def drift(self, reference: dict | None, min_rows: int) -> dict[str, float] | None:
        """{feature: PSI} of the request window against the reference profile (None: not evaluable).

        Never over fewer than the validator's PSI_MIN_ROWS: sampling noise alone gives a PSI of
        about (buckets - 1) * (1/rows + 1/reference rows), 0.25 at 1000 rows for 256 buckets.
        """
        if reference is None or len(self.bins) < max(min_rows, PSI_MIN_ROWS):
            return None
        out = {}
        for c, hist in self.histograms().items():
            kind = "int" if c in INT_COLUMNS else "cat"
            ref = (reference.get(kind) or {}).get(c, {}).get("hist")
            if ref is None or not hist.sum():
                continue  # a column all missing in the window: no distribution to compare
            out[c] = psi_value(ref, hist.tolist())
        return out
