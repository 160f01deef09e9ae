"""The local Prometheus: its config, a clear error without the binary, targets added while it runs."""
import time

import pytest

from operators.hooks.prometheus import PrometheusHook
from tests.fixtures.prometheus import Exporter


@pytest.mark.unit
def test_local_prometheus_config_and_missing_binary(tmp_path):
    from local_servers.prometheus import LocalPrometheus

    p = LocalPrometheus(["127.0.0.1:9100", "http://127.0.0.1:8002/metrics/custom"], work_dir=tmp_path,
                        scrape_interval_s=0.5)
    jobs = p.config()["scrape_configs"]
    assert [j["metrics_path"] for j in jobs] == ["/metrics", "/metrics/custom"]
    assert [j["static_configs"][0]["targets"] for j in jobs] == [["127.0.0.1:9100"], ["127.0.0.1:8002"]]
    assert p.config()["global"]["scrape_interval"] == "500ms" and p.url.startswith("http://127.0.0.1:")
    with pytest.raises(ValueError, match="expected 'host:port'"):
        LocalPrometheus(["nohost"], work_dir=tmp_path)
    missing = LocalPrometheus(["127.0.0.1:9100"], work_dir=tmp_path / "x", binary=str(tmp_path / "prometheus"))
    with pytest.raises(FileNotFoundError, match="run `make setup`"):
        missing.start()


@pytest.mark.integration
def test_add_target_reloads(prom):
    extra = Exporter()
    try:
        from prometheus_client import Gauge

        Gauge("criteo_probe", "probe", registry=extra.registry).set(7)
        prom.prometheus.add_target(f"http://127.0.0.1:{extra.port}/metrics")
        assert f"127.0.0.1:{extra.port}" in prom.prometheus.config_path.read_text()
        hook, deadline = PrometheusHook(prom.url), time.time() + 20
        while not hook.query("criteo_probe"):
            assert time.time() < deadline, "the added target was never scraped"
            time.sleep(0.3)
    finally:
        extra.stop()


@pytest.mark.integration
def test_the_cli_stopped_while_it_starts_stops_prometheus_and_exits_0(tmp_path):
    """`python -m local_servers.prometheus` asked to stop (SIGTERM) while Prometheus is still coming
    up: no server left behind, and exit 0 as for a stop once serving (local_servers.process)."""
    import signal
    import subprocess
    import sys

    from tests.fixtures.processes import children, running

    proc = subprocess.Popen([sys.executable, "-m", "local_servers.prometheus", "--work-dir", str(tmp_path),
                             "--target", "127.0.0.1:9"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while not children(proc.pid):          # prometheus started, not yet ready or only just
        assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.stdout else ""
        time.sleep(0.02)
    server = children(proc.pid)[0]
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 0, out
    deadline = time.time() + 15            # stopped by the CLI, or by its parent-death signal
    while running(server):
        assert time.time() < deadline, f"prometheus (pid {server}) outlived the CLI"
        time.sleep(0.1)
