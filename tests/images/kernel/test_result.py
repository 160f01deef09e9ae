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


def test_an_unknown_command_prints_the_packages_commands(capsys):
    assert result.run_command("criteo_merlin", ["nope"]) == 2
    assert "usage: python -m criteo_merlin {synth,extract,preprocess,train,train_hugectr," in capsys.readouterr().err


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


def test_sigterm_stops_the_steps_whole_process_group(tmp_path):
    """A step's children (dask workers, loaders) stop with it: the runtimes' SIGTERM reaches the group."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO
    from tests.fixtures.processes import running

    script = ("import subprocess, sys, time\n"
              "from criteo_kernel.result import stop_with_children_on_sigterm\n"
              "stop_with_children_on_sigterm()\n"
              "child = subprocess.Popen(['sleep', '60'])\n"
              "print(child.pid, flush=True)\n"
              "time.sleep(60)\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "images" / "kernel" / "src")}
    step = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=env,
                            start_new_session=True)
    child = int(step.stdout.readline())
    step.send_signal(signal.SIGTERM)
    assert step.wait(10) == -signal.SIGKILL
    deadline = time.time() + 5
    while running(child):
        assert time.time() < deadline, "the step's child outlived it"
        time.sleep(0.05)


def test_sigterm_stops_a_step_whose_log_reader_is_gone():
    """The parent-death signal comes when the task process died, with the read end of the step's log
    pipe: the handler's message then fails (EPIPE), and the step must stop all the same rather than
    have that error land in whatever it was running (here, code that swallows every exception)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO
    from tests.fixtures.processes import running

    script = ("import os, sys, time\n"
              "from criteo_kernel.result import stop_with_children_on_sigterm\n"
              "stop_with_children_on_sigterm()\n"
              "print(os.getpid(), flush=True)\n"
              "deadline = time.time() + 60\n"
              "while time.time() < deadline:\n"
              "    try:\n"
              "        time.sleep(0.01)\n"
              "    except Exception:\n"
              "        pass\n")
    env = {**os.environ, "PYTHONPATH": str(REPO / "images" / "kernel" / "src")}
    step = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env=env, start_new_session=True)
    pid = int(step.stdout.readline())
    step.stdout.close()                                   # the reader is gone
    os.kill(pid, signal.SIGTERM)
    deadline = time.time() + 5
    while running(pid):
        assert time.time() < deadline, "the step outlived its SIGTERM"
        time.sleep(0.05)
    step.wait(5)


def test_a_runtime_reads_back_what_the_step_emitted(capsys):
    result.emit({"a": 2, "b": [1]})
    printed = capsys.readouterr().out
    log = f'starting\nSTEP_RESULT {{"a": 1}}\nnoise STEP_RESULT is a word here\n{printed}'
    assert result.read_log(log) == {"a": 2, "b": [1]}          # the last one: emit and read_log agree
    assert result.read_log('2026-12-01T00:00:00Z STEP_RESULT {"x": 3}') == {"x": 3}   # a runtime's timestamp
    assert result.read_log("no result here\n") is None
