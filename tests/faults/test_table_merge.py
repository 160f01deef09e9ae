"""The fault table's merge (tests/faults/conftest.py): `make test-faults` and `make test-containers`
both write it, side by side in `make test`'s lanes; neither may lose the other's rows."""
import pytest

from .conftest import merge_rows

pytestmark = pytest.mark.unit


def row(nodeid: str, line: int, case: str, layer: str = "faults") -> dict:
    return {"case": case, "outcome": "", "message": "", "nodeid": nodeid, "line": line, "layer": layer}


INPUTS = "tests/faults/test_inputs.py::test_a"
RESTARTS = "tests/faults/test_monitoring_restarts.py::test_b"
DATABASE = "tests/faults/test_database_restart.py::test_c"


def test_each_lanes_rows_survive_the_others_write_in_either_order():
    faults = [row(INPUTS, 10, "a1"), row(INPUTS, 10, "a2"), row(RESTARTS, 5, "b")]
    containers = [row(DATABASE, 90, "c", layer="containers")]
    one = merge_rows(merge_rows([], faults, {INPUTS, RESTARTS}), containers, {DATABASE})
    other = merge_rows(merge_rows([], containers, {DATABASE}), faults, {INPUTS, RESTARTS})
    # the fault suite's rows first, each test's rows in the order it recorded them; lane c's last
    assert [r["case"] for r in one] == [r["case"] for r in other] == ["a1", "a2", "b", "c"]


def test_a_rerun_replaces_its_tests_rows_and_a_failed_rerun_leaves_none():
    table = [row(INPUTS, 10, "old a"), row(RESTARTS, 5, "old b"), row(DATABASE, 90, "old c", "containers")]
    # INPUTS ran again and passed (a new row); RESTARTS ran and failed (no row): its old row goes too
    merged = merge_rows(table, [row(INPUTS, 10, "new a")], {INPUTS, RESTARTS})
    assert [r["case"] for r in merged] == ["new a", "old c"]


def test_rows_of_an_unkeyed_table_are_dropped():
    assert merge_rows([{"case": "x", "outcome": "", "message": ""}], [], {INPUTS}) == []
