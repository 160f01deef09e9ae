"""The serving manifests (k8s/: Kustomize bases and overlays) against a real API server and
Kubernetes' own schemas.

Each kustomization is rendered by `kubectl kustomize` with the project's kubectl (v1.20.2, built by
`make kube-build`; it embeds kustomize v2.0.3, the oldest the manifests must render with). Two
checks per object, and each object says which applied:
- server: a server-side dry run (`dryRun=All`) on the project's local kube-apiserver (v1.20.2):
  admission and the API's own validation (selectors against labels, probe ports, GPU requests equal
  to limits, ...), nothing stored. PodMonitoring and ServiceMonitor are validated by the server
  against the CRDs GMP and prometheus-operator publish, installed into it (tests/kubernetes/crds);
- schema: the published OpenAPI schema of Kubernetes SCHEMA_VERSION (kubernetes-validate), strict,
  so a misspelt field fails (the 1.20 server drops unknown fields silently); for the custom
  resources, their CRD's schema with unknown fields refused. Every object gets it; it is the only
  check of the API versions the local server does not serve: autoscaling/v2 (1.23+) and batch/v1
  CronJob (1.21+), which also go to the server as autoscaling/v2beta2 and batch/v1beta1, the same
  fields.
"""
import copy
import subprocess
from pathlib import Path

import pytest
import yaml

from local_servers.kube import kube_cache

pytestmark = pytest.mark.kubernetes
SCHEMA_VERSION = "1.34.0"
REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "k8s"
CRDS = Path(__file__).resolve().parent / "crds"
OVERLAYS = ("gpu", "mig-gke", "mig-device-plugin", "cpu")
# What the 1.20 server serves in place of an API version it is too old for: the same fields.
OLDER = {("autoscaling/v2", "HorizontalPodAutoscaler"): "autoscaling/v2beta2",
         ("batch/v1", "CronJob"): "batch/v1beta1"}
PLURALS = {"ServiceAccount": "serviceaccounts", "Deployment": "deployments", "Service": "services",
           "CronJob": "cronjobs", "Job": "jobs", "ConfigMap": "configmaps",
           "HorizontalPodAutoscaler": "horizontalpodautoscalers", "ClusterRole": "clusterroles",
           "ClusterRoleBinding": "clusterrolebindings", "RoleBinding": "rolebindings", "APIService": "apiservices",
           "PodMonitoring": "podmonitorings", "ServiceMonitor": "servicemonitors"}
CUSTOM = {"monitoring.googleapis.com/v1": "monitoring.googleapis.com_podmonitorings.yaml",
          "monitoring.coreos.com/v1": "monitoring.coreos.com_servicemonitors.yaml"}


def kubectl() -> str:
    path = kube_cache() / "bin" / "kubectl"
    if not path.is_file():
        pytest.fail(f"{path} is missing: run `make kube-build` (it builds Debian's kubectl 1.20.2 with the "
                    "control plane)")
    return str(path)


def kustomize(folder: Path) -> list[dict]:
    """`kubectl kustomize FOLDER`, parsed: what `kubectl apply -k` would send."""
    out = subprocess.run([kubectl(), "kustomize", str(folder)], capture_output=True, text=True)
    assert out.returncode == 0, f"kubectl kustomize {folder}: {out.stderr}"
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def key(doc: dict) -> str:
    return f"{doc['apiVersion']} {doc['kind']} {doc['metadata']['name']}"


def find(docs: list[dict], kind: str, name: str | None = None) -> dict:
    found = [d for d in docs if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, (kind, name, [key(d) for d in docs])
    return found[0]


def served_kinds(api_client) -> set[tuple[str, str]]:
    """(apiVersion, kind) of every resource the server serves (its discovery documents)."""
    from kubernetes import client

    versions = list(client.CoreApi(api_client).get_api_versions().versions)
    for group in client.ApisApi(api_client).get_api_versions().groups:
        versions.extend(v.group_version for v in group.versions)
    kinds = set()
    for gv in versions:
        path = "/api/v1" if gv == "v1" else f"/apis/{gv}"
        listing = api_client.call_api(path, "GET", response_types_map={200: "object"}, auth_settings=["BearerToken"],
                                      header_params={"Accept": "application/json"}, _return_http_data_only=True)
        kinds.update((gv, r["kind"]) for r in listing["resources"] if "/" not in r["name"])
    return kinds


def dry_run(api_client, doc: dict) -> None:
    """POST the object with dryRun=All (the REST call itself: the Python client has no classes for
    API versions it no longer knows, such as autoscaling/v2beta2, nor for custom resources)."""
    prefix = "/api/v1" if doc["apiVersion"] == "v1" else f"/apis/{doc['apiVersion']}"
    ns = doc["metadata"].get("namespace")
    path = f"{prefix}/namespaces/{ns}/{PLURALS[doc['kind']]}" if ns else f"{prefix}/{PLURALS[doc['kind']]}"
    api_client.call_api(path, "POST", body=doc, query_params=[("dryRun", "All")],
                        response_types_map={201: "object", 200: "object"},
                        header_params={"Content-Type": "application/json", "Accept": "application/json"},
                        auth_settings=["BearerToken"], _return_http_data_only=True)


def _closed(schema: dict) -> dict:
    """A CRD's structural schema with unknown fields refused, as kubernetes-validate's strict mode
    does for built-in kinds (the API server prunes them silently instead)."""
    schema = dict(schema)
    if "properties" in schema:
        schema["properties"] = {k: _closed(v) for k, v in schema["properties"].items()}
        if not schema.get("x-kubernetes-preserve-unknown-fields") and "additionalProperties" not in schema:
            schema["additionalProperties"] = False
    if isinstance(schema.get("items"), dict):
        schema["items"] = _closed(schema["items"])
    return schema


def crd_schema(api_version: str) -> dict:
    crd = yaml.safe_load((CRDS / CUSTOM[api_version]).read_text())
    version = next(v for v in crd["spec"]["versions"] if f"{crd['spec']['group']}/{v['name']}" == api_version)
    schema = _closed(version["schema"]["openAPIV3Schema"])
    # apiVersion, kind and metadata are the API server's (the CRD schema does not describe metadata).
    schema["properties"]["metadata"] = {"type": "object"}
    return schema


def schema_check(doc: dict) -> None:
    if doc["apiVersion"] in CUSTOM:
        import jsonschema

        jsonschema.validate(doc, crd_schema(doc["apiVersion"]))
        return
    import kubernetes_validate

    kubernetes_validate.validate(doc, SCHEMA_VERSION, strict=True)


def check(api_client, docs: list[dict]) -> dict[str, str]:
    """Both checks on every object; {object: which checks it got}."""
    served = served_kinds(api_client)
    checks = {}
    for doc in docs:
        schema_check(doc)
        if (doc["apiVersion"], doc["kind"]) in served:
            dry_run(api_client, doc)
            checks[key(doc)] = "server+schema"
        else:
            older = OLDER[(doc["apiVersion"], doc["kind"])]
            assert (older, doc["kind"]) in served, key(doc)
            dry_run(api_client, {**copy.deepcopy(doc), "apiVersion": older})
            checks[key(doc)] = f"schema ({older}: server)"
    return checks


def _without_empty_defaults(schema):
    """The CRD without its `default: ""` entries: a 1.20 server refuses them (each as 'Invalid value:
    "null": must be of type string'), a current one accepts them. prometheus-operator's CRD has 19,
    all on `name` fields of secret and ConfigMap references this project's objects do not use."""
    if isinstance(schema, dict):
        return {k: _without_empty_defaults(v) for k, v in schema.items() if not (k == "default" and v == "")}
    if isinstance(schema, list):
        return [_without_empty_defaults(v) for v in schema]
    return schema


@pytest.fixture(scope="module")
def cluster(kube):
    """The local API server with the monitoring namespace and the two scraping CRDs, as a cluster
    with kube-prometheus-stack or GKE Managed Prometheus has them."""
    import time

    from kubernetes import client
    from kubernetes.client.rest import ApiException

    try:
        kube.core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name="monitoring")))
    except ApiException as e:
        if e.status != 409:
            raise
    ext = client.ApiextensionsV1Api(kube.api_client)
    names = []
    for path in sorted(CRDS.glob("*.yaml")):
        crd = _without_empty_defaults(yaml.safe_load(path.read_text()))
        names.append(crd["metadata"]["name"])
        try:
            ext.create_custom_resource_definition(crd)
        except ApiException as e:
            if e.status != 409:
                raise
    deadline = time.monotonic() + 60
    for name in names:
        while not any(c.type == "Established" and c.status == "True"
                      for c in ext.read_custom_resource_definition(name).status.conditions or []):
            assert time.monotonic() < deadline, f"CRD {name} not established in 60 s"
            time.sleep(0.5)
    return kube


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_every_serving_object_is_accepted(cluster, overlay):
    docs = kustomize(K8S / "serving" / "overlays" / overlay)
    assert check(cluster.api_client, docs) == {
        "v1 ServiceAccount criteo-serving": "server+schema",
        "apps/v1 Deployment triton": "server+schema",
        "v1 Service triton": "server+schema",
        "v1 Service triton-replicas": "server+schema",
        "apps/v1 Deployment monitor": "server+schema",
        "v1 Service monitor": "server+schema",
        "batch/v1 CronJob inference-client": "schema (batch/v1beta1: server)",
        "autoscaling/v2 HorizontalPodAutoscaler triton": "schema (autoscaling/v2beta2: server)",
    }
    assert {d["metadata"]["namespace"] for d in docs} == {"criteo"}
    pod = find(docs, "Deployment", "triton")["spec"]["template"]["spec"]
    triton = pod["containers"][0]
    limits = triton["resources"]["limits"]
    expected = {"gpu": ({"nvidia.com/gpu": "1"}, {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}),
                "mig-gke": ({"nvidia.com/gpu": "1"}, {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100",
                                                      "cloud.google.com/gke-gpu-partition-size": "1g.5gb"}),
                "mig-device-plugin": ({"nvidia.com/mig-1g.10gb": "1"},
                                      {"cloud.google.com/gke-accelerator": "nvidia-tesla-a100"}),
                "cpu": ({}, None)}[overlay]
    assert {k: v for k, v in limits.items() if k != "memory"} == expected[0]
    assert pod.get("nodeSelector") == expected[1]
    assert bool(pod.get("tolerations")) == (overlay != "cpu")
    env = {e["name"]: e.get("value") for e in triton["env"]}
    # Triton's GPU metrics do not work on MIG: both MIG overlays turn them off, the others keep them.
    assert ("--allow-gpu-metrics=false" in env.get("CRITEO_TRITON_ARGS", "")) == overlay.startswith("mig-")
    assert triton["image"] == "europe-docker.pkg.dev/criteo-mlops/criteo/triton:0.10.0"
    # No credential anywhere: the pod's identity is its service account's (Workload Identity).
    assert not set(env) & {"GOOGLE_APPLICATION_CREDENTIALS", "TRITON_CLOUD_CREDENTIAL_PATH"}
    assert pod["serviceAccountName"] == "criteo-serving"
    assert not any("secret" in vol for vol in pod["volumes"])
    hpa = find(docs, "HorizontalPodAutoscaler")
    assert hpa["spec"]["metrics"][0]["pods"]["metric"]["name"] == adapter_rule()["name"]["as"]


def test_the_adapter_and_the_scraping_objects_are_accepted(cluster):
    """prometheus-adapter's Deployment, APIService and RBAC; PodMonitoring (GKE Managed Prometheus)
    and ServiceMonitor (kube-prometheus-stack), the server checking them against their CRDs."""
    checks = {}
    for folder in (K8S / "prometheus-adapter", K8S / "scraping" / "gmp", K8S / "scraping" / "prometheus-operator"):
        checks.update(check(cluster.api_client, kustomize(folder)))
    config_map = next(k for k in checks if k.startswith("v1 ConfigMap adapter-config-"))
    assert checks == {
        "v1 ServiceAccount prometheus-adapter": "server+schema",
        "rbac.authorization.k8s.io/v1 ClusterRole criteo-prometheus-adapter": "server+schema",
        "rbac.authorization.k8s.io/v1 ClusterRole criteo-custom-metrics-reader": "server+schema",
        "rbac.authorization.k8s.io/v1 ClusterRoleBinding criteo-prometheus-adapter": "server+schema",
        "rbac.authorization.k8s.io/v1 ClusterRoleBinding criteo-prometheus-adapter:system:auth-delegator":
            "server+schema",
        "rbac.authorization.k8s.io/v1 ClusterRoleBinding criteo-hpa-custom-metrics": "server+schema",
        "rbac.authorization.k8s.io/v1 RoleBinding criteo-prometheus-adapter-auth-reader": "server+schema",
        config_map: "server+schema",
        "v1 Service prometheus-adapter": "server+schema",
        "apps/v1 Deployment prometheus-adapter": "server+schema",
        "apiregistration.k8s.io/v1 APIService v1beta1.custom.metrics.k8s.io": "server+schema",
        "monitoring.googleapis.com/v1 PodMonitoring triton": "server+schema",
        "monitoring.googleapis.com/v1 PodMonitoring monitor": "server+schema",
        "monitoring.coreos.com/v1 ServiceMonitor triton": "server+schema",
        "monitoring.coreos.com/v1 ServiceMonitor monitor": "server+schema",
    }


def adapter_rule() -> dict:
    rules = yaml.safe_load((K8S / "prometheus-adapter" / "config.yaml").read_text())["rules"]
    assert len(rules) == 1
    return rules[0]


def test_the_adapter_reads_the_rule_file_its_deployment_mounts():
    """The adapter reads one file (--config). Follow it as the pod would: the flag's path, the
    volume mounted at its folder, the ConfigMap that volume names, the key named as the file; the
    rule inside is k8s/prometheus-adapter/config.yaml's, the one the HPA's metric is named by."""
    docs = kustomize(K8S / "prometheus-adapter")
    deployment = find(docs, "Deployment", "prometheus-adapter")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    configs = [a.split("=", 1)[1] for a in container["args"] if a.startswith("--config=")]
    assert len(configs) == 1, container["args"]
    folder, _, filename = configs[0].rpartition("/")
    mount = next(m for m in container["volumeMounts"] if m["mountPath"].rstrip("/") == folder)
    volume = next(v for v in deployment["spec"]["template"]["spec"]["volumes"] if v["name"] == mount["name"])
    config_map = find(docs, "ConfigMap", volume["configMap"]["name"])
    assert config_map["metadata"]["namespace"] == deployment["metadata"]["namespace"]
    assert "items" not in volume["configMap"]  # every key is a file of its own name
    config = yaml.safe_load(config_map["data"][filename])
    assert config["rules"] == [adapter_rule()]
    rule = config["rules"][0]
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    for name in ("nv_inference_queue_duration_us", "nv_inference_request_success"):
        assert name in rule["metricsQuery"]
    # The same rule for whoever installs the adapter's Helm chart instead.
    values = yaml.safe_load((K8S / "prometheus-adapter" / "helm-values.yaml").read_text())
    assert values["rules"]["custom"] == [adapter_rule()] and values["rules"]["default"] is False
    # The APIService routes custom.metrics.k8s.io to the adapter's Service, on the adapter's port.
    api = find(docs, "APIService")
    service = find(docs, "Service", api["spec"]["service"]["name"])
    assert api["spec"]["service"]["namespace"] == service["metadata"]["namespace"]
    assert {p["targetPort"] for p in service["spec"]["ports"]} == {c["containerPort"] for c in container["ports"]}


def test_the_checks_can_fail(cluster):
    """A GPU request that differs from its limit is refused by the server; a misspelt field (which
    the 1.20 server would drop silently) by the schema; a PodMonitoring without endpoints by the
    server, through the installed CRD."""
    from jsonschema import ValidationError
    from kubernetes.client.rest import ApiException

    docs = kustomize(K8S / "serving" / "overlays" / "gpu")
    triton = copy.deepcopy(find(docs, "Deployment", "triton"))
    triton["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["nvidia.com/gpu"] = "2"
    with pytest.raises(ApiException) as err:
        dry_run(cluster.api_client, triton)
    assert err.value.status == 422 and "nvidia.com/gpu" in err.value.body and "must be equal to" in err.value.body
    hpa = copy.deepcopy(find(docs, "HorizontalPodAutoscaler"))
    hpa["spec"]["maxReplica"] = hpa["spec"].pop("maxReplicas")
    with pytest.raises(ValidationError, match="maxReplica"):
        schema_check(hpa)
    hpa = copy.deepcopy(find(docs, "HorizontalPodAutoscaler"))
    hpa["spec"]["minReplicas"] = 0  # HPAScaleToZero is alpha: the server refuses it
    with pytest.raises(ApiException) as err:
        dry_run(cluster.api_client, {**hpa, "apiVersion": "autoscaling/v2beta2"})
    assert err.value.status == 422 and "minReplicas" in err.value.body
    monitoring = copy.deepcopy(find(kustomize(K8S / "scraping" / "gmp"), "PodMonitoring", "triton"))
    monitoring["spec"]["endpoints"][0]["prot"] = monitoring["spec"]["endpoints"][0].pop("port")
    with pytest.raises(ValidationError, match="prot"):
        schema_check(monitoring)
    del monitoring["spec"]["endpoints"]
    with pytest.raises(ApiException) as err:
        dry_run(cluster.api_client, monitoring)
    assert err.value.status == 422 and "endpoints" in err.value.body


def test_each_client_run_is_a_job_of_its_own_name(cluster, tmp_path):
    """The client is a CronJob (suspended: nothing runs by itself). Re-applying it with changed
    arguments is accepted, as a Job's immutable spec would not be; each run is a Job of its own
    name made from it, as `kubectl create job NAME --from=cronjob/inference-client` makes it."""
    cronjob = find(kustomize(K8S / "serving" / "overlays" / "cpu"), "CronJob", "inference-client")
    assert cronjob["spec"]["suspend"] is True and cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    cronjob = {**cronjob, "apiVersion": "batch/v1beta1"}  # what the 1.20 server stores
    kubeconfig = str(cluster.control_plane.kubeconfig)

    def kubectl_run(*args, stdin=None):
        out = subprocess.run([kubectl(), "--kubeconfig", kubeconfig, *args], input=stdin, capture_output=True,
                             text=True)
        assert out.returncode == 0, (args, out.stderr)
        return out.stdout

    try:
        kubectl_run("apply", "-f", "-", stdin=yaml.safe_dump(cronjob))
        changed = copy.deepcopy(cronjob)
        changed["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"][-1] = "8"
        kubectl_run("apply", "-f", "-", stdin=yaml.safe_dump(changed))
        jobs = [yaml.safe_load(kubectl_run("-n", "criteo", "create", "job", f"inference-client-run-{i}",
                                           "--from=cronjob/inference-client", "--dry-run=server", "-o", "yaml"))
                for i in (1, 2)]
    finally:
        subprocess.run([kubectl(), "--kubeconfig", kubeconfig, "-n", "criteo", "delete", "cronjob",
                        "inference-client", "--ignore-not-found"], capture_output=True)
    assert [j["metadata"]["name"] for j in jobs] == ["inference-client-run-1", "inference-client-run-2"]
    for job in jobs:
        assert job["spec"]["template"]["spec"]["containers"][0]["args"][-1] == "8"
        assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"


def test_each_scraper_selects_one_workload_on_a_port_it_names():
    """PodMonitoring selects pods by label and names a container port; ServiceMonitor selects
    Services and names a Service port. Each must find exactly its workload (the ServiceMonitor not
    the headless triton-replicas too, which would scrape every pod twice), on a port it has."""
    serving = kustomize(K8S / "serving" / "overlays" / "cpu")

    def matches(labels, selector):
        return all(labels.get(k) == v for k, v in selector["matchLabels"].items())

    found = {}
    for mon in kustomize(K8S / "scraping" / "gmp"):
        pods = [d for d in serving if d["kind"] == "Deployment"
                and matches(d["spec"]["template"]["metadata"]["labels"], mon["spec"]["selector"])]
        assert len(pods) == 1, (mon["metadata"]["name"], [key(d) for d in pods])
        ports = {p["name"] for c in pods[0]["spec"]["template"]["spec"]["containers"] for p in c["ports"]}
        assert {e["port"] for e in mon["spec"]["endpoints"]} <= ports
        found[key(mon)] = key(pods[0])
    for mon in kustomize(K8S / "scraping" / "prometheus-operator"):
        services = [d for d in serving
                    if d["kind"] == "Service" and matches(d["metadata"]["labels"], mon["spec"]["selector"])]
        assert len(services) == 1, (mon["metadata"]["name"], [key(d) for d in services])
        assert {e["port"] for e in mon["spec"]["endpoints"]} <= {p["name"] for p in services[0]["spec"]["ports"]}
        found[key(mon)] = key(services[0])
    assert found == {"monitoring.googleapis.com/v1 PodMonitoring triton": "apps/v1 Deployment triton",
                     "monitoring.googleapis.com/v1 PodMonitoring monitor": "apps/v1 Deployment monitor",
                     "monitoring.coreos.com/v1 ServiceMonitor triton": "v1 Service triton",
                     "monitoring.coreos.com/v1 ServiceMonitor monitor": "v1 Service monitor"}
