"""The fault table's merge (tests/fixtures/fault_table.py): `make test-faults`, `make test-containers`
and `make test-kubernetes` all write it, side by side in `make test`'s lanes; none may lose another's rows."""
import pytest

from ..fixtures.fault_table import merge_rows

pytestmark = pytest.mark.unit


def row(nodeid: str, line: int, case: str, layer: str = "faults") -> dict:
    return {"case": case, "outcome": "", "message": "", "nodeid": nodeid, "line": line, "layer": layer}


INPUTS = "tests/faults/test_inputs.py::test_a"
RESTARTS = "tests/faults/test_monitoring_restarts.py::test_b"
DATABASE = "tests/faults/test_database_restart.py::test_c"
PODS = "tests/kubernetes/test_airflow_pods.py::test_d"


def test_each_lanes_rows_survive_the_others_writes_in_any_order():
    import itertools

    sessions = [([row(INPUTS, 10, "a1"), row(INPUTS, 10, "a2"), row(RESTARTS, 5, "b")], {INPUTS, RESTARTS}),
                ([row(DATABASE, 90, "c", layer="containers")], {DATABASE}),
                ([row(PODS, 200, "d", layer="kubernetes")], {PODS})]
    orders = []
    for order in itertools.permutations(sessions):
        table: list[dict] = []
        for rows, ran in order:
            table = merge_rows(table, rows, ran)
        orders.append([r["case"] for r in table])
    # the fault suite's rows first, each test's rows in the order it recorded them; the other layers' after
    assert all(o == ["a1", "a2", "b", "c", "d"] for o in orders), orders


def test_a_rerun_replaces_its_tests_rows_and_a_failed_rerun_leaves_none():
    table = [row(INPUTS, 10, "old a"), row(RESTARTS, 5, "old b"), row(DATABASE, 90, "old c", "containers")]
    # INPUTS ran again and passed (a new row); RESTARTS ran and failed (no row): its old row goes too
    merged = merge_rows(table, [row(INPUTS, 10, "new a")], {INPUTS, RESTARTS})
    assert [r["case"] for r in merged] == ["new a", "old c"]


def test_rows_of_an_unkeyed_table_are_dropped():
    assert merge_rows([{"case": "x", "outcome": "", "message": ""}], [], {INPUTS}) == []
