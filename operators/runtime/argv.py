"""A step's flags, from the dict the DAG declares them in to the argv its CLI takes."""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any


def to_argv(arguments: dict[str, Any] | Sequence[str]) -> list[str]:
    """{"--days": [0, 1], "--gz": True, "--x": None} -> ["--days", "0", "1", "--gz"].

    A list value becomes several arguments; so does any sequence, e.g. the lazy sequence of a
    mapped task's outputs. None and False leave the flag out; True is a bare flag.
    """
    if not isinstance(arguments, dict):
        return [str(a) for a in arguments]
    argv: list[str] = []
    for flag, value in arguments.items():
        if value is None or value is False:
            continue
        if value is True:
            argv.append(flag)
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
            argv += [flag, *[str(v) for v in value]]
        else:
            argv += [flag, str(value)]
    return argv
