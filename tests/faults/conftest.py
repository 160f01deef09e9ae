"""The fault suite (`make test-faults`): each input fault or infrastructure failure an operator meets,
done for real on the real DAGs, asserting that nothing is half-visible, production is untouched
and the message says what is wrong and what to do.

Each test records one row (case, outcome, message) with the `fault_table` fixture; the session
writes them to `.data/faults/table.md` (and `table.json`), the table docs/figures.md shows.
"""
from __future__ import annotations

import json
import os
import re

import pytest

from ..conftest import REPO

TABLE_DIR = REPO / ".data" / "faults"
_ROWS: list[dict] = []
MIN_RAW_WAIT_S = 60  # the settle cases need the raw-day sensor to wait longer than the tests' default 4 s


@pytest.fixture(scope="session", autouse=True)
def _raw_wait_long_enough():
    """The DAG files read CRITEO_RAW_WAIT_TIMEOUT_S when parsed; `make test-faults` sets it."""
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
        rows.append({"case": case, "outcome": outcome, "message": one_line(message), "test": request.node.name})

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


def pytest_sessionfinish(session, exitstatus):
    if not _ROWS:
        return
    TABLE_DIR.mkdir(parents=True, exist_ok=True)
    (TABLE_DIR / "table.json").write_text(json.dumps(_ROWS, indent=2) + "\n")
    lines = ["| case | outcome | message |", "|---|---|---|"]
    lines += [f"| {r['case']} | {r['outcome']} | {r['message']} |" for r in _ROWS]
    (TABLE_DIR / "table.md").write_text("\n".join(lines) + "\n")
