"""Benchmark the data-quality gate's judgement: clean days it blocks, broken days it lets through.

(a) False blocks: clean synthetic days of 20 seeds (3000 and 8000 rows, a world of their own each:
    other hashes, another click function) validated against a reference profile learned from 3
    other seeds (5000 rows), as an incremental run validates against production's reference:
    the days blocked (any hard failure) and the soft warnings, by kind.
(b) For each class of broken day in the corpus (local_servers/broken_days.py, the cases
    test_corpus.py runs once), N variants: a clean day of another seed each, broken in each of the
    class's columns in turn, validated as the test does (with the reference when the class needs
    learned bounds): the share blocked for the class's own reason, and at all.

Every day goes through the real extract and the validator in-process (corpus.Gate: the suites
and the GX context built once, no data docs). Prints a markdown table; the last line is
`bench_gate: ratio <broken days blocked / broken days> (...)`.

    .venv/bin/python bench/bench_gate.py [--variants 5]
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # the corpus: local_servers/broken_days.py

from criteo_kernel import profiles  # noqa: E402
from criteo_kernel.schema import INT_COLUMNS  # noqa: E402
from local_servers import broken_days as corpus  # noqa: E402

VARIANT_SEEDS = 200  # variant k of a broken class breaks a clean day of seed VARIANT_SEEDS + k


def quiet(fn, *args, **kwargs):
    """Run fn without extract's progress lines on stdout."""
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args, **kwargs)


SHAPES = ("distinct", "top_share", "zero_share")


def kind_of(column: str) -> str:
    """A warning's kind, for the tally: psi(C3) -> psi, distinct(C3) -> column shapes, I5 -> integer range."""
    name = column.split("(", 1)[0]
    if name in SHAPES:
        return "column shapes"
    return "integer range" if name in INT_COLUMNS else name


def false_blocks(gate: corpus.Gate, reference: dict, folder: Path) -> dict:
    blocked, warned, kinds = [], 0, collections.Counter()
    for seed in corpus.CLEAN_SEEDS:
        day = corpus.write(folder / "day_5", corpus.clean_day(folder, corpus.clean_rows(seed), seed=seed, day=5))
        outcome = quiet(gate, day, reference)
        if outcome.failed_records:
            blocked.append((seed, [f["column"] for f in outcome.failed_records]))
        warned += bool(outcome.warning_records)
        kinds.update({kind_of(w["column"]) for w in outcome.warning_records})
    return {"days": len(corpus.CLEAN_SEEDS), "blocked": blocked, "warned": warned, "kinds": kinds}


def broken_variants(gate: corpus.Gate, reference: dict, folder: Path, variants: int) -> dict:
    clean = {k: corpus.clean_day(folder, corpus.ROWS, seed=VARIANT_SEEDS + k) for k in range(variants)}
    out = {}
    for name, case in corpus.CASES.items():
        own = any_rule = 0
        missed = []
        for k in range(variants):
            column = case.columns[k % len(case.columns)]
            work = folder / f"{name}-{k}"
            work.mkdir()
            outcome = quiet(gate, case.make(work, clean[k], column), reference if case.reference else None)
            own += case.blocked(outcome.failed_records, column)
            any_rule += bool(outcome.failed_records)
            if not case.blocked(outcome.failed_records, column):
                missed.append(f"{column or 'day'} (seed {VARIANT_SEEDS + k})")
        out[name] = {"case": case, "variants": variants, "own": own, "any": any_rule, "missed": missed}
        print(f"  {name}: {own}/{variants} blocked for its rule", file=sys.stderr, flush=True)
    return out


def table(clean: dict, broken: dict) -> list[str]:
    kinds = ", ".join(f"{k} {n}" for k, n in sorted({"column shapes": 0, **clean["kinds"]}.items()))
    rows = ["| day | blocked by (hard) | reference | blocked, its rule | blocked, any rule |",
            "|---|---|---|---|---|",
            f"| clean, 20 seeds (false blocks) | - | yes | - | {len(clean['blocked'])}/{clean['days']} "
            f"(days with soft warnings {clean['warned']}/{clean['days']}, by kind: {kinds}) |"]
    for name, r in broken.items():
        c = r["case"]
        columns = f" ({', '.join(c.columns)})" if c.columns[0] else ""
        rows.append(f"| {name}{columns} | `{c.fact(c.columns[0])}`: {c.rule} | {'yes' if c.reference else 'no'} | "
                    f"{r['own']}/{r['variants']} | {r['any']}/{r['variants']} |")
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--variants", type=int, default=5, help="broken days per class (default 5)")
    a = p.parse_args()
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as tmp:
        folder = Path(tmp)
        gate = corpus.Gate()
        reference = profiles.load(str(quiet(corpus.learn_reference, gate, folder / "reference")))
        print(f"reference learned from seeds {list(corpus.REFERENCE_SEEDS)} ({corpus.ROWS} rows each)",
              file=sys.stderr, flush=True)
        clean = false_blocks(gate, reference, folder)
        broken = broken_variants(gate, reference, folder, a.variants)
    validations = len(corpus.REFERENCE_SEEDS) + clean["days"] + sum(r["variants"] for r in broken.values())
    elapsed = time.time() - started
    print("\n".join(table(clean, broken)))
    for name, r in broken.items():
        if r["missed"]:
            print(f"not blocked for its rule: {name}: {', '.join(r['missed'])}")
    if clean["blocked"]:
        print(f"clean days blocked: {clean['blocked']}")
    print(f"{validations} validations in {elapsed:.0f} s ({elapsed / validations:.1f} s each, extract included)")
    days = sum(r["variants"] for r in broken.values())
    blocked = sum(r["any"] for r in broken.values())
    print(f"bench_gate: ratio {blocked / days:.3f} ({blocked} of {days} broken days blocked; "
          f"{len(clean['blocked'])} of {clean['days']} clean days blocked)")


if __name__ == "__main__":
    main()
