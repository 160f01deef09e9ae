"""The command table: each image package's commands and the module whose `main(argv)` runs each.

`python -m <package> COMMAND ARGS` dispatches through it (criteo_kernel.result.dispatch), and the
Airflow side's step catalogue (operators/runtime/catalogue.py) takes each step's command from it:
a step's catalogue name is its command, so renaming or moving a command is one diff, here.

What a package's errors mean for the exit code (criteo_kernel.result.run_step) is named here too,
as dotted class names: the kernel imports no image's code, and an image carries only its own
package, so the classes are imported when a command of that package runs.
"""
from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass

from .trainers import HUGECTR, PYTORCH, TRAIN_STEP


@dataclass(frozen=True)
class Package:
    commands: Mapping[str, str]                 # command -> the module whose main(argv) runs it
    default: str | None = None                  # run when the first argument names no command
    data_errors: tuple[str, ...] = ()           # dotted exception classes: exit BAD_DATA
    retryable_errors: tuple[str, ...] = ()      # dotted exception classes: exit RETRYABLE


PACKAGES: dict[str, Package] = {
    # images/merlin (both targets): the GPU steps
    "criteo_merlin": Package({
        "synth": "criteo_merlin.ingest.synth",
        "extract": "criteo_merlin.ingest.extract",
        "preprocess": "criteo_merlin.preprocess.preprocess",
        TRAIN_STEP[PYTORCH]: "criteo_merlin.train.train",
        TRAIN_STEP[HUGECTR]: "criteo_merlin.hugectr.train_hugectr",
        "export": "criteo_merlin.export.export",
        "evaluate": "criteo_merlin.export.evaluate",
    }),
    # images/validator. `python -m criteo_validator --input ...` (no command) validates, as it always has.
    "criteo_validator": Package({
        "validate": "criteo_validator.validate",
        "reference": "criteo_validator.profile",
    }, default="validate"),
    # images/monitoring: two steps and the long-running exporter (monitor)
    "criteo_monitoring": Package(
        {
            "replay": "criteo_monitoring.replay",
            "request_log_to_day": "criteo_monitoring.to_day",
            "monitor": "criteo_monitoring.monitor",
        },
        # a value that breaks the Criteo format, a different raw day in the way, a wrong invocation
        data_errors=("criteo_monitoring.to_day.DayExists", "criteo_monitoring.request_log.RequestLogError",
                     "criteo_kernel.codecs.DecodeError", "criteo_monitoring.errors.ReplayUsageError"),
        # Triton unreachable, labels still arriving
        retryable_errors=("criteo_monitoring.errors.ReplayError", "criteo_monitoring.to_day.ToDayError"),
    ),
}


def command_line(package: str, command: str) -> tuple[str, ...]:
    """The arguments before a step's own: its command, which must be one of the package's."""
    if command not in PACKAGES[package].commands:
        raise KeyError(f"{package} has no command {command!r} (criteo_kernel.commands)")
    return (command,)


def resolve(package: str, argv: list[str]) -> tuple[str, str, list[str]] | None:
    """(command, module, the command's own arguments) for `python -m <package> ARGV`; None when
    ARGV names no command and the package has no default."""
    entry = PACKAGES[package]
    if argv and argv[0] in entry.commands:
        return argv[0], entry.commands[argv[0]], argv[1:]
    if entry.default:
        return entry.default, entry.commands[entry.default], argv
    return None


def load_class(dotted: str) -> type[BaseException]:
    module, _, name = dotted.rpartition(".")
    return getattr(importlib.import_module(module), name)
