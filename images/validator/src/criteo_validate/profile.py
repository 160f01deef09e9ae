"""Day profiles, the reference profile learned from a window of days, and the bounds derived from it.

A *day profile* is what the validator saw in one day:

* whole-day counts from extract's `_extract.json` (rows, positives, malformed rows, empty fields
  per column): exact however large the day;
* histograms and min/max over the rows the GX stage read (all of them, or the documented
  sample): integer columns in fixed log2 bins, categorical hashes in 256 buckets by their first
  two hex digits. Fixed bins make profiles of different days comparable and summable.

A *reference profile* merges the day profiles of a window (`merge`): the full retrain saves the
one of its training window next to the model (`reference_profile.json` in the model version),
and later validations derive their learned bounds (`parameters`) and drift (`psi`) from it.

    python -m criteo_validate reference --profiles P1.json P2.json ... --output REF.json
"""
from __future__ import annotations

import math
from collections.abc import Iterable

from criteo_kernel import profiles
from criteo_kernel.profiles import CAT_BUCKETS, INT_BINS, PROFILE_VERSION, PSI_MAX, PSI_MIN_ROWS, int_bins, psi_value
from criteo_kernel.schema import CAT_COLUMNS, FEATURES, INT_COLUMNS

from .suites import null_fraction, psi

# Suite parameters without a reference profile: format-level sanity only, documented in README.
DEFAULT_MIN_ROWS = 1000


def default_parameters(min_rows: int = DEFAULT_MIN_ROWS) -> dict:
    p = {"rows_hard_min": min_rows, "rows_soft_min": min_rows, "rows_soft_max": 10**12,
         "ctr_hard_min": 0.001, "ctr_hard_max": 0.9, "ctr_soft_min": 0.001, "ctr_soft_max": 0.9,
         "psi_max": PSI_MAX}
    for c in INT_COLUMNS:
        p.update({f"{c}_hard_min": -(2**31), f"{c}_hard_max": 2**31 - 1,
                  f"{c}_soft_min": -(2**31), f"{c}_soft_max": 2**31 - 1})
    for c in FEATURES:
        p.update({f"{c}_null_hard_max": 0.995, f"{c}_null_soft_min": 0.0, f"{c}_null_soft_max": 0.995})
    return p


# ----------------------------------------------------------------------------------------------
# one day
# ----------------------------------------------------------------------------------------------

class ProfileBuilder:
    """Accumulates histograms chunk by chunk (pandas frames of text, None = missing)."""

    def __init__(self):
        import numpy as np

        self.rows = 0
        self.int_hist = {c: np.zeros(INT_BINS, dtype=np.int64) for c in INT_COLUMNS}
        self.int_min: dict = {c: None for c in INT_COLUMNS}
        self.int_max: dict = {c: None for c in INT_COLUMNS}
        self.cat_hist = {c: np.zeros(CAT_BUCKETS, dtype=np.int64) for c in CAT_COLUMNS}

    def add(self, text_frame, numbers_frame) -> None:
        import numpy as np

        self.rows += len(text_frame)
        for c in INT_COLUMNS:
            if c not in numbers_frame:
                continue
            v = numbers_frame[c].to_numpy(dtype=np.float64, na_value=np.nan)
            v = v[np.isfinite(v)]
            if not len(v):
                continue
            self.int_hist[c] += np.bincount(int_bins(v), minlength=INT_BINS)[:INT_BINS]
            lo, hi = float(v.min()), float(v.max())
            self.int_min[c] = lo if self.int_min[c] is None else min(self.int_min[c], lo)
            self.int_max[c] = hi if self.int_max[c] is None else max(self.int_max[c], hi)
        import pyarrow as pa
        import pyarrow.compute as pc

        buckets = pa.array([f"{i:02x}" for i in range(CAT_BUCKETS)])
        for c in CAT_COLUMNS:
            if c not in text_frame:
                continue
            arr = pa.array(text_frame[c], type=pa.string(), from_pandas=True)
            ok = pc.fill_null(pc.match_substring_regex(arr, "^[0-9a-f]{8}$"), False)
            idx = pc.index_in(pc.utf8_slice_codeunits(pc.filter(arr, ok), 0, 2), value_set=buckets)
            if len(idx):
                b = idx.to_numpy(zero_copy_only=False).astype(np.int64)
                self.cat_hist[c] += np.bincount(b, minlength=CAT_BUCKETS)

    def finish(self, stats: dict, source: str) -> dict:
        rows = int(stats.get("rows", 0))
        missing = stats.get("missing") or {}
        return {
            "profile_version": PROFILE_VERSION,
            "kind": "day",
            "source": source,
            "rows": rows,
            "positives": int(stats.get("positives", 0)),
            "ctr": stats["positives"] / rows if rows else 0.0,
            "null_fraction": {c: (missing[c] / rows if rows else 1.0) for c in FEATURES if c in missing},
            "profiled_rows": self.rows,
            "int": {c: {"min": self.int_min[c], "max": self.int_max[c], "hist": self.int_hist[c].tolist()}
                    for c in INT_COLUMNS},
            "cat": {c: {"hist": self.cat_hist[c].tolist()} for c in CAT_COLUMNS},
        }


# ----------------------------------------------------------------------------------------------
# a window of days
# ----------------------------------------------------------------------------------------------

def merge(profiles: Iterable[dict]) -> dict:
    """Reference profile of a window: ranges over days, summed histograms."""
    profiles = list(profiles)
    if not profiles:
        raise ValueError("a reference profile needs at least one day profile")

    def span(values: list) -> dict:
        values = [v for v in values if v is not None]
        if not values:
            return {"mean": None, "sd": None, "min": None, "max": None}
        m = sum(values) / len(values)
        sd = math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
        return {"mean": m, "sd": sd, "min": min(values), "max": max(values)}

    def add(lists):
        return [sum(x) for x in zip(*lists, strict=True)]

    return {
        "profile_version": PROFILE_VERSION,
        "kind": "reference",
        "sources": [p.get("source") for p in profiles],
        "days": len(profiles),
        "rows": span([p["rows"] for p in profiles]),
        "ctr": span([p["ctr"] for p in profiles]),
        "null_fraction": {c: span([p["null_fraction"].get(c) for p in profiles]) for c in FEATURES},
        "profiled_rows": sum(p["profiled_rows"] for p in profiles),
        "int": {c: {"min": _opt(min, [p["int"][c]["min"] for p in profiles]),
                    "max": _opt(max, [p["int"][c]["max"] for p in profiles]),
                    "hist": add([p["int"][c]["hist"] for p in profiles])} for c in INT_COLUMNS},
        "cat": {c: {"hist": add([p["cat"][c]["hist"] for p in profiles])} for c in CAT_COLUMNS},
    }


def _opt(fn, values):
    values = [v for v in values if v is not None]
    return fn(values) if values else None


def parameters(reference: dict | None, min_rows: int = DEFAULT_MIN_ROWS) -> dict:
    """Suite parameters: the defaults, with the learned bounds of `reference` when there is one."""
    p = default_parameters(min_rows)
    if not reference:
        return p
    rows, ctr = reference["rows"], reference["ctr"]
    p["rows_hard_min"] = max(min_rows, int(rows["min"] * 0.1))
    p["rows_soft_min"] = max(min_rows, int(rows["min"] * 0.5))
    p["rows_soft_max"] = int(rows["max"] * 2)
    if ctr["mean"]:
        p["ctr_hard_min"] = ctr["min"] / 4
        p["ctr_hard_max"] = min(1.0, ctr["max"] * 3)
        band = max(3 * ctr["sd"], 0.2 * ctr["mean"])
        p["ctr_soft_min"], p["ctr_soft_max"] = max(0.0, ctr["mean"] - band), min(1.0, ctr["mean"] + band)
    for c in INT_COLUMNS:
        lo, hi = reference["int"][c]["min"], reference["int"][c]["max"]
        if lo is None or hi is None:
            continue
        p[f"{c}_soft_min"], p[f"{c}_soft_max"] = lo, hi
        p[f"{c}_hard_min"] = lo - max(10.0, abs(lo))
        p[f"{c}_hard_max"] = max(hi * 10, hi + 1000)
    for c in FEATURES:
        nf = reference["null_fraction"].get(c) or {}
        if nf.get("max") is None:
            continue
        p[f"{c}_null_hard_max"] = min(0.995, nf["max"] + 0.25)
        p[f"{c}_null_soft_min"] = max(0.0, nf["min"] - 0.05)
        p[f"{c}_null_soft_max"] = min(1.0, nf["max"] + 0.05)
    return p


def drift(day: dict, reference: dict | None) -> dict:
    """{psi(C): value} of the day's histograms against the reference's (0 without a usable one)."""
    out = {}
    for c in FEATURES:
        kind = "int" if c in INT_COLUMNS else "cat"
        if not reference or day["profiled_rows"] < PSI_MIN_ROWS:
            out[psi(c)] = 0.0
            continue
        out[psi(c)] = round(psi_value(reference[kind][c]["hist"], day[kind][c]["hist"]), 6)
    return out


def day_facts(day: dict) -> dict:
    """The profile's part of the one-row `stats` frame: null_fraction(C) per feature."""
    return {null_fraction(c): v for c, v in day["null_fraction"].items()}


def main(argv: list[str] | None = None) -> dict | int:
    """`reference` subcommand: merge day profiles into a reference profile (its result: `output`)."""
    import argparse

    from criteo_kernel.result import UNREADABLE_INPUT

    a = argparse.ArgumentParser(prog="python -m criteo_validate reference",
                                description="Merge day profiles (validate --profile-out) into a reference profile.")
    a.add_argument("--profiles", nargs="+", required=True, help="day profile JSON files or URLs")
    a.add_argument("--output", required=True, help="where to write the reference profile")
    args = a.parse_args(argv)
    days = []
    for url in args.profiles:
        day = profiles.load(url)
        if day is None:
            print(f"ERROR: day profile {url} not found (was the day validated?)", flush=True)
            return UNREADABLE_INPUT
        days.append(day)
    ref = merge(days)
    profiles.save(ref, args.output)
    print(f"reference profile of {ref['days']} day(s) written to {args.output}", flush=True)
    return {"output": args.output, "days": ref["days"], "sources": ref["sources"],
            "rows_mean": ref["rows"]["mean"], "ctr_mean": ref["ctr"]["mean"]}
