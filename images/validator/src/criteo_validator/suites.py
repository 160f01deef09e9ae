"""The expectation suites, written once here and committed as GX 1.x JSON in expectations/.

    python -m criteo_validator.suites --write expectations/expectations   # regenerate the JSON
    python -m criteo_validator.suites --check expectations/expectations   # CI: JSON == this file

Why generated: the raw-day suite has ~150 expectations that differ only by column; writing them
by hand invites a column being forgotten. The JSON in git is still what GX loads and what a
reviewer diffs; a test fails when it and this file disagree.

Conventions every suite follows (the validator relies on them):

* `severity`: `critical` = hard, a failure stops the run; `warning` = soft, reported in the task
  log, the step result and the data docs, the run goes on.
* `meta.batch` says what an expectation is evaluated on:
  - `rows`: the day's rows as text (the raw format, empty field = missing);
  - `numbers`: the same rows with the integer columns parsed (non-integers become missing; the
    `rows` regex rule reports them);
  - `stats`: one row of day-level facts: counts over the whole day from `_extract.json`
    (rows, ctr, malformed_rows, read_error, null_fraction(C)), the raw file against its landing
    manifest (landing), the column shapes of the validated rows (distinct(C), top_share(C),
    zero_share(I), see profile.py), drift against the reference profile (psi(C)) and, for
    processed output, mean(C)/std(C).
* `meta.noise_values` (optional, map expectations with `mostly`): that many values outside are
  noise however small the day. `mostly` alone makes one value in a day of fewer than 10,000 a
  breach of "1 in 10,000"; a heavy-tailed column's extreme value is not a corrupted column.
* Bounds that are learned from a reference window are suite parameters
  (`{"$PARAMETER": "I5_hard_max"}`), filled in at validation time from the reference profile
  saved by the last full retrain (see profile.py); without one, the documented defaults in
  profile.DEFAULT_PARAMETERS apply.
"""
from __future__ import annotations

import argparse
import json
import sys
import uuid
from pathlib import Path

from criteo_kernel.schema import CAT_COLUMNS, COLUMNS, FEATURES, INT_COLUMNS, LABEL

HARD, SOFT = "critical", "warning"
# A rescaled or corrupted column puts most of its values outside the hard range. A handful outside
# is a heavy tail that a small reference window did not reach: seen on 2,000-row synthetic days,
# where one I3 value of 4,920 against a reference max of 382 stopped a backfill.
HARD_RANGE_NOISE = 5
_NS = uuid.UUID("6d1b3f0e-6c4e-4f7a-9b7e-2f1c3c9a0b11")


def null_fraction(col: str) -> str:
    return f"null_fraction({col})"


def distinct(col: str) -> str:
    return f"distinct({col})"


def top_share(col: str) -> str:
    return f"top_share({col})"


def zero_share(col: str) -> str:
    return f"zero_share({col})"


def psi(col: str) -> str:
    return f"psi({col})"


def mean(col: str) -> str:
    return f"mean({col})"


def std(col: str) -> str:
    return f"std({col})"


def P(name: str) -> dict:
    return {"$PARAMETER": name}


def _exp(suite: str, type_: str, kwargs: dict, batch: str, severity: str, notes: str,
         noise_values: int | None = None) -> dict:
    key = f"{suite}:{type_}:{json.dumps(kwargs, sort_keys=True)}:{severity}"
    meta = {"batch": batch, "notes": notes} | ({"noise_values": noise_values} if noise_values else {})
    return {"id": str(uuid.uuid5(_NS, key)), "type": type_, "kwargs": kwargs, "severity": severity, "meta": meta}


def raw_day() -> dict:
    s = "raw_day"
    e = []
    # -- the format, row by row (hard) -------------------------------------------------------
    e.append(_exp(s, "expect_column_values_to_not_be_null", {"column": LABEL}, "rows", HARD,
                  "every row has a label (an empty field is read as missing)"))
    e.append(_exp(s, "expect_column_values_to_be_in_set", {"column": LABEL, "value_set": ["0", "1"]},
                  "rows", HARD, "click label: 1 = clicked, 0 = not"))
    for c in INT_COLUMNS:
        e.append(_exp(s, "expect_column_values_to_match_regex", {"column": c, "regex": "^-?[0-9]+$"}, "rows",
                      HARD, "integer count, may be negative; empty fields are missing and not checked"))
    for c in CAT_COLUMNS:
        e.append(_exp(s, "expect_column_values_to_match_regex", {"column": c, "regex": "^[0-9a-f]{8}$"}, "rows",
                      HARD, "32-bit hash as exactly 8 lowercase hex digits; empty fields are missing"))
    # -- integer ranges learned from the reference window -------------------------------------
    for c in INT_COLUMNS:
        e.append(_exp(s, "expect_column_values_to_be_between",
                      {"column": c, "min_value": P(f"{c}_hard_min"), "max_value": P(f"{c}_hard_max"),
                       "mostly": 0.9999}, "numbers", HARD,
                      "hard range: the reference window's range widened (10x its max); more than 1 in "
                      f"10,000 values and more than {HARD_RANGE_NOISE} values outside it is a corrupted or "
                      "rescaled column", noise_values=HARD_RANGE_NOISE))
        e.append(_exp(s, "expect_column_values_to_be_between",
                      {"column": c, "min_value": P(f"{c}_soft_min"), "max_value": P(f"{c}_soft_max"),
                       "mostly": 0.999}, "numbers", SOFT,
                      "soft range: the reference window's observed min..max"))
    # -- day-level facts over the whole day ----------------------------------------------------
    e.append(_exp(s, "expect_column_values_to_be_in_set", {"column": "read_error", "value_set": ["none"]},
                  "stats", HARD, "the raw file was read to its end: not truncated (it ends with a newline), "
                                 "gzip intact, UTF-8 text"))
    e.append(_exp(s, "expect_column_values_to_be_in_set",
                  {"column": "landing", "value_set": ["no manifest", "matches manifest"]}, "stats", HARD,
                  "the raw file is the one its landing manifest (day_N.manifest.json) describes: the lines "
                  "read (rows + malformed), its size and its sha256 as the manifest says"))
    e.append(_exp(s, "expect_column_values_to_be_between",
                  {"column": "malformed_rows", "min_value": 0, "max_value": 0}, "stats", HARD,
                  "every line has exactly 40 tab-separated fields (label, I1..I13, C1..C26)"))
    e.append(_exp(s, "expect_column_values_to_be_between",
                  {"column": "rows", "min_value": P("rows_hard_min")}, "stats", HARD,
                  "row count: at least --min-rows and at least 10% of the smallest reference day"))
    e.append(_exp(s, "expect_column_values_to_be_between",
                  {"column": "rows", "min_value": P("rows_soft_min"), "max_value": P("rows_soft_max")},
                  "stats", SOFT, "row count within 0.5x..2x of the reference days"))
    e.append(_exp(s, "expect_column_values_to_be_between",
                  {"column": "ctr", "min_value": P("ctr_hard_min"), "max_value": P("ctr_hard_max")},
                  "stats", HARD, "click-through rate (positives / rows) within 1/4..3x of the reference "
                                 "range: a collapse to 0 means the labels are broken"))
    e.append(_exp(s, "expect_column_values_to_be_between",
                  {"column": "ctr", "min_value": P("ctr_soft_min"), "max_value": P("ctr_soft_max")},
                  "stats", SOFT, "click-through rate within the reference mean +- max(3 sd, 20%)"))
    for c in FEATURES:
        e.append(_exp(s, "expect_column_values_to_be_between",
                      {"column": null_fraction(c), "min_value": 0, "max_value": P(f"{c}_null_hard_max")},
                      "stats", HARD, f"share of empty {c} fields: at most the reference's + 0.25 and never "
                                     "(almost) all empty"))
        e.append(_exp(s, "expect_column_values_to_be_between",
                      {"column": null_fraction(c), "min_value": P(f"{c}_null_soft_min"),
                       "max_value": P(f"{c}_null_soft_max")},
                      "stats", SOFT, f"share of empty {c} fields within the reference range +- 0.05"))
    e += _shape_expectations(s)
    return {"name": s, "expectations": e, "meta": {
        "input": "extracted",
        "notes": "A raw Criteo day as published by extract. Hard (critical) expectations stop the run; "
                 "soft (warning) ones are reported. Learned bounds come from the reference profile of the "
                 "last full retrain (profile.py)."}}


def _shape_expectations(s: str) -> list:
    """A column collapsed to one or a few values (a join or hashing bug upstream): bounds in profile.py.

    These use expect_column_max_to_be_between: on the one-row `stats` batch a column's max is the
    fact itself, and GX evaluates that aggregate in a third of the time of a per-value
    expectation, which counts at 182 of them (facts are never missing here: GX fails a missing max).
    """
    def shape(fact: str, low, high, severity: str, notes: str) -> dict:
        bounds = {k: v for k, v in (("min_value", low), ("max_value", high)) if v is not None}
        return _exp(s, "expect_column_max_to_be_between", {"column": fact, **bounds}, "stats", severity, notes)

    e = []
    for c in FEATURES:
        e.append(shape(distinct(c), P(f"{c}_distinct_hard_min"), None, HARD,
                       f"distinct non-missing {c} values in the validated rows: not a single one among 1000 or "
                       "more, and at least 10% of the reference's smallest count at this sample size"))
        e.append(shape(distinct(c), P(f"{c}_distinct_soft_min"), P(f"{c}_distinct_soft_max"), SOFT,
                       f"distinct {c} values within 50%..2x of the reference's at this sample size"))
        e.append(shape(top_share(c), 0, P(f"{c}_top_hard_max"), HARD,
                       f"share of the most frequent {c} value among the present ones: at most the reference's "
                       "+ 0.5, and the other values' share not shrunk fivefold"))
        e.append(shape(top_share(c), P(f"{c}_top_soft_min"), P(f"{c}_top_soft_max"), SOFT,
                       f"share of the most frequent {c} value within the reference range +- 0.1"))
    for c in INT_COLUMNS:
        e.append(shape(zero_share(c), 0, P(f"{c}_zero_hard_max"), HARD,
                       f"share of zeros among the present {c} values: at most the reference's + 0.5, and the "
                       "non-zero share not shrunk fivefold"))
        e.append(shape(zero_share(c), P(f"{c}_zero_soft_min"), P(f"{c}_zero_soft_max"), SOFT,
                       f"share of zeros among the present {c} values within the reference range +- 0.1"))
    return e


def drift() -> dict:
    s = "drift"
    e = [_exp(s, "expect_column_values_to_be_between",
              {"column": psi(c), "min_value": 0, "max_value": P("psi_max")}, "stats", SOFT,
              f"population stability index of {c}'s distribution against the reference profile "
              "(> 0.25 is a major shift)")
         for c in FEATURES]
    return {"name": s, "expectations": e, "meta": {
        "input": "extracted", "requires_reference": True,
        "notes": "Distribution drift of a day against the reference profile saved by the last full "
                 "retrain. Soft: drift is not broken data; the monitoring loop retrains on it."}}


def processed_day() -> dict:
    s = "processed_day"
    e = []
    for c in COLUMNS:
        e.append(_exp(s, "expect_column_values_to_not_be_null", {"column": c}, "rows", HARD,
                      "the workflow fills every missing value (FillMissing, Categorify's null id)"))
    e.append(_exp(s, "expect_column_values_to_be_in_set", {"column": LABEL, "value_set": [0, 1]}, "rows", HARD,
                  "click label"))
    for c in CAT_COLUMNS:
        e.append(_exp(s, "expect_column_values_to_be_between",
                      {"column": c, "min_value": 0, "max_value": P(f"{c}_id_max")}, "rows", HARD,
                      "category id within the embedding table (vocabulary size - 1, from the workflow)"))
    for c in INT_COLUMNS:
        e.append(_exp(s, "expect_column_values_to_be_between",
                      {"column": c, "min_value": -1e4, "max_value": 1e4}, "rows", HARD,
                      "continuous feature finite (inf and NaN fail) and of normalised magnitude"))
        for fact, low, high, severity, notes in (
                (mean(c), -3, 3, HARD,
                 "normalised: mean far from 0 means the workflow's statistics do not fit this data"),
                (std(c), 0, 10, HARD, "normalised: standard deviation of order 1"),
                (mean(c), -0.5, 0.5, SOFT, "normalised: mean near 0"),
                (std(c), 0.5, 2, SOFT, "normalised: standard deviation near 1")):
            e.append(_exp(s, "expect_column_values_to_be_between",
                          {"column": fact, "min_value": low, "max_value": high}, "stats", severity, notes))
    return {"name": s, "expectations": e, "meta": {
        "input": "processed",
        "notes": "NVTabular output of preprocess, checked before training."}}


SUITES = {"raw_day": raw_day, "drift": drift, "processed_day": processed_day}


def render(name: str) -> str:
    suite = SUITES[name]()
    suite.update({"id": str(uuid.uuid5(_NS, name)), "notes": None})
    suite["meta"]["great_expectations_version"] = "1.24.1"
    return json.dumps(suite, indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m criteo_validator.suites", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--write", metavar="DIR", help="write <suite>.json files into DIR")
    g.add_argument("--check", metavar="DIR", help="exit 1 if DIR's files differ from this module")
    a = p.parse_args(argv)
    stale = []
    for name in SUITES:
        path = Path(a.write or a.check) / f"{name}.json"
        if a.write:
            path.write_text(render(name))
        elif not path.exists() or path.read_text() != render(name):
            stale.append(str(path))
    if stale:
        print(f"out of date (run python -m criteo_validator.suites --write): {', '.join(stale)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
