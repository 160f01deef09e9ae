"""The Criteo Terabyte click-log format: 40 tab-separated fields, no header.

label (0/1), I1..I13 (integer counts, may be negative), C1..C26 (32-bit hashes as 8 lowercase hex
digits). An empty field is a missing value. The days are published as `day_N` or `day_N.gz`.
"""
from __future__ import annotations

import re

LABEL = "label"
INT_COLUMNS = [f"I{i}" for i in range(1, 14)]
CAT_COLUMNS = [f"C{i}" for i in range(1, 27)]
FEATURES = [*INT_COLUMNS, *CAT_COLUMNS]
COLUMNS = [LABEL, *FEATURES]
NUM_FIELDS = len(COLUMNS)  # 40

_DAY_FILE = re.compile(r"^day_(\d+)(?:\.gz)?$")


def day_file_name(day: int, gz: bool = False) -> str:
    return f"day_{day}" + (".gz" if gz else "")


def day_file_names(day: int) -> list[str]:
    """The names a raw day may have, in the order they are looked for."""
    return [day_file_name(day), day_file_name(day, gz=True)]


def day_of_file(name: str) -> int | None:
    """N for a file named `day_N` or `day_N.gz`, else None."""
    m = _DAY_FILE.match(name)
    return int(m.group(1)) if m else None
