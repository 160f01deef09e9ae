"""`python -m criteo_monitoring COMMAND [ARGS]`.

- `replay`: the inference client (replay.py); a step: its result manifest goes to $STEP_RESULT_PATH.
- `to-day`: a day of the request log -> raw/day_N (to_day.py); a step, likewise.
- `monitor`: the long-running metrics exporter (monitor.py).

Exit codes of the steps (criteo_kernel.result): 0 done; 3 failed, a retry may help (Triton
unreachable, labels still arriving); 4 the input is wrong (a value that breaks the Criteo format,
a different raw day in the way), a retry cannot help.
"""
from __future__ import annotations

import sys

COMMANDS = {"replay": "criteo_monitoring.replay", "to-day": "criteo_monitoring.to_day",
            "monitor": "criteo_monitoring.monitor"}


def main(argv: list[str] | None = None) -> int:
    from criteo_kernel.codecs import DecodeError
    from criteo_kernel.result import dispatch

    from .errors import ReplayError, ReplayUsageError
    from .request_log import RequestLogError
    from .to_day import DayExists, ToDayError

    return dispatch("criteo_monitoring", COMMANDS, argv,
                    data_errors=(DayExists, RequestLogError, DecodeError, ReplayUsageError),
                    retryable_errors=(ReplayError, ToDayError))


if __name__ == "__main__":
    sys.exit(main())
