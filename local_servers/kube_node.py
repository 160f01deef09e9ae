"""A node agent for the local control plane: registers nodes and runs the pods bound to them as
local processes, as kwok fakes nodes but with the pods' commands really run.

What it does, through the real API server only:
- registers each node (labels, capacity including `nvidia.com/gpu`, taints, the InternalIP
  127.0.0.1 and its kubelet port), renews the node's Lease and its Ready condition;
- watches the pods the real scheduler binds to its nodes. For each container it looks the image up
  in its image table ("pulling" = finding the image reference there). An image it does not have
  leaves the container Waiting with reason ErrImagePull, as a kubelet does;
- runs each container's `command` + `args` as a local process: `python` is the interpreter of the
  image's local environment, PYTHONPATH the sources the image's Dockerfile copies, and the env vars
  are the pod's (`value` only). It reports Running, then Succeeded or Failed with each container's
  exit code through `pods/status`, and enforces `activeDeadlineSeconds` (DeadlineExceeded);
- serves `/containerLogs/...` over HTTPS on the kubelet port (certificate from the local CA), so
  `kubectl logs` / the provider read pod logs through the API server (follow, tailLines,
  timestamps, sinceSeconds);
- on pod deletion, stops the processes (SIGTERM, then SIGKILL after the grace period) and
  confirms the deletion (a grace-0 delete), as a kubelet does.

What it does not do: pull or run container images (no isolation, no root filesystem, no user
namespaces: a pod runs as the agent's user on this host), mount volumes (emptyDir, PVC, CSI,
/dev/shm: a path in the pod is a path on this host), enforce CPU/memory/GPU limits (the
scheduler does account for requests), serve exec/attach/port-forward (so KubernetesPodOperator's
xcom sidecar cannot be read: the pipeline's result contract does not use it), probes, restarts
(every pipeline pod has restartPolicy Never), or init containers.

    python -m local_servers.kube_node --kubeconfig K --images images.json --node gpu-0:gpu=2 --node cpu-0
"""
from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import ssl
import subprocess
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

log = logging.getLogger("kube_node")

GPU_RESOURCE = "nvidia.com/gpu"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int = 0
    accelerator: str = "nvidia-tesla-a100"
    cpu: str = "16"
    memory: str = "64Gi"
    pool: str = ""

    @classmethod
    def parse(cls, text: str) -> NodeSpec:
        """"gpu-0:gpu=2,accelerator=nvidia-l4,cpu=8,memory=32Gi" or "cpu-0"."""
        name, _, opts = text.partition(":")
        kw: dict = {}
        for item in filter(None, opts.split(",")):
            key, _, value = item.partition("=")
            kw["gpus" if key == "gpu" else key] = int(value) if key == "gpu" else value
        return cls(name, **kw)

    def node_object(self, port: int) -> dict:
        labels = {"kubernetes.io/hostname": self.name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                  "cloud.google.com/gke-nodepool": self.pool or ("gpu-pool" if self.gpus else "default-pool")}
        capacity = {"cpu": self.cpu, "memory": self.memory, "pods": "110", "ephemeral-storage": "100Gi"}
        taints = []
        if self.gpus:
            labels[ACCELERATOR_LABEL] = self.accelerator
            capacity[GPU_RESOURCE] = str(self.gpus)
            # GKE taints GPU nodes so that only pods asking for a GPU land there.
            taints.append({"key": GPU_RESOURCE, "value": "present", "effect": "NoSchedule"})
        return {
            "apiVersion": "v1", "kind": "Node",
            "metadata": {"name": self.name, "labels": labels},
            "spec": {"taints": taints},
            "status": {"capacity": capacity, "allocatable": capacity,
                       "addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                     {"type": "Hostname", "address": self.name}],
                       "daemonEndpoints": {"kubeletEndpoint": {"Port": port}},
                       "nodeInfo": {"kubeletVersion": "v1.20.2-criteo-node-agent", "operatingSystem": "linux",
                                    "architecture": "amd64", "containerRuntimeVersion": "local-process://1",
                                    "kernelVersion": "", "osImage": "", "kubeProxyVersion": "", "machineID": "",
                                    "systemUUID": "", "bootID": ""}},
        }


@dataclass(frozen=True)
class ImageEnv:
    """What the agent runs for an image: `python` means this interpreter, with these sources."""
    python: str
    pythonpath: str

    @classmethod
    def table(cls, path: str) -> dict[str, ImageEnv]:
        """{"registry/criteo-merlin:tag": {"python": ..., "pythonpath": ...}, ...}"""
        return {ref: cls(**env) for ref, env in json.loads(Path(path).read_text()).items()}


def now() -> str:
    # Non-zero microseconds: the 1.20 API server refuses a MicroTime with none.
    t = dt.datetime.now(dt.UTC)
    if t.microsecond == 0:
        t = t.replace(microsecond=1)
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def now_seconds() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class RunningPod:
    namespace: str
    name: str
    uid: str
    log_dir: Path
    procs: dict[str, subprocess.Popen] = field(default_factory=dict)
    deadline: float | None = None
    deleting: bool = False
    done: threading.Event = field(default_factory=threading.Event)

    def log_path(self, container: str) -> Path:
        return self.log_dir / f"{container}.log"

    def kill(self, sig: int) -> None:
        for proc in self.procs.values():
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, sig)
                except ProcessLookupError:
                    pass


class NodeAgent:
    def __init__(self, api_client, nodes: list[NodeSpec], images: dict[str, ImageEnv], work_dir: Path,
                 cert: str, key: str, port: int):
        from kubernetes import client

        self.core = client.CoreV1Api(api_client)
        self.coordination = client.CoordinationV1Api(api_client)
        self.nodes = {n.name: n for n in nodes}
        self.images = images
        self.work_dir = Path(work_dir)
        self.port = port
        self.pods: dict[str, RunningPod] = {}     # by uid
        self.lock = threading.Lock()
        self.stopping = threading.Event()
        self._ssl = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self._ssl.load_cert_chain(cert, key)

    # -- nodes ---------------------------------------------------------------------------------
    def register(self) -> None:
        from kubernetes.client.rest import ApiException

        for spec in self.nodes.values():
            body = spec.node_object(self.port)
            try:
                self.core.create_node(body)
            except ApiException as exc:
                if exc.status != 409:
                    raise
                self.core.patch_node(spec.name, {"metadata": body["metadata"], "spec": body["spec"]})
            self._node_status(spec)
            log.info("registered node %s (gpus=%s)", spec.name, spec.gpus)

    def _node_status(self, spec: NodeSpec) -> None:
        status = spec.node_object(self.port)["status"]
        t = now_seconds()
        status["conditions"] = [
            {"type": "Ready", "status": "True", "reason": "NodeAgentReady", "message": "local node agent is running",
             "lastHeartbeatTime": t, "lastTransitionTime": t},
            *({"type": kind, "status": "False", "reason": "NoPressure", "message": "",
               "lastHeartbeatTime": t, "lastTransitionTime": t}
              for kind in ("MemoryPressure", "DiskPressure", "PIDPressure")),
        ]
        self.core.patch_node_status(spec.name, {"status": status})

    def _renew_lease(self, name: str) -> None:
        from kubernetes.client.rest import ApiException

        body = {"metadata": {"name": name, "namespace": "kube-node-lease"},
                "spec": {"holderIdentity": name, "leaseDurationSeconds": 40, "renewTime": now()}}
        try:
            self.coordination.patch_namespaced_lease(name, "kube-node-lease", body)
        except ApiException as exc:
            if exc.status != 404:
                raise
            self.coordination.create_namespaced_lease("kube-node-lease", body)

    def heartbeat(self, every_s: float = 10) -> None:
        while not self.stopping.wait(every_s):
            for spec in self.nodes.values():
                try:
                    self._renew_lease(spec.name)
                    self._node_status(spec)
                except Exception:  # the apiserver restarting: try again next beat
                    log.exception("heartbeat of %s failed", spec.name)

    # -- pods ----------------------------------------------------------------------------------
    def watch_pods(self) -> None:
        from kubernetes import watch

        while not self.stopping.is_set():
            try:
                for pod in self.core.list_pod_for_all_namespaces().items:
                    self.on_pod(pod)
                w = watch.Watch()
                for event in w.stream(self.core.list_pod_for_all_namespaces, timeout_seconds=30):
                    if self.stopping.is_set():
                        w.stop()
                        break
                    self.on_pod(event["object"], deleted=event["type"] == "DELETED")
            except Exception:
                if not self.stopping.is_set():
                    log.exception("pod watch failed; resuming")
                    time.sleep(1)

    def on_pod(self, pod, deleted: bool = False) -> None:
        if pod.spec.node_name not in self.nodes:
            return
        uid = pod.metadata.uid
        with self.lock:
            running = self.pods.get(uid)
            if deleted or pod.metadata.deletion_timestamp:
                if running and not running.deleting:
                    running.deleting = True
                    grace = pod.metadata.deletion_grace_period_seconds or 0
                    threading.Thread(target=self._delete, args=(running, grace), daemon=True).start()
                elif not running and not deleted:
                    self._confirm_delete(pod.metadata.namespace, pod.metadata.name, uid)
                return
            if running or pod.status.phase in ("Succeeded", "Failed"):
                return
            running = RunningPod(pod.metadata.namespace, pod.metadata.name, uid,
                                 self.work_dir / "pods" / f"{pod.metadata.namespace}_{pod.metadata.name}_{uid}")
            self.pods[uid] = running
        threading.Thread(target=self._run, args=(pod, running), daemon=True).start()

    def _status(self, running: RunningPod, status: dict) -> None:
        from kubernetes.client.rest import ApiException

        try:
            self.core.patch_namespaced_pod_status(running.name, running.namespace, {"status": status})
        except ApiException as exc:
            if exc.status != 404:  # deleted meanwhile
                raise

    def _run(self, pod, running: RunningPod) -> None:
        containers = pod.spec.containers
        missing = [c for c in containers if c.image not in self.images]
        if missing:
            self._status(running, {"phase": "Pending", "containerStatuses": [
                {"name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": "ErrImagePull", "message":
                           f'rpc error: failed to pull and unpack image "{c.image}": not found '
                           f"(the node agent's image table has {sorted(self.images)})"}}}
                if c in missing else
                {"name": c.name, "image": c.image, "imageID": "", "ready": False, "restartCount": 0,
                 "state": {"waiting": {"reason": "ContainerCreating"}}} for c in containers]})
            return
        running.log_dir.mkdir(parents=True, exist_ok=True)
        started = now_seconds()
        if pod.spec.active_deadline_seconds:
            running.deadline = time.monotonic() + pod.spec.active_deadline_seconds
        try:
            for c in containers:
                running.procs[c.name] = self._start(c, running)
        except Exception as exc:  # e.g. an env var from a secret: report, do not hang the pod
            running.kill(signal.SIGKILL)
            self._status(running, {"phase": "Failed", "reason": "CreateContainerConfigError", "message": str(exc)})
            return
        self._status(running, {
            "phase": "Running", "podIP": "127.0.0.1", "hostIP": "127.0.0.1", "startTime": started,
            "conditions": [{"type": t, "status": "True", "lastTransitionTime": started}
                           for t in ("Initialized", "ContainersReady", "Ready")],
            "containerStatuses": [{"name": c.name, "image": c.image, "imageID": f"local://{c.image}", "ready": True,
                                   "started": True, "restartCount": 0, "containerID": f"local://{running.uid}/{c.name}",
                                   "state": {"running": {"startedAt": started}}} for c in containers]})
        log.info("pod %s/%s running (%s)", running.namespace, running.name,
                 ", ".join(f"{n}: pid {p.pid}" for n, p in running.procs.items()))
        reason = None
        while any(p.poll() is None for p in running.procs.values()):
            if running.deadline and time.monotonic() > running.deadline and not running.deleting:
                reason = "DeadlineExceeded"
                running.kill(signal.SIGKILL)
            time.sleep(0.2)
        codes = {name: p.wait() for name, p in running.procs.items()}
        running.done.set()
        if running.deleting:
            return
        finished = now_seconds()
        phase = "Succeeded" if reason is None and all(code == 0 for code in codes.values()) else "Failed"
        status = {
            "phase": phase,
            "conditions": [{"type": t, "status": "False", "lastTransitionTime": finished, "reason": "PodCompleted"}
                           for t in ("ContainersReady", "Ready")],
            "containerStatuses": [
                {"name": c.name, "image": c.image, "imageID": f"local://{c.image}", "ready": False, "started": False,
                 "restartCount": 0, "containerID": f"local://{running.uid}/{c.name}",
                 "state": {"terminated": {"exitCode": codes[c.name], "startedAt": started, "finishedAt": finished,
                                          "reason": "Completed" if codes[c.name] == 0 else "Error",
                                          "containerID": f"local://{running.uid}/{c.name}"}}}
                for c in containers]}
        if reason:
            status.update(reason=reason, message="Pod was active on the node longer than the specified deadline")
        self._status(running, status)
        log.info("pod %s/%s %s %s", running.namespace, running.name, phase, codes)

    def _start(self, container, running: RunningPod) -> subprocess.Popen:
        image = self.images[container.image]
        argv = list(container.command or []) + list(container.args or [])
        if not argv:
            raise ValueError(f"container {container.name}: no command (an image entrypoint is not known here)")
        if argv[0] in ("python", "python3"):
            argv[0] = image.python
        env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(running.log_dir),
               "PYTHONPATH": image.pythonpath, "PYTHONUNBUFFERED": "1", "HOSTNAME": running.name}
        for var in container.env or []:
            if var.value_from is not None:
                raise ValueError(f"container {container.name}: env {var.name} uses valueFrom, which this node "
                                 f"agent does not resolve")
            env[var.name] = var.value or ""
        log_path = running.log_path(container.name)
        proc = subprocess.Popen(argv, env=env, cwd=running.log_dir, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=_copy_log, args=(proc, log_path), daemon=True).start()
        return proc

    def _delete(self, running: RunningPod, grace: int) -> None:
        running.kill(signal.SIGTERM)
        if not running.done.wait(max(grace, 1)):
            running.kill(signal.SIGKILL)
            running.done.wait(5)
        self._confirm_delete(running.namespace, running.name, running.uid)
        log.info("pod %s/%s deleted; its processes stopped", running.namespace, running.name)

    def _confirm_delete(self, namespace: str, name: str, uid: str) -> None:
        from kubernetes import client
        from kubernetes.client.rest import ApiException

        try:
            self.core.delete_namespaced_pod(name, namespace, body=client.V1DeleteOptions(
                grace_period_seconds=0, preconditions=client.V1Preconditions(uid=uid)))
        except ApiException as exc:
            if exc.status not in (404, 409):
                raise

    def find(self, namespace: str, name: str) -> RunningPod | None:
        with self.lock:
            matches = [p for p in self.pods.values() if p.namespace == namespace and p.name == name]
        return matches[-1] if matches else None

    # -- the kubelet port ----------------------------------------------------------------------
    def serve(self) -> ThreadingHTTPServer:
        agent = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, fmt, *args):
                log.debug(fmt, *args)

            def do_GET(self):
                url = urlsplit(self.path)
                parts = url.path.strip("/").split("/")
                if url.path == "/healthz":
                    return self._reply(200, b"ok")
                if len(parts) != 4 or parts[0] != "containerLogs":
                    return self._reply(404, b"this node agent serves /containerLogs only: no exec, attach or "
                                            b"port-forward")
                running = agent.find(parts[1], parts[2])
                if running is None or not running.log_path(parts[3]).exists():
                    return self._reply(404, f"no container {parts[3]} in pod {parts[1]}/{parts[2]} here".encode())
                query = {k: v[-1] for k, v in parse_qs(url.query).items()}
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Connection", "close")
                self.end_headers()
                try:
                    for line in _read_log(running, parts[3], query):
                        self.wfile.write(line)
                        self.wfile.flush()
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _reply(self, code: int, body: bytes):
                self.send_response(code)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        server.socket = self._ssl.wrap_socket(server.socket, server_side=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server

    def run(self) -> None:
        self.register()
        self.serve()
        for spec in self.nodes.values():
            self._renew_lease(spec.name)
        threading.Thread(target=self.heartbeat, daemon=True).start()
        self.watch_pods()

    def stop(self) -> None:
        self.stopping.set()
        with self.lock:
            pods = list(self.pods.values())
        for running in pods:
            running.kill(signal.SIGKILL)


def _copy_log(proc: subprocess.Popen, path: Path) -> None:
    """The container's output, one line per record with its RFC 3339 time, as a CRI log file."""
    with open(path, "ab", buffering=0) as out:
        for line in proc.stdout:
            stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
            out.write(stamp + b" " + (line if line.endswith(b"\n") else line + b"\n"))


def _read_log(running: RunningPod, container: str, query: dict):
    """Lines of a container's log as the kubelet's containerLogs serves them."""
    timestamps = query.get("timestamps") == "true"
    follow = query.get("follow") == "true"
    since = None
    if "sinceSeconds" in query:
        since = dt.datetime.now(dt.UTC) - dt.timedelta(seconds=int(query["sinceSeconds"]))
    elif "sinceTime" in query:
        since = dt.datetime.fromisoformat(query["sinceTime"].replace("Z", "+00:00"))

    def shape(record: bytes) -> bytes | None:
        stamp, _, line = record.partition(b" ")
        if since is not None:
            when = dt.datetime.strptime(stamp.decode(), "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=dt.UTC)
            if when < since:
                return None
        return record if timestamps else line

    path = running.log_path(container)
    with open(path, "rb") as fh:
        records = fh.readlines()
        if "tailLines" in query:
            records = records[-int(query["tailLines"]):] if int(query["tailLines"]) else []
        for record in records:
            shaped = shape(record)
            if shaped is not None:
                yield shaped
        if not follow:
            return
        pending = b""
        while True:
            chunk = fh.readline()
            if chunk:
                pending += chunk
                if pending.endswith(b"\n"):
                    shaped = shape(pending)
                    pending = b""
                    if shaped is not None:
                        yield shaped
                continue
            proc = running.procs.get(container)
            if proc is None or proc.poll() is not None:
                rest = fh.read()
                for record in rest.splitlines(keepends=True):
                    shaped = shape(record)
                    if shaped is not None:
                        yield shaped
                return
            time.sleep(0.1)


def main(argv: list[str] | None = None) -> int:
    import argparse

    from kubernetes import config

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--images", required=True, help="JSON: image reference -> {python, pythonpath}")
    parser.add_argument("--node", action="append", required=True, help="name[:gpu=N,accelerator=A,cpu=C,memory=M]")
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--cert", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--port", type=int, required=True, help="the kubelet port (logs)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    agent = NodeAgent(config.new_client_from_config(config_file=args.kubeconfig),
                      [NodeSpec.parse(n) for n in args.node], ImageEnv.table(args.images), Path(args.work_dir),
                      args.cert, args.key, args.port)
    signal.signal(signal.SIGTERM, lambda *_: (agent.stop(), os._exit(0)))
    agent.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
