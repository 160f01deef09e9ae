"""One running Airflow for the live layer (tests/live): the training DAGs' Airflow of
tests/fixtures/airflow.py (`live_airflow`: LocalAirflow, the same processes `make airflow` starts,
on a home and a bucket of its own, with Triton serving the bucket's model repository). Shared by
the backfill tests and the browser check, which run in that order."""
from pathlib import Path

import pytest

from tests.fixtures.airflow import (  # noqa: F401 (the live tests' helpers, defined once there)
    DAILY,
    DAY0,
    FULL,
    SMALL_MODEL,
    airflow_cli,
    create_backfill,
    land,
    live_airflow,
    model_dir,
    when,
)

ROWS = 20_000
DAYS = 8            # day_0..day_7: a full retrain, backfills of 2-4 and 5-6, the UI's backfill of day 7


def corrupt_day(raw_file: Path) -> bytes:
    """Labels of 2 and text in I5 in every 97th row (as the demo's broken day); returns the original."""
    original = raw_file.read_bytes()
    lines = original.decode().splitlines()
    for i in range(0, len(lines), 97):
        f = lines[i].split("\t")
        f[0], f[5] = "2", "n/a"
        lines[i] = "\t".join(f)
    land(raw_file, ("\n".join(lines) + "\n").encode())
    return original


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    with live_airflow(tmp_path_factory.mktemp("live"), DAYS, ROWS) as (airflow, base):
        yield airflow, base
