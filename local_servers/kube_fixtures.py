"""The local Kubernetes layer's settings and helpers, shared by its tests (tests/fixtures/kubernetes.py)
and bench/bench_pods.py: the namespace and service account the platform team would make, the step
images the nodes hold, and the Variables that select the pod runtime on a local control plane.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

from .kubelet import step_image

NAMESPACE = "criteo"
SERVICE_ACCOUNT = "criteo-steps"
IMAGES = {"merlin": step_image("merlin"), "validator": step_image("validator"),
          "monitoring": step_image("monitoring"), "hugectr": step_image("merlin-hugectr")}
# These nodes have this machine's 2 CPUs and about 23 GiB: the GPU steps' catalogue memory (32Gi
# per GPU) would never be scheduled. The limits stay real: a step over them is OOMKilled.
RESOURCES = {"preprocess": {"memory": "6Gi"}, "train": {"memory": "6Gi"}}
# The step images' user (operators/runtime/kubernetes.py): what a bucket folder must let write.
STEP_UID, STEP_GID = 50000, 0
# What kubelet would rewrite on a host it owned (kubelet_ns.sh keeps them in the node's namespace).
KUBELET_SYSCTLS = ("vm/overcommit_memory", "kernel/panic", "kernel/panic_on_oops")


def host_sysctls() -> dict[str, str]:
    return {name: Path("/proc/sys", name).read_text().strip() for name in KUBELET_SYSCTLS}


class Kube:
    def __init__(self, control_plane, nodes):
        from kubernetes import client

        self.control_plane = control_plane
        self.nodes = {node.spec.name: node for node in nodes}
        self.api_client = control_plane.api_client()
        self.core = client.CoreV1Api(self.api_client)

    def pods(self, namespace: str = NAMESPACE):
        return self.core.list_namespaced_pod(namespace).items

    def delete_all_pods(self, namespace: str = NAMESPACE) -> None:
        self.core.delete_collection_namespaced_pod(namespace, grace_period_seconds=0)

    def container_pid(self, pod) -> int | None:
        """The host PID of a running pod's step container."""
        (status,) = pod.status.container_statuses
        return self.nodes[pod.spec.node_name].container_pid(status.container_id)


def bucket_folder(path):
    """A bucket folder the step pods can write (group 0, group-writable, new entries in group 0),
    as a platform team prepares a volume for them."""
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, STEP_UID, STEP_GID)
    path.chmod(0o2775)
    return path


def pod_environment(control_plane, base_url: str, **extra: str) -> dict[str, str]:
    """The Variables and the connection that select the pod runtime on this control plane."""
    env = {
        "AIRFLOW_CONN_KUBERNETES_DEFAULT": control_plane.connection_uri(),
        "AIRFLOW_VAR_CRITEO_RUNTIME": "kubernetes",
        "AIRFLOW_VAR_CRITEO_BASE_URL": base_url,
        "AIRFLOW_VAR_CRITEO_KUBERNETES_NAMESPACE": NAMESPACE,
        "AIRFLOW_VAR_CRITEO_KUBERNETES_SERVICE_ACCOUNT": SERVICE_ACCOUNT,
        "AIRFLOW_VAR_CRITEO_POD_DATA": "host",
        "AIRFLOW_VAR_CRITEO_POD_POLL_INTERVAL_S": "1",
        "AIRFLOW_VAR_CRITEO_POD_DEFERRABLE": "false",
        # the images are imported into the nodes, there is no registry; no pod network either
        "AIRFLOW_VAR_CRITEO_POD_IMAGE_PULL_POLICY": "Never",
        "AIRFLOW_VAR_CRITEO_POD_HOST_NETWORK": "true",
        "AIRFLOW_VAR_CRITEO_STEP_RESOURCES": json.dumps(RESOURCES),
        **{f"AIRFLOW_VAR_CRITEO_IMAGE_{name.upper()}": ref for name, ref in IMAGES.items()},
    }
    env.update({f"AIRFLOW_VAR_{k.upper()}": v for k, v in extra.items()})
    return env
