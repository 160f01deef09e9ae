"""The shared kernel alone on the path, as every image copies it; its tests run in both environments."""
import sys

from tests.conftest import REPO

src = REPO / "images" / "kernel" / "src"
if str(src) not in sys.path:
    sys.path.insert(0, str(src))
