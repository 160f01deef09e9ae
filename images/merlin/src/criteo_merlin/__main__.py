"""`python -m criteo_merlin STEP [ARGS]`: run one step of the GPU image (criteo_kernel.commands, .result)."""
import sys

from criteo_kernel.result import dispatch

if __name__ == "__main__":
    sys.exit(dispatch("criteo_merlin"))
