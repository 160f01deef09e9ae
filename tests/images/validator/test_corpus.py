"""The gate on a corpus of broken days: each is blocked with a message naming the broken rule.

Every case is a raw day file run through `criteo-mlops validate` (in-process; one case also as the
installed console script), i.e. the real extract and the real GX suite. The clean synthetic day
and real Criteo rows must pass.
"""
from __future__ import annotations

import gzip
import json
import os
import subprocess
from pathlib import Path

import pytest

from criteo_steps.synth import day_table, generate_day, write_day
from operators import cli

pytestmark = pytest.mark.integration

REPO = Path(__file__).resolve().parents[3]
REAL_ROWS = Path(__file__).parent / "data" / "criteo_kaggle_sample.tsv"
ROWS = 4000


@pytest.fixture(scope="module")
def clean_lines(tmp_path_factory) -> list[str]:
    path = tmp_path_factory.mktemp("clean") / "day_0"
    write_day(str(path), day_table(*generate_day(0, ROWS)), gz=False)
    return path.read_text().splitlines()


def set_field(lines: list[str], column: int, value: str, every: int = 50) -> list[str]:
    out = []
    for i, line in enumerate(lines):
        if i % every == 7 % every:
            f = line.split("\t")
            f[column] = value
            line = "\t".join(f)
        out.append(line)
    return out


def run_cli(tmp_path: Path, capsys, path: Path, *extra: str) -> tuple[int, str]:
    rc = cli.main(["validate", str(path), "--data-docs", str(tmp_path / "docs"), *extra])
    out = capsys.readouterr()
    return rc, out.out + out.err


def write(tmp_path: Path, name: str, lines: list[str] | bytes) -> Path:
    path = tmp_path / name
    if isinstance(lines, bytes):
        path.write_bytes(lines)
    else:
        path.write_text("".join(line + "\n" for line in lines))
    return path


HEADER = "\t".join(["label", *[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)]])

# name -> (how to break the clean day, expected failing column, expected rule text)
CASES = {
    "wrong_field_count": (lambda L: L[:100] + ["\t".join(L[100].split("\t")[:39])] + L[101:],
                          "malformed_rows", "exactly 40 tab-separated fields"),
    "header_line": (lambda L: [HEADER] + L, "label", "values in ['0', '1']"),
    "comma_separated": (lambda L: [line.replace("\t", ",") for line in L], "malformed_rows",
                        "exactly 40 tab-separated fields"),
    "text_in_integer_column": (lambda L: set_field(L, 5, "abc"), "I5", "values match regex ^-?[0-9]+$"),
    "label_2": (lambda L: set_field(L, 0, "2"), "label", "values in ['0', '1']"),
    "bad_hex": (lambda L: set_field(L, 20, "XYZ12345"), "C7", "values match regex ^[0-9a-f]{8}$"),
    "all_null_column": (lambda L: set_field(L, 16, "", every=1), "null_fraction(C3)",
                        "never (almost) all empty"),
    "ctr_collapse": (lambda L: set_field(L, 0, "0", every=1), "ctr", "a collapse to 0 means the labels are broken"),
    "tiny_day": (lambda L: L[:50], "rows", "row count: at least --min-rows"),
    "empty_file": (lambda L: [], "rows", "row count: at least --min-rows"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_broken_day_is_blocked_naming_the_rule(tmp_path, capsys, clean_lines, case):
    breaker, column, rule = CASES[case]
    rc, out = run_cli(tmp_path, capsys, write(tmp_path, "day_5", breaker(list(clean_lines))))
    assert rc == 1, out
    assert "FAILED: suites raw_day" in out
    hard = [block for block in out.split("FAILED (hard) ")[1:]]
    assert any(f"column {column}\n" in b and rule in b for b in hard), out
    summary = json.loads((tmp_path / "docs" / "_summary.json").read_text())
    assert summary["success"] is False
    assert any(f["column"] == column for f in summary["failed"])
    assert (tmp_path / "docs" / summary["page"]).exists()


def test_truncated_gzip_is_blocked(tmp_path, capsys, clean_lines):
    data = gzip.compress("".join(line + "\n" for line in clean_lines).encode())
    rc, out = run_cli(tmp_path, capsys, write(tmp_path, "day_5.gz", data[: len(data) // 2]))
    assert rc == 1, out
    assert "column read_error" in out and "'truncated_gzip'" in out
    assert "the raw file was read to its end" in out


def test_binary_garbage_is_blocked(tmp_path, capsys):
    garbage = bytes((i * 7919 + 13) % 256 for i in range(200_000))
    rc, out = run_cli(tmp_path, capsys, write(tmp_path, "day_5", garbage))
    assert rc == 1, out
    assert "column read_error" in out or "column malformed_rows" in out, out
    assert "Exception ignored" not in out


def test_clean_synthetic_day_passes(tmp_path, capsys, clean_lines):
    rc, out = run_cli(tmp_path, capsys, write(tmp_path, "day_0", clean_lines))
    assert rc == 0, out
    assert out.splitlines()[1].startswith("PASSED: suites raw_day") and "0 hard failed" in out
    assert "STEP_RESULT" not in out  # the CLI prints the summary, not the machine line


def test_clean_gzipped_day_passes(tmp_path, capsys, clean_lines):
    data = gzip.compress("".join(line + "\n" for line in clean_lines).encode())
    rc, out = run_cli(tmp_path, capsys, write(tmp_path, "day_0.gz", data))
    assert rc == 0, out


def test_real_criteo_rows_pass(tmp_path, capsys):
    # 200 rows: below the default day minimum of 1000, which is a rule of its own (tiny_day)
    rc, out = run_cli(tmp_path, capsys, REAL_ROWS, "--min-rows", "100")
    assert rc == 0, out
    assert "rows=200" in out


def test_missing_file_fails_clearly(tmp_path, capsys):
    rc, out = run_cli(tmp_path, capsys, tmp_path / "day_9.gz")
    assert rc == 1 and "no such file" in out


def test_console_script_is_installed_and_exits_1_on_failure(tmp_path, clean_lines):
    exe = REPO / ".venv" / "bin" / "criteo-mlops"
    assert exe.exists(), "make setup installs the criteo-mlops console script"
    bad = write(tmp_path, "day_5", set_field(list(clean_lines), 0, "2"))
    proc = subprocess.run([str(exe), "validate", str(bad), "--data-docs", str(tmp_path / "d")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path,
                          env={k: v for k, v in os.environ.items() if k != "STEP_RESULT_PATH"})
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "FAILED (hard) raw_day: expect_column_values_to_be_in_set column label" in proc.stdout
    assert (tmp_path / "d" / "index.html").exists()
