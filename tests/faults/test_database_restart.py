"""Fault: PostgreSQL restarted in the compose stack while a training run's task runs.

All real: the compose stack of docker-compose.yaml (tests/fixtures/compose.py, shared with
tests/containers/test_compose_stack.py): Airflow 3's API server, scheduler (LocalExecutor), DAG
processor and triggerer on PostgreSQL, every step a sibling container started through Podman's
Docker API. A full retrain is triggered through the REST API; while its `train` task runs, the
postgres service is restarted through compose: a real stop (SIGINT, PostgreSQL's fast shutdown,
every connection dropped), 10 s down as in a failover or a crash's recovery, then a start on the
same data volume. (A bare `compose restart` is back in ~3 s, often between two queries of every
service: then only their pooled connections are renewed and the policy below is never exercised.)

Then the run must recover on its own: it ends success (tasks may retry; their tries are counted),
the API server answers and its health endpoint reports the metadatabase, scheduler, DAG processor
and triggerer healthy, no task is left running or queued, and the model repository has exactly one
new complete version for the run, none duplicated. Which services exited and whether compose's
restart policy (docker-compose.yaml: `restart: unless-stopped` on the Airflow services) brought
them back is read from the engine's events and recorded in the fault table.

Marker `containers`, not `faults`: it needs the container engine, which `make test-containers`
(lane c of `make test`) provides; its row joins the fault table through tests/faults/conftest.py.
"""
from __future__ import annotations

import json
import re
import time
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from tests.fixtures.compose import AIRFLOW_SERVICES, PROJECT
from tests.fixtures.engine import podman

pytestmark = pytest.mark.containers

DAG_ID = "criteo_full_retrain"
# A window of its own (day 2 alone: the shortest full retrain) and a logical date of its own: a new
# run key whether or not the compose test's runs (days 0-1, then day 2) went first on the shared
# stack. The gate against their production is opened (max_auc_drop): the case is the database.
LOGICAL_DATE = "2026-01-05T00:00:00Z"
CONF = {"end_day": 2, "window_days": 1, "epochs": 2, "learning_rate": 0.005, "mlp_dims": "64,64",
        "batch_size": 2048, "auc_floor": 0.55, "max_auc_drop": 1.0}
HIT_TASK = "train"
OUTAGE_S = 10
LONG_LIVED = tuple(s for s in AIRFLOW_SERVICES if s != "airflow-init") + ("postgres",)
UNFINISHED = {"running", "queued", "scheduled", "up_for_retry", "up_for_reschedule", "restarting", "deferred"}
DB_ERROR = re.compile(r"(OperationalError|server closed the connection|terminating connection|"
                      r"connection to server at .* failed)[^\n]*")


def containers() -> dict[str, dict]:
    """The stack's containers by compose service: state, exit code, start time."""
    out = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}", "--format", "json").stdout
    found = {}
    for c in json.loads(out or "[]"):
        service = (c.get("Labels") or {}).get("com.docker.compose.service")
        if service:
            found[service] = {"name": c["Names"][0], "state": c["State"], "exit": c.get("ExitCode"),
                              "started": c.get("StartedAt")}
    return found


def engine_events(since: float, names: dict[str, str]) -> list[tuple[float, str, str]]:
    """(seconds after `since`, service, died/start/restart) for the given containers, from the engine's log."""
    out = podman("events", "--stream=false", "--since", str(int(since) - 1), "--filter", "type=container",
                 "--format", "json").stdout
    by_name = {v: k for k, v in names.items()}
    events = []
    for line in out.splitlines():
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            continue
        service = by_name.get(e.get("Name"))
        status = e.get("Status")
        if service and status in ("died", "start", "restart", "stop"):
            t = e.get("time")
            when = t if isinstance(t, (int, float)) else datetime.fromisoformat(
                str(e.get("Time")).replace("Z", "+00:00")).timestamp()
            if when >= since - 1:
                events.append((round(when - since, 1), service, status))
    return sorted(events)


def model_versions(st) -> dict[int, dict]:
    """The complete versions in the stack's bucket volume, each with its lineage."""
    mount = podman("volume", "inspect", "criteo-bucket", "--format", "{{.Mountpoint}}").stdout.strip()
    model_dir = Path(mount) / "model_repository" / "criteo_dcn"
    if not model_dir.is_dir():
        return {}
    return {int(p.name): json.loads((p / "lineage.json").read_text())
            for p in model_dir.iterdir() if p.name.isdigit() and (p / "_SUCCESS").exists()}


def test_database_restart_mid_run_the_run_recovers(compose_stack, fault_table):
    st = compose_stack
    st.wait_for("the DAGs parsed", lambda: DAG_ID in {d["dag_id"] for d in st.api("GET", "/dags?limit=50")["dags"]},
                timeout=300)
    st.api("PATCH", f"/dags/{DAG_ID}", {"is_paused": False})
    before = model_versions(st)
    t_run = time.monotonic()
    run = st.api("POST", f"/dags/{DAG_ID}/dagRuns", {"logical_date": LOGICAL_DATE, "conf": CONF})
    path = f"/dags/{DAG_ID}/dagRuns/{run['dag_run_id']}"

    def task_instances() -> list[dict]:
        return st.api("GET", f"{path}/taskInstances?limit=100")["task_instances"]

    st.wait_for(f"{HIT_TASK} running", lambda: any(t["task_id"] == HIT_TASK and t["state"] == "running"
                                                   for t in task_instances()), timeout=240, every=0.5)
    hit_at = time.monotonic() - t_run
    print(f"\nFAULT {HIT_TASK} running {hit_at:.0f} s into the run; restarting postgres")
    names = {service: c["name"] for service, c in containers().items()}
    since = time.time()
    # a restart with the outage of a real one (a failover, a crash's recovery): long enough that each
    # service's loop meets the database gone, not only the connections it held
    st.compose("stop", "-t", "10", "postgres", timeout=120)
    time.sleep(OUTAGE_S)
    st.compose("start", "postgres", timeout=120)
    restart_s = time.time() - since

    # the run ends on its own: the services that exited are brought back by compose's restart policy
    def finished():
        state = st.api("GET", path)["state"]
        return state if state in ("success", "failed") else None

    state = st.wait_for(f"{DAG_ID} run after the database restart", finished, timeout=420, every=3)
    run_s = time.monotonic() - t_run
    tis = task_instances()
    events = engine_events(since, names)
    exited = sorted({service for _, service, status in events if status == "died" and service != "postgres"})
    now = {service: c["state"] for service, c in containers().items() if service in LONG_LIVED}
    print(f"\nFAULT database restart: {HIT_TASK} running {hit_at:.0f} s into the run; postgres restart took "
          f"{restart_s:.1f} s; run {state} after {run_s:.0f} s; engine events {events}; containers now {now}")
    tries = {t["task_id"] + (f"[{t['map_index']}]" if t["map_index"] >= 0 else ""): t["try_number"] for t in tis}
    print(f"FAULT tries: {tries}")
    assert state == "success", {t["task_id"]: (t["state"], t["try_number"]) for t in tis}

    # nothing left behind: every task ended, every long-lived service runs again and is healthy
    stuck = [(t["task_id"], t["map_index"], t["state"]) for t in tis if t["state"] in UNFINISHED]
    assert not stuck, stuck
    down = {s: state for s, state in now.items() if state != "running"}
    assert not down, f"services not running after the restart: {down}"

    def healthy():
        health = httpx.get(f"{st.url}/api/v2/monitor/health", timeout=10).json()
        statuses = {k: v.get("status") for k, v in health.items()}
        return statuses if all(s == "healthy" for s in statuses.values()) else None

    t_health = time.monotonic()
    statuses = st.wait_for("the stack healthy again (/api/v2/monitor/health)", healthy, timeout=120, every=2)
    healthy_after_s = time.monotonic() - t_health
    assert st.api("GET", f"/dags/{DAG_ID}")["dag_id"] == DAG_ID

    # exactly one new version, none duplicated: no two versions from the same run and inputs
    after = model_versions(st)
    new = sorted(set(after) - set(before))
    assert len(new) == 1, f"versions before {sorted(before)}, after {sorted(after)}"
    keys = [(v["run_key"], (v.get("inputs") or {}).get("fingerprint")) for v in after.values()]
    assert len(keys) == len(set(keys)), f"a version duplicated: {sorted(after)} {keys}"

    retried = {task: n for task, n in tries.items() if n > 1}
    # the first database error each Airflow service logged, the exited ones first
    errors = {}
    for service in sorted(set(names) & set(LONG_LIVED) - {"postgres"}, key=lambda s: (s not in exited, s)):
        log = podman("logs", names[service], check=False)
        found = DB_ERROR.search(log.stdout + log.stderr)
        if found:
            errors[service] = found.group(0)
    print(f"FAULT database errors logged: {errors}")
    died: dict[str, list[float]] = {}  # a service restarted while the database is still down exits again
    for t, service, status in events:
        if status == "died" and service in exited:
            died.setdefault(service, []).append(t)
    fault_table(
        f"PostgreSQL stopped (fast shutdown) and started {OUTAGE_S} s later by compose while the full "
        "retrain's `train` runs in the compose stack",
        f"run success after {run_s:.0f} s; the database down {restart_s:.0f} s; "
        + (("exited on the database error, restarted by compose (`restart: unless-stopped`): "
            + ", ".join(f"{s} at " + " and ".join(f"+{t:.0f} s" for t in ts)
                        for s, ts in sorted(died.items(), key=lambda d: d[1][0])) + "; ")
           if exited else "no Airflow service exited; ")
        + (f"retried: {', '.join(f'{k} {v} tries' for k, v in sorted(retried.items()))}; " if retried
           else f"no task retried ({len(tries)} tasks, 1 try each); ")
        + f"scheduler, DAG processor, triggerer healthy {healthy_after_s:.0f} s after the run; no task left "
          f"running or queued; one new version {new[0]}, none duplicated",
        "; ".join(f"{service}: {error}" for service, error in list(errors.items())[:1]))
    print(f"FAULT statuses {statuses}; versions {sorted(before)} -> {sorted(after)}")
