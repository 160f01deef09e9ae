"""The step contract: the manifest file, the last log line, and the exit codes runtimes act on."""
import json

import pytest

from criteo_kernel import result

pytestmark = pytest.mark.unit


class BadData(ValueError):
    pass


class Flaky(RuntimeError):
    pass


def test_a_result_is_written_and_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(result.RESULT_PATH_ENV, str(tmp_path / "out" / "return.json"))
    assert result.run_step(lambda argv: {"output": argv[0]}, ["gs://b/x"]) == result.OK
    assert json.loads((tmp_path / "out" / "return.json").read_text()) == {"output": "gs://b/x"}
    assert capsys.readouterr().out.strip().splitlines()[-1] == 'STEP_RESULT {"output": "gs://b/x"}'


def test_errors_map_to_exit_codes_data_errors_first(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv(result.RESULT_PATH_ENV, str(tmp_path / "return.json"))

    class Both(BadData, Flaky):  # a data error that is also of a retryable kind: no retry
        pass

    for exc, code in ((BadData("column C3: not hex"), result.BAD_DATA), (Flaky("Triton down"), result.RETRYABLE),
                      (Both("different day_0 in the way"), result.BAD_DATA)):
        def step(argv, exc=exc):
            raise exc
        assert result.run_step(step, [], "replay", data_errors=(BadData,), retryable_errors=(Flaky,)) == code
        manifest = json.loads((tmp_path / "return.json").read_text())
        assert manifest == {"error": str(exc), "summary": f"replay failed: {exc}"}
        assert f"ERROR: replay: {exc}" in capsys.readouterr().err
    with pytest.raises(KeyError):  # anything else is a crash: a traceback, exit 1
        result.run_step(lambda argv: {}["missing"], [])
    assert result.run_step(lambda argv: result.FAILED, []) == result.FAILED  # a step that reported itself


def test_dispatch_names_the_commands(capsys):
    assert result.dispatch("criteo_x", {"a": "json", "b": "json"}, ["nope"]) == 2
    assert "usage: python -m criteo_x {a,b}" in capsys.readouterr().err


def test_a_failed_step_prints_its_result_too(capsys):
    """Pods and containers hand their result back through the log only: failures included."""
    def fail(argv):
        raise BadData("day_3: column C26 is not 8 hex digits")

    assert result.run_step(fail, [], "extract", data_errors=(BadData,)) == result.BAD_DATA
    out = capsys.readouterr()
    line = out.out.strip().splitlines()[-1]
    assert line.startswith(result.RESULT_LINE)
    summary = json.loads(line[len(result.RESULT_LINE):])["summary"]
    assert summary == "extract failed: day_3: column C26 is not 8 hex digits"
    assert "ERROR: extract: day_3" in out.err
