"""Repeat the deploy race (tests/faults/test_deploy_race.py): two deploys at once, a full retrain's and
a daily run's candidate both judged against version 1, in two spawned processes that meet at barriers
right before the version-number claim and the production pointer's write; real tritonserver, real
packages, a local bucket and the GCS emulator (fake-gcs-server).

Each repetition is a fresh bucket with version 1 serving; after the race it checks what the test
checks (tests/fixtures/deploy_race.check): one promoted, one skipped as superseded naming both
versions, production judged against its predecessor, one owner per version number, every version's
files from its own package, Triton serving the pointer's version. Prints the hardware, one line per
repetition (winner, production, versions, seconds) and every failure; the last line is
`bench_deploy_race: <backend> <passed>/<repeat> ...` per backend.

    flock /tmp/criteo-heavy.lock .venv/bin/python bench/bench_deploy_race.py --repeat 20 [--backend local,gcs]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import traceback
from pathlib import Path

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)  # tests.fixtures (the race, the packages), local_servers


def hardware() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kb = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                      if line.startswith("MemTotal")))
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_gib": round(mem_kb / 2**20, 1), "kernel": platform.release()}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repeat", type=int, default=20)
    p.add_argument("--backend", default="local,gcs")
    p.add_argument("--work", default=None, help="work folder (default: a temporary one)")
    a = p.parse_args()
    os.environ.setdefault("AIRFLOW_HOME", os.path.join(REPO, ".airflow"))
    from local_servers.gcs import LocalGcsEmulator
    from tests.fixtures import deploy_race
    from tests.fixtures.serving import build_packages

    print(json.dumps(hardware()), flush=True)
    work = Path(a.work or tempfile.mkdtemp(prefix="bench-deploy-race-"))
    t0 = time.monotonic()
    packages = build_packages(work / "packages")
    print(f"packages built in {time.monotonic() - t0:.0f}s", flush=True)
    gcs = LocalGcsEmulator(work_dir=work / "gcs").start()
    summary = {}
    try:
        for backend in a.backend.split(","):
            passed, winners, failures = 0, {}, []
            for i in range(a.repeat):
                run = work / f"{backend}-{i}"
                run.mkdir(parents=True)
                t = time.monotonic()
                try:
                    with deploy_race.World(packages, run, backend, gcs) as world:
                        outcomes = deploy_race.race(packages, run, world.env, backend, world.partitions)
                        got = deploy_race.check(outcomes, world.repo_dir(), packages, world.triton.grpc_url,
                                                world.partitions)
                    passed += 1
                    winners[got["winner"]] = winners.get(got["winner"], 0) + 1
                    print(f"{backend} #{i + 1}: ok, {got['winner']} promoted as version {got['production']}, "
                          f"versions {got['versions']}, loser pushed: {got['loser_pushed']}, "
                          f"{time.monotonic() - t:.1f}s", flush=True)
                except Exception as exc:
                    failures.append(f"#{i + 1}: {type(exc).__name__}: {exc}")
                    print(f"{backend} #{i + 1}: FAILED {type(exc).__name__}: {exc}", flush=True)
                    traceback.print_exc()
            summary[backend] = (passed, winners, failures)
    finally:
        gcs.stop()
    for backend, (passed, winners, failures) in summary.items():
        print(f"bench_deploy_race: {backend} {passed}/{a.repeat} repetitions correct; winners {winners}; "
              f"failures {failures or 'none'}", flush=True)
    return 0 if all(s[0] == a.repeat for s in summary.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
