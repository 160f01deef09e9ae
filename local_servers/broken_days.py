"""Broken raw days and the gate that must block them: shared by tests/images/validator/test_corpus.py and
bench/bench_gate.py (outside tests/, so that no bench imports the tests).

A `Case` is one class of broken day: how to make it from the lines of a clean synthetic day (for
the classes that break a column, any of several columns), and the failed expectation that must
block it (its column and a piece of its rule text). test_corpus.py runs each case's first variant
through `criteo-mlops validate`; bench/bench_gate.py runs many variants (other seeds, other
columns) through `Gate`, the same extract and validator in-process.
"""
from __future__ import annotations

import gzip
import json
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from criteo_kernel import landing, profiles
from criteo_kernel.schema import COLUMNS
from criteo_merlin.ingest.synth import day_table, generate_day, write_day
from criteo_validator.suites import distinct, null_fraction, top_share, zero_share

HEADER = "\t".join(COLUMNS)
HANDFUL = ("0badc0de", "0ddba11a", "5ca1ab1e")  # a categorical collapsed to a few hashes


def clean_day(folder: Path, rows: int, seed: int = 7, day: int = 0) -> list[str]:
    """The lines of a clean synthetic day (criteo_merlin.ingest.synth, as the demo writes them)."""
    path = Path(folder) / f"clean_{day}_{seed}"
    write_day(str(path), day_table(*generate_day(day, rows, seed=seed)), gz=False)
    lines = path.read_text().splitlines()
    path.unlink()
    return lines


def write(path: Path, lines: list[str] | bytes) -> Path:
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join(line + "\n" for line in lines))
    return path


def text(lines: list[str]) -> bytes:
    return "".join(line + "\n" for line in lines).encode()


def half(data: bytes) -> bytes:
    return data[: len(data) // 2]


# -- ways to break lines ----------------------------------------------------------------------

def set_field(lines: list[str], column: int, value: str, every: int = 50) -> list[str]:
    out = []
    for i, line in enumerate(lines):
        if i % every == 7 % every:
            f = line.split("\t")
            f[column] = value
            line = "\t".join(f)
        out.append(line)
    return out


def replace_present(lines: list[str], column: str, value: Callable[[int], str | None]) -> list[str]:
    """Each non-empty field of `column` (the k-th one) becomes value(k), or stays when that is None."""
    j, k, out = COLUMNS.index(column), 0, []
    for line in lines:
        f = line.split("\t")
        if f[j]:
            new = value(k)
            f[j] = f[j] if new is None else new
            k += 1
        out.append("\t".join(f))
    return out


def landed_cut(folder: Path, lines: list[str]) -> Path:
    """A day whose writer wrote its manifest, then lost its last 40% of lines (cut at a line end:
    every line read is whole, so only the manifest can tell)."""
    path = write(folder / "day_5", lines)
    landing.write_manifest(str(path))
    return write(path, lines[: len(lines) * 6 // 10])


# -- the corpus -------------------------------------------------------------------------------

@dataclass(frozen=True)
class Case:
    """A class of broken day: make(folder, clean lines, column) -> raw day file; what blocks it."""

    make: Callable[[Path, list[str], str | None], Path]
    fact: Callable[[str | None], str]  # the failed expectation's column, from the broken column
    rule: str  # a piece of the failed expectation's rule text
    columns: tuple = (None,)  # the columns this class may break; the tests use the first
    reference: bool = False  # blocked by bounds learned from a reference profile

    def blocked(self, failed: list[dict], column: str | None) -> bool:
        """Whether `failed` (report records of the hard failures) blocks the day for this case's reason."""
        return any(f["column"] == self.fact(column) and self.rule in f["rule"] for f in failed)


def lines_case(breaker: Callable[[list[str], str | None], list[str]], fact, rule: str, columns=(None,),
               reference: bool = False, name: str = "day_5") -> Case:
    return Case(lambda folder, lines, col: write(folder / name, breaker(list(lines), col)),
                fact if callable(fact) else (lambda _c, f=fact: f), rule, tuple(columns), reference)


def _idx(column: str) -> int:
    return COLUMNS.index(column)


ROWS_RULE = "row count: at least --min-rows"
FIELDS_RULE = "exactly 40 tab-separated fields"

CASES = {
    "wrong_field_count": lines_case(lambda L, _c: L[:100] + ["\t".join(L[100].split("\t")[:39])] + L[101:],
                                    "malformed_rows", FIELDS_RULE),
    "header_line": lines_case(lambda L, _c: [HEADER] + L, "label", "values in ['0', '1']"),
    "comma_separated": lines_case(lambda L, _c: [line.replace("\t", ",") for line in L], "malformed_rows",
                                  FIELDS_RULE),
    "text_in_integer_column": lines_case(lambda L, c: set_field(L, _idx(c), "abc"), lambda c: c,
                                         "values match regex ^-?[0-9]+$", ("I5", "I1", "I12", "I9")),
    "label_2": lines_case(lambda L, _c: set_field(L, 0, "2"), "label", "values in ['0', '1']"),
    "bad_hex": lines_case(lambda L, c: set_field(L, _idx(c), "XYZ12345"), lambda c: c,
                          "values match regex ^[0-9a-f]{8}$", ("C7", "C1", "C22", "C26")),
    "all_null_column": lines_case(lambda L, c: set_field(L, _idx(c), "", every=1), null_fraction,
                                  "never (almost) all empty", ("C3", "I1", "C20", "I13")),
    "ctr_collapse": lines_case(lambda L, _c: set_field(L, 0, "0", every=1), "ctr",
                               "a collapse to 0 means the labels are broken"),
    "tiny_day": lines_case(lambda L, _c: L[:50], "rows", ROWS_RULE),
    "empty_file": lines_case(lambda L, _c: [], "rows", ROWS_RULE),
    "truncated_gzip": Case(lambda folder, L, _c: write(folder / "day_5.gz", half(gzip.compress(text(L)))),
                           lambda _c: "read_error", "the raw file was read to its end"),
    "cut_mid_line": Case(lambda folder, L, _c: write(folder / "day_5", text(L)[: len(text(L)) * 2 // 3]),
                         lambda _c: "read_error", "not truncated (it ends with a newline)"),
    # -- a column collapsed (a join or hashing bug upstream) -----------------------------------
    "categorical_one_value": lines_case(lambda L, c: replace_present(L, c, lambda _k: "deadbeef"), distinct,
                                        "not a single one among 1000 or more", ("C1", "C14", "C9", "C22", "C3")),
    "categorical_handful": lines_case(lambda L, c: replace_present(L, c, lambda k: HANDFUL[k % 3]), distinct,
                                      "at least 10% of the reference's smallest count", ("C3", "C1", "C7", "C19",
                                                                                        "C26"), reference=True),
    "integer_constant": lines_case(lambda L, c: replace_present(L, c, lambda _k: "7"), distinct,
                                   "not a single one among 1000 or more", ("I2", "I5", "I9", "I12", "I1")),
    "integer_zero_jump": lines_case(lambda L, c: replace_present(L, c, lambda k: "0" if k % 10 else None),
                                    zero_share, "at most the reference's + 0.5", ("I3", "I2", "I6", "I13", "I1"),
                                    reference=True),
    "categorical_one_value_piles_up": lines_case(
        lambda L, c: replace_present(L, c, lambda k: "deadbeef" if k % 5 else None), top_share,
        "at most the reference's + 0.5", ("C15", "C4", "C8", "C25"), reference=True),
    # -- the file is not the one its writer landed ------------------------------------------------
    "manifest_mismatch": Case(lambda folder, L, _c: landed_cut(folder, L), lambda _c: "landing",
                              "the raw file is the one its landing manifest"),
}

# the collapses are only meaningful with enough values in every column (C22 is 76% empty)
ROWS = 5000
REFERENCE_SEEDS = (101, 102, 103)  # the clean days a reference is learned from
CLEAN_SEEDS = range(20)  # the clean days that must pass against it


def clean_rows(seed: int) -> int:
    """Clean days smaller and larger than the reference's: the distinct counts' bounds are sized."""
    return 3000 if seed % 2 else 8000


# -- the gate, in-process ---------------------------------------------------------------------

class Gate:
    """Extract + validate a raw day file in-process, as `criteo-mlops validate` does, without the
    data docs (the suites and the GX context are built once, so many days validate quickly)."""

    def __init__(self, min_rows: int = 1000):
        from criteo_validator import gx_results as gxr
        from criteo_validator.validation import default_expectations_dir, load_suites

        self.min_rows = min_rows
        self.suites = load_suites(default_expectations_dir(), ["raw_day", "drift"])
        self.runner = gxr.Runner(None)

    def __call__(self, path: Path, reference: dict | None = None, suites=("raw_day", "drift")):
        """The Outcome of validating `path` (drift only with a reference), with `failed_records` and
        `warning_records` as the step reports them."""
        from criteo_merlin.ingest.extract import extract
        from criteo_validator import profile as prof
        from criteo_validator.partition import open_partitions
        from criteo_validator.report import report
        from criteo_validator.validate import failure_detail
        from criteo_validator.validation import DEFAULT_CHUNK_ROWS, DEFAULT_SAMPLE_ROWS, run_validation

        with tempfile.TemporaryDirectory(prefix="gate-") as tmp:
            extract(str(path), f"{tmp}/day")
            part = open_partitions([f"{tmp}/day"])
            chosen = [s for s in self.suites if s.name in suites]
            outcome = run_validation(part, chosen, self.runner, prof.parameters(reference, self.min_rows),
                                     DEFAULT_SAMPLE_ROWS, DEFAULT_CHUNK_ROWS, reference)
        outcome.detail = failure_detail(part)
        outcome.failed_records = report(outcome, "critical")
        outcome.warning_records = report(outcome, "warning")
        return outcome


def learn_reference(gate: Gate, folder: Path, seeds=REFERENCE_SEEDS, rows: int = ROWS) -> Path:
    """A reference profile of clean days, the pipeline's way: each day's validation writes its
    profile, then the `reference` subcommand merges them."""
    from criteo_kernel.result import run_command

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for seed in seeds:
        day = write(folder / f"day_{seed}", clean_day(folder, rows, seed=seed))
        outcome = gate(day)
        assert outcome.success, [f["column"] for f in outcome.failed_records]
        paths.append(str(folder / f"day_{seed}.profile.json"))
        profiles.save(outcome.profile, paths[-1])
    out = folder / "reference_profile.json"
    if run_command("criteo_validator", ["reference", "--profiles", *paths, "--output", str(out)]) != 0:
        raise RuntimeError(f"reference of {paths} not written")
    return out


def load_json(path: Path) -> dict:
    return json.loads(Path(path).read_text())
