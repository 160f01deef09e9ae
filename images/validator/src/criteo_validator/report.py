"""What a validation says: failed expectations as records, and the summary printed in the task log."""
from __future__ import annotations

from criteo_kernel.profiles import PSI_MAX

from . import gx_results as gxr
from .partition import Partition
from .validation import Outcome

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
                     + (f" read_error={err.get('kind')}" if err else "") + _landing_note(outcome.facts))
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
        lines.append(f"drift: largest PSI {psis[top]:.4f} in {top[4:-1]} (threshold {PSI_MAX})")
    return "\n".join(lines)


def _landing_note(facts: dict) -> str:
    """The manifest check in brief (a mismatch is spelled out where it fails)."""
    landing = str(facts.get("landing") or "no manifest")
    return "" if landing == "no manifest" else f" landing={landing.split(':', 1)[0]}"


def _rows_speed(outcome: Outcome) -> str:
    rate = outcome.rows_validated / outcome.seconds_gx if outcome.seconds_gx > 0 else 0.0
    return (f"{outcome.rows_validated} rows in {outcome.chunks} chunks, GX {outcome.seconds_gx:.1f} s "
            f"({rate:,.0f} rows/s), total {outcome.seconds_total:.1f} s")
