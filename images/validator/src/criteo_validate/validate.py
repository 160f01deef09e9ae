"""validate: the data-quality gate. Check published partitions against Great Expectations suites.

    python -m criteo_validate --input PART [PART ...] --suite raw_day --suite drift \
        --data-docs URL --run-name NAME [--reference REF.json] [--profile-out URL] \
        [--sample-rows 200000] [--min-rows 1000] [--expectations-dir DIR]

* The suites are GX 1.x JSON in the file project `expectations/` (written by suites.py), loaded
  with a FileDataContext; validation and Data Docs run in an in-memory context, so nothing is
  written into the git-tracked project.
* Every expectation has a severity: `critical` (hard) failures fail the step, `warning` (soft)
  ones are reported (log, step result, data docs) and the run goes on.
* Each expectation's `meta.batch` says what it is evaluated on: the rows as text (`rows`), the
  rows with integer columns parsed (`numbers`), or one row of day-level facts (`stats`): counts
  over the whole day from `_extract.json`, drift (PSI) against the reference profile, and
  mean/std of processed features. See partition.py for how a 195M-row day is read (streamed
  chunks, a documented deterministic sample) and profile.py for the learned bounds.
* Data Docs: the run's results are rendered as a GX site in a scratch folder and published to
  `--data-docs` (local folder or gs://) in one move, with `_summary.json` beside `index.html`
  for the Airflow plugin's index of runs.

Exit status: 0 passed (warnings allowed), 1 a hard expectation failed, 2 unreadable input or
configuration (the message names the file). The result (see `main`) is printed as the last line,
`STEP_RESULT {...}`, and written to $STEP_RESULT_PATH when that is set.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import gx_results as gxr
from . import profile as prof
from .partition import InputError, Partition, ReadPlan, iter_chunks, open_partitions, plan_reads
from .result import emit
from .suites import CAT_COLUMNS, FEATURES, INT_COLUMNS, mean, std

DEFAULT_SUITES = ("raw_day", "drift")
DEFAULT_SAMPLE_ROWS = 200_000
DEFAULT_CHUNK_ROWS = 500_000  # GX has a fixed cost per batch: big chunks amortise it


def default_expectations_dir() -> Path:
    env = os.environ.get("CRITEO_EXPECTATIONS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:  # repo checkout: <repo>/images/validator/src/criteo_validate
        if (parent / "expectations" / "great_expectations.yml").exists():
            return parent / "expectations"
    return Path("/app/expectations")  # the image's copy


def load_suites(expectations_dir: Path, names: list[str]) -> list:
    import great_expectations as gx

    if not (expectations_dir / "great_expectations.yml").exists():
        raise InputError(f"{expectations_dir / 'great_expectations.yml'}: GX project not found")
    ctx = gx.get_context(mode="file", context_root_dir=str(expectations_dir))
    suites = []
    for name in names:
        try:
            suite = ctx.suites.get(name)
        except Exception as exc:
            raise InputError(f"{expectations_dir / 'expectations' / (name + '.json')}: "
                             f"cannot load suite {name!r}: {exc}") from exc
        unknown = {gxr.batch_kind(e) for e in suite.expectations} - set(gxr.BATCH_KINDS)
        if unknown:
            raise InputError(f"suite {name}: unknown meta.{gxr.BATCH_META_KEY} values {sorted(unknown)} "
                             f"(use {', '.join(gxr.BATCH_KINDS)})")
        suites.append(suite)
    kinds = {(s.meta or {}).get("input", "extracted") for s in suites}
    if len(kinds) > 1:
        raise InputError(f"suites {names} expect different inputs {sorted(kinds)}: validate them separately")
    return suites


# --------------------------------------------------------------------------------------------
# one pass over the rows, then the day-level facts
# --------------------------------------------------------------------------------------------

@dataclass
class Outcome:
    results: list  # [(suite name, kind, Aggregate)] in suite order
    rows_validated: int
    chunks: int
    plan: ReadPlan
    seconds_gx: float
    seconds_total: float
    first_meta: dict
    facts: dict  # the one-row `stats` batch
    profile: dict | None  # day profile (extracted input)
    skipped: dict = field(default_factory=dict)  # suite -> why it was not evaluated
    detail: dict = field(default_factory=dict)  # what failure messages quote: read error, examples

    def failed(self, severity: str) -> list:
        return [(s, k, a) for s, k, a in self.results
                if not a.success and gxr.severity_of(a.config) == severity]

    @property
    def success(self) -> bool:
        return bool(self.results) and not self.failed("critical")


class _Moments:
    """Streaming mean/std of the processed continuous columns."""

    def __init__(self):
        self.n, self.s, self.ss = {}, {}, {}

    def add(self, df) -> None:
        import numpy as np

        for c in INT_COLUMNS:
            if c in df:
                v = df[c].to_numpy(dtype=np.float64, na_value=np.nan)
                v = v[np.isfinite(v)]
                self.n[c] = self.n.get(c, 0) + len(v)
                self.s[c] = self.s.get(c, 0.0) + float(v.sum())
                self.ss[c] = self.ss.get(c, 0.0) + float((v * v).sum())

    def facts(self) -> dict:
        out = {}
        for c, n in self.n.items():
            m = self.s[c] / n if n else 0.0
            out[mean(c)] = m
            out[std(c)] = max(self.ss[c] / n - m * m, 0.0) ** 0.5 if n else 0.0
        return out


def numbers_frame(df):
    import pandas as pd

    return pd.DataFrame({c: pd.to_numeric(df[c], errors="coerce") for c in INT_COLUMNS if c in df})


def day_facts(part: Partition, null_counts: dict, rows_seen: int, day_profile: dict | None,
              reference: dict | None, moments: _Moments | None) -> dict:
    s = part.stats
    if part.kind == "processed":
        return {"rows": int(s["rows_total"]), **(moments.facts() if moments else {})}
    rows = int(s["rows"])
    err = s.get("read_error")
    facts = {
        "rows": rows,
        "positives": int(s["positives"]),
        # no rows: a ctr of 0 fails the ctr rule instead of a null that GX would skip as missing
        "ctr": s["positives"] / rows if rows > 0 else 0.0,
        "malformed_rows": int(s["malformed_rows"]),
        "read_error": (err or {}).get("kind", "unknown") if err else "none",
    }
    if rows == 0:  # no rows: the row count fails the day; a share of nothing would only add noise
        facts.update({f"null_fraction({c})": None for c in FEATURES})
    elif day_profile is not None and day_profile["null_fraction"]:
        facts.update(prof.day_facts(day_profile))
    else:  # a partition from before extract counted empty fields: the validated rows' share
        facts.update({f"null_fraction({c})": (null_counts.get(c, 0) / rows_seen if rows_seen else 1.0)
                      for c in FEATURES})
    if day_profile is not None:
        facts.update(prof.drift(day_profile, reference))
    return facts


def run_validation(part: Partition, suites: list, runner: gxr.Runner, parameters: dict,
                   sample_rows: int | None, chunk_rows: int, reference: dict | None) -> Outcome:
    import pandas as pd

    started = time.time()
    skipped = {}
    active = []
    for suite in suites:
        if (suite.meta or {}).get("requires_reference") and reference is None:
            skipped[suite.name] = "no reference profile (none saved by a full retrain yet, or --reference not given)"
        else:
            active.append(suite)
    plan = plan_reads(part, sample_rows)
    order = {(s.name, gxr.exp_key(e.configuration, i)): (k, i)
             for k, s in enumerate(active) for i, e in enumerate(s.expectations)}
    aggs: dict = {}
    first_meta: dict = {}
    gx_seconds = 0.0
    chunks = rows = 0

    def absorb(kind: str, suite_name: str, suite_result) -> None:
        nonlocal first_meta
        if not first_meta:
            first_meta = dict(suite_result.meta or {})
        for pos, r in enumerate(suite_result.results):
            key = (suite_name, gxr.exp_key(r.expectation_config, pos))
            aggs.setdefault(key, (suite_name, kind, gxr.Aggregate()))[2].add(r)

    extracted = part.kind == "extracted"
    builder = prof.ProfileBuilder() if extracted else None
    moments = None if extracted else _Moments()
    null_counts: dict = {}
    row_groups = gxr.column_suites(active, "rows")
    num_groups = gxr.column_suites(active, "numbers")
    for df in iter_chunks(part, plan, chunk_rows):
        nums = numbers_frame(df) if extracted else None
        t = time.time()
        for kind, frame, groups in (("rows", df, row_groups), ("numbers", nums, num_groups)):
            for name, cols, sub in groups:
                narrow = frame if cols is None or not set(cols) <= set(frame.columns) else frame[list(cols)]
                absorb(kind, name, runner.validate(kind, narrow, sub, parameters))
        gx_seconds += time.time() - t
        if builder is not None:
            builder.add(df, nums)
        if moments is not None:
            moments.add(df)
        for c, n in df.isna().sum().items():
            null_counts[c] = null_counts.get(c, 0) + int(n)
        chunks += 1
        rows += len(df)
    day_profile = builder.finish(part.stats, part.label) if builder is not None else None
    facts = day_facts(part, null_counts, rows, day_profile, reference, moments)
    stats_groups = gxr.column_suites(active, "stats")
    if stats_groups:
        frame = pd.DataFrame([facts])
        t = time.time()
        for name, cols, sub in stats_groups:
            missing = [c for c in (cols or ()) if c not in frame.columns]
            if missing:
                raise InputError(f"suite {name}: no day-level fact {missing} for a {part.kind} partition")
            absorb("stats", name, runner.validate("stats", frame, sub, parameters))
        gx_seconds += time.time() - t
    ordered = sorted(aggs.items(), key=lambda kv: order.get(kv[0], (len(active), 0)))
    return Outcome([v for _, v in ordered], rows, chunks, plan, gx_seconds, time.time() - started,
                   first_meta, facts, day_profile, skipped)


# --------------------------------------------------------------------------------------------
# data docs: render in scratch, publish in one move
# --------------------------------------------------------------------------------------------

def build_docs(runner: gxr.Runner, suites: list, outcome: Outcome, part: Partition, run_name: str,
               docs_dir: Path) -> dict:
    """One GX validation result per evaluated suite, rendered into docs_dir: {suite: page path}."""
    from urllib.parse import unquote

    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier, ValidationResultIdentifier)

    run_id = RunIdentifier(run_name=run_name, run_time=datetime.datetime.now(datetime.timezone.utc))
    batch_id = re.sub(r"[^A-Za-z0-9._=-]", "_", f"{part.kind}-{part.path.name}")
    pages = {}
    for suite in suites:
        mine = [a for s, _, a in outcome.results if s == suite.name]
        if not mine:
            continue
        runner.context.suites.add(suite.__class__(name=suite.name, expectations=[
            e.configuration for e in suite.expectations], meta=dict(suite.meta or {})))
        evrs = [a.to_gx() for a in mine]
        n_ok = sum(1 for r in evrs if r.success)
        hard_ok = all(a.success for a in mine if gxr.severity_of(a.config) == "critical")
        meta = dict(outcome.first_meta)
        # the first chunk's fingerprint would misdescribe a result summed over many chunks
        meta["batch_markers"] = {k: v for k, v in dict(meta.get("batch_markers") or {}).items()
                                 if k != "pandas_data_fingerprint"}
        meta.update({
            "run_id": run_id, "validation_time": run_id.run_time,
            "batch_parameters": {"input": part.label},
            "criteo_validate": {"input": part.label, "source": part.stats.get("source"),
                                "rows_validated": outcome.rows_validated, "rows_in_partition": part.parquet_rows,
                                "sampled": outcome.plan.sampled, "rows_mode": outcome.plan.description,
                                "chunks": outcome.chunks, "gate": "passed" if hard_ok else "failed",
                                "soft_failures": sum(1 for a in mine if not a.success
                                                     and gxr.severity_of(a.config) != "critical")},
        })
        result = ExpectationSuiteValidationResult(
            success=hard_ok, results=evrs, suite_name=suite.name, meta=meta, batch_id=batch_id,
            statistics={"evaluated_expectations": len(evrs), "successful_expectations": n_ok,
                        "unsuccessful_expectations": len(evrs) - n_ok,
                        "success_percent": 100.0 * n_ok / len(evrs) if evrs else None})
        key = ValidationResultIdentifier(expectation_suite_identifier=ExpectationSuiteIdentifier(name=suite.name),
                                         run_id=run_id, batch_identifier=batch_id)
        runner.context.validation_results_store.set(key, result)
        pages[suite.name] = key
    runner.context.build_data_docs()
    out = {}
    for name, key in pages.items():
        for u in runner.context.get_docs_sites_urls(resource_identifier=key):
            url = u.get("site_url") or ""
            if url.startswith("file://"):
                out[name] = Path(unquote(url[len("file://"):])).relative_to(docs_dir).as_posix()
    return out


def publish_dir(local: Path, url: str) -> None:
    """Replace the folder at url (local path or fsspec URL) with local's contents in one move."""
    import fsspec

    fs, dest = fsspec.core.url_to_fs(url)
    dest = dest.rstrip("/")
    staging = f"{dest}.staging-{os.getpid()}"
    if fs.exists(staging):
        fs.rm(staging, recursive=True)
    fs.makedirs(dest.rsplit("/", 1)[0], exist_ok=True)
    fs.put(str(local).rstrip("/") + "/", staging, recursive=True)
    if fs.exists(dest):
        fs.rm(dest, recursive=True)
    fs.mv(staging, dest, recursive=True)


def join_url(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel.lstrip("/")


# --------------------------------------------------------------------------------------------
# report and CLI
# --------------------------------------------------------------------------------------------

MAX_LISTED = 15  # failures listed per severity in the summary; all of them are in the data docs


def report(outcome: Outcome, severity: str) -> list[dict]:
    return [{"suite": s, "expectation": a.config.type, "column": gxr.column_of(a.config),
             "rule": gxr.rule_with_notes(a.config),
             "observed": gxr.describe_observed(a, k, {**outcome.facts, **outcome.detail})}
            for s, k, a in outcome.failed(severity)]


def summary_text(part: Partition, outcome: Outcome, failed: list, warnings: list, run_name: str,
                 suite_names: list) -> str:
    verdict = "PASSED" if outcome.success else "FAILED"
    n = len(outcome.results)
    source = part.stats.get("source")
    lines = [f"{verdict}: suites {', '.join(suite_names)} on {part.label}"
             + (f" (raw file {source})" if source else "") + f", run {run_name}: "
             f"{n - len(failed) - len(warnings)} of {n} expectations met, {len(failed)} hard failed, "
             f"{len(warnings)} soft (warnings)",
             f"rows: {outcome.plan.description}; {_rows_speed(outcome)}"]
    if part.kind == "extracted":
        err = part.stats.get("read_error")
        lines.append(f"whole-day facts from _extract.json: rows={part.stats.get('rows')} "
                     f"positives={part.stats.get('positives')} malformed_rows={part.stats.get('malformed_rows')}"
                     + (f" read_error={err.get('kind')}" if err else ""))
    hard_columns = {(f["suite"], f["column"]) for f in failed}
    # a soft bound on a column whose hard bound already failed says nothing new
    shown_warnings = [w for w in warnings if (w["suite"], w["column"]) not in hard_columns]
    for label, items in (("FAILED (hard)", failed), ("WARNING (soft)", shown_warnings)):
        for f in items[:MAX_LISTED]:
            col = f" column {f['column']}" if f["column"] else ""
            lines += [f"{label} {f['suite']}: {f['expectation']}{col}",
                      f"    expected: {f['rule']}",
                      f"    observed: {f['observed']}"]
        if len(items) > MAX_LISTED:
            lines.append(f"... and {len(items) - MAX_LISTED} more {label.split()[0].lower()} "
                         f"expectations: see the data docs page")
    for name, why in outcome.skipped.items():
        lines.append(f"NOT EVALUATED {name}: {why}")
    psis = {k: v for k, v in outcome.facts.items() if k.startswith("psi(")}
    if psis and "drift" in suite_names and "drift" not in outcome.skipped:
        top = max(psis, key=psis.get)
        lines.append(f"drift: largest PSI {psis[top]:.4f} in {top[4:-1]} (threshold {prof.PSI_MAX})")
    return "\n".join(lines)


def _rows_speed(outcome: Outcome) -> str:
    rate = outcome.rows_validated / outcome.seconds_gx if outcome.seconds_gx > 0 else 0.0
    return (f"{outcome.rows_validated} rows in {outcome.chunks} chunks, GX {outcome.seconds_gx:.1f} s "
            f"({rate:,.0f} rows/s), total {outcome.seconds_total:.1f} s")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m criteo_validate", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--input", required=True, nargs="+",
                   help="published partition folder(s): …/extracted/day=N, or processed days")
    p.add_argument("--suite", action="extend", nargs="+", default=None,
                   help=f"suite(s) to validate (default {' '.join(DEFAULT_SUITES)})")
    p.add_argument("--data-docs", required=True,
                   help="where to publish this run's GX Data Docs site (folder or gs:// URL)")
    p.add_argument("--run-name", required=True, help="GX run name, e.g. the Airflow run id + day")
    p.add_argument("--reference", default=None,
                   help="reference profile (JSON) of the last full retrain: learned bounds and drift")
    p.add_argument("--profile-out", default=None, help="write this day's profile (JSON) here")
    p.add_argument("--expectations-dir", default=None,
                   help="GX file project with the suites (default: $CRITEO_EXPECTATIONS_DIR, the repo's "
                        "expectations/, or /app/expectations in the image)")
    p.add_argument("--sample-rows", type=int, default=DEFAULT_SAMPLE_ROWS,
                   help=f"validate a deterministic sample of this many rows when there are more "
                        f"(default {DEFAULT_SAMPLE_ROWS}); 0 validates every row")
    p.add_argument("--min-rows", type=int, default=prof.DEFAULT_MIN_ROWS,
                   help=f"fewest rows a day may have (default {prof.DEFAULT_MIN_ROWS}); the reference "
                        "may raise it")
    p.add_argument("--chunk-rows", type=int, default=DEFAULT_CHUNK_ROWS,
                   help=f"rows per GX batch (default {DEFAULT_CHUNK_ROWS})")
    return p.parse_args(argv)


def main(argv: list[str] | None = None, *, result_line: bool = True) -> int:
    """Run the step. result_line=False leaves out the machine-readable STEP_RESULT line (CLI use)."""
    args = parse_args(argv)
    names = args.suite or list(DEFAULT_SUITES)
    base = {"success": False, "suites": names, "input": args.input, "rows_validated": 0,
            "failed": [], "warnings": [], "summary": "", "data_docs": None, "data_docs_site": None,
            "data_docs_page": None}
    exp_dir = Path(args.expectations_dir) if args.expectations_dir else default_expectations_dir()
    notes = []
    with tempfile.TemporaryDirectory(prefix="criteo-docs-") as scratch:
        docs_dir = Path(scratch) / "site"
        try:
            suites = load_suites(exp_dir, names)
            kind = (suites[0].meta or {}).get("input", "extracted")
            part = open_partitions(args.input, kind)
            try:
                reference = prof.load(args.reference)
            except (OSError, ValueError) as exc:
                raise InputError(f"{args.reference}: reference profile unreadable: {exc}") from exc
            if args.reference and reference is None:
                notes.append(f"reference profile {args.reference} not found: default bounds used, drift not checked")
            parameters = prof.parameters(reference, args.min_rows)
            if kind == "processed":
                parameters.update({f"{c}_id_max": int(part.stats["embedding_sizes"][c]) - 1 for c in CAT_COLUMNS})
            runner = gxr.Runner(docs_dir)
            outcome = run_validation(part, suites, runner, parameters, args.sample_rows, max(1, args.chunk_rows),
                                     reference)
        except InputError as exc:
            msg = f"ERROR: unreadable input: {exc}"
            print(msg, file=sys.stderr, flush=True)
            emit({**base, "summary": msg, "error": str(exc)}, result_line)
            return 2
        outcome.detail = {"read_error_detail": part.stats.get("read_error"), "source": part.stats.get("source"),
                           "malformed_examples": part.stats.get("malformed_examples"),
                           "num_fields_expected": part.stats.get("num_fields_expected", 40)}
        failed, warnings = report(outcome, "critical"), report(outcome, "warning")
        summary = summary_text(part, outcome, failed, warnings, args.run_name, names)
        summary += "".join(f"\nNOTE: {n}" for n in notes)
        pages = build_docs(runner, suites, outcome, part, args.run_name, docs_dir)
        main_page = pages.get(names[0]) or next(iter(pages.values()), "index.html")
        site_summary = {
            "success": outcome.success, "suites": names, "run_name": args.run_name, "input": part.label,
            "source": part.stats.get("source"), "page": main_page, "pages": pages, "failed": failed,
            "warnings": warnings, "skipped": outcome.skipped,
            "validated_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "dag_id": os.environ.get("AIRFLOW_CTX_DAG_ID"), "run_id": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"),
        }
        (docs_dir / "_summary.json").write_text(json.dumps(site_summary, indent=2, default=str))
        try:
            publish_dir(docs_dir, args.data_docs)
        except OSError as exc:  # the bucket, not the data: a retry may help, so not exit 1/2
            print(f"ERROR: cannot publish data docs to {args.data_docs}: {exc}", file=sys.stderr, flush=True)
            return 3
    if args.profile_out and outcome.profile is not None:
        prof.save(outcome.profile, args.profile_out)
    site = args.data_docs.rstrip("/")
    summary += f"\ndata docs: {join_url(site, main_page)} (site {join_url(site, 'index.html')})"
    print(summary, flush=True)
    psis = {k[4:-1]: v for k, v in outcome.facts.items() if k.startswith("psi(")} if "drift" in names else {}
    emit({**base, "success": outcome.success, "rows_validated": outcome.rows_validated,
          "rows_in_partition": part.parquet_rows, "sampled": outcome.plan.sampled,
          "failed": failed, "warnings": warnings, "skipped": outcome.skipped, "summary": summary,
          "data_docs": join_url(site, "index.html"), "data_docs_site": site,
          "data_docs_page": join_url(site, main_page),
          "data_docs_pages": {k: join_url(site, v) for k, v in pages.items()},
          "profile": args.profile_out if outcome.profile is not None else None,
          "reference": args.reference if not notes else None,
          "max_psi": max(psis.values()) if psis and "drift" not in outcome.skipped else None,
          "run_name": args.run_name, "seconds": round(outcome.seconds_total, 3),
          "gx_seconds": round(outcome.seconds_gx, 3)}, result_line)
    return 0 if outcome.success else 1
