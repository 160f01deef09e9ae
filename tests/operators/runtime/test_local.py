"""The runtime seam against the real step environment (subprocesses in .venv-steps / .venv)."""

import os
import signal
import subprocess
import sys
import time

import pytest

from operators.runtime import StepFailed
from operators.runtime.argv import to_argv
from operators.runtime.catalogue import STEPS
from operators.runtime.local import LocalProcessRuntime
from tests.conftest import REPO
from tests.fixtures.processes import children, running

pytestmark = pytest.mark.integration


def test_to_argv():
    assert to_argv({"--days": [0, 1], "--gz": True, "--off": False, "--none": None, "--n": 3}) == [
        "--days", "0", "1", "--gz", "--n", "3"]


def test_local_runtime_runs_a_step_and_returns_its_manifest(tmp_path):
    result = LocalProcessRuntime().run(STEPS["synth"], to_argv({"--out": tmp_path, "--days": "0", "--rows": 500}))
    assert result["days"][0]["rows"] == 500
    assert (tmp_path / "day_0").exists()


def test_a_crashing_step_fails_with_its_log_tail(tmp_path):
    with pytest.raises(StepFailed) as err:
        LocalProcessRuntime().run(STEPS["extract"], ["--input", str(tmp_path), "--day", "7",
                                                     "--output", str(tmp_path / "x")])
    assert err.value.exit_code == 1
    assert "raw day 7 not found: expected" in str(err.value) and "day_7.gz" in str(err.value)


def test_validation_failure_is_a_data_error_with_a_summary(tmp_path):
    raw = tmp_path / "day_0"
    good = "\t".join(["1"] + ["3"] * 13 + ["deadbeef"] * 26)
    bad = "\t".join(["2"] + ["x"] + ["3"] * 12 + ["DEADBEEF"] * 26)
    raw.write_text("\n".join([good] * 1500 + [bad] * 20) + "\n")
    LocalProcessRuntime().run(STEPS["extract"], ["--input", str(raw), "--output", str(tmp_path / "ex")])
    with pytest.raises(StepFailed) as err:
        LocalProcessRuntime().run(STEPS["validate"], to_argv({
            "--input": tmp_path / "ex", "--suite": "raw_day", "--data-docs": tmp_path / "docs",
            "--run-name": "t"}))
    assert err.value.exit_code in STEPS["validate"].data_error_exit_codes
    msg = str(err.value)
    assert "FAILED" in msg and "label" in msg and "I1" in msg and "C1" in msg
    assert err.value.result["success"] is False


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's prctl")
def test_a_task_killed_with_sigkill_takes_its_step_down(tmp_path):
    """kill -9 of the task process: its step stops too (as on_kill deleting a pod), no orphan writes on."""
    script = ("from operators.runtime.catalogue import STEPS\n"
              "from operators.runtime.local import LocalProcessRuntime\n"
              f"LocalProcessRuntime().run(STEPS['synth'], ['--out', {str(tmp_path)!r}, '--days', '0-50', "
              "'--rows', '3000000'])\n")
    task = subprocess.Popen([sys.executable, "-c", script], cwd=REPO)
    try:
        deadline = time.time() + 60
        while not (steps := children(task.pid)):
            assert task.poll() is None and time.time() < deadline, "the step never started"
            time.sleep(0.1)
        (step,) = steps
        time.sleep(1.0)  # the step is working: its first day is being written
        assert running(step)
        os.kill(task.pid, signal.SIGKILL)
        task.wait(10)
        # within 3 s: well before the step's next line of output (a day of 3M rows takes longer)
        # would kill it through the closed pipe anyway
        deadline = time.time() + 3
        while running(step):
            assert time.time() < deadline, f"step {step} outlived its killed task"
            time.sleep(0.1)
        written = sorted(p.name for p in tmp_path.iterdir())
        time.sleep(1.0)
        assert sorted(p.name for p in tmp_path.iterdir()) == written  # nothing writes on
    finally:
        if task.poll() is None:
            task.kill()
