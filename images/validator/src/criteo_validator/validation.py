"""One validation: the suites loaded, the rows read once, the day-level facts, the results summed.

* The suites are GX 1.x JSON in the file project `expectations/` (written by suites.py), loaded
  with a FileDataContext; validation runs in an in-memory context (gx_results.Runner), so nothing
  is written into the git-tracked project.
* Each expectation's `meta.batch` says what it is evaluated on: the rows as text (`rows`), the
  rows with integer columns parsed (`numbers`), or one row of day-level facts (`stats`): counts
  over the whole day from `_extract.json`, the raw file against its landing manifest, the column
  shapes of the validated rows (distinct values, top and zero shares), drift (PSI) against the
  reference profile, and mean/std of processed features. See partition.py for how a 195M-row
  day is read (streamed chunks, a documented deterministic sample) and profile.py for the
  learned bounds.
"""
from __future__ import annotations

import os
import time
from dataclasses import dataclass, field
from pathlib import Path

from criteo_kernel.schema import FEATURES, INT_COLUMNS

from . import gx_results as gxr
from . import profile as prof
from .partition import InputError, Partition, ReadPlan, iter_chunks, landing_fact, plan_reads
from .suites import mean, std

DEFAULT_SUITES = ("raw_day", "drift")
DEFAULT_SAMPLE_ROWS = 200_000
DEFAULT_CHUNK_ROWS = 500_000  # GX has a fixed cost per batch: big chunks amortise it


def default_expectations_dir() -> Path:
    env = os.environ.get("CRITEO_EXPECTATIONS_DIR")
    if env:
        return Path(env)
    here = Path(__file__).resolve()
    for parent in here.parents:  # repo checkout: <repo>/images/validator/src/criteo_validator
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
        "landing": s.get("landing") or landing_fact(s),
    }
    if day_profile is not None:  # whole-day null fractions (when extract counted them), column shapes
        facts.update(prof.day_facts(day_profile))
    if rows == 0:  # no rows: the row count fails the day; a share of nothing would only add noise
        facts.update({f"null_fraction({c})": None for c in FEATURES})
    elif day_profile is None or not day_profile["null_fraction"]:
        # a partition from before extract counted empty fields: the validated rows' share
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
        # the column shapes' bounds depend on the day's profile (how many values its sample saw)
        stats_parameters = {**parameters, **(prof.day_parameters(day_profile, reference) if day_profile else {})}
        t = time.time()
        for name, cols, sub in stats_groups:
            missing = [c for c in (cols or ()) if c not in frame.columns]
            if missing:
                raise InputError(f"suite {name}: no day-level fact {missing} for a {part.kind} partition")
            absorb("stats", name, runner.validate("stats", frame, sub, stats_parameters))
        gx_seconds += time.time() - t
    ordered = sorted(aggs.items(), key=lambda kv: order.get(kv[0], (len(active), 0)))
    return Outcome([v for _, v in ordered], rows, chunks, plan, gx_seconds, time.time() - started,
                   first_meta, facts, day_profile, skipped)
