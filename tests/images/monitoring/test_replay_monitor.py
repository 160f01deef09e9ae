"""The inference client, the request log and the monitor against the real servers: tritonserver
serving two deployed versions, the monitor process, Prometheus scraping it and Triton, and the GCS
emulator for a gs:// request log. The steps run as the pipeline runs them (LocalProcessRuntime)."""
import os
import shutil
import subprocess
import threading
import time

import numpy as np
import pytest

from tests.fixtures.serving import REPO

from .conftest import DAY0, MODEL

pytestmark = pytest.mark.integration
WINDOW = 4000  # the whole day: PSI over fewer rows than ~20x its 256 buckets is mostly noise


def logged_requests(request_log: str):
    """Every logged request row, in the day's row order."""
    import fsspec
    import pyarrow as pa

    from criteo_monitoring.request_log import LABELS, REQUESTS, list_parts, read_part

    fs = fsspec.core.url_to_fs(request_log)[0]
    req = pa.concat_tables([read_part(fs, p, REQUESTS) for p in list_parts(request_log, REQUESTS)]).to_pandas()
    lab = pa.concat_tables([read_part(fs, p, LABELS) for p in list_parts(request_log, LABELS)]).to_pandas()
    out = req.merge(lab[["request_id", "row", "label"]], on=["request_id", "row"], how="left")
    return out.sort_values(["event_time", "request_id", "row"]).reset_index(drop=True)


@pytest.fixture(scope="module")
def served(tmp_path_factory, packages):
    """Versions 1 (package 0) and 2 (package 1) deployed with their training reference profile;
    Triton, the monitor and Prometheus up; version 1 serving."""
    from local_servers.stack import ServingStack
    from operators.hooks.model_repository import ModelRepositoryHook
    from operators.hooks.serving import promote
    from operators.hooks.triton import TritonHook
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    root = tmp_path_factory.mktemp("served")
    base = root / "bucket"
    rt = LocalProcessRuntime()
    # the reference profile, made as the pipeline makes it: validate --profile-out, then reference
    rt.run(STEPS["validate"], ["--input", str(packages.root / "extracted/day=0"), "--suite", "raw_day",
                               "--data-docs", str(root / "docs"), "--run-name", "ref", "--min-rows", "100",
                               "--profile-out", str(root / "day0.json")])
    rt.run(STEPS["reference"], ["--profiles", str(root / "day0.json"), "--output", str(root / "reference.json")])
    cfg = Settings.with_values(criteo_base_url=str(base), criteo_model_name=MODEL)
    hook = ModelRepositoryHook(Layout(cfg))
    for i in (0, 1):
        pkg = shutil.copytree(packages.packages[i], root / f"package{i}")  # the session's packages stay as built
        (pkg / "_SUCCESS").touch()
        smoke = root / f"smoke{i}.npz"
        np.savez(smoke, dense_raw=packages.dense_raw[:64], cat_hash=packages.cat_hash[:64],
                 prediction=packages.predictions[i][:64], label=np.zeros(64, np.int8))
        # the package is the artifact store: the version's lineage names the profile there
        shutil.copy(root / "reference.json", pkg / "reference_profile.json")
        hook.push(str(pkg), {"run_key": f"v{i}"}, extra_files={"smoke.npz": str(smoke)})
    with ServingStack(base, root / "services", window_rows=WINDOW, min_rows=200) as stack:
        triton = TritonHook(stack.triton.grpc_url)
        promote(hook, triton, 1)
        yield {"stack": stack, "hook": hook, "triton": triton, "raw": packages.root / "raw", "rt": rt, "root": root}


def replay_args(stack, request_log, day=0, *extra):
    return ["--input", str(stack["raw"]), "--day", str(day), "--day0", DAY0, "--triton", stack["stack"].triton.grpc_url,
            "--model", MODEL, "--request-log", str(request_log), "--label-delay-s", "0.2", *extra]


def wait_for(prom, query, until, timeout_s=60):
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        rows = prom.query(query)
        if rows and until(float(rows[0]["value"][1])):
            return float(rows[0]["value"][1])
        time.sleep(0.5)
    raise AssertionError(f"{query} did not reach the expected value in {timeout_s}s; last {rows}")


def test_replay_logs_what_triton_answered_and_to_day_gives_the_day_back(served, packages):
    from operators.runtime.catalogue import STEPS

    log = served["root"] / "log_a"
    result = served["rt"].run(STEPS["replay"], replay_args(served, log, 0, "--batch-size", "64", "--concurrency", "2"))
    assert result["rows"] == 4000 and result["requests"] == 63 and result["versions_seen"] == {"1": 4000}
    assert result["labels"] == 4000 and result["malformed_rows"] == 0 and result["retried_requests"] == 0
    rows = logged_requests(str(log))
    assert len(rows) == 4000 and rows["label"].notna().all() and set(rows["version"]) == {1}
    # extract holds out every 10th row: those are the rows the offline predictions were made on
    held_out = rows.iloc[9::10]
    assert np.allclose(held_out["prediction"].to_numpy(), packages.predictions[0], atol=1e-5)
    assert held_out["C1"].fillna(-1).to_numpy().tolist() == packages.cat_hash[:, 0].tolist()
    # the request log, back as a raw day: the same bytes as the day replayed
    out = served["rt"].run(STEPS["request_log_to_day"], ["--request-log", str(log), "--day", "0", "--day0", DAY0,
                                                          "--output", str(served["root"] / "raw_a")])
    assert out["rows"] == 4000 and out["versions"] == {"1": 4000}
    assert (served["root"] / "raw_a/day_0").read_bytes() == (served["raw"] / "day_0").read_bytes()
    # a different day_0 in the way: exit 4, a data error the step operator does not retry
    from operators.runtime import StepFailed

    (served["root"] / "raw_a/day_0").write_bytes(b"0" + b"\t" * 39 + b"\n")
    with pytest.raises(StepFailed) as err:
        served["rt"].run(STEPS["request_log_to_day"], ["--request-log", str(log), "--day", "0", "--day0", DAY0,
                                                        "--output", str(served["root"] / "raw_a")])
    assert err.value.exit_code == 4 and 4 in STEPS["request_log_to_day"].data_error_exit_codes
    assert "exists with other content" in str(err.value)


def test_monitor_metrics_are_scraped_by_prometheus(served):
    """The stack's monitor reads the bucket's request log; Prometheus scrapes it and Triton."""
    from criteo_merlin.export.evaluate import roc_auc
    from operators.hooks.prometheus import PrometheusHook
    from operators.runtime.catalogue import STEPS

    stack = served["stack"]
    served["rt"].run(STEPS["replay"], replay_args(served, stack.request_log, 0))
    prom = PrometheusHook(stack.prometheus.url)
    sel = f'{{model="{MODEL}",version="1"}}'
    wait_for(prom, f"criteo_labels_joined_total{sel}", lambda v: v >= 4000)
    auc = wait_for(prom, f"criteo_rolling_auc{sel}", lambda v: True)
    rows = logged_requests(str(stack.request_log)).tail(WINDOW)
    assert auc == pytest.approx(roc_auc(rows["label"].to_numpy(), rows["prediction"].to_numpy()), abs=1e-9)
    assert prom.query(f"criteo_rolling_labelled_requests{sel}")[0]["value"][1] == str(WINDOW)
    ratio = float(prom.query(f"criteo_calibration_ratio{sel}")[0]["value"][1])
    assert ratio == pytest.approx(rows["prediction"].mean() / rows["label"].mean(), rel=1e-5)
    # drift against the version's reference profile: the same day, so no drift
    psi = float(prom.query(f"criteo_max_feature_psi{sel}")[0]["value"][1])
    assert 0 <= psi < 0.1 and len(prom.query(f"criteo_feature_psi{sel}")) == 39
    assert prom.query(f"criteo_reference_profile_loaded{sel}")[0]["value"][1] == "1"
    # Triton's own metrics are scraped too
    triton = wait_for(prom, f'nv_inference_request_success{{model="{MODEL}",version="1"}}', lambda v: v >= 63)
    assert triton >= 63
    up = {r["metric"]["job"]: r["value"][1] for r in prom.query("up")}
    assert len(up) == 2 and set(up.values()) == {"1"}


def test_the_autoscaler_rule_returns_the_queue_time_of_a_pod_from_triton_s_metrics(served):
    """The HPA's metric end to end, on a real Prometheus scraping the real Triton:
    - scraped by the fallback scrape config (k8s/scraping/annotations/scrape-config.yaml), its
      relabelling as written, with what Kubernetes pod discovery would give it for a Triton pod of
      k8s/serving/base (its namespace, name, label and prometheus.io annotations) standing in as
      static labels: discovery itself needs a cluster (and Debian's Prometheus is built without it);
    - queried by prometheus-adapter's rule (k8s/prometheus-adapter/config.yaml) filled as the
      adapter fills it for that pod (k8s/adapter.py): one series, the pod's, a finite number of
      microseconds per request after traffic."""
    import math
    from urllib.parse import urlsplit

    import yaml

    from k8s.adapter import metrics_query, rule
    from local_servers.prometheus import LocalPrometheus
    from operators.hooks.prometheus import PrometheusHook
    from operators.runtime.catalogue import STEPS

    base = REPO / "k8s" / "serving" / "base"
    namespace = yaml.safe_load((base / "kustomization.yaml").read_text())["namespace"]
    deployment = next(d for d in yaml.safe_load_all((base / "triton.yaml").read_text()) if d["kind"] == "Deployment")
    template = deployment["spec"]["template"]
    metrics_port = next(p["containerPort"] for p in template["spec"]["containers"][0]["ports"]
                        if p["name"] == "metrics")
    annotations = template["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(metrics_port)
    triton = urlsplit(served["stack"].triton.metrics_url)
    pod = "triton-7f9c4b-x2x9q"

    def discovered(name, scrape, port):
        """What role: pod discovery sets for one container port of a pod (Prometheus's
        kubernetes_sd_config docs: __meta_kubernetes_pod_annotation_<name>, ..._label_<name>)."""
        labels = {"__meta_kubernetes_namespace": namespace, "__meta_kubernetes_pod_name": name,
                  "__meta_kubernetes_pod_label_app_kubernetes_io_name": template["metadata"]["labels"][
                      "app.kubernetes.io/name"]}
        for k, v in {**annotations, "prometheus.io/scrape": scrape, "prometheus.io/port": str(port)}.items():
            labels["__meta_kubernetes_pod_annotation_" + k.replace(".", "_").replace("/", "_")] = v
        return {"targets": [f"{triton.hostname}:{template['spec']['containers'][0]['ports'][0]['containerPort']}"],
                "labels": labels}

    job = yaml.safe_load((REPO / "k8s" / "scraping" / "annotations" / "scrape-config.yaml").read_text())[
        "scrape_configs"][0]
    assert set(job.pop("kubernetes_sd_configs")[0]) == {"role"}
    # The annotation port is the local Triton's (the manifest's, 8002, is asserted above); a pod
    # annotated scrape "false" must not be scraped.
    job["static_configs"] = [discovered(pod, "true", triton.port), discovered("monitor-off", "false", triton.port)]
    job["scrape_interval"] = "1s"

    class AnnotationPrometheus(LocalPrometheus):
        def config(self):
            return {**super().config(), "scrape_configs": [job]}

    with AnnotationPrometheus([], served["root"] / "prometheus-annotations") as local:
        prom = PrometheusHook(local.url)
        up = wait_for(prom, f'up{{namespace="{namespace}",pod="{pod}"}}', lambda v: v == 1)
        assert up == 1 and len(prom.query("up")) == 1
        # A sample before the traffic: the increase is measured between scrapes.
        wait_for(prom, f'nv_inference_request_success{{pod="{pod}"}}', lambda v: True)
        served["rt"].run(STEPS["replay"], replay_args(served, served["root"] / "log_hpa", 0, "--concurrency", "4",
                                                      "--batch-size", "16"))
        wait_for(prom, f'delta(nv_inference_request_success{{pod="{pod}"}}[30s])', lambda v: v > 0)
        for pods in ([pod], [pod, "triton-7f9c4b-gone1"]):   # pod="..." and pod=~"...|..."
            query = metrics_query(namespace, pods)
            assert f'namespace="{namespace}",pod=' in query and "<<" not in query and rule()["name"]["as"]
            rows = prom.query(query)
            assert [r["metric"] for r in rows] == [{"pod": pod}], (query, rows)
            value = float(rows[0]["value"][1])
            assert math.isfinite(value) and value >= 0, rows
        assert prom.query(metrics_query(namespace, ["triton-7f9c4b-other"])) == []
        assert prom.query(metrics_query("elsewhere", [pod])) == []
    print(f"triton_queue_avg_us: {value:.1f} ({query})")


def dashboard_queries(path) -> list[tuple[str, str]]:
    """(panel title, PromQL) of every target of a provisioned dashboard, with Grafana's variables
    filled as Grafana fills them for this model (one 15 s rate interval)."""
    import json

    dash = json.loads(path.read_text())
    assert [v["name"] for v in dash["templating"]["list"]] == ["model"]
    out = []
    for panel in dash["panels"]:
        assert panel["datasource"]["uid"] == "prometheus", panel["title"]
        for target in panel["targets"]:
            expr = target["expr"].replace("$model", MODEL).replace("$__rate_interval", "15s")
            assert "$" not in expr, (panel["title"], expr)
            out.append((panel["title"], expr))
    return out


def test_every_dashboard_panel_has_data(served):
    """Each query of the provisioned Grafana dashboard (k8s/grafana) returns series from the real
    Prometheus after a replay through the real Triton and monitor, and a retrain recorded in the
    bucket's retrain log as model_monitoring records it: none is misspelt or empty."""
    from criteo_kernel import retrain_log
    from operators.hooks.prometheus import PrometheusHook
    from operators.hooks.storage import storage_path, write_text_atomic
    from operators.runtime.catalogue import STEPS

    dashboards = REPO / "k8s" / "grafana" / "dashboards"
    queries = [q for path in sorted(dashboards.glob("*.json")) for q in dashboard_queries(path)]
    assert {t for t, _ in queries} >= {"Rolling AUC per version", "Calibration per version",
                                       "Max feature PSI per version", "Triton latency p50 / p99 per version",
                                       "Triton queue time per version", "Request rate per version", "Monitor health",
                                       "Retrains triggered"}
    stack = served["stack"]
    prom = PrometheusHook(stack.prometheus.url)
    wait_for(prom, f'nv_inference_request_success{{model="{MODEL}"}}', lambda v: True)  # a sample before traffic
    # Into the monitor's own log, on the wall clock (ids and times of their own, whichever test ran before).
    served["rt"].run(STEPS["replay"], replay_args(served, stack.request_log, 0, "--clock", "wall"))
    wait_for(prom, f'criteo_rolling_auc{{model="{MODEL}"}}', lambda v: True)
    wait_for(prom, f'delta(nv_inference_request_success{{model="{MODEL}"}}[30s])', lambda v: v > 0)
    # record_retrain's write (operators/tasks/monitoring.py), after the monitor's first 0 was scraped
    wait_for(prom, f'criteo_retrains_triggered_total{{model="{MODEL}"}}', lambda v: v == 0)
    record = retrain_log.RetrainRecord(model=MODEL, version=1, at="2026-11-24T12:00:05+00:00",
                                       run_id="monitoring__2026-11-24T12:00:04+00:00", triggers=["auc_degraded"])
    path = storage_path(retrain_log.record_url(stack.retrain_log, record))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, record.to_json())
    wait_for(prom, f'increase(criteo_retrains_triggered_total{{model="{MODEL}"}}[1m])', lambda v: v > 0)
    empty = [(title, expr) for title, expr in queries if not prom.query(expr)]
    assert not empty, empty


def test_a_version_switch_during_the_replay_shows_row_by_row(served, packages):
    """Version 2 is promoted while traffic flows: each logged row carries the version that
    answered it, and its prediction is that version's."""
    from operators.hooks.serving import promote
    from operators.runtime.catalogue import STEPS

    log = served["root"] / "log_switch"
    done = {}
    thread = threading.Thread(target=lambda: done.update(served["rt"].run(
        STEPS["replay"], replay_args(served, log, 0, "--batch-size", "32", "--rate", "25"))))
    thread.start()
    try:
        time.sleep(1.5)
        promote(served["hook"], served["triton"], 2)
    finally:
        thread.join(timeout=120)
        promote(served["hook"], served["triton"], 1)
    assert set(done["versions_seen"]) == {"1", "2"} and sum(done["versions_seen"].values()) == 4000
    rows = logged_requests(str(log))
    held_out = rows.iloc[9::10].reset_index(drop=True)
    for version, package in ((1, 0), (2, 1)):
        sel = (held_out["version"] == version).to_numpy()
        assert sel.sum() > 10
        assert np.allclose(held_out["prediction"].to_numpy()[sel], packages.predictions[package][sel], atol=1e-5)
    # traffic moves to version 2 and stays: the versions in row order are 1...1 2...2
    versions = rows["version"].to_numpy()
    assert (np.diff(versions) >= 0).all()


def test_triton_down_fails_the_replay_with_the_reason(served, tmp_path):
    from local_servers.process import free_port
    from operators.runtime import StepFailed
    from operators.runtime.catalogue import STEPS

    dead = f"127.0.0.1:{free_port()}"
    args = replay_args(served, tmp_path / "log", 0, "--retries", "1")
    args[args.index("--triton") + 1] = dead
    with pytest.raises(StepFailed) as err:
        served["rt"].run(STEPS["replay"], args)
    assert err.value.exit_code == 3
    assert (f"Triton at {dead} failed inference on 'criteo_dcn' after 2 attempt(s): StatusCode.UNAVAILABLE"
            in str(err.value))


def test_the_request_log_on_gcs(served, gcs, monkeypatch):
    """The request log in gs:// (the emulator): replay writes it, the monitor reads it, request_log_to_day
    turns it back into the raw day."""
    from operators.runtime.catalogue import IMAGES, STEPS
    from operators.runtime.local import LOCAL_ENVIRONMENTS

    for key, value in gcs.env().items():
        monkeypatch.setenv(key, value)
    gcs.create_bucket("criteo-logs")
    log = "gs://criteo-logs/request_log"
    result = served["rt"].run(STEPS["replay"], replay_args(served, log, 0, "--batch-size", "256"))
    assert result["rows"] == 4000 and result["request_files"] == 24
    objects = gcs.list_objects("criteo-logs", "request_log/")
    assert len([o for o in objects if o.startswith("request_log/requests/date=2026-01-01/hour=")]) == 24
    out = served["rt"].run(STEPS["request_log_to_day"], ["--request-log", log, "--day", "0", "--day0", DAY0,
                                                          "--output", str(served["root"] / "raw_gcs")])
    assert out["rows"] == 4000
    assert (served["root"] / "raw_gcs/day_0").read_bytes() == (served["raw"] / "day_0").read_bytes()
    local = LOCAL_ENVIRONMENTS["monitoring"]
    once = subprocess.run([local.python, "-m", IMAGES["monitoring"], "monitor", "--request-log", log, "--once",
                           "--window-rows", str(WINDOW), "--min-rows", "200"], capture_output=True, text=True,
                          env=dict(os.environ, PYTHONPATH=local.pythonpath), timeout=120, cwd=REPO)
    assert once.returncode == 0, once.stderr
    assert f'criteo_requests_logged_total{{model="{MODEL}",version="1"}} 4000.0' in once.stdout
    assert f'criteo_rolling_labelled_requests{{model="{MODEL}",version="1"}} {float(WINDOW)}' in once.stdout
