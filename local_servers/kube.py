"""A real Kubernetes control plane on 127.0.0.1, for the pod runtime's tests and demos.

etcd (Debian's etcd-server), kube-apiserver, kube-controller-manager and kube-scheduler v1.20.2
(built from Debian's source package by scripts/kube/build.sh, cached outside the repository),
with TLS from certificates made here by openssl, a bearer token in `system:masters`, RBAC and the
ServiceAccount admission. Its nodes are real kubelets with containerd (local_servers.kubelet).

    with LocalKubernetes(work_dir) as kube:          # ready in about 6 s
        kube.kubeconfig                              # a kubeconfig file for clients and Airflow
        kube.connection_uri()                        # AIRFLOW_CONN_KUBERNETES_DEFAULT

    python -m local_servers.kube --work-dir .data/kube    # with the pipeline's two nodes, until Ctrl-C
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import ssl
import subprocess
import sys
import urllib.request
from pathlib import Path

from .process import LocalServer, ServerProcess, free_port, serve_until_stopped, stop_on_sigterm

KUBE_VERSION = "1.20.2"
SERVICE_CIDR = "10.0.0.0/24"
COMPONENTS = ("kube-apiserver", "kube-controller-manager", "kube-scheduler")


def kube_cache() -> Path:
    """Where scripts/kube/build.sh leaves the binaries (outside the repository)."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "criteo-mlops" / f"kube-{KUBE_VERSION}"
    return Path(os.environ.get("KUBE_CACHE", default))


def binaries() -> dict[str, str]:
    """Each component's executable; a clear error naming `make kube-build` when one is missing."""
    found = {c: str(kube_cache() / "bin" / c) for c in COMPONENTS}
    found["etcd"] = shutil.which("etcd") or "/usr/bin/etcd"
    missing = [f"{name} ({path})" for name, path in found.items() if not os.access(path, os.X_OK)]
    if missing:
        raise FileNotFoundError(f"the local control plane is not built: missing {', '.join(missing)}; "
                                f"run `make kube-build` (scripts/kube/build.sh, about 10 minutes once)")
    return found


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True)


def make_certificates(pki: Path) -> None:
    """A CA; the apiserver's serving cert (127.0.0.1 and the in-cluster names); a serving cert for
    the kubelets' ports, which the apiserver verifies; the service-account key pair."""
    pki.mkdir(parents=True, exist_ok=True)
    if (pki / "done").exists():
        return
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "3650", "-subj", "/CN=criteo-local-ca",
             "-keyout", "ca.key", "-out", "ca.crt", cwd=pki)
    sans = {
        "apiserver": "IP:127.0.0.1,IP:10.0.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,"
                     "DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local",
        "kubelet": "IP:127.0.0.1,DNS:localhost",
    }
    for name, san in sans.items():
        (pki / f"{name}.ext").write_text(f"subjectAltName={san}\nextendedKeyUsage=serverAuth,clientAuth\n")
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={name}", "-keyout", f"{name}.key",
                 "-out", f"{name}.csr", cwd=pki)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-days", "3650", "-extfile", f"{name}.ext", "-out", f"{name}.crt", cwd=pki)
    _openssl("genrsa", "-out", "sa.key", "2048", cwd=pki)
    _openssl("rsa", "-in", "sa.key", "-pubout", "-out", "sa.pub", cwd=pki)
    (pki / "done").write_text("")


def write_kubeconfig(path: Path, server: str, ca: Path, token: str) -> None:
    # JSON is YAML: no yaml dependency needed to write it.
    path.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "local",
        "clusters": [{"name": "local", "cluster": {"server": server, "certificate-authority": str(ca)}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "admin"}}],
    }, indent=2))
    path.chmod(0o600)


class LocalKubernetes(LocalServer):
    """`with LocalKubernetes(work_dir) as kube:` etcd, apiserver, controller-manager and scheduler."""

    def __init__(self, work_dir: str | Path, port: int | None = None):
        self.work_dir = Path(work_dir).resolve()
        self.port = port or free_port()
        self.server = f"https://127.0.0.1:{self.port}"
        self.pki = self.work_dir / "pki"
        self.kubeconfig = self.work_dir / "kubeconfig.json"
        self.processes: list[ServerProcess] = []
        self.token = ""

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.running for p in self.processes)

    def _ready(self, path: str) -> bool:
        ctx = ssl.create_default_context(cafile=str(self.pki / "ca.crt"))
        req = urllib.request.Request(self.server + path, headers={"Authorization": f"Bearer {self.token}"})
        try:
            with urllib.request.urlopen(req, context=ctx, timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def start(self) -> LocalKubernetes:
        exe = binaries()
        make_certificates(self.pki)
        self.token = secrets.token_hex(16)
        (self.work_dir / "tokens.csv").write_text(f'{self.token},admin,admin,"system:masters"\n')
        write_kubeconfig(self.kubeconfig, self.server, self.pki / "ca.crt", self.token)
        logs = self.work_dir / "logs"
        etcd_port, etcd_peer = free_port(), free_port()
        etcd_url = f"http://127.0.0.1:{etcd_port}"
        pki = self.pki
        try:
            self._run("etcd", [
                exe["etcd"], "--data-dir", self.work_dir / "etcd", "--listen-client-urls", etcd_url,
                "--advertise-client-urls", etcd_url, "--listen-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{etcd_peer}",
                "--initial-cluster", f"default=http://127.0.0.1:{etcd_peer}", "--log-level", "warn"],
                logs, ready=lambda: _http_ok(f"{etcd_url}/health"))
            self._run("kube-apiserver", [
                exe["kube-apiserver"], "--etcd-servers", etcd_url, "--bind-address", "127.0.0.1",
                "--advertise-address", "127.0.0.1", "--secure-port", self.port, "--insecure-port", "0",
                "--tls-cert-file", pki / "apiserver.crt", "--tls-private-key-file", pki / "apiserver.key",
                "--client-ca-file", pki / "ca.crt", "--token-auth-file", self.work_dir / "tokens.csv",
                "--authorization-mode", "Node,RBAC",
                "--service-account-issuer", "https://kubernetes.default.svc.cluster.local",
                "--service-account-key-file", pki / "sa.pub", "--service-account-signing-key-file", pki / "sa.key",
                "--service-cluster-ip-range", SERVICE_CIDR,
                # The kubelets' ports serve pod logs; their certificate is checked.
                "--kubelet-certificate-authority", pki / "ca.crt", "--kubelet-preferred-address-types", "InternalIP",
                "--kubelet-client-certificate", pki / "apiserver.crt", "--kubelet-client-key", pki / "apiserver.key",
                "--allow-privileged=false"],
                logs, ready=lambda: self._ready("/readyz"), timeout_s=90)
            self._run("kube-controller-manager", [
                exe["kube-controller-manager"], "--kubeconfig", self.kubeconfig, "--leader-elect=false",
                "--port", "0", "--secure-port", "0", "--use-service-account-credentials=false",
                "--service-account-private-key-file", pki / "sa.key", "--root-ca-file", pki / "ca.crt",
                "--controllers", "*,-csrsigning,-csrapproving,-csrcleaner"],
                logs)
            self._run("kube-scheduler", [
                exe["kube-scheduler"], "--kubeconfig", self.kubeconfig, "--leader-elect=false",
                "--port", "0", "--secure-port", "0"], logs)
        except BaseException:
            self.stop()
            raise
        return self

    def _run(self, name: str, argv: list, logs: Path, ready=None, timeout_s: float = 60, env=None) -> None:
        proc = ServerProcess(name, [str(a) for a in argv], logs / f"{name}.log", ready=ready, env=env)
        self.processes.append(proc)
        proc.start(timeout_s=timeout_s)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        self.processes = []

    def tail(self, lines: int = 30) -> str:
        return "\n\n".join(f"== {p.name}\n{p.tail(lines)}" for p in self.processes)

    def connection_uri(self) -> str:
        """The Airflow connection (kubernetes_default) as JSON: the kubeconfig file, no secrets inline."""
        return json.dumps({"conn_type": "kubernetes",
                           "extra": {"kube_config_path": str(self.kubeconfig), "namespace": "default"}})

    def api_client(self):
        """A kubernetes.client.ApiClient for this server (the `kubernetes` package is imported here)."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def main(argv: list[str] | None = None) -> int:
    """The control plane alone (`make kube-up` adds the nodes: python -m local_servers.kubelet up)."""
    import argparse

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--work-dir", default=".data/kube")
    parser.add_argument("--port", type=int, default=None)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    try:
        with LocalKubernetes(args.work_dir, args.port) as kube:
            return serve(kube)
    except KeyboardInterrupt:
        return 0  # asked to stop before it was serving: `with` stopped the control plane


def serve(kube: LocalKubernetes) -> int:
    """Say how to reach the running control plane, then serve until stopped; 1 if it died."""
    print(f"control plane ready: {kube.server}\nkubeconfig: {kube.kubeconfig}\n"
          f"Airflow connection: AIRFLOW_CONN_KUBERNETES_DEFAULT='{kube.connection_uri()}'", flush=True)
    if not serve_until_stopped(kube):
        print(f"the control plane stopped:\n{kube.tail()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
