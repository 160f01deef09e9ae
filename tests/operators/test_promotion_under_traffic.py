"""Zero failed inferences while the served version changes: clients send requests at a fixed rate
(tests/fixtures/traffic.py) to real tritonservers, one replica and two (two servers on one
repository, criteo_triton_replicas naming both), while

a) deploy (DeployModelOperator.execute) promotes a new version;
b) serving.rollback serves the previous one again;
c) a smoke mismatch (the candidate's smoke rows carry another package's predictions) makes deploy
   restore the previous version by itself.

Each request records which version answered: no request may fail, every answer comes from the old
or the new version, and requests sent after the change returned are answered by the expected
version only. The window where both versions answer (first answer by the new one to last by the
old one) and, for (c), the answers the rejected version gave before the restore are printed
(`-s`): they are measured, not asserted, as they depend on timing.
"""
import time

import pytest
from airflow.sdk.exceptions import AirflowFailException

from tests.fixtures.serving import MODEL
from tests.fixtures.traffic import Traffic, summary
from tests.operators.test_deploy import deploy, repository, smoke_file

pytestmark = pytest.mark.integration
STEADY_S = 1.0  # traffic before and after each change


@pytest.fixture(params=[1, 2], ids=["one-replica", "two-replicas"])
def replicas(request, tmp_path, monkeypatch):
    from local_servers.triton import LocalTriton

    base = tmp_path / "bucket"
    (base / "model_repository").mkdir(parents=True)
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(base))
    servers = []
    try:
        for i in range(request.param):
            servers.append(LocalTriton(str(base / "model_repository"), work_dir=tmp_path / f"triton-{i}").start())
        urls = [s.grpc_url for s in servers]
        monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL", urls[0])
        monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_REPLICAS", ",".join(urls) if len(urls) > 1 else "")
        yield urls
    finally:
        for s in servers:
            s.stop()


def under_traffic(urls, packages, change) -> tuple[list, float, object]:
    """Run `change()` amid steady traffic; the requests, when it returned, and what it returned
    (or the exception it raised)."""
    with Traffic(urls, MODEL, packages.dense_raw, packages.cat_hash) as traffic:
        time.sleep(STEADY_S)
        try:
            outcome = change()
        except Exception as exc:  # noqa: BLE001 - (c) expects deploy to fail
            outcome = exc
        changed_at = time.monotonic()
        time.sleep(STEADY_S)
    return traffic.requests, changed_at, outcome


def check(name, requests, changed_at, old, new, expected_after):
    s = summary(requests, old, new, changed_at)
    print(f"\n{name}: {s}")
    assert s["requests"] >= 40, s                      # the traffic really ran
    assert s["failed"] == 0, s
    assert set(s["by_version"]) <= {old, new}, s
    assert set(s["after"]) == {expected_after}, s
    return s


def test_no_request_fails_while_versions_change(replicas, packages, tmp_path):
    from operators.deploy import triton_replicas
    from operators.hooks.serving import rollback
    from operators.pipeline.config import Settings

    deploy(packages, 0, "run-a", smoke_file(tmp_path / "s0.npz", packages, 0))   # version 1 serves

    # a) deploy promotes version 2
    requests, at, out = under_traffic(replicas, packages, lambda: deploy(
        packages, 1, "run-b", smoke_file(tmp_path / "s1.npz", packages, 1)))
    assert not isinstance(out, BaseException), out
    assert out["version"] == 2 and out["previous_version"] == 1
    promoted = check(f"promote 1->2, {len(replicas)} replica(s)", requests, at, 1, 2, 2)
    assert promoted["by_version"].get(1) and promoted["by_version"].get(2)   # the change happened amid traffic

    # b) rollback serves version 1 again
    def back():
        settings = Settings.load()
        return rollback(repository(), triton_replicas(settings), resolve=lambda: triton_replicas(settings))

    requests, at, out = under_traffic(replicas, packages, back)
    assert not isinstance(out, BaseException), out
    check(f"rollback 2->1, {len(replicas)} replica(s)", requests, at, 2, 1, 1)

    # c) version 3's smoke rows carry package 0's predictions: deploy rejects it, version 1 serves on
    requests, at, out = under_traffic(replicas, packages, lambda: deploy(
        packages, 1, "run-c", smoke_file(tmp_path / "wrong.npz", packages, 0)))
    assert isinstance(out, AirflowFailException) and "version 3 was rolled back" in str(out), out
    rejected = check(f"smoke failure 1->3->1, {len(replicas)} replica(s)", requests, at, 1, 3, 1)
    print(f"rejected version 3 answered {rejected['by_version'].get(3, 0)} of {rejected['requests']} requests "
          f"over {rejected['new_served_s']} s")
    assert repository().production_version() == 1


def test_the_traffic_counts_the_requests_an_unload_drops(triton, packages):
    """The counter can see failures: unloading and loading again (the order that would drop
    traffic) under the same traffic fails requests, and they are counted."""
    from operators.hooks.triton import TritonHook

    hook = TritonHook(triton.grpc_url)
    hook.load_model(MODEL)

    def unload_then_load():
        hook.unload_model(MODEL)
        hook.load_model(MODEL)

    requests, at, out = under_traffic([triton.grpc_url], packages, unload_then_load)
    assert out is None, out
    s = summary(requests, 1, 1, at)
    print(f"\nunload then load, 1 replica: {s}")
    assert s["failed"] > 0 and s["after"] == {1: s["after"][1]}, s
