"""Kubernetes manifests for serving on GKE: Triton, the monitor, the inference client, autoscaling.

    python k8s/serving.py [--values k8s/values.yaml] [--set triton.gpu=mig-device-plugin ...] \
        | kubectl apply -f -

Renders, from the settings in k8s/values.yaml (README "Serving on GKE"):

- Triton: a ServiceAccount bound to a Google service account (Workload Identity: the gs://
  repository is read with the pod's own identity, no credential env), a Deployment (explicit model
  control, the production version pinned by config.pbtxt loads at start; probes on Triton's health
  endpoints; a whole GPU or a MIG slice chosen by `triton.gpu`), a Service (HTTP, gRPC, metrics)
  and a headless Service listing every replica, ready or not, for deploy to reach each one (the
  Airflow Variable criteo_triton_replicas=triton-replicas.NAMESPACE.svc:8001);
- the monitor: a Deployment and a Service (/metrics);
- the inference client: a Job replaying one day of traffic to Triton;
- Prometheus scraping through pod annotations (prometheus.io/scrape, port, path);
- prometheus-adapter's rule exposing the average queue time per request of each Triton pod
  (triton_queue_avg_us, from Triton's own nv_inference_queue_duration_us and
  nv_inference_request_success), and an autoscaling/v2 HorizontalPodAutoscaler on it.

Every object is checked by tests/kubernetes/test_serving_manifests.py: a server-side dry run on
the project's local API server, and the published OpenAPI schema of the Kubernetes version GKE
runs (kubernetes-validate) for the API versions that server is too old for.
"""
from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

VALUES = Path(__file__).resolve().parent / "values.yaml"
GPU_MODES = ("gpu", "mig-gke", "mig-device-plugin", "cpu")
TRITON_PORTS = {"http": 8000, "grpc": 8001, "metrics": 8002}
MONITOR_PORT = 9109
QUEUE_METRIC = "triton_queue_avg_us"
# Triton's k8s-onprem example's rule: the queue time added over 30 s per request answered in
# that time; 1 + keeps an idle pod at 0 instead of NaN.
ADAPTER_QUERY = ("avg(delta(nv_inference_queue_duration_us{<<.LabelMatchers>>}[30s]) / "
                 "(1 + delta(nv_inference_request_success{<<.LabelMatchers>>}[30s]))) by (<<.GroupBy>>)")


def load_values(path: str | Path | None = None, overrides: list[str] = ()) -> dict:
    """k8s/values.yaml, then `path` over it, then `key.sub=value` overrides (YAML values)."""
    values = yaml.safe_load(VALUES.read_text())
    if path:
        _merge(values, yaml.safe_load(Path(path).read_text()) or {})
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: expected key.sub=value")
        node = values
        *parents, leaf = key.split(".")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = yaml.safe_load(raw)
    mode = values["triton"]["gpu"]
    if mode not in GPU_MODES:
        raise SystemExit(f"triton.gpu: {mode!r} is not one of {', '.join(GPU_MODES)}")
    scaling = values["autoscaling"]
    if not 1 <= scaling["minReplicas"] <= scaling["maxReplicas"]:
        raise SystemExit(f"autoscaling: need 1 <= minReplicas <= maxReplicas, got {scaling['minReplicas']} and "
                         f"{scaling['maxReplicas']}")
    return values


def _merge(base: dict, over: dict) -> None:
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            _merge(base[k], v)
        else:
            base[k] = v


def _meta(name: str, v: dict, component: str, **extra) -> dict:
    return {"name": name, "namespace": v["namespace"],
            "labels": {"app.kubernetes.io/name": component, "app.kubernetes.io/part-of": "criteo-mlops"}, **extra}


def _scraped(port: int) -> dict:
    return {"prometheus.io/scrape": "true", "prometheus.io/port": str(port), "prometheus.io/path": "/metrics"}


def _triton_placement(t: dict) -> tuple[dict, dict, list]:
    """(resources, nodeSelector, tolerations) of a Triton pod for the chosen GPU mode."""
    resources = {"requests": {"cpu": t["cpu"], "memory": t["memory"]}, "limits": {"memory": t["memory"]}}
    gpu_toleration = [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    mode = t["gpu"]
    if mode == "cpu":
        return resources, {}, []
    selector = {"cloud.google.com/gke-accelerator": t["accelerator"]}
    if mode == "gpu":
        gpus = {"nvidia.com/gpu": str(t["gpus"])}
    elif mode == "mig-gke":  # GKE's device plugin: one partition, advertised as one nvidia.com/gpu
        selector["cloud.google.com/gke-gpu-partition-size"] = t["partitionSize"]
        gpus = {"nvidia.com/gpu": "1"}
    else:  # NVIDIA's device plugin, mixed strategy: the slice is a resource of its own
        gpus = {t["migResource"]: "1"}
    # Extended resources: the request must equal the limit.
    resources["requests"].update(gpus)
    resources["limits"].update(gpus)
    return resources, selector, gpu_toleration


def triton(v: dict) -> list[dict]:
    t, model = v["triton"], v["model"]
    labels = {"app.kubernetes.io/name": "triton"}
    resources, selector, tolerations = _triton_placement(t)
    http = {"path": "/v2/health/live", "port": "http"}
    container = {
        "name": "triton",
        "image": v["images"]["triton"],
        # The image's command (explicit model control, --load-model=MODEL, non-strict readiness).
        "env": [{"name": "CRITEO_MODEL_REPOSITORY", "value": f"{v['bucket'].rstrip('/')}/model_repository"},
                {"name": "CRITEO_ORT_THREADS", "value": str(t["ortThreads"])}],
        "ports": [{"name": n, "containerPort": p} for n, p in TRITON_PORTS.items()],
        "resources": resources,
        # Loading the repository from gs:// can take minutes: liveness waits for start-up.
        "startupProbe": {"httpGet": http, "periodSeconds": 10, "failureThreshold": 60},
        "livenessProbe": {"httpGet": http, "periodSeconds": 10, "failureThreshold": 3},
        # Traffic only once the model answers: the server's own readiness is not strict.
        "readinessProbe": {"httpGet": {"path": f"/v2/models/{model}/ready", "port": "http"},
                           "periodSeconds": 5, "failureThreshold": 2},
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    pod_spec = {
        "serviceAccountName": v["serviceAccount"],
        "containers": [container],
        # The python backend's stub exchanges tensors through /dev/shm (64 MiB by default in a pod).
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "1Gi"}}],
        "terminationGracePeriodSeconds": 40,  # the image's --exit-timeout-secs=30, and margin
    }
    if selector:
        pod_spec["nodeSelector"] = selector
    if tolerations:
        pod_spec["tolerations"] = tolerations
    ports = [{"name": n, "port": p, "targetPort": n} for n, p in TRITON_PORTS.items()]
    return [
        {"apiVersion": "v1", "kind": "ServiceAccount",
         "metadata": _meta(v["serviceAccount"], v, "triton",
                           annotations={"iam.gke.io/gcp-service-account": v["gcpServiceAccount"]})},
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("triton", v, "triton"),
         "spec": {
             # No `replicas`: the HorizontalPodAutoscaler owns the count (an apply must not reset it).
             "selector": {"matchLabels": labels},
             "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
             "template": {"metadata": {"labels": labels, "annotations": _scraped(TRITON_PORTS["metrics"])},
                          "spec": pod_spec}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("triton", v, "triton"),
         "spec": {"selector": labels, "ports": ports}},
        # Every replica's address, ready or not: explicit model control is per server, so a new
        # version must be loaded through each of them (README "Serving on GKE").
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("triton-replicas", v, "triton"),
         "spec": {"clusterIP": "None", "publishNotReadyAddresses": True, "selector": labels, "ports": ports}},
    ]


def monitor(v: dict) -> list[dict]:
    m = v["monitor"]
    labels = {"app.kubernetes.io/name": "monitor"}
    bucket = v["bucket"].rstrip("/")
    container = {
        "name": "monitor",
        "image": v["images"]["monitoring"],
        "args": ["monitor", "--request-log", f"{bucket}/request_log", "--model-repository",
                 f"{bucket}/model_repository", "--retrain-log", f"{bucket}/retrain_log", "--model", v["model"],
                 "--host", "0.0.0.0", "--port", str(MONITOR_PORT),
                 "--window-rows", str(m["windowRows"])],
        "ports": [{"name": "metrics", "containerPort": MONITOR_PORT}],
        "resources": {"requests": {"cpu": m["cpu"], "memory": m["memory"]}, "limits": {"memory": m["memory"]}},
        "livenessProbe": {"httpGet": {"path": "/metrics", "port": "metrics"}, "periodSeconds": 30,
                          "timeoutSeconds": 10},
    }
    return [
        {"apiVersion": "apps/v1", "kind": "Deployment", "metadata": _meta("monitor", v, "monitor"),
         "spec": {"replicas": 1, "selector": {"matchLabels": labels},
                  # One monitor at a time: two would both export the same windows.
                  "strategy": {"type": "Recreate"},
                  "template": {"metadata": {"labels": labels, "annotations": _scraped(MONITOR_PORT)},
                               "spec": {"serviceAccountName": v["serviceAccount"], "containers": [container]}}}},
        {"apiVersion": "v1", "kind": "Service", "metadata": _meta("monitor", v, "monitor"),
         "spec": {"selector": labels, "ports": [{"name": "metrics", "port": MONITOR_PORT, "targetPort": "metrics"}]}},
    ]


def inference_client(v: dict) -> list[dict]:
    c = v["client"]
    bucket = v["bucket"].rstrip("/")
    args = ["replay", "--input", f"{bucket}/traffic/day_{c['day']}", "--day", str(c["day"]), "--day0", str(v["day0"]),
            "--triton", f"triton.{v['namespace']}.svc:{TRITON_PORTS['grpc']}", "--model", v["model"],
            "--request-log", f"{bucket}/request_log", "--rate", str(c["rate"]), "--batch-size", str(c["batchSize"]),
            "--concurrency", str(c["concurrency"])]
    name = f"inference-client-day-{c['day']}"
    return [{"apiVersion": "batch/v1", "kind": "Job", "metadata": _meta(name, v, "client"),
             "spec": {"backoffLimit": 2,
                      "template": {"metadata": {"labels": {"app.kubernetes.io/name": "client"}},
                                   "spec": {"serviceAccountName": v["serviceAccount"], "restartPolicy": "Never",
                                            "containers": [{"name": "replay", "image": v["images"]["monitoring"],
                                                            "args": args}]}}}}]


def adapter_rules() -> dict:
    """prometheus-adapter's custom-metrics rule: the average queue time per request, per pod."""
    return {"rules": [{
        "seriesQuery": 'nv_inference_queue_duration_us{namespace!="",pod!=""}',
        "resources": {"overrides": {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}},
        "name": {"matches": "^nv_inference_queue_duration_us$", "as": QUEUE_METRIC},
        "metricsQuery": ADAPTER_QUERY,
    }]}


def adapter_query(label_matchers: str, group_by: str) -> str:
    """The rule's metricsQuery with its templates filled, as prometheus-adapter fills them."""
    return ADAPTER_QUERY.replace("<<.LabelMatchers>>", label_matchers).replace("<<.GroupBy>>", group_by)


def autoscaling(v: dict) -> list[dict]:
    a = v["autoscaling"]
    rules = {"apiVersion": "v1", "kind": "ConfigMap",
             "metadata": {"name": "prometheus-adapter-criteo-rules", "namespace": v["adapterNamespace"],
                          "labels": {"app.kubernetes.io/part-of": "criteo-mlops"}},
             "data": {"config.yaml": yaml.safe_dump(adapter_rules(), sort_keys=False)}}
    hpa = {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": _meta("triton", v, "triton"),
           "spec": {
               "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "triton"},
               "minReplicas": a["minReplicas"], "maxReplicas": a["maxReplicas"],
               "metrics": [{"type": "Pods", "pods": {
                   "metric": {"name": QUEUE_METRIC},
                   "target": {"type": "AverageValue", "averageValue": str(a["queueTimeTargetUs"])}}}],
               "behavior": {
                   "scaleUp": {"stabilizationWindowSeconds": a["scaleUpStabilizationSeconds"],
                               "policies": [{"type": "Pods", "value": 2, "periodSeconds": 60}]},
                   # A GPU node takes minutes to come and to go: do not give one back on a dip.
                   "scaleDown": {"stabilizationWindowSeconds": a["scaleDownStabilizationSeconds"],
                                 "policies": [{"type": "Pods", "value": 1, "periodSeconds": 120}]}}}}
    return [rules, hpa]


def render(values: dict) -> list[dict]:
    """Every serving object, in an order `kubectl apply` can create them in."""
    v = copy.deepcopy(values)
    return [*triton(v), *monitor(v), *inference_client(v), *autoscaling(v)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="k8s/serving.py", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--values", help="YAML settings over k8s/values.yaml")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="one setting, e.g. triton.gpu=mig-device-plugin (repeatable)")
    a = p.parse_args(argv)
    yaml.dump_all(render(load_values(a.values, a.set)), sys.stdout, Dumper=_PlainDumper, sort_keys=False)
    return 0


class _PlainDumper(yaml.SafeDumper):
    """No YAML anchors for the label maps objects share: kubectl users read these."""

    def ignore_aliases(self, data):
        return True


if __name__ == "__main__":
    sys.exit(main())
