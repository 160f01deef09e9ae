"""The fault suite (`make test-faults`): each input fault or infrastructure failure an operator meets,
done for real on the real DAGs, asserting that nothing is half-visible, production is untouched
and the message says what is wrong and what to do.

Each test records one row (case, outcome, message) with the `fault_table` fixture
(tests/fixtures/fault_table.py, registered for every layer by tests/conftest.py); the session
merges them into `.data/faults/table.md` (and `table.json`), the table docs/figures.md shows,
beside the rows `make test-containers` and `make test-kubernetes` write.
"""
from __future__ import annotations

import os

import pytest

MIN_RAW_WAIT_S = 60  # the settle cases need the raw-day sensor to wait longer than the tests' default 4 s


@pytest.fixture(autouse=True)
def _raw_wait_long_enough(request):
    """The DAG files read CRITEO_RAW_WAIT_TIMEOUT_S when parsed; `make test-faults` sets it. The
    compose stack's case (marker `containers`) parses its DAGs in the stack's containers instead."""
    if request.node.get_closest_marker("faults") is None:
        return
    if float(os.environ.get("CRITEO_RAW_WAIT_TIMEOUT_S", "0")) < MIN_RAW_WAIT_S:
        pytest.fail(f"the fault suite needs CRITEO_RAW_WAIT_TIMEOUT_S >= {MIN_RAW_WAIT_S} (the landing cases wait "
                    "for a day to settle): run it with `make test-faults`")
