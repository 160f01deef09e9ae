"""`python -m criteo_monitoring COMMAND [ARGS]` (criteo_kernel.commands).

- `replay`: the inference client (replay.py); a step: its result manifest goes to $STEP_RESULT_PATH.
- `request_log_to_day`: a day of the request log -> raw/day_N (to_day.py); a step, likewise.
- `monitor`: the long-running metrics exporter (monitor.py).

Exit codes of the steps (criteo_kernel.result): 0 done; 3 failed, a retry may help (Triton
unreachable, labels still arriving); 4 the input is wrong (a value that breaks the Criteo format,
a different raw day in the way), a retry cannot help.
"""
import sys

from criteo_kernel.result import dispatch

if __name__ == "__main__":
    sys.exit(dispatch("criteo_monitoring"))
