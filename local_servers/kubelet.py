"""Real nodes for the local control plane (local_servers.kube): kubelet v1.20.2 (built with the control
plane by scripts/kube/build.sh) with Debian 12's containerd 1.6 and runc. Pods run as real containers
of the images `make images` built, with their security context, limits, volumes and log stream.

Each node has:
- its own containerd (root, state and socket in the node's cache folder, outside the repository,
  so imported images survive between runs) and a kubelet, both in one private mount namespace
  (kubelet_ns.sh says why and what it leaves untouched), host networking only: the CNI config
  holds only the `loopback` plugin, so a pod that is not `hostNetwork` fails instead of getting
  an address, and nothing creates a bridge or a private-range address;
- a client certificate from the local CA as `system:node:<name>` (the Node authorizer), and its
  kubelet port served with the certificate the API server checks for `pods/log`;
- its InternalIP set to 127.0.0.1 (kubelet refuses a loopback `--node-ip`);
- on a GPU node: the accelerator label, the GPU taint and `nvidia.com/gpu` advertised as an
  extended resource (the documented way; the containers get no GPU).

Images come from the Podman engine's storage (scripts/containers/engine.sh), streamed by
`podman save` into `ctr images import`, only when the image's ID changed since the last import.

    with LocalKubernetes(work) as kube, LocalNode(kube, NodeSpec("gpu-0", gpus=2), images):  # ~30 s
        ...
    python -m local_servers.kubelet import-images          # what `make node-images` runs
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from .kube import KUBE_VERSION, LocalKubernetes, kube_cache
from .process import LocalServer, ServerProcess, free_port

GPU_RESOURCE = "nvidia.com/gpu"
ACCELERATOR_LABEL = "cloud.google.com/gke-accelerator"
NODEPOOL_LABEL = "cloud.google.com/gke-nodepool"
PAUSE_IMAGE = "localhost/criteo-node-pause:1"
PAUSE_BASE = "localhost/criteo-standin/debian:bookworm"
NS_SCRIPT = Path(__file__).with_name("kubelet_ns.sh")
# Inside the node's mount namespace /var/lib is the node's own folder (kubelet_ns.sh). A short path
# matters: kubelet's unix sockets live under it (108 bytes at most).
KUBELET_ROOT = "/var/lib/kubelet"
ENGINE_ROOT = Path(os.environ.get("CRITEO_ENGINE_ROOT", Path.home() / ".cache" / "criteo-mlops" / "engine"))


def node_cache() -> Path:
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "criteo-mlops" / f"node-{KUBE_VERSION}"
    return Path(os.environ.get("CRITEO_NODE_CACHE", default))


def image_tag() -> str:
    return os.environ.get("CRITEO_IMAGE_TAG", "local")


def step_image(name: str) -> str:
    """The reference `make images` gives a step image (merlin, validator, monitoring, merlin-hugectr)."""
    return f"localhost/criteo-{name}:{image_tag()}"


@dataclass(frozen=True)
class NodeSpec:
    name: str
    gpus: int = 0
    accelerator: str = "nvidia-tesla-a100"
    images: tuple[str, ...] = ()

    @property
    def pool(self) -> str:
        return "gpu-pool" if self.gpus else "default-pool"

    @property
    def labels(self) -> dict[str, str]:
        labels = {NODEPOOL_LABEL: self.pool}
        if self.gpus:
            labels[ACCELERATOR_LABEL] = self.accelerator
        return labels

    @property
    def taints(self) -> list[str]:
        # GKE taints GPU nodes so that only pods asking for a GPU land there.
        return [f"{GPU_RESOURCE}=present:NoSchedule"] if self.gpus else []


def pipeline_nodes() -> tuple[NodeSpec, NodeSpec]:
    """The pipeline's two nodes: GPU steps (preprocess, train) on a GPU node with 2 GPUs, the
    others on a CPU node, as on GKE with a GPU node pool beside the default pool."""
    return (NodeSpec("criteo-gpu-0", gpus=2, images=(step_image("merlin"),)),
            NodeSpec("criteo-cpu-0", images=tuple(step_image(n) for n in ("merlin", "validator", "monitoring"))))


# -- images -----------------------------------------------------------------------------------------

def engine_env() -> dict[str, str]:
    """The environment that points `podman` at the project's engine (scripts/containers/engine.sh)."""
    conf = ENGINE_ROOT / "conf"
    return {**os.environ, "CONTAINERS_CONF": str(conf / "containers.conf"),
            "CONTAINERS_STORAGE_CONF": str(conf / "storage.conf"),
            "CONTAINERS_REGISTRIES_CONF": str(conf / "registries.conf")}


def podman(*args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(["podman", *args], env=engine_env(), check=check, capture_output=True, text=True, **kw)


def engine_image_id(ref: str) -> str | None:
    done = podman("image", "inspect", "--format", "{{.Id}}", ref, check=False)
    return done.stdout.strip() if done.returncode == 0 else None


def ensure_pause_image() -> None:
    """The pod sandbox image (GKE's is registry.k8s.io/pause): a process that sleeps until killed."""
    if engine_image_id(PAUSE_IMAGE):
        return
    if not engine_image_id(PAUSE_BASE):
        raise FileNotFoundError(f"{PAUSE_BASE} is not in the engine: run `make images`")
    build = ENGINE_ROOT / "node-pause"
    build.mkdir(parents=True, exist_ok=True)
    (build / "Containerfile").write_text(f'FROM {PAUSE_BASE}\nENTRYPOINT ["/bin/sleep", "infinity"]\n')
    podman("build", "-q", "-t", PAUSE_IMAGE, str(build))


# -- the node ---------------------------------------------------------------------------------------

def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


class NodeError(RuntimeError):
    pass


@dataclass
class LocalNode(LocalServer):
    """`with LocalNode(control_plane, spec):` a real node of that control plane, Ready."""

    control_plane: LocalKubernetes
    spec: NodeSpec
    work_dir: Path | None = None
    # import changed images from the engine first (else only check they are there: `make node-images`)
    refresh_images: bool = False
    processes: list[ServerProcess] = field(default_factory=list)

    def __post_init__(self):
        self.work_dir = Path(self.work_dir or self.control_plane.work_dir / "nodes" / self.spec.name).resolve()
        self.cache = node_cache() / self.spec.name
        self.port = free_port()
        self.ctr = ["ctr", "-a", str(self.cache / "containerd.sock"), "-n", "k8s.io"]

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.running for p in self.processes)

    @property
    def kubelet_log(self) -> Path:
        return self.work_dir / "logs" / "kubelet.log"

    def tail(self, lines: int = 30) -> str:
        return "\n\n".join(f"== {p.name}\n{p.tail(lines)}" for p in self.processes)

    def _containerd_config(self) -> Path:
        w, cache = self.work_dir, self.cache
        cni = w / "cni"
        (cni / "bin").mkdir(parents=True, exist_ok=True)
        (cni / "net.d").mkdir(parents=True, exist_ok=True)
        loopback = cni / "bin" / "loopback"
        if not loopback.exists():
            loopback.symlink_to("/usr/lib/cni/loopback")   # the only CNI plugin there is: no bridge, no addresses
        (cni / "net.d" / "10-lo.conflist").write_text(
            '{"cniVersion":"0.4.0","name":"lo","plugins":[{"type":"loopback"}]}\n')
        cri = 'plugins."io.containerd.grpc.v1.cri"'
        path = w / "containerd.toml"
        path.write_text(f"""version = 2
root = "{cache}/root"
state = "{cache}/state"
disabled_plugins = ["io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.zfs", "io.containerd.snapshotter.v1.devmapper"]
[grpc]
  address = "{cache}/containerd.sock"
[ttrpc]
  address = "{cache}/containerd.sock.ttrpc"
[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  # root here lacks CAP_SYS_RESOURCE: without this runc fails "can't get final child's PID from pipe"
  restrict_oom_score_adj = true
  disable_apparmor = true
  stream_server_address = "127.0.0.1"
  [{cri}.containerd.runtimes.runc]
    runtime_type = "io.containerd.runc.v2"
    [{cri}.containerd.runtimes.runc.options]
      SystemdCgroup = false
  [{cri}.cni]
    bin_dir = "{cni}/bin"
    conf_dir = "{cni}/net.d"
""")
        return path

    def start_containerd(self) -> None:
        """containerd alone (its supervisor), in the node's private mount namespace."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.cache.mkdir(parents=True, exist_ok=True)
        self._containerd_config()
        proc = ServerProcess(f"node {self.spec.name}", [
            "unshare", "-m", "--propagation", "private", "sh", NS_SCRIPT, self.work_dir, self.cache,
            f"criteo-{self.spec.name}"], self.work_dir / "logs" / "containerd.log", ready=self._containerd_ready)
        self.processes.append(proc)
        proc.start(timeout_s=60)

    def _containerd_ready(self) -> bool:
        return subprocess.run([*self.ctr, "version"], capture_output=True).returncode == 0

    # images ----------------------------------------------------------------------------------

    def _imported(self) -> dict[str, str]:
        try:
            return json.loads((self.cache / "images.json").read_text())
        except (OSError, ValueError):
            return {}

    def _present(self) -> set[str]:
        """The image references in this node's containerd."""
        return set(subprocess.run([*self.ctr, "images", "ls", "-q"], capture_output=True, text=True,
                                  check=True).stdout.split())

    def check_images(self) -> None:
        present = self._present()
        missing = [ref for ref in (PAUSE_IMAGE, *self.spec.images) if ref not in present]
        if missing:
            raise NodeError(f"node {self.spec.name} lacks the images {missing}: run `make node-images` (imports "
                            f"them from the engine's storage into the node's containerd, {self.cache})")

    def import_images(self, refs: tuple[str, ...] | None = None) -> list[str]:
        """Bring these images (default: the spec's, plus the sandbox image) from the engine into this
        node's containerd when their ID changed; returns the references imported."""
        ensure_pause_image()
        refs = (PAUSE_IMAGE, *(self.spec.images if refs is None else refs))
        done = self._imported()
        present = self._present()
        wanted = {}
        for ref in refs:
            image_id = engine_image_id(ref)
            if image_id is None:
                raise FileNotFoundError(f"image {ref} is not in the engine ({ENGINE_ROOT}): run `make images`")
            if done.get(ref) != image_id or ref not in present:
                wanted[ref] = image_id
        if wanted:
            # one archive for all: the layers they share are saved and unpacked once
            save = subprocess.Popen(["podman", "save", "--format", "docker-archive", "-m", *wanted],
                                    env=engine_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
            load = subprocess.run([*self.ctr, "images", "import", "-"], stdin=save.stdout, capture_output=True,
                                  text=True)
            save.stdout.close()
            err = save.stderr.read().decode(errors="replace")
            if save.wait() or load.returncode:
                raise NodeError(f"importing {sorted(wanted)} into node {self.spec.name} failed:\n{err}\n"
                                f"{load.stdout}{load.stderr}")
            done.update(wanted)
            (self.cache / "images.json").write_text(json.dumps(done, indent=2))
        return sorted(wanted)

    # kubelet ---------------------------------------------------------------------------------

    def _credentials(self) -> tuple[Path, Path]:
        pki, w = self.control_plane.pki, self.work_dir
        key, crt = w / "node.key", w / "node.crt"
        if not crt.exists():
            (w / "node.ext").write_text("extendedKeyUsage=clientAuth\n")
            _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj",
                     f"/O=system:nodes/CN=system:node:{self.spec.name}", "-keyout", str(key), "-out", "node.csr", cwd=w)
            _openssl("x509", "-req", "-in", "node.csr", "-CA", str(pki / "ca.crt"), "-CAkey", str(pki / "ca.key"),
                     "-CAcreateserial", "-days", "365", "-extfile", "node.ext", "-out", str(crt), cwd=w)
        return crt, key

    def _kubelet_files(self) -> tuple[Path, Path]:
        w, pki = self.work_dir, self.control_plane.pki
        crt, key = self._credentials()
        kubeconfig = w / "kubelet.kubeconfig"
        kubeconfig.write_text(json.dumps({
            "apiVersion": "v1", "kind": "Config", "current-context": "node",
            "clusters": [{"name": "local", "cluster": {"server": self.control_plane.server,
                                                       "certificate-authority": str(pki / "ca.crt")}}],
            "users": [{"name": "node", "user": {"client-certificate": str(crt), "client-key": str(key)}}],
            "contexts": [{"name": "node", "context": {"cluster": "local", "user": "node"}}]}))
        hard_nofile = subprocess.run(["sh", "-c", "ulimit -Hn"], capture_output=True, text=True).stdout.strip()
        config = w / "kubelet.json"
        # JSON is YAML; each setting's reason: PRODUCTION.md, "A real kubelet here".
        config.write_text(json.dumps({
            "apiVersion": "kubelet.config.k8s.io/v1beta1", "kind": "KubeletConfiguration",
            "address": "127.0.0.1", "port": self.port, "readOnlyPort": 0,
            "healthzBindAddress": "127.0.0.1", "healthzPort": free_port(),
            "tlsCertFile": str(pki / "kubelet.crt"), "tlsPrivateKeyFile": str(pki / "kubelet.key"),
            "authentication": {"anonymous": {"enabled": False}, "webhook": {"enabled": False},
                               "x509": {"clientCAFile": str(pki / "ca.crt")}},
            "authorization": {"mode": "AlwaysAllow"},
            "cgroupDriver": "cgroupfs", "cgroupRoot": f"/criteo-{self.spec.name}",
            "failSwapOn": False, "makeIPTablesUtilChains": False, "oomScoreAdj": 0,
            "maxOpenFiles": int(hard_nofile) if hard_nofile.isdigit() else 1048576,
            "volumePluginDir": f"{KUBELET_ROOT}/volume-plugins",
            # the images are imported, not pulled: never collect them
            "imageGCHighThresholdPercent": 100, "imageGCLowThresholdPercent": 99,
            "evictionHard": {"memory.available": "100Mi", "nodefs.available": "1%", "imagefs.available": "1%"},
        }, indent=2))
        return config, kubeconfig

    def start(self) -> LocalNode:
        try:
            if not self.processes:
                self.start_containerd()
            if self.refresh_images:
                self.import_images()
            self.check_images()
            config, kubeconfig = self._kubelet_files()
            labels = ",".join(f"{k}={v}" for k, v in self.spec.labels.items())
            kubelet = str(kube_cache() / "bin" / "kubelet")
            if not os.access(kubelet, os.X_OK):
                raise FileNotFoundError(f"{kubelet} is missing: run `make kube-build`")
            supervisor = self.processes[0].proc.pid
            # kubelet in the supervisor's mount namespace; it dies with its parent like every server here
            proc = ServerProcess(f"kubelet {self.spec.name}", [
                "nsenter", "-t", supervisor, "-m", "--", kubelet, f"--config={config}", f"--kubeconfig={kubeconfig}",
                f"--root-dir={KUBELET_ROOT}", f"--cert-dir={KUBELET_ROOT}/pki",
                # refused as a loopback address, so kubelet leaves the addresses to _patch_status (else it
                # would advertise the host's interface, which kubelet does not listen on)
                f"--hostname-override={self.spec.name}", "--node-ip=127.0.0.1", f"--node-labels={labels}",
                f"--register-with-taints={','.join(self.spec.taints)}",
                "--container-runtime=remote",
                f"--container-runtime-endpoint=unix://{self.cache / 'containerd.sock'}", "--v=1"],
                self.kubelet_log, ready=self._registered)
            self.processes.append(proc)
            proc.start(timeout_s=120)
            (self.cache / "kubelet.pid").write_text(str(proc.proc.pid))   # the supervisor stops it first
            self._patch_status()
            self._wait_ready(timeout_s=180)
        except BaseException:
            self.stop()
            raise
        return self

    def _core(self):
        from kubernetes import client

        return client.CoreV1Api(self.control_plane.api_client())

    def _registered(self) -> bool:
        from kubernetes.client.rest import ApiException

        try:
            self._core().read_node(self.spec.name)
            return True
        except ApiException:
            return False

    def _patch_status(self) -> None:
        """The addresses the API server uses to reach kubelet (logs), and the GPUs it advertises."""
        status: dict = {"addresses": [{"type": "InternalIP", "address": "127.0.0.1"},
                                      {"type": "Hostname", "address": self.spec.name}]}
        if self.spec.gpus:
            status["capacity"] = {GPU_RESOURCE: str(self.spec.gpus)}
        self._core().patch_node_status(self.spec.name, {"status": status})

    def _wait_ready(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        core = self._core()
        while time.monotonic() < deadline:
            node = core.read_node(self.spec.name)
            ready = any(c.type == "Ready" and c.status == "True" for c in node.status.conditions or [])
            gpus_ok = not self.spec.gpus or (node.status.allocatable or {}).get(GPU_RESOURCE) == str(self.spec.gpus)
            if ready and gpus_ok:
                return
            if not self.running:
                raise NodeError(f"node {self.spec.name} stopped while starting:\n{self.tail()}")
            time.sleep(0.5)
        raise NodeError(f"node {self.spec.name} was not Ready after {timeout_s:g}s:\n{self.tail()}")

    def stop(self) -> None:
        # kubelet first (it would restart what is killed under it), then the supervisor's cleanup
        for proc in reversed(self.processes):
            proc.stop(timeout_s=60)
        self.processes = []

    def container_pid(self, container_id: str) -> int | None:
        """The host PID of a pod's container (containerStatuses[].containerID without its scheme)."""
        out = subprocess.run([*self.ctr, "tasks", "ls"], capture_output=True, text=True).stdout
        for line in out.splitlines()[1:]:
            parts = line.split()
            if parts and parts[0] == container_id.split("://")[-1]:
                return int(parts[1])
        return None


def import_pipeline_images() -> None:
    """Each pipeline node's images into its containerd (started and stopped here)."""
    for spec in pipeline_nodes():
        node = LocalNode(LocalKubernetes(node_cache() / "import"), spec, work_dir=node_cache() / "import" / spec.name)
        t0 = time.monotonic()
        try:
            node.start_containerd()
            imported = node.import_images()
        finally:
            node.stop()
        print(f"node {spec.name}: {', '.join(imported) or 'images up to date'} ({time.monotonic() - t0:.0f} s)")


def up(work_dir: str, port: int | None) -> int:
    """The control plane and both nodes in the foreground, until stopped (`make kube-up`)."""
    from contextlib import ExitStack

    from .kube import serve
    from .process import stop_on_sigterm

    stop_on_sigterm()
    try:
        with LocalKubernetes(work_dir, port) as kube, ExitStack() as nodes:
            for spec in pipeline_nodes():
                nodes.enter_context(LocalNode(kube, spec, refresh_images=True))
            return serve(kube)
    except KeyboardInterrupt:
        return 0  # asked to stop before it was serving: `with` stopped the nodes and the control plane


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["import-images", "up"])
    parser.add_argument("--work-dir", default=".data/kube")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    if not shutil.which("containerd"):
        raise SystemExit("containerd is missing: run `make kube-build`")
    if args.command == "up":
        return up(args.work_dir, args.port)
    import_pipeline_images()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["LocalNode", "NodeSpec", "pipeline_nodes", "step_image"]
