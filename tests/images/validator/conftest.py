"""The validator image's code, on the path as its Dockerfile copies it: the kernel and criteo_validator."""
import sys

from tests.conftest import REPO

for src in (REPO / "images" / "kernel" / "src", REPO / "images" / "validator" / "src"):
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))
