"""replica_urls: the Triton replicas deploy loads through, from the setting criteo_triton_replicas its caller passes.
Kubernetes DNS cannot run here: a resolver stands in for a headless Service's answer (one address
per pod), and `localhost` goes through the real resolver."""
import socket

import pytest

pytestmark = pytest.mark.unit


def headless(host, port, type=None):
    assert host == "triton-replicas.criteo.svc" and type == socket.SOCK_STREAM
    return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (ip, port)) for ip in ("10.8.0.12", "10.8.1.7", "10.8.0.12")]


def test_a_headless_service_name_stands_for_every_pod():
    from operators.hooks.triton import replica_urls

    assert replica_urls("triton-replicas.criteo.svc:8001", "", resolve=headless) == ["10.8.0.12:8001", "10.8.1.7:8001"]


def test_entries_addresses_and_schemes():
    from operators.hooks.triton import replica_urls

    assert "127.0.0.1:8001" in replica_urls("grpc://localhost:8001", "")  # the real resolver
    assert replica_urls("127.0.0.1:8001, 127.0.0.1:8002", "") == ["127.0.0.1:8001", "127.0.0.1:8002"]
    assert replica_urls("[::1]:8001", "") == ["[::1]:8001"]


def test_unset_means_the_one_server(monkeypatch):
    from operators.hooks.triton import replica_urls

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_TRITON_REPLICAS", "127.0.0.1:9999")   # the hook reads no Variable
    assert replica_urls(" ", "triton:8001") == ["triton:8001"]  # not resolved: the hook connects by name, as before
    assert replica_urls("127.0.0.1:9001", "triton:8001") == ["127.0.0.1:9001"]


def test_deploy_reads_the_replicas_from_the_runs_settings():
    from operators.deploy import triton_replicas
    from operators.pipeline.config import Settings

    assert [t.url for t in triton_replicas(Settings.with_values(criteo_triton_grpc_url="triton:8001"))] == \
        ["triton:8001"]
    settings = Settings.with_values(criteo_triton_grpc_url="triton:8001", criteo_triton_replicas="127.0.0.1:9001")
    assert [t.url for t in triton_replicas(settings)] == ["127.0.0.1:9001"]


def test_bad_entries_and_names_that_do_not_resolve():
    from operators.hooks.triton import TritonUnavailable, replica_urls

    with pytest.raises(ValueError, match="criteo_triton_replicas: 'triton-replicas' is not host:port"):
        replica_urls("triton-replicas", "")

    def nxdomain(host, port, type=None):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    with pytest.raises(TritonUnavailable, match="triton-replicas.criteo.svc:8001: triton-replicas.criteo.svc does "
                                                "not resolve"):
        replica_urls("triton-replicas.criteo.svc:8001", "", resolve=nxdomain)
