"""`criteo-mlops validate` without the steps' environments (the runs themselves: tests/images/validator/test_corpus.py),
and the layering rule it keeps: the Airflow side imports the kernel, never a step package."""
import ast
from pathlib import Path

import pytest

from operators import cli
from operators.runtime import local

pytestmark = pytest.mark.unit
OPERATORS = Path(cli.__file__).resolve().parent
STEP_PACKAGES = {"criteo_merlin", "criteo_validator", "criteo_monitoring"}


def test_a_missing_file_is_named(tmp_path, capsys):
    assert cli.main(["validate", str(tmp_path / "day_9.gz")]) == 1
    assert "day_9.gz: no such file" in capsys.readouterr().err


def test_a_missing_step_environment_fails_naming_it(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(local.LOCAL_ENVIRONMENTS, "merlin", local.LocalEnvironment(str(tmp_path / "python"), ()))
    day = tmp_path / "day_0"
    day.write_text("0\t" + "\t".join(["1"] * 39) + "\n")
    assert cli.main(["validate", str(day), "--data-docs", str(tmp_path / "docs")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("FAILED: step extract: interpreter") and "run `make setup`" in err
    assert not (tmp_path / "docs").exists()


@pytest.mark.parametrize("path", sorted(OPERATORS.rglob("*.py")), ids=lambda p: str(p.relative_to(OPERATORS)))
def test_the_airflow_side_imports_no_step_package(path):
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else []
        assert not {n.split(".")[0] for n in names} & STEP_PACKAGES, f"operators/{path.relative_to(OPERATORS)}"
