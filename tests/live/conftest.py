"""One running Airflow for the live layer (tests/live): LocalAirflow, the same processes `make
airflow` starts, on a home and a bucket of its own, with Triton serving the bucket's model
repository. Shared by the backfill tests and the browser check, which run in that order."""
import os
import subprocess
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.fixtures.airflow import AIRFLOW, Airflow

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 20_000
DAYS = 8            # day_0..day_7: a full retrain, backfills of 2-4 and 5-6, the UI's backfill of day 7
SMALL_MODEL = {"epochs": 1, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048, "auc_floor": 0.55}
FULL = "criteo_full_retrain"
DAILY = "criteo_incremental_training"


def when(stamp: str) -> datetime:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00"))


def model_dir(base: Path) -> Path:
    return base / "model_repository" / "criteo_dcn"


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


def land(raw_file: Path, data: bytes) -> None:
    """Land a raw day as its writer would: the file, then its manifest (criteo_kernel.landing)."""
    from criteo_kernel.landing import write_manifest

    raw_file.write_bytes(data)
    write_manifest(str(raw_file))


@pytest.fixture(scope="session")
def live(tmp_path_factory):
    from local_servers.stack import ServingStack
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    root = tmp_path_factory.mktemp("live")
    base = root / "bucket"
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(base / "raw"), "--days", f"0-{DAYS - 1}",
                                               "--rows", str(ROWS)])
    with ServingStack(base, root / "services", monitor=False, prometheus=False) as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRITEO_"))}
        env.update({
            "AIRFLOW_VAR_CRITEO_BASE_URL": str(base),
            "AIRFLOW_VAR_CRITEO_DAY0_DATE": DAY0.date().isoformat(),
            "AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL": stack.triton.grpc_url,
            # sensors give their worker slot back between pokes, as in production. Not much faster
            # than this: a task rescheduled within the scheduler's executor-event latency is failed
            # by the stale event of its previous poke (Airflow 3.3; see docs/kubernetes-gke.md, apache/airflow#72716).
            "CRITEO_SENSOR_MODE": "reschedule",
            "CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S": "10",
            "CRITEO_RAW_POKE_INTERVAL_S": "10",
            "CRITEO_RAW_WAIT_TIMEOUT_S": "120",
            "CRITEO_RETRY_DELAY_S": "5",
        })
        if os.environ.get("CRITEO_DATA_DOCS_ASSETS"):
            env["CRITEO_DATA_DOCS_ASSETS"] = os.environ["CRITEO_DATA_DOCS_ASSETS"]
        af = Airflow(root / "airflow_home", env)
        af.stack = stack
        try:
            af.start()
            yield af, base
        finally:
            af.stop()


def airflow_cli(airflow, *args: str) -> subprocess.CompletedProcess:
    """An `airflow` CLI command against the live Airflow. Its database is SQLite (one writer at a
    time): a command that clears many task instances while the scheduler writes can fail with
    "database is locked", and is run again, as a user would. Production runs on PostgreSQL.
    Only for commands that can be repeated: `backfill create` goes through create_backfill."""
    for _ in range(5):
        out = subprocess.run([AIRFLOW, *args], env=airflow.env, capture_output=True, text=True, timeout=300)
        if out.returncode == 0 or "database is locked" not in out.stderr:
            return out
        time.sleep(3)
    return out


def create_backfill(airflow, *args: str, timeout_s: float = 420) -> subprocess.CompletedProcess:
    """`airflow backfill create ARGS`, run again as a user would when Airflow refuses it:

    - AlreadyRunningBackfill: Airflow allows one running backfill per DAG, and marks one completed a
      scheduler loop or so after its last run ends (30 s; a backfill left with no run, 2 minutes
      after its creation);
    - "database is locked" (SQLite, see airflow_cli). The command commits the backfill first and
      then each day's run in order (clearing a run to reprocess it commits too), so failing in
      between it leaves a backfill with only the first days of the range. Those days run; the rest
      of the range is asked for again once that backfill has completed, as a user reading the
      Backfills page would. A backfill left with no day at all is cancelled at once."""
    dag_id = args[args.index("--dag-id") + 1]
    args = list(args)
    at = args.index("--from-date") + 1
    first = date.fromisoformat(args[at][:10])
    days = (date.fromisoformat(args[args.index("--to-date") + 1][:10]) - first).days + 1   # daily DAGs

    def backfills() -> dict:
        return {b["id"]: b for b in airflow.call("GET", f"/api/v2/backfills?dag_id={dag_id}")["backfills"]}

    known = set(backfills())
    deadline = time.monotonic() + timeout_s
    while True:
        out = subprocess.run([AIRFLOW, "backfill", "create", *args], env=airflow.env, capture_output=True,
                             text=True, timeout=300)
        if out.returncode == 0:
            return out
        for made in sorted(set(backfills()) - known):
            known.add(made)
            covered = _backfill_days(airflow, made)
            if covered >= days:
                return subprocess.CompletedProcess(out.args, 0, out.stdout + f"\n(backfill {made} was created with all "
                                                   "its days; the command failed after)\n", out.stderr)
            if covered == 0:
                try:
                    airflow.call("PUT", f"/api/v2/backfills/{made}/cancel")
                except RuntimeError as e:       # 409: Airflow completed it meanwhile
                    if " 409 " not in str(e):
                        raise
                continue
            first, days = first + timedelta(days=covered), days - covered
            args[at] = first.isoformat()
            deadline = max(deadline, time.monotonic() + 300 * covered)   # its days run first
        retry = "AlreadyRunningBackfill" in out.stderr or "database is locked" in out.stderr
        if not retry or time.monotonic() > deadline:
            return out
        time.sleep(5)


def _backfill_days(airflow, backfill_id: int) -> int:
    """How many days the backfill has rows for (runs made or cleared, or the reason why not). The REST
    API does not say; this reads the live Airflow's own SQLite database, read-only."""
    import sqlite3

    db = sqlite3.connect(f"file:{airflow.home / 'airflow.db'}?mode=ro", uri=True, timeout=60)
    try:
        return db.execute("SELECT count(*) FROM backfill_dag_run WHERE backfill_id = ?", (backfill_id,)).fetchone()[0]
    finally:
        db.close()
