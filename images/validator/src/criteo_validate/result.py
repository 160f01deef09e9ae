"""The step result contract shared with images/merlin: JSON at $STEP_RESULT_PATH (the pod's
/airflow/xcom/return.json, or the local runtime's file) and a last `STEP_RESULT {...}` log line."""
from __future__ import annotations

import json
import os


def emit(result: dict, print_line: bool = True) -> None:
    out = os.environ.get("STEP_RESULT_PATH")
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out + ".tmp", "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        os.replace(out + ".tmp", out)
    if print_line:
        print("STEP_RESULT " + json.dumps(result, default=str), flush=True)
