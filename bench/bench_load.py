"""Load: many daily runs backfilled at once under a real Airflow, and the monitor at 10x traffic.

Part 1, --airflow: a real Airflow 3 (API server, scheduler with LocalExecutor, DAG processor,
triggerer; the processes tests/live starts, on an AIRFLOW_HOME and SQLite database of their own)
and a real Triton. Synthetic days day_0..day_N (the demo's `synth` step); a full retrain of day_0
through the REST API; then `airflow backfill create` of criteo_incremental_training over day_1..day_N
in one command. Measured: the drain time (the backfill's created_at -> the last run's end), each
task's queued -> running latency (the REST API's queued_when and start_date) p50/p99, and the
metadata database's growth (the SQLite file and its WAL, before/after, per run). The daily runs are
sequential by design (wait_for_previous_day: day N warm-starts from day N-1's version): "at once"
means created at once; the bench reports how many runs were running at the same time and how many
were past wait_for_previous_day at the same time. If the drain does not end within --max-wait-s,
what finished is reported and the rest extrapolated, labelled as such.

Part 2, --monitor: the monitor (`python -m criteo_monitoring monitor`, its image's environment, as
local_servers.stack starts it) on a request log written at the replay's production rate (1x: the
inference client's `--rate 500 --batch-size 64` of docker-compose.yaml / k8s/serving, 32,000 rows/s)
and at 10x, alternated, each round with a fresh monitor. The rows are a synthetic raw day's, logged
through the replay's own RequestRecorder and RequestLogWriter (part files per hour partition, labels
--label-delay-s later), made before the timed window in a staging folder and only published (renamed
into the log, one part per kind per --tick-s) during it, so the log grows at the true rate on 2 cores
(the bench prints the rate it reached, and says when it fell short). The predictions are random
numbers, not Triton's (Triton cannot answer 32,000 rows/s on this machine; the monitor only reads
the log). Measured: for each written request part,
the time from its file being published to the monitor's /metrics counting its rows
(criteo_requests_logged_total) and, for labels, joining them (criteo_labels_joined_total) p50/p99;
the rows/s actually written; the monitor's peak RSS (VmHWM).

    .venv/bin/python bench/bench_load.py --airflow [--days 30 --rows 2000 --max-wait-s 900]
    .venv/bin/python bench/bench_load.py --monitor [--seconds 20 --rounds 2]
    .venv/bin/python bench/bench_load.py           # both
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

DAY0 = date(2026, 1, 1)
DAILY, FULL = "criteo_incremental_training", "criteo_full_retrain"
SMALL_MODEL = {"epochs": 1, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048}
REPLAY_RATE, REPLAY_BATCH = 500, 64   # the inference client's --rate and --batch-size (docker-compose.yaml, k8s)


def hardware() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    return f"hardware: {os.cpu_count()} cores (nproc), {cpu}, {mem_kb / 2**20:.1f} GiB RAM, kernel {platform.release()}"


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    k = (len(s) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(s) - 1)
    return s[lo] + (s[hi] - s[lo]) * (k - lo)


def when(stamp: str | None) -> datetime | None:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")) if stamp else None


def max_overlap(intervals: list[tuple[datetime, datetime]]) -> int:
    events = sorted([(a, 1) for a, _ in intervals] + [(b, -1) for _, b in intervals], key=lambda e: (e[0], e[1]))
    now = best = 0
    for _, d in events:
        now += d
        best = max(best, now)
    return best


# -- part 1: Airflow -----------------------------------------------------------------------------
def db_bytes(home: Path) -> int:
    return sum(p.stat().st_size for p in home.glob("airflow.db*") if p.is_file())


def sensor_pokes(home: Path) -> int:
    """Reschedules so far (task_reschedule rows: each a sensor poke that gave its slot back and ran again
    as a new task process). The REST API does not list them; read-only on the SQLite file."""
    import sqlite3

    db = sqlite3.connect(f"file:{home / 'airflow.db'}?mode=ro", uri=True, timeout=60)
    try:
        return db.execute("SELECT count(*) FROM task_reschedule").fetchone()[0]
    finally:
        db.close()


def airflow_part(a) -> float:
    from local_servers.airflow import LocalAirflow
    from local_servers.stack import ServingStack
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    root = Path(a.base or tempfile.mkdtemp(prefix="bench-load-"))
    base = root / "bucket"
    t = time.perf_counter()
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(base / "raw"), "--days", f"0-{a.days}",
                                               "--rows", str(a.rows)])
    print(f"synthetic days day_0..day_{a.days} of {a.rows:,} rows in {time.perf_counter() - t:.1f}s", flush=True)
    with ServingStack(base, root / "services", monitor=False, prometheus=False) as stack:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "CRITEO_"))}
        env.update({   # as tests/live/conftest.py: sensors in reschedule mode poking every 10 s
            "AIRFLOW_VAR_CRITEO_BASE_URL": str(base),
            "AIRFLOW_VAR_CRITEO_DAY0_DATE": DAY0.isoformat(),
            "AIRFLOW_VAR_CRITEO_NUM_DAYS": str(a.days + 1),
            "AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL": stack.triton.grpc_url,
            "CRITEO_SENSOR_MODE": "reschedule",
            "CRITEO_PREVIOUS_DAY_POKE_INTERVAL_S": "10",
            "CRITEO_RAW_POKE_INTERVAL_S": "10",
            "CRITEO_RAW_WAIT_TIMEOUT_S": "120",
            "CRITEO_RETRY_DELAY_S": "5",
        })
        af = LocalAirflow(root / "airflow_home", env)
        t = time.perf_counter()
        af.start()
        try:
            af.wait_for_dags([FULL, DAILY])
            print(f"Airflow up and the DAGs parsed in {time.perf_counter() - t:.1f}s ({af.url})", flush=True)
            return _drive(a, af)
        finally:
            af.stop()


def _wait(what: str, check, timeout_s: float, every_s: float = 5):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(every_s)
    raise RuntimeError(f"timed out waiting for {what}")


def _drive(a, af) -> float:
    from tests.fixtures.airflow import create_backfill

    for dag_id in (FULL, DAILY):
        af.call("PATCH", f"/api/v2/dags/{dag_id}", {"is_paused": False})
    t = time.perf_counter()
    run = af.call("POST", f"/api/v2/dags/{FULL}/dagRuns", {"logical_date": None, "conf": {
        "end_day": 0, "window_days": 1, **SMALL_MODEL, "auc_floor": a.auc_floor}})
    done = _wait("the full retrain", lambda: (lambda r: r if r["state"] in ("success", "failed") else None)(
        af.call("GET", f"/api/v2/dags/{FULL}/dagRuns/{run['dag_run_id']}")), 900)
    if done["state"] != "success":
        raise SystemExit(f"the full retrain of day_0 failed: see {af.home}/logs\n{af.logs()}")
    print(f"full retrain of day_0 (production version 1) in {time.perf_counter() - t:.1f}s", flush=True)

    # the scheduled runs of today (outside the data set's days) end skipped; let them settle first
    time.sleep(5)
    size0, pokes0 = db_bytes(af.home), sensor_pokes(af.home)
    first, last = DAY0 + timedelta(days=1), DAY0 + timedelta(days=a.days)
    t_cmd = datetime.now(UTC)
    out = create_backfill(af, "--dag-id", DAILY, "--from-date", first.isoformat(), "--to-date", last.isoformat(),
                          "--dag-run-conf", json.dumps({**SMALL_MODEL, "auc_floor": a.auc_floor}))
    if out.returncode != 0:
        raise SystemExit(f"airflow backfill create failed:\n{out.stdout[-3000:]}{out.stderr[-3000:]}")
    backfills = af.call("GET", f"/api/v2/backfills?dag_id={DAILY}")["backfills"]
    created = min(when(b["created_at"]) for b in backfills)
    print(f"backfill of day_1..day_{a.days} created {(created - t_cmd).total_seconds():.1f}s after the command "
          f"started (max_active_runs {backfills[0].get('max_active_runs')})", flush=True)

    def backfill_runs() -> list[dict]:
        return [r for r in af.call("GET", f"/api/v2/dags/{DAILY}/dagRuns?limit=100&order_by=logical_date")["dag_runs"]
                if r["run_type"] == "backfill"]

    deadline = time.monotonic() + a.max_wait_s
    polled_running = 0
    while True:
        af.revive(say=lambda line: print(line, flush=True))      # a restart policy, as production has
        runs = backfill_runs()
        states = [r["state"] for r in runs]
        polled_running = max(polled_running, states.count("running"))
        finished = [r for r in runs if r["state"] in ("success", "failed")]
        if len(runs) >= a.days and len(finished) == len(runs):
            break
        if any(s == "failed" for s in states) or time.monotonic() > deadline:
            break
        time.sleep(10)
    now = datetime.now(UTC)
    size1, pokes = db_bytes(af.home), sensor_pokes(af.home) - pokes0
    finished = sorted((r for r in runs if r["state"] in ("success", "failed")), key=lambda r: r["logical_date"])
    failed = [r["logical_date"][:10] for r in finished if r["state"] == "failed"]

    waits, active, intervals, working = [], [], [], []
    for r in runs:
        tis = af.call("GET", f"/api/v2/dags/{DAILY}/dagRuns/{r['dag_run_id']}/taskInstances?limit=100")
        tis = {ti["task_id"]: ti for ti in tis["task_instances"]}
        waits += [(when(ti["start_date"]) - when(ti["queued_when"])).total_seconds()
                  for ti in tis.values() if ti["queued_when"] and ti["start_date"]]
        if r["start_date"]:
            intervals.append((when(r["start_date"]), when(r["end_date"]) or now))
        plan = tis.get("plan_incremental_run", {}).get("start_date")
        if plan:   # past wait_for_previous_day: the run's own work
            working.append((when(plan), when(r["end_date"]) or now))
            if r["end_date"]:
                active.append((when(r["end_date"]) - when(plan)).total_seconds())

    print(f"\nbackfill of {a.days} daily runs ({a.rows:,}-row days, MLP {SMALL_MODEL['mlp_dims']}, LocalExecutor "
          f"parallelism 4, SQLite):")
    print(f"  runs finished            {len(finished)} of {a.days}" + (f" (failed: {failed})" if failed else ""))
    print(f"  components restarted     {len(af.restarts)}" + "".join(
        f"; {name} (exit {code}) at +{t - created.timestamp():.0f} s" for t, name, code in af.restarts))
    print(f"  runs running at once     {max_overlap(intervals)} (max overlap of the runs' start..end; "
          f"{polled_running} seen in state running at one poll)")
    print(f"  runs past wait_for_previous_day at once  {max_overlap(working)} (plan start..run end)")
    if len(finished) == a.days and len(runs) == a.days:
        drain = (max(when(r["end_date"]) for r in finished) - created).total_seconds()
        print(f"  drain time               {drain:8.1f} s (backfill created_at -> last run's end_date)")
    else:
        drain_part = ((max(when(r["end_date"]) for r in finished) - created).total_seconds() if finished
                      else float("nan"))
        drain = drain_part / max(len(finished), 1) * a.days
        print(f"  drain NOT finished within --max-wait-s {a.max_wait_s:.0f}: {len(finished)} runs in "
              f"{drain_part:.1f} s; EXTRAPOLATED drain of {a.days} runs at that pace: {drain:.0f} s")
    per_run = statistics.median(active) if active else float("nan")
    print(f"  per run (plan -> end)    median {per_run:.1f} s, max {max(active, default=float('nan')):.1f} s")
    print(f"  drain per finished run   {drain / a.days:.1f} s")
    print(f"  queued -> running        p50 {pct(waits, 50):.2f} s, p99 {pct(waits, 99):.2f} s, max "
          f"{max(waits, default=float('nan')):.2f} s over {len(waits)} task instances (last try of each)")
    print(f"  sensor pokes             {pokes} reschedules in {(now - created).total_seconds():.0f} s (the runs "
          f"waiting in wait_for_previous_day poke every 10 s, each poke a task process of its own)")
    grow = size1 - size0
    print(f"  metadata DB (SQLite)     {size0 / 2**20:.2f} MiB -> {size1 / 2**20:.2f} MiB: +{grow / 2**20:.2f} MiB, "
          f"{grow / max(len(finished), 1) / 1024:.0f} KiB per finished run ({len(finished)} finished, "
          f"{len(runs)} created)")
    ratio = drain / (per_run * a.days) if active else float("nan")
    print(f"bench_load: ratio {ratio:.3f} (the {a.days}-run backfill's drain time over {a.days} x the median run's "
          f"own time, plan -> end)", flush=True)
    return ratio


# -- part 2: the monitor -------------------------------------------------------------------------
class MetricsPoller(threading.Thread):
    """Polls the monitor's /metrics; records when each counter first reached each value."""

    def __init__(self, url: str, pid: int, every_s: float = 0.1):
        super().__init__(daemon=True)
        self.url, self.pid, self.every_s = url, pid, every_s
        self.samples: list[tuple[float, float, float]] = []   # (time, requests logged, labels joined)
        self.stop = threading.Event()

    def run(self) -> None:
        import httpx

        with httpx.Client(timeout=5) as client:
            while not self.stop.is_set():
                try:
                    text = client.get(self.url).text
                except httpx.HTTPError:
                    time.sleep(self.every_s)
                    continue
                t = time.time()
                logged = joined = 0.0
                for line in text.splitlines():
                    if line.startswith("criteo_requests_logged_total{"):
                        logged += float(line.rsplit(" ", 1)[1])
                    elif line.startswith("criteo_labels_joined_total{"):
                        joined += float(line.rsplit(" ", 1)[1])
                self.samples.append((t, logged, joined))
                time.sleep(self.every_s)

    def first_reaching(self, col: int, value: float) -> float | None:
        for s in self.samples:
            if s[col] >= value:
                return s[0]
        return None


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    return 0


def vm_hwm_kib(pid: int) -> int:
    """The process's peak resident set (VmHWM)."""
    return _status_kib(pid, "VmHWM:")


def vm_rss_kib(pid: int) -> int:
    return _status_kib(pid, "VmRSS:")


def load_round(a, factor: int, day_file: str, root: Path) -> dict:
    import numpy as np

    from local_servers.stack import monitor_process

    for p in (str(REPO / "images" / "kernel" / "src"), str(REPO / "images" / "monitoring" / "src")):
        if p not in sys.path:
            sys.path.insert(0, p)
    import pyarrow as pa

    from criteo_monitoring.recorder import RequestRecorder
    from criteo_monitoring.request_log import LABELS, REQUESTS, RequestLogWriter
    from criteo_monitoring.traffic import read_batches

    log_url = root / f"request_log-{factor}x-{time.time_ns()}"
    log_url.mkdir(parents=True)
    rows_per_s = REPLAY_RATE * REPLAY_BATCH * factor
    tick_s = a.tick_s
    per_tick = int(rows_per_s * tick_s)
    batches = list(read_batches(day_file, per_tick, lambda *x: None))
    batches = [b for b in batches if len(b) == per_tick] or batches
    rng = np.random.default_rng(0)
    recorder = RequestRecorder("criteo_dcn", 1, clock="wall")
    # The part files are made before the timed window, in a staging folder of the same file system,
    # and only published (renamed into the log, as RequestLogWriter publishes a part) during it: on
    # this machine making 320,000 rows/s of parquet would take the cores the monitor is measured on.
    staging = RequestLogWriter(str(root / f"staging-{factor}x-{time.time_ns()}"))
    ticks = int(a.seconds / tick_s)
    t = time.perf_counter()
    made: list[tuple[list[str], int, list[str], int]] = []   # (request parts, rows, label parts, rows)
    for i in range(ticks):
        batch = batches[i % len(batches)]
        now_ms = int(time.time() * 1000)
        answers = [(s, min(s + REPLAY_BATCH, len(batch)),
                    (rng.random(min(REPLAY_BATCH, len(batch) - s), dtype=np.float32), 1, 1.0, now_ms))
                   for s in range(0, len(batch), REPLAY_BATCH)]
        req, lab = recorder.tables(batch, answers)
        lab = lab.append_column("labelled_at", pa.array(np.full(lab.num_rows, now_ms), pa.timestamp("ms", tz="UTC")))
        made.append((staging.write(REQUESTS, req), req.num_rows, staging.write(LABELS, lab), lab.num_rows))
    print(f"  {factor}x: {ticks} ticks of {per_tick:,} rows made in {time.perf_counter() - t:.1f}s before the "
          f"timed window", flush=True)

    def publish(paths: list[str]) -> None:
        for src in paths:
            dst = str(log_url) + src[len(staging.root):]
            os.makedirs(os.path.dirname(dst), exist_ok=True)
            os.replace(src, dst)

    mon = monitor_process(str(log_url), str(root / "model_repository"), "criteo_dcn", root / f"monitor-{factor}x.log",
                          window_rows=5000, min_rows=500, interval_s=a.interval_s)
    mon.start(timeout_s=120)
    pid = mon.proc.pid
    poller = MetricsPoller(mon.metrics_url, pid)
    poller.start()
    written: list[tuple[float, int, str]] = []   # (published at, cumulative rows, kind)
    due: list[tuple[float, list[str], int]] = []
    total_req = total_lab = 0
    try:
        t0 = time.monotonic()
        i = 0
        capped = False
        while i < ticks:
            if vm_rss_kib(pid) > a.max_rss_gib * 2**20:   # a shared machine: stop before it swaps
                capped = True
                break
            target = t0 + i * tick_s
            if time.monotonic() < target:
                time.sleep(target - time.monotonic())
            req_parts, n_req, lab_parts, n_lab = made[i]
            publish(req_parts)
            total_req += n_req
            written.append((time.time(), total_req, REQUESTS))
            due.append((target + a.label_delay_s, lab_parts, n_lab))
            while due and due[0][0] <= time.monotonic():
                _, parts, n = due.pop(0)
                publish(parts)
                total_lab += n
                written.append((time.time(), total_lab, LABELS))
            i += 1
        took = max(time.monotonic() - t0, i * tick_s)   # the last tick's part covers tick_s of traffic
        for _, parts, n in due:    # the last labels, without waiting out their delay
            publish(parts)
            total_lab += n
            written.append((time.time(), total_lab, LABELS))
        # the monitor catches up: every row counted, every label joined
        deadline = time.time() + a.catch_up_s
        while time.time() < deadline:
            s = poller.samples[-1] if poller.samples else (0, 0, 0)
            if s[1] >= total_req and s[2] >= total_lab:
                break
            time.sleep(0.5)
        peak = vm_hwm_kib(pid)
        caught = poller.first_reaching(1, total_req)
    finally:
        poller.stop.set()
        poller.join()
        mon.stop()
        shutil.rmtree(log_url, ignore_errors=True)      # gigabytes at 10x
        shutil.rmtree(staging.root, ignore_errors=True)
    lat_req, lat_lab, missed = [], [], 0
    for at, cum, kind in written:
        seen = poller.first_reaching(1 if kind == REQUESTS else 2, cum)
        if seen is None:
            missed += 1
            continue
        (lat_req if kind == REQUESTS else lat_lab).append(seen - at)
    return {"factor": factor, "target_rows_s": rows_per_s, "rows": total_req, "labels": total_lab,
            "rows_s": total_req / took, "seconds": took, "lat_req": lat_req, "lat_lab": lat_lab,
            "missed": missed, "peak_rss_mib": peak / 1024, "capped": capped,
            # the monitor's throughput: rows counted per second from the first part written to the last counted
            "counted_rows_s": total_req / (caught - written[0][0]) if caught else None}


def monitor_part(a) -> float:
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    root = Path(tempfile.mkdtemp(prefix="bench-load-monitor-"))
    # one tick's rows at the highest rate: the rows repeat, their request ids do not
    rows = REPLAY_RATE * REPLAY_BATCH * max(a.factors) * a.tick_s
    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(root / "raw"), "--days", "1", "--rows", str(int(rows))])
    (root / "model_repository").mkdir()
    print(f"\nmonitor: request log written at the replay's rate ({REPLAY_RATE} req/s x {REPLAY_BATCH} rows = "
          f"{REPLAY_RATE * REPLAY_BATCH:,} rows/s) x {a.factors}, {a.seconds:.0f}s each, labels {a.label_delay_s:g}s "
          f"later, one part file per kind every {a.tick_s:g}s; monitor --interval-s {a.interval_s:g}, "
          f"--window-rows 5000", flush=True)
    results: dict[int, list[dict]] = {f: [] for f in a.factors}
    for rnd in range(a.rounds):
        for f in (a.factors if rnd % 2 == 0 else list(reversed(a.factors))):
            r = load_round(a, f, str(root / "raw" / "day_1"), root)
            results[f].append(r)
            print(f"  round {rnd + 1} {f:>2}x: wrote {r['rows']:,} rows in {r['seconds']:.1f}s = {r['rows_s']:,.0f} "
                  f"rows/s (target {r['target_rows_s']:,}); logged->counted p50 {pct(r['lat_req'], 50):.2f}s p99 "
                  f"{pct(r['lat_req'], 99):.2f}s; label->joined p50 {pct(r['lat_lab'], 50):.2f}s p99 "
                  f"{pct(r['lat_lab'], 99):.2f}s; peak RSS {r['peak_rss_mib']:.0f} MiB"
                  + (f"; the monitor counted {r['counted_rows_s']:,.0f} rows/s" if r["counted_rows_s"] else "")
                  + (f"; STOPPED EARLY at --max-rss-gib {a.max_rss_gib:g}" if r["capped"] else "")
                  + (f"; the writer FELL SHORT of {f}x ({r['rows_s'] / r['target_rows_s']:.0%} of the target)"
                     if r["rows_s"] < 0.97 * r["target_rows_s"] else "")
                  + (f"; {r['missed']} parts never counted" if r["missed"] else ""), flush=True)
    summary = {}
    for f, rs in results.items():
        lat = [x for r in rs for x in r["lat_req"]]
        lab = [x for r in rs for x in r["lat_lab"]]
        summary[f] = (pct(lat, 50), pct(lat, 99), pct(lab, 50), pct(lab, 99),
                      max(r["peak_rss_mib"] for r in rs), statistics.median(r["rows_s"] for r in rs))
        short = summary[f][5] < 0.97 * REPLAY_RATE * REPLAY_BATCH * f
        print(f"  {f:>2}x over {len(rs)} rounds: {summary[f][5]:,.0f} rows/s written"
              + (f" (FELL SHORT of the {REPLAY_RATE * REPLAY_BATCH * f:,} target)" if short else "")
              + f"; logged->metric p50 "
              f"{summary[f][0]:.2f}s p99 {summary[f][1]:.2f}s; label->joined p50 {summary[f][2]:.2f}s p99 "
              f"{summary[f][3]:.2f}s; peak RSS {summary[f][4]:.0f} MiB")
    lo, hi = min(a.factors), max(a.factors)
    print(f"  peak RSS {hi}x / {lo}x: {summary[hi][4] / summary[lo][4]:.2f}")
    ratio = summary[hi][0] / summary[lo][0]
    print(f"bench_load: ratio {ratio:.2f} (the monitor's logged->metric latency p50 at {hi}x the replay's traffic "
          f"over {lo}x)", flush=True)
    return ratio


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--airflow", action="store_true", help="part 1 only (with --monitor: both)")
    p.add_argument("--monitor", action="store_true", help="part 2 only (with --airflow: both)")
    p.add_argument("--days", type=int, default=30, help="daily runs in the backfill")
    p.add_argument("--rows", type=int, default=2000, help="rows per synthetic day")
    p.add_argument("--auc-floor", type=float, default=0.0, help="the blessing gate's floor (small days: 0)")
    p.add_argument("--max-wait-s", type=float, default=900, help="stop waiting for the drain after this")
    p.add_argument("--base", default=None, help="work folder of part 1 (default: a temporary one)")
    p.add_argument("--factors", default="1,10", help="traffic multiples of the replay's rate, alternated")
    p.add_argument("--seconds", type=float, default=20, help="seconds of traffic per round")
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--tick-s", type=float, default=1.0, help="seconds between part files")
    p.add_argument("--interval-s", type=float, default=1.0,
                   help="the monitor's scan interval (local_servers.stack's; the image's default is 5)")
    p.add_argument("--label-delay-s", type=float, default=1.0)
    p.add_argument("--catch-up-s", type=float, default=120, help="wait this long for the monitor to count all")
    p.add_argument("--max-rss-gib", type=float, default=6, help="stop writing once the monitor's RSS passes this")
    a = p.parse_args()
    a.factors = [int(x) for x in a.factors.split(",")]
    both = a.airflow == a.monitor
    print(hardware(), flush=True)
    if a.airflow or both:
        airflow_part(a)
    if a.monitor or both:
        monitor_part(a)


if __name__ == "__main__":
    main()
