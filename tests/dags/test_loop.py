"""The whole loop, end to end: drift -> rolling AUC drops -> sensor fires -> full retrain ->
new version deploys -> served AUC recovers. Runs `scripts/demo_loop.py` (real Triton, monitor,
Prometheus, the real DAGs through dag.test()) on small synthetic days and checks its timeline."""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e
REPO = Path(__file__).resolve().parents[2]


def test_drift_to_recovery(tmp_path):
    out = tmp_path / "timeline.json"
    cmd = [sys.executable, str(REPO / "scripts" / "demo_loop.py"), "--base", str(tmp_path / "bucket"),
           "--rows", "30000", "--traffic-rows", "30000", "--history-days", "2", "--traffic-days", "3",
           "--drift-from-day", "3", "--window-rows", "4000", "--mlp-dims", "128,128",
           "--sensor-timeout-s", "20", "--sustained-s", "6", "--json", str(out)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW_VAR_")}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=1500)
    tail = (proc.stdout + proc.stderr)[-6000:]
    assert out.exists(), tail
    report = json.loads(out.read_text())
    timeline, events, checks = report["timeline"], report["events"], report["checks"]
    assert [t["day"] for t in timeline] == [2, 3, 4], tail
    quiet, drifted = timeline[:1], timeline[1:]
    assert all(not t["sensors_fired"] for t in quiet), tail  # no false alarm before the drift
    assert drifted[0]["sensors_fired"], tail                  # the first drifted day is caught
    assert drifted[0]["auc"] < min(t["auc"] for t in quiet) - 0.02, tail
    (trigger,) = [e for e in events if e["event"] == "retrain_triggered"]  # once: cooldown, no duplicates
    assert trigger["after_day"] == 3 and trigger["conf"]["end_day"] == 3, tail
    deployed = [e["version"] for e in events if e["event"] == "deployed"]
    assert deployed == [1, 2], tail
    assert drifted[1]["version"] == 2 and drifted[1]["auc"] > drifted[0]["auc"] + 0.02, tail
    assert all(checks.values()) and proc.returncode == 0, tail
