"""The embedded default's runtime: a step as a subprocess in its image's local virtual environment.

Each image has a local stand-in: an interpreter with the image's packages installed, and the
image's sources (the shared kernel and the image's own package, nothing else) on PYTHONPATH. The
step's output is streamed into the task log; its result manifest comes back through
$STEP_RESULT_PATH, as from a pod's /airflow/xcom/return.json.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

from criteo_kernel.result import RESULT_LINE, RESULT_PATH_ENV

from ..pipeline.config import REPO_ROOT
from .base import StepFailed, StepOutcome, StepRuntime
from .catalogue import StepSpec

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LocalEnvironment:
    python: str                 # the interpreter of the local virtual environment
    source_dirs: tuple[str, ...]  # put on PYTHONPATH; what the image's Dockerfile copies

    @property
    def pythonpath(self) -> str:
        return os.pathsep.join(self.source_dirs)


def _environment(venv: str, image: str) -> LocalEnvironment:
    return LocalEnvironment(str(REPO_ROOT / venv / "bin" / "python"),
                            (str(REPO_ROOT / "images" / "kernel" / "src"), str(REPO_ROOT / "images" / image / "src")))


# NVTabular 23.08 needs numpy<2 / pandas<1.6, so the merlin image has an environment of its own.
LOCAL_ENVIRONMENTS = {
    "merlin": _environment(".venv-steps", "merlin"),
    # No HugeCTR here (its container only): train_hugectr says so and exits; plans refuse it first.
    "hugectr": _environment(".venv-steps", "merlin"),
    "validator": _environment(".venv", "validator"),
    "monitoring": _environment(".venv", "monitoring"),
}


def _die_with_parent(parent_pid: int):
    """preexec_fn of a step: the kernel sends it SIGTERM when the task process that started it dies,
    kill -9 included, as deleting the pod does on Kubernetes (the step then takes its own process
    group down, criteo_kernel.result). Linux's PR_SET_PDEATHSIG fires when the *thread* that forked
    exits: the task runs the step from the thread that waits for it, so that is the task's end."""
    import ctypes
    import signal

    def preexec() -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(1, int(signal.SIGTERM), 0, 0, 0) != 0:  # PR_SET_PDEATHSIG
            os._exit(125)
        if os.getppid() != parent_pid:  # the task died before the line above: do not start at all
            os._exit(125)

    return preexec


class LocalProcessRuntime(StepRuntime):
    """Run a step as a subprocess in its image's local virtual environment (no setting needed)."""

    name = "local"

    def __init__(self, settings=None, tail_lines: int = 40):
        super().__init__(settings)
        self.tail_lines = tail_lines
        self._proc = None

    def command(self, step: StepSpec, argv: list[str]) -> tuple[list[str], dict[str, str]]:
        local = LOCAL_ENVIRONMENTS[step.image]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [local.pythonpath, env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return [local.python, "-m", step.module, *step.command, *argv], env

    def start(self, spec: StepSpec, argv: list[str], *, task_id: str = "", context=None) -> StepOutcome:
        # Imported here, not at module level: DAG files import this module at parse time.
        import json
        import subprocess
        import sys
        import tempfile
        from collections import deque

        cmd, env = self.command(spec, argv)
        if not os.path.exists(cmd[0]):
            raise FileNotFoundError(
                f"step {spec.name}: interpreter {cmd[0]} of image '{spec.image}' is missing; run `make setup`")
        with tempfile.TemporaryDirectory(prefix=f"step-{spec.name}-") as tmp:
            env[RESULT_PATH_ENV] = os.path.join(tmp, "return.json")
            log.info("running step %s: %s", spec.name, " ".join(cmd))
            tail: deque[str] = deque(maxlen=self.tail_lines)
            self._proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, bufsize=1, start_new_session=True,
                                          preexec_fn=_die_with_parent(os.getpid()) if sys.platform == "linux" else None)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                line = line.rstrip("\n")
                if not line.startswith(RESULT_LINE):
                    log.info("%s", line)
                tail.append(line)
            code = self._proc.wait()
            result = None
            if os.path.exists(env[RESULT_PATH_ENV]):
                with open(env[RESULT_PATH_ENV]) as fh:
                    result = json.load(fh)
        return StepOutcome(code, result, "\n".join(tail))

    def run(self, spec: StepSpec, argv: list[str]) -> dict:
        """Outside a task (scripts, benches, test set-up): the step's result, or StepFailed."""
        outcome = self.start(spec, argv)
        if outcome.exit_code != 0:
            raise StepFailed(f"step {spec.name} exited with code {outcome.exit_code}:\n{outcome.summary}",
                             outcome.exit_code, outcome.result)
        return outcome.result or {}

    def kill(self) -> None:
        import signal

        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
