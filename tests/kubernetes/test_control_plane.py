"""The local control plane as its users reach it: curl, a browser, kubectl.

kube-apiserver pretty-prints JSON for curl's, wget's and browsers' user agents. Built with Go 1.19
on the vendored reflect2 v1.0.1 it died (SIGSEGV) pretty-printing any object holding a map, taking
the whole control plane down; scripts/kube/build.sh vendors reflect2 1.0.2. Its /version said
v0.0.0-master until client-go's version package was stamped too.
"""
from __future__ import annotations

import json
import subprocess

import pytest

from local_servers.kube import KUBE_VERSION, kube_cache

pytestmark = pytest.mark.kubernetes


def curl(kube, path: str, *extra: str) -> subprocess.CompletedProcess:
    cp = kube.control_plane
    return subprocess.run(["curl", "-sSk", "-H", f"Authorization: Bearer {cp.token}", *extra, cp.server + path],
                          capture_output=True, text=True, timeout=30)


def test_version_is_stamped(kube):
    version = json.loads(curl(kube, "/version").stdout)
    assert version["gitVersion"] == f"v{KUBE_VERSION}" and (version["major"], version["minor"]) == ("1", "20")


def test_curl_of_a_configmap_list_is_pretty_printed_and_the_server_stays_up(kube):
    done = curl(kube, "/api/v1/namespaces/kube-system/configmaps")
    assert done.returncode == 0, done.stderr
    body = json.loads(done.stdout)
    assert body["kind"] == "ConfigMapList" and any(cm["data"] for cm in body["items"])   # maps, printed
    assert done.stdout.startswith('{\n  "kind"')   # pretty-printed: what crashed the old build
    assert kube.control_plane.running and kube.core.list_namespace().items


def test_a_browsers_request_is_answered_and_the_server_stays_up(kube):
    from playwright.sync_api import sync_playwright

    from tests.live.test_browser import CHROMIUM, CHROMIUM_ARGS

    cp = kube.control_plane
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            context = browser.new_context(ignore_https_errors=True,
                                          extra_http_headers={"Authorization": f"Bearer {cp.token}"})
            page = context.new_page()
            response = page.goto(f"{cp.server}/api/v1/namespaces/kube-system/configmaps")
            assert response.status == 200
            assert "ConfigMapList" in page.content()
        finally:
            browser.close()
    assert cp.running and kube.core.list_namespace().items


def test_kubectl_sees_both_nodes_ready(kube):
    kubectl = kube_cache() / "bin" / "kubectl"
    out = subprocess.run([str(kubectl), "--kubeconfig", str(kube.control_plane.kubeconfig), "get", "nodes", "-o",
                          "json"], capture_output=True, text=True, timeout=30, check=True).stdout
    nodes = {n["metadata"]["name"]: n for n in json.loads(out)["items"]}
    assert set(nodes) == {"criteo-gpu-0", "criteo-cpu-0"}
    for node in nodes.values():
        assert node["status"]["nodeInfo"]["kubeletVersion"] == f"v{KUBE_VERSION}"
        assert node["status"]["nodeInfo"]["containerRuntimeVersion"].startswith("containerd://1.6")
        assert any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"]["conditions"])
    gpu = nodes["criteo-gpu-0"]
    assert gpu["status"]["allocatable"]["nvidia.com/gpu"] == "2"
    assert gpu["metadata"]["labels"]["cloud.google.com/gke-accelerator"] == "nvidia-tesla-a100"
    assert gpu["spec"]["taints"] == [{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}]


def test_the_nodes_leave_the_hosts_paths_and_sysctls_alone(kube):
    from pathlib import Path

    from local_servers.kube_fixtures import host_sysctls

    assert kube.pods() is not None and all(n.running for n in kube.nodes.values())
    assert host_sysctls() == kube.host_sysctls_before
    for path in ("/var/lib/kubelet", "/var/log/pods", "/run/containerd"):
        assert not Path(path).exists(), path


KILLED_RUN = """
import sys, time
from kubernetes import client
from local_servers.kube import LocalKubernetes
from local_servers.kubelet import PAUSE_IMAGE, LocalNode, NodeSpec

work = sys.argv[1]
cp = LocalKubernetes(work).start()
node = LocalNode(cp, NodeSpec("criteo-scratch-0"), refresh_images=True).start()
core = client.CoreV1Api(cp.api_client())
core.create_namespaced_pod("default", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "sleeper"},
    "spec": {"hostNetwork": True, "restartPolicy": "Never", "automountServiceAccountToken": False,
             "containers": [{"name": "main", "image": PAUSE_IMAGE, "imagePullPolicy": "Never",
                             "command": ["sleep", "600"]}]}})
while core.read_namespaced_pod("sleeper", "default").status.phase != "Running":
    time.sleep(0.2)
status = core.read_namespaced_pod("sleeper", "default").status.container_statuses[0]
print("PID", node.container_pid(status.container_id), flush=True)
time.sleep(600)
"""


def test_a_run_killed_with_sigkill_leaves_no_node_process_container_or_cgroup(tmp_path):
    """The test run itself killed hard (CI's timeout, kill -9): each node's supervisor still stops
    its pods' containers, kubelet, containerd and the shims, and removes its cgroups."""
    import os
    import signal
    import sys
    import time
    from pathlib import Path

    from tests.conftest import REPO

    proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(tmp_path)], cwd=REPO, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        pid, out = None, []
        for line in proc.stdout:
            out.append(line)
            if line.startswith("PID "):
                pid = int(line.split()[1])
                break
        assert pid and Path(f"/proc/{pid}").exists(), "the sleeper's container never ran:\n" + "".join(out[-30:])
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)

        def leftovers():
            procs = subprocess.run(["pgrep", "-af", str(tmp_path)], capture_output=True, text=True).stdout.strip()
            cgroups = list(Path("/sys/fs/cgroup").glob("*/criteo-criteo-scratch-0"))
            return [x for x in (procs, cgroups, Path(f"/proc/{pid}").exists()) if x]

        deadline = time.monotonic() + 60
        while leftovers() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not leftovers(), leftovers()
    finally:
        proc.kill()
