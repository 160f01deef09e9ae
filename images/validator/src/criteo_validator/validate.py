"""validate: the data-quality gate. Check published partitions against Great Expectations suites.

    python -m criteo_validator --input PART [PART ...] --suite raw_day --suite drift \
        --data-docs URL --run-name NAME [--reference REF.json] [--profile-out URL] \
        [--sample-rows 200000] [--min-rows 1000] [--expectations-dir DIR]

* validation.py: the suites, one pass over the rows, the day-level facts, the summed results;
* report.py: the failed expectations and the summary printed in the task log;
* data_docs.py: the GX Data Docs site, rendered in scratch and published whole to `--data-docs`
  (local folder or gs://), with `_summary.json` beside `index.html`.
* Every expectation has a severity: `critical` (hard) failures fail the step, `warning` (soft)
  ones are reported (log, step result, data docs) and the run goes on.

Exit status (criteo_kernel.result): 0 passed (warnings allowed), 1 a hard expectation failed,
2 unreadable input or configuration (the message names the file), 3 the data docs could not be
published (the bucket, not the data: a retry may help). The result (see `main`) is printed as
the last line, `STEP_RESULT {...}`, and written to $STEP_RESULT_PATH when that is set.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import sys
import tempfile
from pathlib import Path

from criteo_kernel import profiles, storage
from criteo_kernel.result import FAILED, OK, RETRYABLE, UNREADABLE_INPUT, emit
from criteo_kernel.schema import CAT_COLUMNS

from . import gx_results as gxr
from . import profile as prof
from .data_docs import build_docs, publish_dir
from .partition import InputError, open_partitions
from .report import report, summary_text
from .validation import (
    DEFAULT_CHUNK_ROWS,
    DEFAULT_SAMPLE_ROWS,
    DEFAULT_SUITES,
    default_expectations_dir,
    load_suites,
    run_validation,
)


def join_url(base: str, rel: str) -> str:
    return base.rstrip("/") + "/" + rel.lstrip("/")


def failure_detail(part) -> dict:
    """What failure messages quote beyond the facts: the read error's message, malformed lines."""
    return {"read_error_detail": part.stats.get("read_error"), "source": part.stats.get("source"),
            "malformed_examples": part.stats.get("malformed_examples"),
            "num_fields_expected": part.stats.get("num_fields_expected", 40)}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m criteo_validator", description=__doc__,
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
                reference = profiles.load(args.reference)
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
            return UNREADABLE_INPUT
        outcome.detail = failure_detail(part)
        failed, warnings = report(outcome, "critical"), report(outcome, "warning")
        summary = summary_text(part, outcome, failed, warnings, args.run_name, names)
        summary += "".join(f"\nNOTE: {n}" for n in notes)
        pages = build_docs(runner, suites, outcome, part, args.run_name, docs_dir)
        main_page = pages.get(names[0]) or next(iter(pages.values()), "index.html")
        site_summary = {
            "success": outcome.success, "suites": names, "run_name": args.run_name, "input": part.label,
            "source": part.stats.get("source"), "page": main_page, "pages": pages, "failed": failed,
            "warnings": warnings, "skipped": outcome.skipped,
            "validated_at": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "dag_id": os.environ.get("AIRFLOW_CTX_DAG_ID"), "run_id": os.environ.get("AIRFLOW_CTX_DAG_RUN_ID"),
        }
        (docs_dir / "_summary.json").write_text(json.dumps(site_summary, indent=2, default=str))
        try:
            publish_dir(docs_dir, args.data_docs)
        except OSError as exc:  # the bucket, not the data: a retry may help, so not exit 1/2
            print(f"ERROR: cannot publish data docs to {args.data_docs}: {exc}", file=sys.stderr, flush=True)
            return RETRYABLE
    if args.profile_out and outcome.profile is not None:
        profiles.save(outcome.profile, args.profile_out)
    site = args.data_docs.rstrip("/")
    # For a person: the files as they lie, in the committed attempt; the result keeps the site's
    # logical URL (what the plugin and the links serve, through the commit).
    files = storage.resolve(site)
    summary += f"\ndata docs: {join_url(files, main_page)} (site {join_url(files, 'index.html')})"
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
    return OK if outcome.success else FAILED
