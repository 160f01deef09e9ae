"""The serving manifests (k8s/serving.py) against a real API server and Kubernetes' own schemas.

Two checks, and each object says which applied:
- server: a server-side dry run (`dryRun=All`) on the project's local kube-apiserver (v1.20.2):
  admission and the API's own validation (selectors against labels, probe ports, GPU requests equal
  to limits, ...), nothing stored;
- schema: the published OpenAPI schema of Kubernetes SCHEMA_VERSION (kubernetes-validate), strict,
  so a misspelt field fails (the 1.20 server drops unknown fields silently). Every object gets it;
  it is the only check for API versions the local server does not serve: autoscaling/v2 (1.23+),
  whose HorizontalPodAutoscaler also goes to the server as autoscaling/v2beta2, the same fields.
"""
import copy

import pytest

from k8s.serving import GPU_MODES, load_values, render
from local_servers.kube_fixtures import NAMESPACE

pytestmark = pytest.mark.kubernetes
SCHEMA_VERSION = "1.34.0"


def served_versions(api_client) -> set[str]:
    from kubernetes import client

    versions = set(client.CoreApi(api_client).get_api_versions().versions)
    for group in client.ApisApi(api_client).get_api_versions().groups:
        versions.update(v.group_version for v in group.versions)
    return versions


PLURALS = {"ServiceAccount": "serviceaccounts", "Deployment": "deployments", "Service": "services", "Job": "jobs",
           "ConfigMap": "configmaps", "HorizontalPodAutoscaler": "horizontalpodautoscalers"}


def dry_run(api_client, doc: dict) -> None:
    """POST the object with dryRun=All (the REST call itself: the Python client has no classes
    for API versions it no longer knows, such as autoscaling/v2beta2)."""
    prefix = "/api/v1" if doc["apiVersion"] == "v1" else f"/apis/{doc['apiVersion']}"
    api_client.call_api(f"{prefix}/namespaces/{doc['metadata']['namespace']}/{PLURALS[doc['kind']]}", "POST",
                        body=doc, query_params=[("dryRun", "All")], response_types_map={201: "object", 200: "object"},
                        header_params={"Content-Type": "application/json", "Accept": "application/json"},
                        auth_settings=["BearerToken"], _return_http_data_only=True)


def schema_check(doc: dict) -> None:
    import kubernetes_validate

    kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


@pytest.fixture(scope="module")
def adapter_namespace(kube):
    from kubernetes import client

    name = load_values()["adapterNamespace"]
    kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=name)))
    return name


@pytest.mark.parametrize("gpu", GPU_MODES)
def test_every_serving_object_is_accepted(kube, adapter_namespace, gpu):
    values = load_values(overrides=[f"triton.gpu={gpu}", f"namespace={NAMESPACE}"])
    served = served_versions(kube.api_client)
    assert "autoscaling/v2" not in served and "autoscaling/v2beta2" in served  # why the HPA is checked twice
    checks = {}
    for doc in render(values):
        key = f"{doc['apiVersion']} {doc['kind']} {doc['metadata']['name']}"
        schema_check(doc)
        if doc["apiVersion"] in served:
            dry_run(kube.api_client, doc)
            checks[key] = "server+schema"
        else:
            assert doc["apiVersion"] == "autoscaling/v2", key
            dry_run(kube.api_client, {**copy.deepcopy(doc), "apiVersion": "autoscaling/v2beta2"})
            checks[key] = "schema (v2beta2: server)"
    assert checks == {
        "v1 ServiceAccount criteo-serving": "server+schema",
        "apps/v1 Deployment triton": "server+schema",
        "v1 Service triton": "server+schema",
        "v1 Service triton-replicas": "server+schema",
        "apps/v1 Deployment monitor": "server+schema",
        "v1 Service monitor": "server+schema",
        "batch/v1 Job inference-client-day-5": "server+schema",
        "v1 ConfigMap prometheus-adapter-criteo-rules": "server+schema",
        "autoscaling/v2 HorizontalPodAutoscaler triton": "schema (v2beta2: server)",
    }
    triton = next(d for d in render(values) if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton")
    pod = triton["spec"]["template"]["spec"]
    limits = pod["containers"][0]["resources"]["limits"]
    expected = {"gpu": ({"nvidia.com/gpu": "1"}, {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}),
                "mig-gke": ({"nvidia.com/gpu": "1"}, {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100",
                                                      "cloud.google.com/gke-gpu-partition-size": "1g.5gb"}),
                "mig-device-plugin": ({"nvidia.com/mig-1g.10gb": "1"},
                                      {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}),
                "cpu": ({}, None)}[gpu]
    assert {k: v for k, v in limits.items() if k != "memory"} == expected[0]
    assert pod.get("nodeSelector") == expected[1]
    # No credential anywhere: the pod's identity is its service account's (Workload Identity).
    env = {e["name"] for c in pod["containers"] for e in c.get("env", [])}
    assert not env & {"GOOGLE_APPLICATION_CREDENTIALS", "TRITON_CLOUD_CREDENTIAL_PATH"}
    assert pod["serviceAccountName"] == "criteo-serving" and "volumes" in pod
    assert not any("secret" in vol for vol in pod["volumes"])


def test_the_checks_can_fail(kube, adapter_namespace):
    """A GPU request that differs from its limit is refused by the server; a misspelt field (which
    the 1.20 server would drop silently) by the schema."""
    from jsonschema import ValidationError
    from kubernetes.client.rest import ApiException

    docs = render(load_values(overrides=["triton.gpu=gpu", f"namespace={NAMESPACE}"]))
    triton = copy.deepcopy(next(d for d in docs if d["kind"] == "Deployment" and d["metadata"]["name"] == "triton"))
    triton["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "2"
    with pytest.raises(ApiException) as err:
        dry_run(kube.api_client, triton)
    assert err.value.status == 422 and "nvidia.com/gpu" in err.value.body and "must be equal to" in err.value.body
    hpa = copy.deepcopy(next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler"))
    hpa["spec"]["maxReplica"] = hpa["spec"].pop("maxReplicas")
    with pytest.raises(ValidationError, match="maxReplica"):
        schema_check(hpa)
    hpa = copy.deepcopy(next(d for d in docs if d["kind"] == "HorizontalPodAutoscaler"))
    hpa["spec"]["minReplicas"] = 0  # HPAScaleToZero is alpha: the server refuses it
    with pytest.raises(ApiException) as err:
        dry_run(kube.api_client, {**hpa, "apiVersion": "autoscaling/v2beta2"})
    assert err.value.status == 422 and "minReplicas" in err.value.body
