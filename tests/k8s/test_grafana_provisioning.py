"""The Grafana provisioning the compose stack mounts (k8s/grafana), checked without Grafana (none
runs here): the paths compose mounts exist and are where the provisioning files say, and every
panel reads the provisioned datasource. Each panel's query against the real Prometheus:
tests/images/monitoring/test_replay_monitor.py::test_every_dashboard_panel_has_data."""
import json

import pytest
import yaml

from ..conftest import REPO

pytestmark = pytest.mark.unit
GRAFANA = REPO / "k8s" / "grafana"


def _mounts(service: dict) -> dict[str, str]:
    """{container path: host path} of a compose service's bind mounts."""
    out = {}
    for volume in service.get("volumes", []):
        host, container, *_ = volume.split(":")
        if host.startswith("./"):
            out[container] = host
    return out


def test_compose_mounts_the_provisioning_and_the_dashboards():
    compose = yaml.safe_load((REPO / "docker-compose.yaml").read_text())
    grafana = compose["services"]["grafana"]
    mounts = _mounts(grafana)
    assert mounts == {"/etc/grafana/provisioning": "./k8s/grafana/provisioning",
                      "/var/lib/grafana/dashboards": "./k8s/grafana/dashboards"}
    for host in mounts.values():
        assert (REPO / host).is_dir(), host
    provider = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "criteo.yaml").read_text())["providers"][0]
    assert provider["options"]["path"] == "/var/lib/grafana/dashboards" and provider["type"] == "file"
    home = grafana["environment"]["GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH"]
    assert (GRAFANA / "dashboards" / home.rsplit("/", 1)[1]).is_file()
    assert "prometheus" in grafana["depends_on"]


def test_every_panel_reads_the_provisioned_prometheus():
    datasources = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "prometheus.yaml").read_text())
    (ds,) = datasources["datasources"]
    assert ds["type"] == "prometheus" and ds["url"] == "http://prometheus:9090"  # compose's service name
    dashboards = sorted((GRAFANA / "dashboards").glob("*.json"))
    assert dashboards
    uids = set()
    for path in dashboards:
        dash = json.loads(path.read_text())
        uids.add(dash["uid"])
        ids = [p["id"] for p in dash["panels"]]
        assert len(set(ids)) == len(ids), path.name
        for panel in dash["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": ds["uid"]}, panel["title"]
            assert panel["targets"] and all(t["expr"].strip() for t in panel["targets"]), panel["title"]
            assert panel.get("description"), panel["title"]  # what the panel shows, in the UI
    assert len(uids) == len(dashboards)
