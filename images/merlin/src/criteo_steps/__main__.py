"""`python -m criteo_steps STEP [ARGS]`: run one step and write its result manifest.

The result (declared outputs: paths, counts, metrics) is printed as the last log line and written
as JSON to $STEP_RESULT_PATH when set. In a KubernetesPodOperator pod that is
/airflow/xcom/return.json, which the xcom sidecar hands back to Airflow; on the embedded default
the local runtime reads the same file. One contract, two runtimes.
"""
from __future__ import annotations

import importlib
import json
import os
import sys

STEPS = {
    "synth": "criteo_steps.synth",
    "extract": "criteo_steps.extract",
    "preprocess": "criteo_steps.preprocess",
    "train": "criteo_steps.train",
    "export": "criteo_steps.export",
    "evaluate": "criteo_steps.evaluate",
}


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] not in STEPS:
        print(f"usage: python -m criteo_steps {{{','.join(STEPS)}}} [--help]", file=sys.stderr)
        return 2
    module = importlib.import_module(STEPS[argv[0]])
    result = module.main(argv[1:]) or {}
    out = os.environ.get("STEP_RESULT_PATH")
    if out:
        os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
        with open(out + ".tmp", "w") as fh:
            json.dump(result, fh, indent=2, default=str)
        os.replace(out + ".tmp", out)
    print("STEP_RESULT " + json.dumps(result, default=str), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
