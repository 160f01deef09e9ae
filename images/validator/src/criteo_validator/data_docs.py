"""The data docs of one validation: a GX site rendered in scratch, then published whole.

Each evaluated suite becomes one GX validation result, rendered into a Data Docs site with
`_summary.json` (written by the caller) beside `index.html` for the Airflow plugin's index of
runs; the site is published to its URL (a folder or gs://) by a commit, like every partition.
"""
from __future__ import annotations

import datetime
import re
from pathlib import Path

from criteo_kernel import storage

from . import gx_results as gxr
from .partition import Partition
from .validation import Outcome


def build_docs(runner: gxr.Runner, suites: list, outcome: Outcome, part: Partition, run_name: str,
               docs_dir: Path) -> dict:
    """One GX validation result per evaluated suite, rendered into docs_dir: {suite: page path}."""
    from urllib.parse import unquote

    from great_expectations.core import ExpectationSuiteValidationResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    run_id = RunIdentifier(run_name=run_name, run_time=datetime.datetime.now(datetime.UTC))
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
            "criteo_validator": {"input": part.label, "source": part.stats.get("source"),
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
    """Replace the site at url (local path or fsspec URL) with local's contents whole: a new attempt
    committed (criteo_kernel.storage), which the Airflow side's data docs hook serves."""
    with storage.staged_partition(url) as staging:
        storage.upload_dir(str(local), staging)
