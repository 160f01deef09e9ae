"""The served model's signature and the raw data's schema."""
import pytest

from criteo_kernel.schema import CAT_COLUMNS, COLUMNS, INT_COLUMNS, NUM_FIELDS, day_file_names, day_of_file

pytestmark = pytest.mark.unit


def test_the_criteo_schema():
    assert NUM_FIELDS == 40 and COLUMNS[0] == "label" and len(INT_COLUMNS) == 13 and len(CAT_COLUMNS) == 26
    assert day_file_names(7) == ["day_7", "day_7.gz"]
    assert [day_of_file(n) for n in ("day_7", "day_12.gz", "day_4.tmp", ".staging-day_1", "notes")] == \
        [7, 12, None, None, None]
