"""Tests for the data-validation step (`python -m criteo_validate`).

Fast tests write a partition the way the extract step does (pyarrow strings, "" = missing,
_extract.json, _SUCCESS) and call `main()` in-process; integration tests run the real
`criteo_steps synth/extract` (.venv-steps) and the validator CLI as subprocesses.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from criteo_validate import validate as v

REPO = Path(__file__).resolve().parents[2]
STEPS_PY = REPO / ".venv-steps" / "bin" / "python"
COLUMNS = v.COLUMNS


def clean_rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        label = "1" if rng.random() < 0.25 else "0"
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-2, 5000))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 2**32)):08x}" for _ in range(26)]
        rows.append([label, *ints, *cats])
    return rows


def write_partition(root: Path, rows: list[list[str]], malformed: int = 0, eval_every: int = 10) -> Path:
    """A partition as extract publishes it: train/ + eval/ parquet, every column a string."""
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval"):
        (root / split).mkdir(exist_ok=True)
    is_eval = [(i % eval_every) == eval_every - 1 for i in range(len(rows))]
    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    for split, keep in (("train", False), ("eval", True)):
        part = [r for r, e in zip(rows, is_eval) if e == keep]
        table = pa.table({c: pa.array([r[j] for r in part], pa.string()) for j, c in enumerate(COLUMNS)},
                         schema=schema)
        pq.write_table(table, root / split / "part-00000.parquet", row_group_size=700)
    stats = {"source": "test", "rows": len(rows), "train_rows": len(rows) - sum(is_eval),
             "eval_rows": sum(is_eval), "positives": sum(r[0] == "1" for r in rows),
             "malformed_rows": malformed,
             "malformed_examples": [{"line": 7, "fields": 30, "text": "0\t1\t2"}] if malformed else [],
             "num_fields_expected": 40}
    (root / "_extract.json").write_text(json.dumps(stats))
    (root / "_SUCCESS").write_text("")
    return root


def run_main(tmp_path: Path, part: Path, capsys, *extra: str) -> tuple[int, dict, str]:
    result_path = tmp_path / "result.json"
    os.environ["STEP_RESULT_PATH"] = str(result_path)
    try:
        rc = v.main(["--input", str(part), "--suite", "raw_day", "--data-docs", str(tmp_path / "docs"),
                     "--run-name", "test-run", "--expectations-dir", str(REPO / "expectations"), *extra])
    finally:
        del os.environ["STEP_RESULT_PATH"]
    out = capsys.readouterr().out
    result = json.loads(result_path.read_text())
    assert out.strip().splitlines()[-1] == "STEP_RESULT " + json.dumps(result, default=str) or \
        out.strip().splitlines()[-1].startswith("STEP_RESULT ")
    return rc, result, out


def failed_by_column(result: dict) -> dict:
    return {f["column"]: f for f in result["failed"]}


# ------------------------------------------------------------------------------------------
# in-process
# ------------------------------------------------------------------------------------------

def test_clean_day_passes_and_builds_data_docs(tmp_path, capsys):
    part = write_partition(tmp_path / "day=0", clean_rows(3000))
    rc, result, out = run_main(tmp_path, part, capsys, "--chunk-rows", "1000")
    assert rc == 0, out
    assert result["success"] is True and result["failed"] == []
    assert result["rows_validated"] == 3000
    assert set(result) >= {"success", "suite", "input", "rows_validated", "failed", "summary", "data_docs"}
    assert out.startswith("PASSED")
    index = Path(result["data_docs"])
    assert index.name == "index.html" and index.exists()
    page = Path(result["data_docs_page"])
    assert page.exists() and "test-run" in page.parts
    assert "values must match this regular expression" in page.read_text()


@pytest.mark.parametrize("column,value,rule", [
    ("label", "2", "values in ['0', '1']"),
    ("C7", "ABCDEF12", "values match regex ^[0-9a-f]{8}$"),
    ("C3", "12345", "values match regex ^[0-9a-f]{8}$"),
    ("I5", "abc", "values match regex ^-?[0-9]+$"),
    ("I2", "1.5", "values match regex ^-?[0-9]+$"),
])
def test_bad_value_fails_naming_column_and_rule(tmp_path, capsys, column, value, rule):
    rows = clean_rows(2500)
    j = COLUMNS.index(column)
    for i in (5, 1700, 2499):  # spread over chunks and both splits
        rows[i][j] = value
    part = write_partition(tmp_path / "day=1", rows)
    rc, result, out = run_main(tmp_path, part, capsys, "--chunk-rows", "1000")
    assert rc == 1, out
    assert result["success"] is False
    failed = failed_by_column(result)
    assert list(failed) == [column], result["failed"]
    f = failed[column]
    assert f["rule"].startswith(rule)
    assert "3 of" in f["observed"] and repr(value) in f["observed"]  # summed over chunks
    assert out.startswith("FAILED")
    assert f"column {column}" in out and rule in out


def test_empty_label_fails_not_null(tmp_path, capsys):
    rows = clean_rows(2000)
    rows[3][0] = ""
    rc, result, _ = run_main(tmp_path, write_partition(tmp_path / "d", rows), capsys)
    assert rc == 1
    assert [(f["expectation"], f["column"]) for f in result["failed"]] == \
        [("expect_column_values_to_not_be_null", "label")]


def test_malformed_rows_and_small_day_fail_table_facts(tmp_path, capsys):
    part = write_partition(tmp_path / "d", clean_rows(500), malformed=2)
    rc, result, out = run_main(tmp_path, part, capsys)
    assert rc == 1
    failed = failed_by_column(result)
    assert set(failed) == {"malformed_rows", "rows"}
    assert "malformed_rows = 2" in failed["malformed_rows"]["observed"]
    assert "30 fields" in failed["malformed_rows"]["observed"]
    assert failed["rows"]["rule"].startswith("1000 <= value")  # --min-rows default, a suite parameter
    rc, result, _ = run_main(tmp_path, part, capsys, "--min-rows", "100")
    assert set(failed_by_column(result)) == {"malformed_rows"}


def test_sample_is_deterministic_and_spread(tmp_path, capsys):
    rows = clean_rows(6000)
    rows[5990][COLUMNS.index("C1")] = "zz"  # near the end: a strided sample may or may not hit it
    part = write_partition(tmp_path / "d", rows)
    p = v.open_partition(part)
    a, b = v.plan_reads(p, 1000), v.plan_reads(p, 1000)
    assert a.sampled and a.rows == b.rows and 900 <= a.rows <= 1100
    assert [(f, g, list(i)) for f, g, i in a.groups] == [(f, g, list(i)) for f, g, i in b.groups]
    assert {f for f, _, _ in a.groups} == set(range(len(p.files)))  # every file contributes
    rc, result, out = run_main(tmp_path, part, capsys, "--sample-rows", "1000")
    assert result["sampled"] is True and result["rows_validated"] == a.rows
    assert "deterministic sample" in out
    full = v.plan_reads(p, 0)
    assert not full.sampled and full.rows == 6000


def test_unreadable_parquet_exits_2_naming_file(tmp_path, capsys):
    part = write_partition(tmp_path / "d", clean_rows(100))
    bad = part / "train" / "part-00000.parquet"
    bad.write_bytes(b"not parquet at all")
    rc, result, _ = run_main(tmp_path, part, capsys)
    err = capsys.readouterr().err
    assert rc == 2 and result["success"] is False
    assert str(bad) in result["summary"]


def test_missing_extract_json_exits_2(tmp_path, capsys):
    part = write_partition(tmp_path / "d", clean_rows(100))
    (part / "_extract.json").unlink()
    rc, result, _ = run_main(tmp_path, part, capsys)
    assert rc == 2 and "_extract.json" in result["summary"]


# ------------------------------------------------------------------------------------------
# end to end: the real extract step and the CLI in its own process
# ------------------------------------------------------------------------------------------

def _steps(*args: str) -> None:
    if not STEPS_PY.exists():
        pytest.skip(".venv-steps is not installed")
    env = {**os.environ, "PYTHONPATH": str(REPO / "images" / "merlin" / "src")}
    subprocess.run([str(STEPS_PY), "-m", "criteo_steps", *args], check=True, env=env, cwd=REPO,
                   capture_output=True, text=True)


def _cli(tmp_path: Path, part: Path, name: str) -> tuple[subprocess.CompletedProcess, dict]:
    result_path = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "images" / "validator" / "src"),
           "STEP_RESULT_PATH": str(result_path)}
    proc = subprocess.run([sys.executable, "-m", "criteo_validate", "--input", str(part), "--suite", "raw_day",
                           "--data-docs", str(tmp_path / "docs" / name), "--run-name", name],
                          env=env, cwd=REPO, capture_output=True, text=True, timeout=600)
    return proc, json.loads(result_path.read_text())


@pytest.mark.integration
def test_cli_on_extracted_days(tmp_path):
    raw, ext = tmp_path / "raw", tmp_path / "extracted"
    _steps("synth", "--out", str(raw), "--days", "0", "--rows", "20000")
    _steps("extract", "--input", str(raw / "day_0"), "--output", str(ext / "day=0"))
    lines = (raw / "day_0").read_text().splitlines()[:3000]
    for i, (col, val) in enumerate([(0, "2"), (14, "xyz"), (3, "abc")]):  # label, C1, I3
        f = lines[100 + i].split("\t")
        f[col] = val
        lines[100 + i] = "\t".join(f)
    lines.insert(200, "\t".join(lines[200].split("\t")[:25]))  # wrong field count
    (raw / "day_9").write_text("\n".join(lines) + "\n")
    _steps("extract", "--input", str(raw / "day_9"), "--output", str(ext / "day=9"))

    proc, result = _cli(tmp_path, ext / "day=0", "clean")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert result["success"] and result["rows_validated"] == 20000
    assert proc.stdout.splitlines()[-1].startswith("STEP_RESULT ")
    assert json.loads(proc.stdout.splitlines()[-1][len("STEP_RESULT "):]) == result
    assert Path(result["data_docs"]).exists()

    proc, result = _cli(tmp_path, ext / "day=9", "broken")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = failed_by_column(result)
    assert set(failed) == {"label", "C1", "I3", "malformed_rows"}
    assert "25 fields" in failed["malformed_rows"]["observed"]
    assert "FAILED expect_column_values_to_be_in_set column label" in proc.stdout
    assert Path(result["data_docs"]).exists()

    (ext / "day=9" / "eval" / "part-00000.parquet").write_bytes(b"garbage")
    proc, result = _cli(tmp_path, ext / "day=9", "unreadable")
    assert proc.returncode == 2
    assert "eval/part-00000.parquet" in proc.stderr
