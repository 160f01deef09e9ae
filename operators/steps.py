"""The runtime seam: a pipeline step is declared once and runs as a local process or a pod.

A step is a CLI in one of the images under images/ (`python -m <module> <command> ARGS`). Its
result manifest (declared outputs, metrics) is written to $STEP_RESULT_PATH, which becomes the
task's XCom. The Airflow Variable `criteo_runtime` picks the runtime; DAG files never change:

- local (embedded default): a subprocess in the image's local virtual environment, its output
  streamed into the task log;
- kubernetes: a KubernetesPodOperator pod of the image on GKE (GPU steps get a GPU) whose
  result comes back through the xcom sidecar from /airflow/xcom/return.json.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

from airflow.sdk import BaseOperator

from .config import REPO_ROOT
from .data_docs import DataDocsLink

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Image:
    name: str
    module: str                 # python -m <module>
    local_python: str           # interpreter of the local virtual environment
    source_dir: str             # put on PYTHONPATH locally (os.pathsep-separated); COPY'd into the image


@dataclass(frozen=True)
class StepSpec:
    name: str
    image: str
    command: tuple[str, ...]
    gpu: bool = False
    # Exit codes meaning "the input is bad": retrying cannot help, fail the task at once.
    data_error_exit_codes: tuple[int, ...] = ()
    cpu: str = "2"
    memory: str = "8Gi"


IMAGES = {
    "merlin": Image("merlin", "criteo_steps", str(REPO_ROOT / ".venv-steps" / "bin" / "python"),
                    str(REPO_ROOT / "images" / "merlin" / "src")),
    "validator": Image("validator", "criteo_validate", str(REPO_ROOT / ".venv" / "bin" / "python"),
                       str(REPO_ROOT / "images" / "validator" / "src")),
    # The inference client, the monitor and to-day. They share the Criteo codecs and metrics with
    # images/merlin (schema, evaluate) and the drift bins with images/validator (profile); the
    # image copies those modules in (images/monitoring/Dockerfile).
    "monitoring": Image("monitoring", "criteo_monitoring", str(REPO_ROOT / ".venv" / "bin" / "python"),
                        os.pathsep.join([str(REPO_ROOT / "images" / "monitoring" / "src"),
                                         str(REPO_ROOT / "images" / "validator" / "src"),
                                         str(REPO_ROOT / "images" / "merlin" / "src")])),
}

STEPS = {
    "extract": StepSpec("extract", "merlin", ("extract",)),
    "validate": StepSpec("validate", "validator", (), data_error_exit_codes=(1, 2), memory="4Gi"),
    "reference": StepSpec("reference", "validator", ("reference",), memory="1Gi"),
    "preprocess": StepSpec("preprocess", "merlin", ("preprocess",), gpu=True, memory="32Gi"),
    "train": StepSpec("train", "merlin", ("train",), gpu=True, memory="32Gi"),
    "export": StepSpec("export", "merlin", ("export",)),
    "evaluate": StepSpec("evaluate", "merlin", ("evaluate",)),
    "synth": StepSpec("synth", "merlin", ("synth",)),
    # Exit 4: bad input or a raw day that exists with other content (retrying cannot help);
    # exit 3: Triton failing, labels not all in yet (a retry may).
    "replay": StepSpec("replay", "monitoring", ("replay",), data_error_exit_codes=(4,), memory="2Gi"),
    "request_log_to_day": StepSpec("request_log_to_day", "monitoring", ("to-day",), data_error_exit_codes=(4,),
                                   memory="4Gi"),
}


def to_argv(arguments: dict[str, Any] | Sequence[str]) -> list[str]:
    """{"--days": [0, 1], "--gz": True, "--x": None} -> ["--days", "0", "1", "--gz"]."""
    if not isinstance(arguments, dict):
        return [str(a) for a in arguments]
    argv: list[str] = []
    for flag, value in arguments.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, (list, tuple)):
            argv += [flag, *[str(v) for v in value]]
        else:
            argv += [flag, str(value)]
    return argv


class StepFailed(Exception):
    def __init__(self, message: str, exit_code: int, result: dict | None):
        super().__init__(message)
        self.exit_code = exit_code
        self.result = result


class LocalProcessRuntime:
    """Run a step as a subprocess in its image's local virtual environment."""

    def __init__(self, tail_lines: int = 40):
        self.tail_lines = tail_lines
        self._proc = None

    def command(self, step: StepSpec, argv: list[str]) -> tuple[list[str], dict[str, str]]:
        image = IMAGES[step.image]
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [image.source_dir, env.get("PYTHONPATH")]))
        env.setdefault("PYTHONUNBUFFERED", "1")
        return [image.local_python, "-m", image.module, *step.command, *argv], env

    def run(self, step: StepSpec, argv: list[str]) -> dict:
        # Imported here, not at module level: DAG files import this module at parse time.
        import json
        import subprocess
        import tempfile
        from collections import deque

        cmd, env = self.command(step, argv)
        if not os.path.exists(cmd[0]):
            raise FileNotFoundError(
                f"step {step.name}: interpreter {cmd[0]} of image '{step.image}' is missing; run `make setup`")
        with tempfile.TemporaryDirectory(prefix=f"step-{step.name}-") as tmp:
            env["STEP_RESULT_PATH"] = os.path.join(tmp, "return.json")
            log.info("running step %s: %s", step.name, " ".join(cmd))
            tail: deque[str] = deque(maxlen=self.tail_lines)
            self._proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                          text=True, bufsize=1, start_new_session=True)
            assert self._proc.stdout is not None
            for line in self._proc.stdout:
                line = line.rstrip("\n")
                if not line.startswith("STEP_RESULT "):
                    log.info("%s", line)
                tail.append(line)
            code = self._proc.wait()
            result = None
            if os.path.exists(env["STEP_RESULT_PATH"]):
                with open(env["STEP_RESULT_PATH"]) as fh:
                    result = json.load(fh)
        if code != 0:
            summary = (result or {}).get("summary") or "\n".join(tail)
            raise StepFailed(f"step {step.name} exited with code {code}:\n{summary}", code, result)
        return result or {}

    def kill(self) -> None:
        import signal

        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)


def runtime_for(name: str):
    if name == "local":
        return LocalProcessRuntime()
    if name == "kubernetes":
        raise NotImplementedError(
            "criteo_runtime=kubernetes: pods are not wired in this release; set criteo_runtime=local")
    raise ValueError(f"unknown criteo_runtime {name!r}: expected 'local' or 'kubernetes'")


class CriteoStepOperator(BaseOperator):
    """Run one pipeline step (see STEPS) on the configured runtime; its result manifest is the XCom.

    :param step: name of the step, a key of STEPS.
    :param arguments: the step's CLI flags as a dict (values may be templates or XComArgs).
    """

    template_fields: Sequence[str] = ("arguments",)
    ui_color = "#c5e3c5"
    operator_extra_links = (DataDocsLink(),)

    def __init__(self, *, step: str, arguments: dict[str, Any] | list[str] | None = None, **kwargs):
        if step not in STEPS:
            raise ValueError(f"unknown step {step!r}; known: {sorted(STEPS)}")
        super().__init__(**kwargs)
        self.step = step
        self.arguments = arguments or {}
        self._runtime = None

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from .config import PipelineConfig

        spec = STEPS[self.step]
        self._runtime = runtime_for(PipelineConfig.load().runtime)
        try:
            return self._runtime.run(spec, to_argv(self.arguments))
        except StepFailed as exc:
            if exc.result is not None:
                context["ti"].xcom_push(key="step_result", value=exc.result)
            if exc.exit_code in spec.data_error_exit_codes:
                raise AirflowFailException(str(exc)) from None
            raise

    def on_kill(self) -> None:
        if self._runtime is not None:
            self._runtime.kill()
