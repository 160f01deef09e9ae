import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[2] / "images" / "validator" / "src"
if str(SRC) not in sys.path:
    sys.path.insert(0, str(SRC))

