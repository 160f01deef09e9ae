"""Input faults and a failing bucket, done for real on the real training DAGs (dag.test()) with a real
Triton serving the model repository.

The runs share one bucket, in order, as in production: a full retrain makes version 1, then each
case lands a raw day the way an upstream writer would (halves, a corrected file, a cut file, a
directory, gzip under a plain name, CRLF with a BOM), or breaks the bucket under deploy (full, then
read-only), or kills the task process while it trains. A failing case uses a day whose previous
day has no run, so that it does not hold the next case in wait_for_previous_day.

Every case checks that nothing is half-visible (each numbered version is complete, no partition
without its marker), that production is untouched unless the case is meant to deploy, and that the
message names the file and the fix. Each records its row of the fault table (conftest.py; shown in docs/figures.md).
"""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from criteo_kernel import storage

from ..conftest import REPO
from ..dags.test_training_e2e import forget_earlier_runs
from ..fixtures.partitions import committed
from ..fixtures.processes import children, running

pytestmark = pytest.mark.faults

DAY0 = datetime(2026, 1, 1, tzinfo=UTC)
ROWS = 20_000
MODEL = "criteo_dcn"
SMALL_MODEL = {"epochs": 1, "learning_rate": 0.005, "batch_size": 2048, "auc_floor": 0.55, "max_auc_drop": 0.2}
TMPFS_MB = 400


@dataclass
class World:
    base: Path
    source: Path  # clean synthetic days, landed into raw/ by the cases
    dagbag: object
    triton_url: str
    tmpfs: bool   # the model repository is a tmpfs of its own (the bucket-full and read-only cases)

    @property
    def raw(self) -> Path:
        return self.base / "raw"

    @property
    def model_dir(self) -> Path:
        return self.base / "model_repository" / MODEL


def _mount_tmpfs(path: Path) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0:
        return False
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={TMPFS_MB}m", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    from airflow.dag_processing.dagbag import DagBag

    from local_servers.stack import ServingStack
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    forget_earlier_runs(["criteo_full_retrain", "criteo_incremental_training"])
    base = tmp_path_factory.mktemp("bucket")
    source = tmp_path_factory.mktemp("source")
    tmpfs = _mount_tmpfs(base / "model_repository")
    saved = {k: os.environ.get(k) for k in ("AIRFLOW_VAR_CRITEO_BASE_URL", "AIRFLOW_VAR_CRITEO_DAY0_DATE")}
    os.environ["AIRFLOW_VAR_CRITEO_BASE_URL"] = str(base)
    os.environ["AIRFLOW_VAR_CRITEO_DAY0_DATE"] = DAY0.date().isoformat()
    try:
        runtime = LocalProcessRuntime()
        runtime.run(STEPS["synth"], ["--out", str(base / "raw"), "--days", "0-1", "--rows", str(ROWS)])
        runtime.run(STEPS["synth"], ["--out", str(source), "--days", "2-15", "--rows", str(ROWS)])
        with ServingStack(base, tmp_path_factory.mktemp("services"), monitor=False, prometheus=False) as stack:
            w = World(base, source, DagBag(dag_folder=str(REPO / "dags")), stack.triton.grpc_url, tmpfs)
            dr, states = run(w, "criteo_full_retrain", 1, {"end_day": 1, "window_days": 2, **SMALL_MODEL,
                                                           "mlp_dims": "64,64", "cross_layers": 2})
            assert dr.state == "success", states
            yield w
    finally:
        # the killed run stays "running" in the dev database: later layers must not see it as active
        forget_earlier_runs(["criteo_full_retrain", "criteo_incremental_training"])
        for k, v in saved.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)
        if tmpfs:
            subprocess.run(["umount", "-l", str(base / "model_repository")], check=False)


def run(world: World, dag_id: str, day: int, conf: dict | None = None):
    from operators.deploy import ensure_deploy_pool

    ensure_deploy_pool()   # the deploy task's pool, as every setup creates it
    dr = world.dagbag.get_dag(dag_id).test(logical_date=DAY0 + timedelta(days=day), run_conf=conf)
    return dr, {ti.task_id + (f"[{ti.map_index}]" if ti.map_index >= 0 else ""): ti.state
                for ti in dr.get_task_instances()}


def daily(world: World, day: int):
    return run(world, "criteo_incremental_training", day, SMALL_MODEL)


def tries(dr, task_id: str) -> int:
    return dr.get_task_instance(task_id).try_number


def raised(output: str, kind: str = "AirflowFailException") -> str:
    """The message of the first `kind` a task raised, from the run's output."""
    m = re.search(rf"{kind}: (.+)", output)
    assert m, f"no {kind} in the run's output:\n{output[-3000:]}"
    return m.group(1)


def production(world: World) -> dict:
    """What serves and what is visible: the pointer, the complete versions, what Triton has loaded."""
    from operators.hooks.triton import TritonHook

    config = world.model_dir / "config.pbtxt"
    return {"config": config.read_text() if config.exists() else None,
            "versions": sorted(int(p.name) for p in world.model_dir.iterdir()
                               if p.name.isdigit() and (p / "_SUCCESS").exists()),
            "served": TritonHook(world.triton_url).ready_versions(MODEL)}


def assert_nothing_half_visible(world: World) -> None:
    for p in world.model_dir.iterdir():
        if p.name.isdigit() and not (p / "_SUCCESS").exists():
            # not a version: rejected, superseded, or a claim whose copy broke off (never listed or loaded)
            marks = [m for m in ("_REJECTED", "_SUPERSEDED", "_RESERVED") if (p / m).exists()]
            assert marks, f"version {p.name} is half there with no mark saying why"
    partitions = [*(world.base / "work" / "extracted").glob("day=*"),
                  *(world.base / "work" / "processed").glob("*/day=*")]
    for part in partitions:  # visible = committed; a committed attempt is complete
        if storage.is_published(str(part)):
            assert (committed(part) / "_SUCCESS").exists(), f"the partition {part} commits an incomplete attempt"


def lineage(world: World, version: int) -> dict:
    import json

    return json.loads((world.model_dir / str(version) / "lineage.json").read_text())


def lines_of(world: World, day: int) -> list[bytes]:
    return (world.source / f"day_{day}").read_bytes().splitlines(keepends=True)


# -- a raw day that is still being written ------------------------------------------------------

def test_a_day_written_in_two_halves_trains_only_once_whole(world, monkeypatch, fault_table):
    """The upload starts as the sensor first looks and finishes 1.5 s later, cut on a line boundary:
    with no manifest the sensor waits until the file has been unchanged for criteo_raw_settle_s."""
    from operators.hooks.raw_data import RawDataHook

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_RAW_SETTLE_S", "5")
    lines = lines_of(world, 2)
    half, rest = b"".join(lines[: len(lines) // 2]), b"".join(lines[len(lines) // 2:])
    target = world.raw / "day_2"
    seen: list[str] = []
    real = RawDataHook.landing

    def writer():
        time.sleep(1.5)
        with target.open("ab") as fh:
            fh.write(rest)

    def landing(self, day, *args, **kwargs):
        if int(day) == 2 and not target.exists():  # the writer starts as the sensor first looks
            target.write_bytes(half)
            threading.Thread(target=writer, daemon=True).start()
        state = real(self, day, *args, **kwargs)
        seen.append(state.reason)
        return state

    monkeypatch.setattr(RawDataHook, "landing", landing)
    dr, states = daily(world, 2)
    assert dr.state == "success", states
    waited = [r for r in seen if "changed" in r and "landed once unchanged for 5s" in r]
    assert len(waited) >= 3, seen
    version = production(world)["versions"][-1]
    lin = lineage(world, version)
    assert lin["days"] == [2] and lin["inputs"]["raw"][0]["bytes"] == len(half) + len(rest)
    assert lin["training"]["metrics"]["samples"] == ROWS * 9 // 10  # the whole day's training rows
    assert_nothing_half_visible(world)
    fault_table("`raw/day_N` written in two halves (no manifest), the sensor polling",
                f"the sensor waited {len(waited)} pokes until the file settled; version {version} trained on the "
                f"whole day ({ROWS} rows)", waited[0])


def test_a_corrected_day_replaces_its_model_and_an_identical_rerun_makes_nothing(world, monkeypatch, fault_table):
    """Day 3 first lands half (settled: the old failure), deploys; the whole file then lands with its
    manifest and the day is rerun: a new version replaces the half-day one."""
    lines = lines_of(world, 3)
    (world.raw / "day_3").write_bytes(b"".join(lines[: len(lines) // 2]))
    dr, states = daily(world, 3)
    assert dr.state == "success", states
    half_version = production(world)["versions"][-1]
    half_fp = lineage(world, half_version)["inputs"]["fingerprint"]

    from criteo_kernel.landing import write_manifest

    shutil.copyfile(world.source / "day_3", world.raw / "day_3")
    write_manifest(str(world.raw / "day_3"))
    dr, states = daily(world, 3)
    assert dr.state == "success", states
    now = production(world)
    whole = now["versions"][-1]
    assert whole == half_version + 1 and now["served"] == [whole] and f"[ {whole} ]" in now["config"]
    lin = lineage(world, whole)
    assert lin["replaces"]["version"] == half_version and lin["replaces"]["fingerprint"] == half_fp
    assert lin["inputs"]["fingerprint"] != half_fp and lin["training"]["metrics"]["samples"] == ROWS * 9 // 10
    changed = lin["replaces"]["changes"][0]
    assert changed.startswith(f"{world.raw / 'day_3'} changed (bytes ")
    fault_table("the same day rerun once its file was complete",
                f"a new version {whole} (fingerprint {lin['inputs']['fingerprint']}) replaced the half-day "
                f"version {half_version} ({half_fp}) and serves", changed)

    dr, states = daily(world, 3)
    assert dr.state == "success", states
    assert production(world) == now
    fault_table("the same day rerun again with identical inputs", f"no new version; {whole} still serves",
                "deploy: run incremental-day3 is deployed as version "
                f"{whole}, which serves")


# -- files that are no raw day -----------------------------------------------------------------

@pytest.fixture
def task_output(capsys, caplog):
    """What a dag.test() run printed: the tasks' own output and exceptions (stdout) and the steps'
    lines, which the local runtime logs (operators.runtime.local)."""
    import logging

    caplog.set_level(logging.INFO, logger="operators.runtime.local")
    capsys.readouterr()
    caplog.clear()
    return lambda: capsys.readouterr().out + "\n" + caplog.text


def test_a_file_cut_mid_line_is_reported_truncated(world, task_output, fault_table):
    data = (world.source / "day_5").read_bytes()
    (world.raw / "day_5").write_bytes(data[: len(data) * 2 // 3 + 11])
    before = production(world)
    dr, states = daily(world, 5)
    out = task_output()
    assert dr.state == "failed" and states["validate"] == "failed" and states["train"] == "upstream_failed"
    assert tries(dr, "validate") == 1
    result = dr.get_task_instance("validate").xcom_pull(task_ids="validate", key="step_result")
    assert any(f["column"] == "read_error" for f in result["failed"]), result
    assert "does not end with a newline: its last line is cut" in out
    assert production(world) == before
    assert_nothing_half_visible(world)
    line = next(ln for ln in out.splitlines() if "WARNING: truncated" in ln)
    fault_table("a file cut mid-line", "validate fails hard on `read_error` (no retry); production untouched",
                line.split("WARNING: ", 1)[1])


def test_a_directory_fails_at_once_naming_the_fix(world, capsys, fault_table):
    (world.raw / "day_7").mkdir()
    (world.raw / "day_7" / "part-0").write_bytes((world.source / "day_7").read_bytes())
    before = production(world)
    capsys.readouterr()
    started = time.monotonic()
    dr, states = daily(world, 7)
    message = raised(capsys.readouterr().out)
    assert dr.state == "failed" and states["wait_for_raw_day"] == "failed" and states["extract"] == "upstream_failed"
    assert tries(dr, "wait_for_raw_day") == 1  # no retry: waiting cannot turn a directory into a file
    assert "day_7 is a directory, not a raw day file" in message and "clear the day's run" in message
    assert production(world) == before
    fault_table("`raw/day_N` is a directory", f"the sensor fails at once, no retry ({time.monotonic() - started:.0f} s "
                "for the whole run)", message)


def test_a_directory_given_to_extract_is_bad_data_without_retry(world, tmp_path, fault_table):
    """The step's own check, for runs that bypass the sensor (a pod, the CLI): exit 4, a data error."""
    from operators.runtime import StepFailed
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    with pytest.raises(StepFailed) as err:
        LocalProcessRuntime().run(STEPS["extract"], ["--input", str(world.raw / "day_7"),
                                                     "--output", str(tmp_path / "ex")])
    assert err.value.exit_code in STEPS["extract"].data_error_exit_codes
    assert not (tmp_path / "ex").exists()
    fault_table("extract given a directory", "exit 4 (bad data): the task fails without retry",
                err.value.result["error"])


def test_gzip_content_without_the_gz_name_is_read_as_gzip(world, task_output, fault_table):
    import gzip

    (world.raw / "day_9").write_bytes(gzip.compress((world.source / "day_9").read_bytes()))
    dr, states = daily(world, 9)
    out = task_output()
    assert dr.state == "success", states
    version = production(world)["versions"][-1]
    assert lineage(world, version)["days"] == [9]
    assert lineage(world, version)["training"]["metrics"]["samples"] == ROWS * 9 // 10
    line = next(ln for ln in out.splitlines() if "is gzip but its name has no .gz" in ln)
    fault_table("gzip content in a file named `day_N`", f"read as gzip with a warning; version {version} trained on "
                "the whole day", line.split("WARNING: ", 1)[1])


def test_crlf_and_a_bom_give_the_same_partition_as_clean_input(world, tmp_path, fault_table):
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    clean = (world.source / "day_10").read_bytes()
    (world.raw / "day_10").write_bytes(b"\xef\xbb\xbf" + clean.replace(b"\n", b"\r\n"))
    dr, states = daily(world, 10)
    assert dr.state == "success", states
    LocalProcessRuntime().run(STEPS["extract"], ["--input", str(world.source / "day_10"),
                                                 "--output", str(tmp_path / "clean")])
    ours = world.base / "work" / "extracted" / "day=10"
    for split in ("train", "eval"):
        assert (committed(ours) / split / "part-00000.parquet").read_bytes() == \
            (committed(tmp_path / "clean") / split / "part-00000.parquet").read_bytes()
    fault_table("CRLF line ends and a UTF-8 BOM", "pass; the extracted partition is byte-identical to the clean "
                "file's", "")


# -- the bucket fails under deploy ---------------------------------------------------------------

def _needs_tmpfs(world: World) -> None:
    if not world.tmpfs:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN): the bucket-full and read-only cases use one "
                    "as the model repository")


def test_a_bucket_that_fills_up_mid_publish(world, capsys, fault_table):
    _needs_tmpfs(world)
    shutil.copyfile(world.source / "day_11", world.raw / "day_11")
    before = production(world)
    # leave room for a little, not for a version: the copy of the new version fails midway
    stat = os.statvfs(world.model_dir)
    ballast = world.model_dir.parent / "ballast"
    with ballast.open("wb") as fh:
        fh.truncate(0)
        free = stat.f_bavail * stat.f_frsize - 256 * 1024
        chunk = b"\0" * (1 << 20)
        while free > 0:
            fh.write(chunk[: min(len(chunk), free)])
            free -= len(chunk)
    try:
        capsys.readouterr()
        dr, states = daily(world, 11)
        out = capsys.readouterr().out
    finally:
        ballast.unlink()
    assert dr.state == "failed" and states["deploy"] == "failed", states
    assert tries(dr, "deploy") == 3  # a storage error: retried
    message = raised(out, "AirflowException")
    assert "No space left on device" in message and "production stays at version" in message
    assert production(world) == before
    assert_nothing_half_visible(world)
    fault_table("the bucket fills up mid-publish (deploy)", "deploy fails after its retries; no half version "
                f"visible; version {before['versions'][-1]} still serves", message)


def test_a_bucket_that_turns_read_only_mid_publish(world, monkeypatch, capsys, fault_table):
    _needs_tmpfs(world)
    from airflow.sdk import ObjectStoragePath

    shutil.copyfile(world.source / "day_13", world.raw / "day_13")
    before = production(world)
    real_copy = ObjectStoragePath.copy
    copied = {"n": 0}
    mount = str(world.base / "model_repository")

    def copy(self, dst, *args, **kwargs):
        if str(dst).find("/model_repository/") >= 0:
            copied["n"] += 1
            if copied["n"] == 3:  # three files of the version are in: the bucket turns read-only
                subprocess.run(["mount", "-o", "remount,ro", mount], check=True)
        return real_copy(self, dst, *args, **kwargs)

    monkeypatch.setattr(ObjectStoragePath, "copy", copy)
    try:
        capsys.readouterr()
        dr, states = daily(world, 13)
        out = capsys.readouterr().out
    finally:
        subprocess.run(["mount", "-o", "remount,rw", mount], check=True)
    assert dr.state == "failed" and states["deploy"] == "failed", states
    message = raised(out, "AirflowException")
    assert "Read-only file system" in message and "production stays at version" in message
    assert production(world) == before
    assert_nothing_half_visible(world)
    fault_table("the bucket turns read-only mid-publish (deploy)", "deploy fails after its retries; the copied "
                "files stay in an incomplete claim, never listed or loaded; "
                f"version {before['versions'][-1]} still serves", message)


# -- processes killed ------------------------------------------------------------------------------

def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        out += kids
        todo += kids
    return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode()
    except FileNotFoundError:
        return ""


def test_kill_9_of_the_run_while_train_runs_stops_the_step(world, tmp_path, fault_table):
    shutil.copyfile(world.source / "day_15", world.raw / "day_15")
    before = production(world)
    script = (f"import sys; sys.path.insert(0, {str(REPO)!r})\n"
              "from datetime import datetime, timedelta, UTC\n"
              "from airflow.dag_processing.dagbag import DagBag\n"
              f"dag = DagBag(dag_folder={str(REPO / 'dags' / 'criteo_incremental_training.py')!r})"
              ".get_dag('criteo_incremental_training')\n"
              "dag.test(logical_date=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(days=15), "
              f"run_conf={SMALL_MODEL!r})\n")
    log = (tmp_path / "run.log").open("w")
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=log, stderr=subprocess.STDOUT, cwd=REPO,
                            env={**os.environ, "CRITEO_RETRY_DELAY_S": "1"})
    try:
        deadline = time.time() + 300
        train = []
        while not train:
            assert proc.poll() is None, (tmp_path / "run.log").read_text()[-3000:]
            assert time.time() < deadline, "train never started"
            train = [p for p in _descendants(proc.pid) if "criteo_merlin train" in _cmdline(p)]
            time.sleep(0.2)
        time.sleep(2.0)  # the step is training
        assert running(train[0])
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(10)
        killed = time.monotonic()
        while running(train[0]):
            assert time.monotonic() - killed < 5, "the train step outlived its killed run"
            time.sleep(0.05)
        gone_after = time.monotonic() - killed
    finally:
        if proc.poll() is None:
            proc.kill()
        log.close()
    candidate = world.base / "work" / "candidates" / "incremental-day15" / "train"
    assert not storage.is_published(str(candidate)) or (committed(candidate) / "_SUCCESS").exists()
    assert production(world) == before
    assert_nothing_half_visible(world)
    fault_table("kill -9 of the DAG run while `train` runs",
                f"the train step stopped {gone_after:.1f} s later (parent-death signal); no output, production "
                "untouched", "step stopped by signal 15: stopping its process group")


def test_kill_9_of_a_step_then_its_retry_gives_identical_output(world, tmp_path, fault_table):
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    big = tmp_path / "day_12"
    with big.open("wb") as fh:  # a day large enough to kill extract midway
        for _ in range(15):
            fh.write((world.source / "day_12").read_bytes())
    out = tmp_path / "extracted" / "day=12"
    runtime = LocalProcessRuntime()
    failed: list[BaseException] = []

    def attempt():
        try:
            runtime.run(STEPS["extract"], ["--input", str(big), "--output", str(out)])
        except Exception as exc:  # the killed attempt fails: that is the point
            failed.append(exc)

    thread = threading.Thread(target=attempt)
    thread.start()
    deadline = time.time() + 60
    while not (out.exists() and list(out.glob(".attempt-*"))):
        assert time.time() < deadline, "extract never started writing"
        time.sleep(0.02)
    os.kill(runtime._proc.pid, signal.SIGKILL)
    thread.join(30)
    assert failed and "exited with code -9" in str(failed[0])
    assert not storage.is_published(str(out))  # nothing visible: only an uncommitted attempt
    killed = list(out.glob(".attempt-*"))
    runtime.run(STEPS["extract"], ["--input", str(big), "--output", str(out)])
    LocalProcessRuntime().run(STEPS["extract"], ["--input", str(big), "--output", str(tmp_path / "clean")])
    # the killed attempt is young: it could be a live writer's, so the retry's commit leaves it be
    assert all(p.exists() for p in killed) and committed(out) not in killed
    for split in ("train", "eval"):
        clean = committed(tmp_path / "clean") / split
        got = committed(out) / split
        assert sorted(p.name for p in got.iterdir()) == sorted(p.name for p in clean.iterdir())
        for part in got.iterdir():
            assert part.read_bytes() == (clean / part.name).read_bytes()
    fault_table("kill -9 of a step (extract), then its retry", "the retry's output is byte-identical; the killed "
                "attempt left only an uncommitted attempt folder, never read", "")
