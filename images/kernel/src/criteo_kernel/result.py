"""The step contract: how a step hands its result to whichever runtime started it.

A step is a CLI (`python -m <image package> <command> ARGS`). Its result manifest (declared
outputs: URLs, counts, metrics) is written as JSON to `$STEP_RESULT_PATH` and printed as the last
log line, `STEP_RESULT {...}`. In a KubernetesPodOperator pod that path is
/airflow/xcom/return.json, which the xcom sidecar hands back to Airflow; on the embedded default
the local runtime reads the same file. One contract for every runtime.

Exit codes, which the Airflow side maps to "retry" or "fail now" per step:
"""
from __future__ import annotations

import importlib
import json
import os
import sys
from collections.abc import Callable

RESULT_PATH_ENV = "STEP_RESULT_PATH"
RESULT_LINE = "STEP_RESULT "

OK = 0
FAILED = 1            # the step failed; for validation: a hard expectation failed
UNREADABLE_INPUT = 2  # validation: the input or the suite cannot be read (the message names the file)
RETRYABLE = 3         # a dependency failed (Triton, the bucket, labels still arriving): a retry may help
BAD_DATA = 4          # the input breaks the Criteo format, or a different raw day is in the way


class DataError(ValueError):
    """The step's input is bad in a way no retry can fix: exit BAD_DATA, with a message naming the
    file and the fix. Any step may raise it (or a subclass)."""


def write(result: dict) -> None:
    """The manifest at $STEP_RESULT_PATH (when set), whole or not at all."""
    out = os.environ.get(RESULT_PATH_ENV)
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out + ".tmp", "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        os.replace(out + ".tmp", out)


def emit(result: dict, print_line: bool = True) -> None:
    """Write the manifest and, unless told not to, print it as the last log line."""
    write(result)
    if print_line:
        print(RESULT_LINE + json.dumps(result, default=str), flush=True)


def read_log(text: str) -> dict | None:
    """The manifest a step printed (`emit`) as its last `STEP_RESULT {...}` line, or None: how a
    container runtime gets a step's result back from its log."""
    for line in reversed(text.splitlines()):
        head, sep, rest = line.partition(RESULT_LINE)
        # a runtime may prefix each line with a timestamp
        if sep and (not head or head.endswith(" ")):
            try:
                return json.loads(rest)
            except json.JSONDecodeError:
                return None
    return None


def run_step(step: Callable[[list[str]], dict | int], argv: list[str], name: str = "step", *,
             data_errors: tuple[type[BaseException], ...] = (),
             retryable_errors: tuple[type[BaseException], ...] = ()) -> int:
    """Run one step's main(argv) and apply the contract.

    A dict result is emitted, exit 0. An int is an exit code from a step that emitted its own
    result (validation reports failures as results). A data error exits BAD_DATA and a retryable
    error RETRYABLE, each with the message on stderr and as the manifest's `error`/`summary`
    (data errors are checked first: they may subclass a retryable kind). Anything else propagates:
    a traceback and exit 1.
    """
    data_errors = (*data_errors, DataError)
    try:
        result = step(argv)
    except data_errors + retryable_errors as exc:
        code = BAD_DATA if isinstance(exc, data_errors) else RETRYABLE
        print(f"ERROR: {name}: {exc}", file=sys.stderr, flush=True)
        # printed too: a pod's or container's log is how its result reaches Airflow, failures included
        emit({"error": str(exc), "summary": f"{name} failed: {exc}"})
        return code
    if isinstance(result, int):
        return result
    emit(result or {})
    return OK


def stop_with_children_on_sigterm() -> None:
    """On SIGTERM, kill the step's whole process group (its dask workers, data loaders) at once.

    SIGTERM is what a step gets when its task stops: on_kill, the local runtime's parent-death
    signal (the task process killed, -9 included), a pod deleted. Without this, children outlive
    the step and keep writing; and a step that is PID 1 in a container would ignore SIGTERM.
    Only a process that leads its own group does this (the runtimes start steps so).
    """
    import signal

    if os.getpgrp() != os.getpid():
        return

    def stop(signum, frame):  # noqa: ARG001
        try:
            print(f"step stopped by signal {signum}: stopping its process group", file=sys.stderr, flush=True)
        except (OSError, ValueError):
            # the log's reader is gone (the task process was killed: that is why the signal came); an
            # error raised here would reach whatever the step was running, which might swallow it
            pass
        try:
            # As a container's PID 1 this is kill(-1): every other process of the container.
            os.killpg(os.getpgrp(), signal.SIGKILL)
        except ProcessLookupError:  # the step was alone
            pass
        # Reached only as a container's PID 1, which no SIGKILL from inside its container stops.
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, stop)


def dispatch(package: str, argv: list[str] | None = None) -> int:
    """`python -m <package> COMMAND [ARGS]`, the entry point of every image: the command's module
    (criteo_kernel.commands) runs as a step, its children stopped with it on SIGTERM."""
    argv = list(sys.argv[1:] if argv is None else argv)
    stop_with_children_on_sigterm()
    return run_command(package, argv)


def run_command(package: str, argv: list[str]) -> int:
    """dispatch without the SIGTERM handler, for a caller that is no step process of its own (a test)."""
    from . import commands

    found = commands.resolve(package, argv)
    if found is None:
        print(f"usage: python -m {package} {{{','.join(commands.PACKAGES[package].commands)}}} [--help]",
              file=sys.stderr)
        return 2
    command, module, args = found
    entry = commands.PACKAGES[package]
    main = importlib.import_module(module).main
    return run_step(main, args, command,
                    data_errors=tuple(commands.load_class(c) for c in entry.data_errors),
                    retryable_errors=tuple(commands.load_class(c) for c in entry.retryable_errors))
