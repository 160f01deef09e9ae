"""What a step pays for running as a pod: the pod runtime against the local control plane
(local_servers.kube, with the real kubelet nodes of local_servers.kubelet running each pod as a
container of its image), next to the embedded default, alternated in one run.

For one small step (synth, --rows R), each round runs the single-step DAG `pod_step_synth`
(tests/kubernetes/dags) with dag.test() twice, in alternating order: A with criteo_runtime=local,
B with criteo_runtime=kubernetes (sync KubernetesPodOperator). It prints, as medians:

- the task's wall time on each runtime (the TaskInstance's duration) and B/A;
- the step's own time: its process alone (no Airflow, no pod), in the same rounds;
- the pod's overhead at the API server: pod created -> phase Succeeded, watched on the server.

It also prints how long the control plane and its nodes take to start when binaries and images are cached.

    .venv/bin/python bench/bench_pods.py [--rounds 5] [--rows 2000]   (needs `make kube-build node-images`)
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rows", type=int, default=2000)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-pods-"))
    os.environ.update({
        "AIRFLOW_HOME": str(REPO / ".airflow"), "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__DAG_PROCESSOR__DAG_BUNDLE_CONFIG_LIST": json.dumps([
            {"name": "dags-folder", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle", "kwargs": {}},
            {"name": "pod-test-dags", "classpath": "airflow.dag_processing.bundles.local.LocalDagBundle",
             "kwargs": {"path": str(REPO / "tests" / "kubernetes" / "dags")}}]),
    })
    import logging

    logging.disable(logging.WARNING)
    from kubernetes import client, watch

    from local_servers.kube import LocalKubernetes
    from local_servers.kube_fixtures import NAMESPACE, SERVICE_ACCOUNT, bucket_folder, pod_environment
    from local_servers.kubelet import LocalNode, pipeline_nodes

    cp = LocalKubernetes(work / "kube")
    t0 = time.perf_counter()
    cp.start()
    start_s = time.perf_counter() - t0
    nodes = [LocalNode(cp, spec) for spec in pipeline_nodes()]
    old_umask = os.umask(0o002)
    try:
        for node in nodes:
            node.start()
        nodes_s = time.perf_counter() - t0
        core = client.CoreV1Api(cp.api_client())
        core.create_namespace(client.V1Namespace(metadata=client.V1ObjectMeta(name=NAMESPACE)))
        core.create_namespaced_service_account(NAMESPACE, client.V1ServiceAccount(
            metadata=client.V1ObjectMeta(name=SERVICE_ACCOUNT)))
        pod_env = pod_environment(cp, str(bucket_folder(work / "bucket")))
        lifecycle: dict[str, dict[str, float]] = {}

        def watch_pods():
            try:
                for event in watch.Watch().stream(core.list_namespaced_pod, NAMESPACE):
                    pod = event["object"]
                    times = lifecycle.setdefault(pod.metadata.name, {})
                    times.setdefault("created", time.time())
                    if pod.status.phase in ("Succeeded", "Failed"):
                        times.setdefault("done", time.time())
            except Exception:  # the server stopping at the end
                pass

        threading.Thread(target=watch_pods, daemon=True).start()
        from airflow.dag_processing.dagbag import DagBag

        dag = DagBag(str(REPO / "tests" / "kubernetes" / "dags" / "pod_steps.py")).get_dag("pod_step_synth")
        from operators.runtime.catalogue import STEPS
        from operators.runtime.local import LocalProcessRuntime

        durations: dict[str, list[float]] = {"local": [], "kubernetes": [], "bare": []}
        for i in range(args.rounds):
            t = time.perf_counter()
            LocalProcessRuntime().run(STEPS["synth"], ["--out", str(work / "bare"), "--days", "0",
                                                       "--rows", str(args.rows)])
            durations["bare"].append(time.perf_counter() - t)
            order = ("local", "kubernetes") if i % 2 == 0 else ("kubernetes", "local")
            for runtime in order:
                env = pod_env if runtime == "kubernetes" else {"AIRFLOW_VAR_CRITEO_RUNTIME": "local",
                                                               "AIRFLOW_VAR_CRITEO_BASE_URL": str(work / "bucket")}
                os.environ.update(env)
                dr = dag.test(run_conf={"rows": args.rows})
                (ti,) = dr.get_task_instances()
                assert dr.state == "success", (runtime, ti.state)
                durations[runtime].append(ti.duration)
        time.sleep(1)
        overhead = [t["done"] - t["created"] for t in lifecycle.values() if "done" in t]
    finally:
        for node in nodes:
            node.stop()
        cp.stop()
        os.umask(old_umask)
    med = statistics.median
    a, b = med(durations["local"]), med(durations["kubernetes"])
    print(f"control plane start (binaries cached): {start_s:.1f} s; with its two kubelet nodes Ready: {nodes_s:.1f} s")
    print(f"synth --rows {args.rows}, {args.rounds} rounds alternated (medians):")
    print(f"  task wall time   local (A) {a:6.2f} s   kubernetes pod (B) {b:6.2f} s   "
          f"B/A {b / a:4.2f}   B-A {b - a:+.2f} s")
    print(f"  the step's own process, no Airflow, no pod: {med(durations['bare']):.2f} s")
    print(f"  API server: pod created -> Succeeded: {med(overhead):.2f} s (min {min(overhead):.2f}, "
          f"max {max(overhead):.2f}, n={len(overhead)})")
    print(f"bench_pods: ratio {b / a:.2f} (task wall time, kubernetes pod over local process)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
