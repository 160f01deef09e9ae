"""Great Expectations glue: an in-memory context, per-chunk validation, summing chunk results.

GX validates one batch at a time; a day is validated in chunks, so each expectation's per-chunk
results are summed (`Aggregate`): element/missing/unexpected counts added, percentages
recomputed, the first few unexpected values kept, `mostly` applied to the sums. The summed
results are real `ExpectationValidationResult`s, so GX renders them in Data Docs as usual.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# GX logs a lot at INFO; this must happen before great_expectations is imported.
logging.getLogger("great_expectations").setLevel(logging.WARNING)

KEEP_EXAMPLES = 20  # unexpected values kept per expectation over all chunks
BATCH_META_KEY = "batch"  # expectation meta key: rows | numbers | stats
BATCH_KINDS = ("rows", "numbers", "stats")


def severity_of(cfg) -> str:
    sev = getattr(cfg, "severity", None)
    return str(getattr(sev, "value", sev) or "critical")


def batch_kind(expectation) -> str:
    return str((expectation.meta or {}).get(BATCH_META_KEY, "rows"))


def domain_columns(expectation) -> tuple | None:
    return _kwargs_columns(expectation.configuration.kwargs or {})


def _kwargs_columns(kw: dict) -> tuple | None:
    if "column" in kw:
        return (kw["column"],)
    if "column_A" in kw and "column_B" in kw:
        return (kw["column_A"], kw["column_B"])
    if "column_list" in kw:
        return tuple(kw["column_list"])
    return None  # table-level: the whole chunk


def column_suites(suites: list, kind: str) -> list:
    """The `kind` expectations of all suites grouped by the columns they read: [(columns | None, suite)].

    GX's pandas engine filters the *whole* batch DataFrame (every column) for each column
    expectation's unexpected values and hashes the whole frame once per batch, so one 40-column
    batch costs ~40x the filtering work of forty 1-column batches. Validating each group on a
    frame of just its columns gives the same results at about twice the speed overall.
    The `stats` batch is one row: there filtering costs nothing and each GX call a fixed ~50 ms,
    so all of a suite's facts go in one group (its columns: every fact it reads).
    """
    import great_expectations as gx

    groups: dict = {}
    for suite in suites:
        for e in suite.expectations:
            if batch_kind(e) == kind:
                key = (suite.name, "stats" if kind == "stats" else domain_columns(e))
                groups.setdefault(key, []).append(e.configuration)
    out = []
    for (name, cols), confs in groups.items():
        if cols == "stats":
            cols = tuple(dict.fromkeys(c for conf in confs for c in (_kwargs_columns(conf.kwargs or {}) or ())))
        out.append((name, cols, gx.ExpectationSuite(name=name, expectations=confs)))
    return out


class Runner:
    """An in-memory GX context with one pandas dataframe asset per kind of batch."""

    def __init__(self, docs_dir: Path | None):
        import great_expectations as gx
        from great_expectations.data_context.types.base import (
            DataContextConfig,
            InMemoryStoreBackendDefaults,
            ProgressBarsConfig,
        )

        sites = {}
        if docs_dir is not None:
            sites["criteo_validation"] = {
                "class_name": "SiteBuilder",
                "show_how_to_buttons": False,
                "store_backend": {"class_name": "TupleFilesystemStoreBackend",
                                  "base_directory": str(docs_dir)},
                "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
            }
        config = DataContextConfig(
            store_backend_defaults=InMemoryStoreBackendDefaults(init_temp_docs_sites=False),
            data_docs_sites=sites,
            progress_bars=ProgressBarsConfig(globally=False, metric_calculations=False),
            analytics_enabled=False,
        )
        self.context = gx.get_context(mode="ephemeral", project_config=config)
        source = self.context.data_sources.add_pandas("criteo")
        self.batch_definitions = {
            kind: source.add_dataframe_asset(asset).add_batch_definition_whole_dataframe(kind)
            for kind, asset in (("rows", "day_rows"), ("numbers", "day_numbers"), ("stats", "day_facts"))
        }

    def validate(self, kind: str, df, suite, parameters: dict):
        batch = self.batch_definitions[kind].get_batch(batch_parameters={"dataframe": df})
        return batch.validate(suite, expectation_parameters=parameters,
                              result_format={"result_format": "BASIC",
                                             "partial_unexpected_count": KEEP_EXAMPLES})



@dataclass
class Aggregate:
    """Running sum of one expectation's results over chunks."""

    config: Any = None  # ExpectationConfiguration of the first chunk (parameters resolved)
    chunks: int = 0
    success_all: bool = True
    is_map: bool = False
    element_count: int = 0
    missing_count: int = 0
    unexpected_count: int = 0
    examples: list = field(default_factory=list)
    other_result: dict | None = None  # non-map expectations: the first failing (or first) result
    exception: dict | None = None
    meta: dict = field(default_factory=dict)

    def add(self, r) -> None:
        self.chunks += 1
        if self.config is None:
            self.config = r.expectation_config
            self.meta = dict(r.meta or {})
        exc = r.exception_info or {}
        if exc.get("raised_exception") and self.exception is None:
            self.exception = exc
        res = r.result or {}
        if "unexpected_count" in res and "element_count" in res:
            self.is_map = True
            self.element_count += int(res.get("element_count") or 0)
            self.missing_count += int(res.get("missing_count") or 0)
            self.unexpected_count += int(res.get("unexpected_count") or 0)
            room = KEEP_EXAMPLES - len(self.examples)
            if room > 0:
                self.examples += list(res.get("partial_unexpected_list") or [])[:room]
        elif self.other_result is None or (not r.success and self.success_all):
            self.other_result = dict(res)
        self.success_all = self.success_all and bool(r.success)

    @property
    def success(self) -> bool:
        if self.exception is not None or self.chunks == 0:
            return False
        if not self.is_map:
            return self.success_all
        mostly = (self.config.kwargs or {}).get("mostly") if self.config is not None else None
        nonmissing = self.element_count - self.missing_count
        if mostly is None or nonmissing == 0:
            return self.unexpected_count == 0
        return (self.unexpected_count <= noise_values(self.config)
                or (nonmissing - self.unexpected_count) / nonmissing >= float(mostly))

    def result_dict(self) -> dict:
        if not self.is_map:
            return dict(self.other_result or {})
        nonmissing = self.element_count - self.missing_count
        pct = lambda num, den: (100.0 * num / den) if den else 0.0  # noqa: E731
        return {
            "element_count": self.element_count,
            "missing_count": self.missing_count,
            "missing_percent": pct(self.missing_count, self.element_count),
            "unexpected_count": self.unexpected_count,
            "unexpected_percent": pct(self.unexpected_count, nonmissing),
            "unexpected_percent_total": pct(self.unexpected_count, self.element_count),
            "unexpected_percent_nonmissing": pct(self.unexpected_count, nonmissing),
            "partial_unexpected_list": list(self.examples),
        }

    def to_gx(self):
        from great_expectations.core import ExpectationValidationResult

        exc = self.exception or {"raised_exception": False, "exception_traceback": None,
                                 "exception_message": None}
        return ExpectationValidationResult(success=self.success, expectation_config=self.config,
                                           result=self.result_dict(), meta=self.meta,
                                           exception_info=exc)


def noise_values(cfg) -> int:
    """How many unexpected values are noise whatever the share (suites.py: `meta.noise_values`)."""
    return int((getattr(cfg, "meta", None) or {}).get("noise_values") or 0)


def exp_key(cfg, position: int) -> str:
    """An expectation's identity across chunks and column groups: its id, else its definition."""
    kw = {k: v for k, v in (cfg.kwargs or {}).items() if k != "batch_id"}
    return getattr(cfg, "id", None) or f"{cfg.type}:{json.dumps(kw, sort_keys=True, default=str)}"


def _num(x):
    return int(x) if isinstance(x, float) and x.is_integer() else x


def describe_rule(cfg) -> str:
    """The expected side, in words, from an expectation configuration (parameters resolved)."""
    kw = {k: v for k, v in (cfg.kwargs or {}).items() if k not in ("batch_id", "result_format")}
    t = cfg.type
    mostly = kw.get("mostly")
    noise = noise_values(cfg)
    tail = (f" (for at least {mostly * 100:.4g}% of present values" + (f", or all but {noise}" if noise else "") + ")"
            if mostly is not None else "")
    if t == "expect_column_values_to_be_in_set":
        return f"values in {kw.get('value_set')}{tail}"
    if t == "expect_column_values_to_not_be_in_set":
        return f"values not in {kw.get('value_set')}{tail}"
    if t == "expect_column_values_to_match_regex":
        return f"values match regex {kw.get('regex')}{tail}"
    if t == "expect_column_values_to_not_match_regex":
        return f"values do not match regex {kw.get('regex')}{tail}"
    if t == "expect_column_values_to_not_be_null":
        return f"no missing (empty) values{tail}"
    if t in ("expect_column_values_to_be_between", "expect_column_min_to_be_between",
             "expect_column_max_to_be_between", "expect_column_mean_to_be_between",
             "expect_table_row_count_to_be_between"):
        lo, hi = _num(kw.get("min_value")), _num(kw.get("max_value"))
        what = {"expect_column_min_to_be_between": "min",
                "expect_column_max_to_be_between": "max",
                "expect_column_mean_to_be_between": "mean",
                "expect_table_row_count_to_be_between": "row count"}.get(t, "value")
        if (cfg.meta or {}).get(BATCH_META_KEY) == "stats":
            what = "value"  # the one-row batch of facts: its min, max, mean are the fact
        parts = ([f"{lo} <="] if lo is not None else []) + [what] + ([f"<= {hi}"] if hi is not None else [])
        return " ".join(parts) + tail
    if t == "expect_column_pair_values_to_be_equal":
        return f"{kw.get('column_A')} == {kw.get('column_B')}"
    shown = {k: v for k, v in kw.items() if k != "column"}
    return f"{t}({json.dumps(shown, default=str)})"


def rule_with_notes(cfg) -> str:
    notes = (cfg.meta or {}).get("notes")
    return describe_rule(cfg) + (f" [{notes}]" if notes else "")


def column_of(cfg) -> str | None:
    kw = cfg.kwargs or {}
    if "column" in kw:
        return kw["column"]
    if "column_A" in kw:
        return f"{kw['column_A']},{kw['column_B']}"
    if "column_list" in kw:
        return ",".join(kw["column_list"])
    return None


def describe_observed(agg: Aggregate, kind: str, stats: dict) -> str:
    if agg.exception is not None:
        return f"error: {agg.exception.get('exception_message')}"
    res = agg.result_dict()
    if not agg.is_map:
        if "observed_value" in res and kind == "stats":
            return f"{column_of(agg.config)} = {_plain(res['observed_value'])!r}"
        if "observed_value" in res:
            return f"observed_value={res.get('observed_value')!r}"
        return json.dumps(res, default=str)
    nonmissing = agg.element_count - agg.missing_count
    if kind == "stats":
        col = column_of(agg.config)
        shown = agg.examples[:5] or ([stats.get(col)] if col in stats else [])
        text = f"{col} = {', '.join(repr(v) for v in shown)}"
        if col == "malformed_rows" and stats.get("malformed_examples"):
            ex = [f"line {e.get('line') if e.get('line') is not None else '?'}: {e.get('fields')} fields, expected "
                  f"{stats.get('num_fields_expected', 40)}: {str(e.get('text'))[:80]!r}"
                  for e in stats["malformed_examples"][:3] if isinstance(e, dict)]
            text += f"; examples from _extract.json: {'; '.join(ex)}"
        detail = stats.get("read_error_detail")
        if col == "read_error" and isinstance(detail, dict):
            source = str(stats.get("source") or "the raw file")
            # extract's message names the file again, then the fix: quote the fix once, whole
            message = str(detail.get("message")).removeprefix(f"{source}: ")
            text += f" after {detail.get('after_rows')} rows of {source}: {_printable(message)[:400]}"
        return text
    text = (f"{agg.unexpected_count} of {nonmissing} present values unexpected "
            f"({res['unexpected_percent']:.4g}%)")
    if agg.config.type == "expect_column_values_to_not_be_null":
        text = (f"{agg.unexpected_count} of {agg.element_count} values missing "
                f"({100.0 * agg.unexpected_count / max(agg.element_count, 1):.4g}%)")
    if agg.examples:
        uniq = list(dict.fromkeys(repr(v) for v in agg.examples))[:8]
        text += f"; sample bad values: [{', '.join(uniq)}]"
    return text


def _plain(value):
    """A numpy scalar as the Python number it is (its repr would read np.float64(0.5))."""
    value = value.item() if hasattr(value, "item") else value
    return round(value, 6) if isinstance(value, float) else value


def _printable(text: str) -> str:
    """Binary garbage quoted in an error message must not garble the log or the HTML."""
    return "".join(ch if ch.isprintable() else "?" for ch in text)
