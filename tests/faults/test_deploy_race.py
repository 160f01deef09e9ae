"""Two deploys at once (a full retrain's and a daily run's candidate, both judged against version 1),
each DeployModelOperator.execute in a process of its own, meeting at barriers right before the
version-number claim and the production pointer's move (tests/fixtures/deploy_race.py), with a real
tritonserver and real packages, on a local bucket and on the GCS emulator.

One wins: production is its version, which was judged against the version it replaced. The other
ends skipped as superseded, naming both versions; the version it pushed is marked `_SUPERSEDED`.
Every version number has one owner, every version's files come from its own package, and Triton
serves the pointer's version. bench/bench_deploy_race.py repeats it.
"""
import pytest

from tests.fixtures import deploy_race

pytestmark = pytest.mark.faults


@pytest.mark.parametrize("backend", ["local", "gcs"])
def test_two_deploys_at_once_promote_one_and_skip_the_other_as_superseded(backend, packages, tmp_path, request,
                                                                          fault_table):
    gcs = request.getfixturevalue("gcs") if backend == "gcs" else None
    with deploy_race.World(packages, tmp_path, backend, gcs) as world:
        outcomes = deploy_race.race(packages, tmp_path, world.env, backend, world.partitions)
        summary = deploy_race.check(outcomes, world.repo_dir(), packages, world.triton.grpc_url, world.partitions)
    loser = next(o for o in outcomes if o["outcome"] == "skipped")
    assert summary["loser_pushed"], "the barriers put both deploys at the pointer: the loser had pushed"
    fault_table(f"two deploys at once ({backend})", f"{summary['winner']} promoted, the other skipped",
                loser["message"])
