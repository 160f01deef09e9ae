"""Day profiles, the reference profile learned from a window of days, and the bounds derived from it.

A *day profile* is what the validator saw in one day:

* whole-day counts from extract's `_extract.json` (rows, positives, malformed rows, empty fields
  per column): exact however large the day;
* histograms and min/max over the rows the GX stage read (all of them, or the documented
  sample): integer columns in fixed log2 bins, categorical hashes in 256 buckets by their first
  two hex digits. Fixed bins make profiles of different days comparable and summable;
* the shape of each column over the same rows, which histograms cannot see (a column collapsed to
  one hash still fills one of 256 buckets, as a popular hash does): `present` (non-missing
  values), `distinct` (distinct non-missing values), `top_share` (the most frequent value's share
  of them; 0 without any) and, for integer columns, `zero_share`. Exact up to DISTINCT_CAP
  distinct values per column; beyond that `distinct` is a lower bound (a column that large has
  not collapsed).

A *reference profile* merges the day profiles of a window (`merge`): the full retrain saves the
one of its training window with the model (`reference_profile.json` in the model's package, which
the version's lineage names),
and later validations derive their learned bounds (`parameters`; `day_parameters` for the column
shapes, whose bounds depend on the day's sample size) and drift (`psi`) from it. A reference
saved before the column shapes were profiled has no `distinct`/`top_share`/`zero_share`: their
bounds are then the format-level defaults.

Bounds on the column shapes (the collapse of a column, which a join or hashing bug upstream
causes, not drift):

* `distinct(C)`: the number of distinct values grows with the number of values seen, less than
  linearly (its expectation is concave in the sample size), so a day with n present values is
  expected to have at least `D_ref * min(1, n / N_ref)` of them, D_ref the reference's smallest
  distinct count and N_ref its largest count of present values. Hard: below 10% of that; soft:
  below 50%, or above twice the reference's largest count (scaled up when the day saw more
  values). Without a reference: one single value among at least 1000 present values is hard
  (as suspicious as an all-empty column).
* `top_share(C)`, `zero_share(I)`: shares, comparable across sample sizes. Hard: above
  `min(ref max + 0.5, 1 - (1 - ref max) / 5)`: half of the column's values newly piled onto one
  value, or the other values' share shrunk fivefold; soft: outside the reference range +- 0.1.

    python -m criteo_validator reference --profiles P1.json P2.json ... --output REF.json
"""
from __future__ import annotations

import functools
import math
from collections.abc import Iterable

from criteo_kernel import profiles
from criteo_kernel.profiles import CAT_BUCKETS, INT_BINS, PROFILE_VERSION, PSI_MAX, PSI_MIN_ROWS, int_bins, psi_value
from criteo_kernel.schema import CAT_COLUMNS, FEATURES, INT_COLUMNS

from .suites import distinct, null_fraction, psi, top_share, zero_share

# Suite parameters without a reference profile: format-level sanity only, documented in docs/data-quality.md.
DEFAULT_MIN_ROWS = 1000
SINGLE_VALUE_MIN_PRESENT = 1000  # from this many present values on, a single distinct one is broken
DISTINCT_CAP = 1 << 18  # distinct values counted exactly per column (the default sample: 200k rows)
DISTINCT_HARD, DISTINCT_SOFT = 0.1, 0.5  # shares of the size-adjusted reference distinct count
SHARE_HARD_JUMP, SHARE_HARD_SHRINK, SHARE_SOFT_BAND = 0.5, 0.2, 0.1
NO_MAX = 10**12  # "unbounded" as a suite parameter (JSON has no infinity)


def default_parameters(min_rows: int = DEFAULT_MIN_ROWS) -> dict:
    p = {"rows_hard_min": min_rows, "rows_soft_min": min_rows, "rows_soft_max": 10**12,
         "ctr_hard_min": 0.001, "ctr_hard_max": 0.9, "ctr_soft_min": 0.001, "ctr_soft_max": 0.9,
         "psi_max": PSI_MAX}
    for c in INT_COLUMNS:
        p.update({f"{c}_hard_min": -(2**31), f"{c}_hard_max": 2**31 - 1,
                  f"{c}_soft_min": -(2**31), f"{c}_soft_max": 2**31 - 1})
    for c in FEATURES:
        p.update({f"{c}_null_hard_max": 0.995, f"{c}_null_soft_min": 0.0, f"{c}_null_soft_max": 0.995})
        # column shapes: set per day by day_parameters; these keep the suite resolvable without a day
        p.update(_distinct_bounds(c, 0, None, None))
        p.update(_share_bounds(f"{c}_top", None))
    for c in INT_COLUMNS:
        p.update(_share_bounds(f"{c}_zero", None))
    return p


# ----------------------------------------------------------------------------------------------
# one day
# ----------------------------------------------------------------------------------------------

class ValueCounts:
    """Exact counts of one column's non-missing values over chunks, kept as a pyarrow table.

    Bounded: past DISTINCT_CAP distinct values only the most frequent DISTINCT_CAP are kept, so
    `distinct` becomes a lower bound and `top_share` stays right (a frequent value is never dropped).
    """

    def __init__(self):
        self.present = 0
        self.table = None  # columns v (value), n (count)

    def add(self, arr) -> None:
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = arr.drop_null()
        if not len(arr):
            return
        self.present += len(arr)
        vc = pc.value_counts(arr)
        table = pa.table({"v": vc.field("values"), "n": vc.field("counts")})
        if self.table is not None:  # a later chunk: sum the counts of values seen in both
            merged = pa.concat_tables([self.table, table]).group_by("v").aggregate([("n", "sum")])
            table = pa.table({"v": merged["v"], "n": merged["n_sum"]})
        if table.num_rows > DISTINCT_CAP:
            table = table.sort_by([("n", "descending")]).slice(0, DISTINCT_CAP)
        self.table = table

    @property
    def distinct(self) -> int:
        return self.table.num_rows if self.table is not None else 0

    def top_share(self) -> float:
        """The most frequent value's share of the present ones; 0 without any (nothing piled up)."""
        import pyarrow.compute as pc

        return pc.max(self.table["n"]).as_py() / self.present if self.present else 0.0


class ProfileBuilder:
    """Accumulates histograms and column shapes chunk by chunk (pandas frames of text, None = missing)."""

    def __init__(self):
        import numpy as np

        self.rows = 0
        self.int_hist = {c: np.zeros(INT_BINS, dtype=np.int64) for c in INT_COLUMNS}
        self.int_min: dict = {c: None for c in INT_COLUMNS}
        self.int_max: dict = {c: None for c in INT_COLUMNS}
        self.cat_hist = {c: np.zeros(CAT_BUCKETS, dtype=np.int64) for c in CAT_COLUMNS}
        self.counts = {c: ValueCounts() for c in FEATURES}
        self.zeros = {c: 0 for c in INT_COLUMNS}

    def add(self, text_frame, numbers_frame) -> None:
        self.rows += len(text_frame)
        for c in INT_COLUMNS:
            if c in numbers_frame:
                self._add_int(c, numbers_frame[c])
        for c in CAT_COLUMNS:
            if c in text_frame:
                self._add_cat(c, text_frame[c])

    def _add_int(self, c: str, column) -> None:
        import numpy as np
        import pyarrow as pa

        v = column.to_numpy(dtype=np.float64, na_value=np.nan)
        v = v[np.isfinite(v)]
        if not len(v):
            return
        self.int_hist[c] += np.bincount(int_bins(v), minlength=INT_BINS)[:INT_BINS]
        lo, hi = float(v.min()), float(v.max())
        self.int_min[c] = lo if self.int_min[c] is None else min(self.int_min[c], lo)
        self.int_max[c] = hi if self.int_max[c] is None else max(self.int_max[c], hi)
        self.counts[c].add(pa.array(v))
        self.zeros[c] += int(np.count_nonzero(v == 0))

    def _add_cat(self, c: str, column) -> None:
        import numpy as np
        import pyarrow as pa
        import pyarrow.compute as pc

        arr = pa.array(column, type=pa.string(), from_pandas=True)
        self.counts[c].add(arr)
        ok = pc.fill_null(pc.match_substring_regex(arr, "^[0-9a-f]{8}$"), False)
        idx = pc.index_in(pc.utf8_slice_codeunits(pc.filter(arr, ok), 0, 2), value_set=_bucket_names())
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
            "present": {c: self.counts[c].present for c in FEATURES},
            "distinct": {c: self.counts[c].distinct for c in FEATURES},
            "top_share": {c: self.counts[c].top_share() for c in FEATURES},
            "zero_share": {c: self.zeros[c] / max(self.counts[c].present, 1) for c in INT_COLUMNS},
        }


@functools.cache
def _bucket_names():
    """The 256 bucket names "00".."ff" as a pyarrow array (pyarrow is imported lazily here)."""
    import pyarrow as pa

    return pa.array([f"{i:02x}" for i in range(CAT_BUCKETS)])


# ----------------------------------------------------------------------------------------------
# a window of days
# ----------------------------------------------------------------------------------------------

def merge(profiles: Iterable[dict]) -> dict:
    """Reference profile of a window: ranges over days, summed histograms."""
    profiles = list(profiles)
    if not profiles:
        raise ValueError("a reference profile needs at least one day profile")

    def add(lists):
        return [sum(x) for x in zip(*lists, strict=True)]

    return {
        "profile_version": PROFILE_VERSION,
        "kind": "reference",
        "sources": [p.get("source") for p in profiles],
        "days": len(profiles),
        "rows": _span([p["rows"] for p in profiles]),
        "ctr": _span([p["ctr"] for p in profiles]),
        "null_fraction": {c: _span([p["null_fraction"].get(c) for p in profiles]) for c in FEATURES},
        "profiled_rows": sum(p["profiled_rows"] for p in profiles),
        "int": {c: {"min": _opt(min, [p["int"][c]["min"] for p in profiles]),
                    "max": _opt(max, [p["int"][c]["max"] for p in profiles]),
                    "hist": add([p["int"][c]["hist"] for p in profiles])} for c in INT_COLUMNS},
        "cat": {c: {"hist": add([p["cat"][c]["hist"] for p in profiles])} for c in CAT_COLUMNS},
        **_shape_spans(profiles),
    }


def _span(values: list) -> dict:
    values = [v for v in values if v is not None]
    if not values:
        return {"mean": None, "sd": None, "min": None, "max": None}
    m = sum(values) / len(values)
    sd = math.sqrt(sum((v - m) ** 2 for v in values) / len(values))
    return {"mean": m, "sd": sd, "min": min(values), "max": max(values)}


def _shape_spans(profiles: list) -> dict:
    """Spans over days of the column shapes; {} when no day has them (profiles from before them)."""
    days = [p for p in profiles if "distinct" in p]
    if not days:
        return {}

    def spans(key: str, columns) -> dict:
        return {c: _span([p[key].get(c) for p in days]) for c in columns}

    return {"profiled_rows_per_day": _span([p["profiled_rows"] for p in days]),
            "present": spans("present", FEATURES), "distinct": spans("distinct", FEATURES),
            "top_share": spans("top_share", FEATURES), "zero_share": spans("zero_share", INT_COLUMNS)}


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


def day_parameters(day: dict, reference: dict | None) -> dict:
    """The bounds on the day's column shapes (module doc): learned from the reference when it has
    them, the distinct counts' sized to the values this day's profile saw. A column without a
    present value has nothing to judge (its null fraction fails it): its shape bounds are open."""
    ref = reference or {}
    p = {}
    for c in FEATURES:
        n = (day.get("present") or {}).get(c) or 0
        p.update(_distinct_bounds(c, n, (ref.get("distinct") or {}).get(c), (ref.get("present") or {}).get(c)))
        p.update(_share_bounds(f"{c}_top", (ref.get("top_share") or {}).get(c) if n else None))
    for c in INT_COLUMNS:
        n = (day.get("present") or {}).get(c) or 0
        p.update(_share_bounds(f"{c}_zero", (ref.get("zero_share") or {}).get(c) if n else None))
    return p


def _distinct_bounds(c: str, n: int, ref_distinct: dict | None, ref_present: dict | None) -> dict:
    hard = 2 if n >= SINGLE_VALUE_MIN_PRESENT else 0
    soft_min, soft_max = hard, NO_MAX
    d, seen = ref_distinct or {}, ref_present or {}
    if d.get("min") is not None and seen.get("min"):
        # concave in the sample size: fewer values seen scale the count down at most linearly,
        # more values never lower it (and raise it at most linearly)
        expected_min = d["min"] * min(1.0, n / seen["max"])
        expected_max = d["max"] * max(1.0, n / seen["min"])
        hard = max(hard, round(DISTINCT_HARD * expected_min, 2))
        soft_min, soft_max = max(hard, round(DISTINCT_SOFT * expected_min, 2)), round(2 * expected_max, 2)
    return {f"{c}_distinct_hard_min": hard, f"{c}_distinct_soft_min": soft_min, f"{c}_distinct_soft_max": soft_max}


def _share_bounds(name: str, ref: dict | None) -> dict:
    """A share's bounds from its reference span: a jump of +0.5, or the rest shrunk fivefold,
    whichever comes first, is hard; outside the range +- 0.1 is soft. Open without a span."""
    if not ref or ref.get("max") is None:
        return {f"{name}_hard_max": 1.0, f"{name}_soft_min": 0.0, f"{name}_soft_max": 1.0}
    hard = min(ref["max"] + SHARE_HARD_JUMP, 1.0 - SHARE_HARD_SHRINK * (1.0 - ref["max"]))
    return {f"{name}_hard_max": round(hard, 6),
            f"{name}_soft_min": round(max(0.0, ref["min"] - SHARE_SOFT_BAND), 6),
            f"{name}_soft_max": round(min(hard, ref["max"] + SHARE_SOFT_BAND), 6)}


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
    """The profile's part of the one-row `stats` frame: null_fraction(C) (whole day, when extract
    counted it), distinct(C) and top_share(C) per feature, zero_share(I) per integer column."""
    facts = {null_fraction(c): v for c, v in day["null_fraction"].items()}
    for fact, key in ((distinct, "distinct"), (top_share, "top_share"), (zero_share, "zero_share")):
        facts.update({fact(c): v for c, v in (day.get(key) or {}).items()})
    return facts


def main(argv: list[str] | None = None) -> dict | int:
    """`reference` subcommand: merge day profiles into a reference profile (its result: `output`)."""
    import argparse

    from criteo_kernel.result import UNREADABLE_INPUT

    a = argparse.ArgumentParser(prog="python -m criteo_validator reference",
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
