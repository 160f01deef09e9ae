"""The fault suite (`make test-faults`): each input fault or infrastructure failure an operator meets,
done for real on the real DAGs, asserting that nothing is half-visible, production is untouched
and the message says what is wrong and what to do.

Each test records one row (case, outcome, message) with the `fault_table` fixture; the session
writes them to `.data/faults/table.md` (and `table.json`), the table docs/figures.md shows. Two
sessions write it: `make test-faults` and, for the compose stack's database restart
(test_database_restart.py, marker `containers`), `make test-containers`, side by side in `make
test`'s lanes b and c. Each merges its rows into the table under a lock: the rows of the tests it
ran replace theirs, every other test's rows stay.
"""
from __future__ import annotations

import fcntl
import json
import os
import re

import pytest

from ..conftest import REPO

TABLE_DIR = REPO / ".data" / "faults"
_ROWS: list[dict] = []
_RAN: set[str] = set()  # the fault tests this session ran, passed or not: their earlier rows are replaced
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


def one_line(text: str, limit: int = 240) -> str:
    """A message as one table cell: whitespace folded, temporary paths shortened."""
    text = re.sub(r"/tmp/pytest-of-[^/]+/pytest-\d+/[^/\s]+", "<tmp>", str(text))
    text = re.sub(r"\s+", " ", text).strip().replace("|", "\\|")
    return text if len(text) <= limit else text[: limit - 1] + "…"


@pytest.fixture
def fault_table(request):
    """record(case, outcome, message): one row of the fault table (docs/figures.md), written when the test passes."""
    rows: list[dict] = []

    def record(case: str, outcome: str, message: str = "") -> None:
        rows.append({"case": case, "outcome": outcome, "message": one_line(message), "test": request.node.name,
                     "nodeid": request.node.nodeid, "line": request.node.location[1],
                     "layer": "faults" if request.node.get_closest_marker("faults") else "containers"})

    yield record
    report = getattr(request.node, "rep_call", None)
    if report is not None and report.passed:
        _ROWS.extend(rows)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item.rep_call = rep
        if "fault_table" in item.fixturenames:
            _RAN.add(item.nodeid)


def merge_rows(earlier: list[dict], rows: list[dict], ran: set[str]) -> list[dict]:
    """The table after a session: the earlier rows of tests it did not run, and its own rows; the
    fault suite's first, then lane c's, each in the order of the tests' files and their place in
    them, so the order does not depend on which lane ended first. Rows from before tests were keyed
    (no nodeid) are dropped."""
    kept = [r for r in earlier if r.get("nodeid") and r["nodeid"] not in ran]
    # a stable sort: one test's rows keep the order it recorded them in
    return sorted(kept + rows, key=lambda r: (r.get("layer") != "faults", r["nodeid"].split("::")[0],
                                              r.get("line", 0), r["nodeid"]))


def pytest_sessionfinish(session, exitstatus):
    if not _RAN:
        return
    TABLE_DIR.mkdir(parents=True, exist_ok=True)
    with open(TABLE_DIR / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            earlier = json.loads((TABLE_DIR / "table.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            earlier = []
        merged = merge_rows(earlier, _ROWS, _RAN)
        write_atomically(TABLE_DIR / "table.json", json.dumps(merged, indent=2) + "\n")
        lines = ["| case | outcome | message |", "|---|---|---|"]
        lines += [f"| {r['case']} | {r['outcome']} | {r['message']} |" for r in merged]
        write_atomically(TABLE_DIR / "table.md", "\n".join(lines) + "\n")


def write_atomically(path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
