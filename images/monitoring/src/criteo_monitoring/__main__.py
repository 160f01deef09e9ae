"""`python -m criteo_monitoring COMMAND [ARGS]`.

- `replay`: the inference client (client.py); a step: its result manifest goes to $STEP_RESULT_PATH.
- `to-day`: a day of the request log -> raw/day_N (to_day.py); a step, likewise.
- `monitor`: the long-running metrics exporter (monitor.py).

Exit codes of the steps: 0 done; 3 failed, a retry may help (Triton unreachable, labels still
arriving); 4 the input is wrong (a value that breaks the Criteo format, a different raw day in
the way), a retry cannot help.
"""
from __future__ import annotations

import sys

COMMANDS = {"replay": "client", "to-day": "to_day", "monitor": "monitor"}


def main(argv: list[str] | None = None) -> int:
    import importlib

    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in COMMANDS:
        print(f"usage: python -m criteo_monitoring {{{','.join(COMMANDS)}}} [--help]", file=sys.stderr)
        return 2
    module = importlib.import_module(f"criteo_monitoring.{COMMANDS[argv[0]]}")
    if argv[0] == "monitor":
        return module.main(argv[1:])
    from criteo_validate.result import emit

    from criteo_steps.schema import DecodeError

    from .client import ReplayError, ReplayUsageError
    from .request_log import RequestLogError
    from .to_day import DayExists, ToDayError

    try:
        result = module.main(argv[1:])
    except (ReplayError, ToDayError, RequestLogError, DecodeError) as exc:
        code = 4 if isinstance(exc, (DayExists, RequestLogError, DecodeError, ReplayUsageError)) else 3
        print(f"ERROR: {argv[0]}: {exc}", file=sys.stderr, flush=True)
        emit({"error": str(exc), "summary": f"{argv[0]} failed: {exc}"}, print_line=False)
        return code
    emit(result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
