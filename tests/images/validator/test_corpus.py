"""The gate on a corpus of broken days: each is blocked with a message naming the broken rule.

Every case (corpus.py) is a raw day file run through `criteo-mlops validate` (in-process; one case
also as the installed console script), i.e. the real extract and the real GX suite; the cases
that need learned bounds run with `--reference`, a reference profile learned from clean days the
pipeline's way. The clean synthetic day and real Criteo rows must pass, and so must clean days of
other seeds against a reference of yet other seeds (6 here; `make bench`'s bench_gate.py runs all 20
and prints the false-block rate).
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from criteo_kernel import landing, profiles
from local_servers.broken_days import (
    CASES,
    CLEAN_SEEDS,
    REFERENCE_SEEDS,
    ROWS,
    Gate,
    clean_day,
    clean_rows,
    learn_reference,
    set_field,
    write,
)
from operators import cli
from tests.fixtures.partitions import committed

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
REAL_ROWS = Path(__file__).parent / "data" / "criteo_kaggle_sample.tsv"


@pytest.fixture(scope="module")
def clean_lines(tmp_path_factory) -> list[str]:
    return clean_day(tmp_path_factory.mktemp("clean"), ROWS, seed=7)


@pytest.fixture(scope="module")
def gate() -> Gate:
    return Gate()


@pytest.fixture(scope="module")
def reference(tmp_path_factory, gate) -> Path:
    return learn_reference(gate, tmp_path_factory.mktemp("reference"), REFERENCE_SEEDS)


def run_cli(tmp_path: Path, capsys, path: Path, *extra: str) -> tuple[int, str]:
    rc = cli.main(["validate", str(path), "--data-docs", str(tmp_path / "docs"), *extra])
    out = capsys.readouterr()
    return rc, out.out + out.err


def cut_file_names_kind_and_fix(kind: str, fix: str):
    def check(out: str, path: Path, _lines: list[str]) -> None:
        observed = next(line for line in out.splitlines() if line.strip().startswith("observed: read_error"))
        # the kind, where, and extract's fix, quoted once after the file's name
        assert f"read_error = '{kind}' after " in observed and f"rows of {path}: {fix}" in observed, observed
        assert observed.count(str(path)) == 1, observed
    return check


def landing_names_the_difference(out: str, _path: Path, lines: list[str]) -> None:
    assert "landing=mismatch" in out  # the whole-day facts line
    observed = next(line for line in out.splitlines() if line.strip().startswith("observed: landing"))
    assert f"rows: {len(lines) * 6 // 10} lines read (incl. 0 malformed) but the manifest says {len(lines)}" \
        in observed, observed
    assert "bytes: the file has" in observed and "sha256: the file has" in observed
    assert "day_5.manifest.json" in observed


# what some cases' failure messages must say beyond the column and the rule
CHECKS = {
    "truncated_gzip": cut_file_names_kind_and_fix("truncated_gzip", "the gzip stream ends early"),
    "cut_mid_line": cut_file_names_kind_and_fix("truncated", "the file does not end with a newline"),
    "manifest_mismatch": landing_names_the_difference,
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_day_is_blocked_naming_the_rule(tmp_path, capsys, clean_lines, request, case):
    c = CASES[case]
    column = c.columns[0]
    extra = ("--reference", str(request.getfixturevalue("reference"))) if c.reference else ()
    path = c.make(tmp_path, clean_lines, column)
    rc, out = run_cli(tmp_path, capsys, path, *extra)
    assert rc == 1, out
    assert "FAILED: suites raw_day" in out
    hard = [block for block in out.split("FAILED (hard) ")[1:]]
    assert any(f"column {c.fact(column)}\n" in b and c.rule in b for b in hard), out
    summary = json.loads((committed(tmp_path / "docs") / "_summary.json").read_text())
    assert summary["success"] is False
    assert c.blocked(summary["failed"], column)
    assert (committed(tmp_path / "docs") / summary["page"]).exists()
    CHECKS.get(case, lambda *_: None)(out, path, clean_lines)


def test_a_landed_file_matching_its_manifest_passes(tmp_path, capsys, clean_lines):
    path = write(tmp_path / "day_0", clean_lines)
    landing.write_manifest(str(path))
    rc, out = run_cli(tmp_path, capsys, path)
    assert rc == 0, out
    assert "landing=matches manifest" in out


def test_binary_garbage_is_blocked(tmp_path, capsys):
    garbage = bytes((i * 7919 + 13) % 256 for i in range(200_000))
    rc, out = run_cli(tmp_path, capsys, write(tmp_path / "day_5", garbage))
    assert rc == 1, out
    assert "column read_error" in out or "column malformed_rows" in out, out
    assert "Exception ignored" not in out


def test_clean_synthetic_day_passes(tmp_path, capsys, clean_lines):
    rc, out = run_cli(tmp_path, capsys, write(tmp_path / "day_0", clean_lines))
    assert rc == 0, out
    assert out.splitlines()[1].startswith("PASSED: suites raw_day") and "0 hard failed" in out
    assert "STEP_RESULT" not in out  # the CLI prints the summary, not the machine line


def test_clean_gzipped_day_passes_against_a_reference(tmp_path, capsys, clean_lines, reference):
    data = gzip.compress("".join(line + "\n" for line in clean_lines).encode())
    rc, out = run_cli(tmp_path, capsys, write(tmp_path / "day_0.gz", data), "--reference", str(reference))
    assert rc == 0, out


def test_real_criteo_rows_pass(tmp_path, capsys):
    # 200 rows: below the default day minimum of 1000, which is a rule of its own (tiny_day)
    rc, out = run_cli(tmp_path, capsys, REAL_ROWS, "--min-rows", "100")
    assert rc == 0, out
    assert "rows=200" in out


def test_clean_days_of_other_seeds_are_never_blocked(tmp_path, gate, reference):
    """No false block: clean days of 6 seeds (3 small, 3 large) against a reference learned from 3
    others, of other sizes than the reference's days (the distinct counts' bounds are sized to the
    day). The rate over all 20 seeds is bench_gate.py's figure (make bench)."""
    ref = profiles.load(str(reference))
    blocked = {}
    for seed in CLEAN_SEEDS[:6]:
        day = write(tmp_path / "day_5", clean_day(tmp_path, clean_rows(seed), seed=seed, day=5))
        outcome = gate(day, ref, suites=("raw_day",))
        if outcome.failed_records:
            blocked[seed] = [(f["column"], f["observed"]) for f in outcome.failed_records]
    assert blocked == {}


def test_missing_file_fails_clearly(tmp_path, capsys):
    rc, out = run_cli(tmp_path, capsys, tmp_path / "day_9.gz")
    assert rc == 1 and "no such file" in out


def test_console_script_is_installed_and_exits_1_on_failure(tmp_path, clean_lines):
    exe = REPO / ".venv" / "bin" / "criteo-mlops"
    assert exe.exists(), "make setup installs the criteo-mlops console script"
    bad = write(tmp_path / "day_5", set_field(list(clean_lines), 0, "2"))
    proc = subprocess.run([str(exe), "validate", str(bad), "--data-docs", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "STEP_RESULT_PATH"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED (hard) raw_day: expect_column_values_to_be_in_set column label" in proc.stdout
    assert (committed(tmp_path / "d") / "index.html").exists()
