"""Tests for the data-validation step (`python -m criteo_validator`).

Fast tests write a partition the way the extract step does (pyarrow strings, "" = missing,
_extract.json, published by a commit) and call `main()` in-process; integration tests run the real
`criteo_merlin synth/extract` (.venv-steps) and the validator CLI as subprocesses.
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

from criteo_kernel import profiles, storage
from criteo_validator import partition as vp
from criteo_validator import validate as v
from criteo_validator.suites import COLUMNS

REPO = Path(__file__).resolve().parents[3]
STEPS_PY = REPO / ".venv-steps" / "bin" / "python"


def clean_rows(n: int, seed: int = 0) -> list[list[str]]:
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        label = "1" if rng.random() < 0.25 else "0"
        ints = ["" if rng.random() < 0.2 else str(int(rng.integers(-2, 5000))) for _ in range(13)]
        cats = ["" if rng.random() < 0.1 else f"{int(rng.integers(0, 2**32)):08x}" for _ in range(26)]
        rows.append([label, *ints, *cats])
    return rows


def write_partition(root: Path, rows: list[list[str]], malformed: int = 0, eval_every: int = 10,
                    extra: dict | None = None) -> Path:
    """A partition as extract publishes it: train/ + eval/ parquet, every column a string; `extra`
    adds to (or overrides) its _extract.json. Published by the real writer (a commit)."""
    with storage.staged_partition(str(root)) as attempt:
        _fill_extracted(Path(attempt), rows, malformed, eval_every, extra)
    return root


def _fill_extracted(root: Path, rows, malformed, eval_every, extra) -> None:
    root.mkdir(parents=True, exist_ok=True)
    for split in ("train", "eval"):
        (root / split).mkdir(exist_ok=True)
    is_eval = [(i % eval_every) == eval_every - 1 for i in range(len(rows))]
    schema = pa.schema([(c, pa.string()) for c in COLUMNS])
    for split, keep in (("train", False), ("eval", True)):
        part = [r for r, e in zip(rows, is_eval, strict=True) if e == keep]
        table = pa.table({c: pa.array([r[j] for r in part], pa.string()) for j, c in enumerate(COLUMNS)},
                         schema=schema)
        pq.write_table(table, root / split / "part-00000.parquet", row_group_size=700)
    stats = {"source": "test", "rows": len(rows), "train_rows": len(rows) - sum(is_eval),
             "eval_rows": sum(is_eval), "positives": sum(r[0] == "1" for r in rows),
             "malformed_rows": malformed,
             "missing": {c: sum(r[j] == "" for r in rows) for j, c in enumerate(COLUMNS)},
             "malformed_examples": [{"line": 7, "fields": 30, "text": "0\t1\t2"}] if malformed else [],
             "num_fields_expected": 40, **(extra or {})}
    (root / "_extract.json").write_text(json.dumps(stats))


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


def in_site(result: dict, key: str) -> Path:
    """Where a result's data docs URL (logical: what links carry) lies: inside the site's committed attempt."""
    site, url = result["data_docs_site"], result[key]
    return Path(storage.resolve(site)) / url[len(site) + 1:]


def failed_by_column(result: dict) -> dict:
    return {f["column"]: f for f in result["failed"]}


# ------------------------------------------------------------------------------------------
# in-process
# ------------------------------------------------------------------------------------------

@pytest.mark.unit
def test_clean_day_passes_and_builds_data_docs(tmp_path, capsys):
    part = write_partition(tmp_path / "day=0", clean_rows(3000))
    rc, result, out = run_main(tmp_path, part, capsys, "--chunk-rows", "1000")
    assert rc == 0, out
    assert result["success"] is True and result["failed"] == []
    assert result["rows_validated"] == 3000
    assert set(result) >= {"success", "suites", "input", "rows_validated", "failed", "warnings", "summary",
                           "data_docs", "data_docs_site", "data_docs_page"}
    assert out.startswith("PASSED")
    index = in_site(result, "data_docs")
    assert index.name == "index.html" and index.exists()
    page = in_site(result, "data_docs_page")
    assert page.exists() and "test-run" in Path(result["data_docs_page"]).parts
    assert "values must match this regular expression" in page.read_text()


@pytest.mark.parametrize("column,value,rule", [
    ("label", "2", "values in ['0', '1']"),
    ("C7", "ABCDEF12", "values match regex ^[0-9a-f]{8}$"),
    ("C3", "12345", "values match regex ^[0-9a-f]{8}$"),
    ("I5", "abc", "values match regex ^-?[0-9]+$"),
    ("I2", "1.5", "values match regex ^-?[0-9]+$"),
])
@pytest.mark.unit
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


@pytest.mark.unit
def test_empty_label_fails_not_null(tmp_path, capsys):
    rows = clean_rows(2000)
    rows[3][0] = ""
    rc, result, _ = run_main(tmp_path, write_partition(tmp_path / "d", rows), capsys)
    assert rc == 1
    assert [(f["expectation"], f["column"]) for f in result["failed"]] == \
        [("expect_column_values_to_not_be_null", "label")]


@pytest.mark.unit
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


SHA_A, SHA_B = "a" * 64, "b" * 64


def _landed(read: int = 3000, malformed: int = 0, manifest: dict | None = None) -> dict:
    """_extract.json facts of what extract read (`read` rows), with the manifest found beside the raw file."""
    return {"rows": read, "malformed_rows": malformed, "source_bytes": 1000, "source_sha256": SHA_A,
            "manifest": {"url": "gs://b/raw/day_3.manifest.json", **manifest} if manifest else None}


@pytest.mark.parametrize("stats,fact", [
    ({"rows": 3000, "malformed_rows": 0}, "no manifest"),  # an _extract.json from before manifests
    (_landed(), "no manifest"),
    (_landed(2998, 2, {"rows": 3000, "bytes": 1000, "sha256": SHA_A}), "matches manifest"),
    (_landed(manifest={"rows": None, "bytes": None, "sha256": SHA_A}), "matches manifest"),  # unknowns not compared
    ({**_landed(manifest={"rows": 5000, "sha256": SHA_B}), "source_sha256": None}, "mismatch: rows: 3000 lines read "
     "(incl. 0 malformed) but the manifest says 5000 (manifest gs://b/raw/day_3.manifest.json)"),
    ({**_landed(manifest={"rows": 5000}), "max_rows": 3000}, "matches manifest"),  # stopped early on purpose
    (_landed(2000, 5, {"rows": 3000, "bytes": 999, "sha256": SHA_B}),
     "mismatch: rows: 2005 lines read (incl. 5 malformed) but the manifest says 3000; bytes: the file has 1000 "
     "but the manifest says 999; sha256: the file has aaaaaaaaaaaa... but the manifest says bbbbbbbbbbbb... "
     "(manifest gs://b/raw/day_3.manifest.json)"),
])
@pytest.mark.unit
def test_landing_fact_compares_what_was_read_with_the_manifest(stats, fact):
    assert vp.landing_fact(stats) == fact


@pytest.mark.unit
def test_landing_of_several_days_names_each_mismatch(tmp_path):
    rows = clean_rows(50)
    ok = write_partition(tmp_path / "day=1", rows, extra=_landed(50, manifest={"rows": 50}))
    cut = write_partition(tmp_path / "day=2", rows, extra={**_landed(50, manifest={"rows": 80}), "source": "raw/day_2"})
    old = write_partition(tmp_path / "day=3", rows)
    assert vp.open_partitions([ok, old]).stats["landing"] == "matches manifest"
    assert vp.open_partitions([old, old]).stats["landing"] == "no manifest"
    assert vp.open_partitions([ok, cut, old]).stats["landing"] == (
        "mismatch: raw/day_2: rows: 50 lines read (incl. 0 malformed) but the manifest says 80 "
        "(manifest gs://b/raw/day_3.manifest.json)")


@pytest.mark.unit
def test_a_cut_day_fails_on_its_manifest_and_its_last_line(tmp_path, capsys):
    """What extract writes for a raw file cut mid-write that had a manifest: both failures say why."""
    rows = clean_rows(1500)
    fix = "the file does not end with a newline: its last line is cut (still being written)"
    cut = {**_landed(1500, manifest={"rows": 4000, "bytes": 9000}), "source": "gs://b/raw/day_3",
           "read_error": {"kind": "truncated", "message": f"gs://b/raw/day_3: {fix}", "after_rows": 1500}}
    rc, result, out = run_main(tmp_path, write_partition(tmp_path / "cut", rows, extra=cut), capsys)
    assert rc == 1, out
    failed = failed_by_column(result)
    assert set(failed) == {"landing", "read_error"}, result["failed"]
    assert failed["landing"]["observed"] == (
        "landing = 'mismatch: rows: 1500 lines read (incl. 0 malformed) but the manifest says 4000; bytes: the "
        "file has 1000 but the manifest says 9000 (manifest gs://b/raw/day_3.manifest.json)'")
    assert failed["read_error"]["observed"] == f"read_error = 'truncated' after 1500 rows of gs://b/raw/day_3: {fix}"
    assert "landing=mismatch" in out and "read_error=truncated" in out
    whole = _landed(1500, manifest={"rows": 1500, "bytes": 1000, "sha256": SHA_A})
    rc, result, out = run_main(tmp_path, write_partition(tmp_path / "whole", rows, extra=whole), capsys)
    assert rc == 0 and "landing=matches manifest" in out, out


@pytest.mark.unit
def test_a_collapsed_column_fails_without_a_reference(tmp_path, capsys):
    rows = clean_rows(2500)
    for r in rows:
        r[COLUMNS.index("C9")] = "0badc0de" if r[COLUMNS.index("C9")] else ""
        r[COLUMNS.index("I4")] = "3" if r[COLUMNS.index("I4")] else ""
    rc, result, out = run_main(tmp_path, write_partition(tmp_path / "d", rows), capsys)
    assert rc == 1, out
    failed = failed_by_column(result)
    assert set(failed) == {"distinct(C9)", "distinct(I4)"}, result["failed"]
    assert failed["distinct(C9)"]["observed"] == "distinct(C9) = 1"
    assert failed["distinct(I4)"]["rule"].startswith("2 <= value [distinct non-missing I4 values")


@pytest.mark.unit
def test_sample_is_deterministic_and_spread(tmp_path, capsys):
    rows = clean_rows(6000)
    rows[5990][COLUMNS.index("C1")] = "zz"  # near the end: a strided sample may or may not hit it
    part = write_partition(tmp_path / "d", rows)
    p = vp.open_partition(part)
    a, b = vp.plan_reads(p, 1000), vp.plan_reads(p, 1000)
    assert a.sampled and a.rows == b.rows and 900 <= a.rows <= 1100
    assert [(f, g, list(i)) for f, g, i in a.groups] == [(f, g, list(i)) for f, g, i in b.groups]
    assert {f for f, _, _ in a.groups} == set(range(len(p.files)))  # every file contributes
    rc, result, out = run_main(tmp_path, part, capsys, "--sample-rows", "1000")
    assert result["sampled"] is True and result["rows_validated"] == a.rows
    assert "deterministic sample" in out
    full = vp.plan_reads(p, 0)
    assert not full.sampled and full.rows == 6000


@pytest.mark.unit
def test_unreadable_parquet_exits_2_naming_file(tmp_path, capsys):
    part = write_partition(tmp_path / "d", clean_rows(100))
    bad = Path(storage.resolve(str(part))) / "train" / "part-00000.parquet"
    bad.write_bytes(b"not parquet at all")
    rc, result, _ = run_main(tmp_path, part, capsys)
    capsys.readouterr()
    assert rc == 2 and result["success"] is False
    assert str(bad) in result["summary"]


@pytest.mark.unit
def test_missing_extract_json_exits_2(tmp_path, capsys):
    part = write_partition(tmp_path / "d", clean_rows(100))
    (Path(storage.resolve(str(part))) / "_extract.json").unlink()
    rc, result, _ = run_main(tmp_path, part, capsys)
    assert rc == 2 and "_extract.json" in result["summary"]


# ------------------------------------------------------------------------------------------
# end to end: the real extract step and the CLI in its own process
# ------------------------------------------------------------------------------------------

def _steps(*args: str) -> None:
    if not STEPS_PY.exists():
        pytest.skip(".venv-steps is not installed")
    from operators.runtime.local import LOCAL_ENVIRONMENTS

    env = {**os.environ, "PYTHONPATH": LOCAL_ENVIRONMENTS["merlin"].pythonpath}
    subprocess.run([str(STEPS_PY), "-m", "criteo_merlin", *args], check=True, env=env, cwd=REPO,
                   capture_output=True, text=True)


def _cli(tmp_path: Path, part: Path, name: str) -> tuple[subprocess.CompletedProcess, dict]:
    result_path = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "images" / "validator" / "src"),
           "STEP_RESULT_PATH": str(result_path)}
    proc = subprocess.run([sys.executable, "-m", "criteo_validator", "--input", str(part), "--suite", "raw_day",
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
    assert in_site(result, "data_docs").exists()

    proc, result = _cli(tmp_path, ext / "day=9", "broken")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    failed = failed_by_column(result)
    assert set(failed) == {"label", "C1", "I3", "malformed_rows"}
    assert "25 fields" in failed["malformed_rows"]["observed"]
    assert "FAILED (hard) raw_day: expect_column_values_to_be_in_set column label" in proc.stdout
    assert in_site(result, "data_docs").exists()

    (Path(storage.resolve(str(ext / "day=9"))) / "eval" / "part-00000.parquet").write_bytes(b"garbage")
    proc, result = _cli(tmp_path, ext / "day=9", "unreadable")
    assert proc.returncode == 2
    assert "eval/part-00000.parquet" in proc.stderr


# ------------------------------------------------------------------------------------------
# learned bounds, severity, drift, processed output
# ------------------------------------------------------------------------------------------

def _profile_of(tmp_path: Path, capsys, part: Path, name: str) -> Path:
    out = tmp_path / f"{name}.profile.json"
    rc, result, _ = run_main(tmp_path, part, capsys, "--profile-out", str(out), "--min-rows", "100")
    assert rc == 0 and result["profile"] == str(out)
    return out


@pytest.mark.unit
def test_reference_bounds_are_learned_and_severity_decides(tmp_path, capsys):
    from criteo_validator import profile

    ref_day = write_partition(tmp_path / "ref", clean_rows(3000, seed=1))
    ref = profile.merge([json.loads(_profile_of(tmp_path, capsys, ref_day, "ref").read_text())])
    ref_path = tmp_path / "reference.json"
    profiles.save(ref, str(ref_path))
    assert ref["int"]["I5"]["min"] >= -2 and ref["int"]["I5"]["max"] < 5000

    # I5 rescaled x1000: inside the default int32 range, outside the learned hard range
    rows = clean_rows(3000, seed=2)
    j = COLUMNS.index("I5")
    for r in rows:
        if r[j]:
            r[j] = str(int(r[j]) * 1000)
    part = write_partition(tmp_path / "rescaled", rows)
    rc, result, _ = run_main(tmp_path, part, capsys, "--min-rows", "100")
    assert rc == 0, result["summary"]  # without a reference only the format is checked
    rc, result, out = run_main(tmp_path, part, capsys, "--min-rows", "100", "--reference", str(ref_path),
                               "--suite", "drift")
    assert rc == 1
    hard = {(f["column"], f["expectation"]) for f in result["failed"]}
    assert ("I5", "expect_column_values_to_be_between") in hard
    assert any(w["column"] == "psi(I5)" for w in result["warnings"]), result["warnings"]
    assert "WARNING (soft) drift" in out

    # a soft-only deviation (clicks up 50%: outside the soft CTR band, inside the hard one) passes
    rows = clean_rows(3000, seed=3)
    for i, r in enumerate(rows):
        if i % 6 == 0:
            r[0] = "1"
    part = write_partition(tmp_path / "more_clicks", rows)
    rc, result, out = run_main(tmp_path, part, capsys, "--min-rows", "100", "--reference", str(ref_path))
    assert rc == 0, result["summary"]
    assert result["success"] is True and result["failed"] == []
    assert "ctr" in [w["column"] for w in result["warnings"] if w["suite"] == "raw_day"]
    summary = json.loads((Path(storage.resolve(result["data_docs_site"])) / "_summary.json").read_text())
    assert summary["success"] is True and summary["warnings"]


@pytest.mark.unit
def test_a_handful_of_values_past_the_hard_range_is_a_heavy_tail_more_is_a_broken_column(tmp_path, capsys):
    """suites.HARD_RANGE_NOISE: on a 3,000-row day one value outside is 0.03%, past "1 in 10,000";
    up to 5 outside warn (soft range), the 6th fails the day naming the column and the rule."""
    from criteo_validator import profile
    from criteo_validator.suites import HARD_RANGE_NOISE

    ref_day = write_partition(tmp_path / "ref", clean_rows(3000, seed=1))
    ref_path = tmp_path / "reference.json"
    profiles.save(profile.merge([json.loads(_profile_of(tmp_path, capsys, ref_day, "ref").read_text())]),
                  str(ref_path))
    j = COLUMNS.index("I5")
    for outside, code in ((HARD_RANGE_NOISE, 0), (HARD_RANGE_NOISE + 1, 1)):
        rows = clean_rows(3000, seed=4)
        for r in rows[:outside]:
            r[j] = "60000"     # the reference's max is under 5,000: its hard max under 50,000
        part = write_partition(tmp_path / f"tail{outside}", rows)
        rc, result, out = run_main(tmp_path, part, capsys, "--min-rows", "100", "--reference", str(ref_path))
        assert rc == code, result["summary"]
        if code:
            f = failed_by_column(result)["I5"]
            assert f"(for at least 99.99% of present values, or all but {HARD_RANGE_NOISE})" in f["rule"]
            assert f"{outside} of" in f["observed"] and "60000" in f["observed"]
        else:
            assert "I5" in [w["column"] for w in result["warnings"]]


@pytest.mark.unit
def test_missing_reference_is_noted_not_fatal(tmp_path, capsys):
    part = write_partition(tmp_path / "d", clean_rows(1500))
    rc, result, out = run_main(tmp_path, part, capsys, "--reference", str(tmp_path / "nope.json"), "--suite", "drift")
    assert rc == 0
    assert "reference profile" in out and "not found" in out
    assert "drift" in result["skipped"]


def write_processed(root: Path, n: int = 3000, vocab: int = 50, seed: int = 0, **overrides) -> Path:
    with storage.staged_partition(str(root)) as attempt:
        _fill_processed(Path(attempt), n, vocab, seed, **overrides)
    return root


def _fill_processed(root: Path, n: int, vocab: int, seed: int, **overrides) -> None:
    rng = np.random.default_rng(seed)
    cols = {"label": pa.array(rng.integers(0, 2, n).astype(np.int8))}
    for c in [f"I{i}" for i in range(1, 14)]:
        cols[c] = pa.array(rng.normal(0, 1, n).astype(np.float32))
    for c in [f"C{i}" for i in range(1, 27)]:
        cols[c] = pa.array(rng.integers(0, vocab, n).astype(np.int64))
    for c, values in overrides.items():
        cols[c] = pa.array(values)
    (root / "train").mkdir(parents=True)
    (root / "eval").mkdir()
    table = pa.table(cols)
    pq.write_table(table.slice(0, n - n // 10), root / "train" / "part_0.parquet")
    pq.write_table(table.slice(n - n // 10), root / "eval" / "part_0.parquet")
    (root / "_preprocess.json").write_text(json.dumps({
        "rows": {"train": n - n // 10, "eval": n // 10},
        "embedding_sizes": {f"C{i}": vocab for i in range(1, 27)}, "workflow": "wf"}))


def _processed(tmp_path, capsys, *parts: Path):
    result_path = tmp_path / "p.json"
    os.environ["STEP_RESULT_PATH"] = str(result_path)
    try:
        rc = v.main(["--input", *map(str, parts), "--suite", "processed_day", "--data-docs",
                     str(tmp_path / "pdocs"), "--run-name", "p", "--expectations-dir", str(REPO / "expectations")])
    finally:
        del os.environ["STEP_RESULT_PATH"]
    capsys.readouterr()
    return rc, json.loads(result_path.read_text())


@pytest.mark.unit
def test_processed_suite(tmp_path, capsys):
    ok1, ok2 = write_processed(tmp_path / "day=0"), write_processed(tmp_path / "day=1", seed=1)
    rc, result = _processed(tmp_path, capsys, ok1, ok2)
    assert rc == 0, result["summary"]
    assert result["rows_validated"] == 6000

    n = 3000
    ids = np.random.default_rng(5).integers(0, 50, n)
    ids[10] = 50  # == vocabulary size: no such embedding row
    cont = np.random.default_rng(6).normal(0, 1, n).astype(np.float32)
    cont[20], cont[30] = np.inf, np.nan
    shifted = (np.random.default_rng(7).normal(0, 1, n) + 8).astype(np.float32)
    bad = write_processed(tmp_path / "day=2", C4=ids, I2=cont, I9=shifted)
    rc, result = _processed(tmp_path, capsys, bad)
    assert rc == 1
    failed = {(f["column"], f["expectation"]) for f in result["failed"]}
    assert ("C4", "expect_column_values_to_be_between") in failed
    assert ("I2", "expect_column_values_to_not_be_null") in failed  # NaN
    assert ("I2", "expect_column_values_to_be_between") in failed  # inf
    assert ("mean(I9)", "expect_column_values_to_be_between") in failed
    assert "49" in next(f["rule"] for f in result["failed"] if f["column"] == "C4")


@pytest.mark.unit
def test_publish_replaces_the_previous_site(tmp_path, capsys):
    part = write_partition(tmp_path / "d", clean_rows(1200))
    rc, first, _ = run_main(tmp_path, part, capsys)
    stale = Path(storage.resolve(first["data_docs_site"])) / "stale.txt"
    stale.write_text("from an older run")
    rc, second, _ = run_main(tmp_path, part, capsys)
    assert rc == 0 and not stale.exists() and in_site(second, "data_docs_page").exists()
    site = Path(first["data_docs_site"])                             # the commit and the one attempt it names
    assert sorted(p.name for p in site.iterdir()) == sorted(["_COMMITTED", Path(storage.resolve(str(site))).name])


@pytest.mark.unit
def test_committed_suites_match_their_generator():
    from criteo_validator import suites

    assert suites.main(["--check", str(REPO / "expectations" / "expectations")]) == 0
