"""`python -m criteo_steps STEP [ARGS]`: run one step of the GPU image (see criteo_kernel.result)."""
from __future__ import annotations

import sys

from criteo_kernel.result import dispatch

STEPS = {
    "synth": "criteo_steps.ingest.synth",
    "extract": "criteo_steps.ingest.extract",
    "preprocess": "criteo_steps.preprocess.preprocess",
    "train": "criteo_steps.train.train",
    "train-hugectr": "criteo_steps.hugectr.train_hugectr",
    "export": "criteo_steps.export.export",
    "evaluate": "criteo_steps.export.evaluate",
}

if __name__ == "__main__":
    sys.exit(dispatch("criteo_steps", STEPS))
