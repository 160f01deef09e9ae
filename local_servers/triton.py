"""A real Triton Inference Server as a local process: the embedded default's stand-in for the
Triton deployment on GKE (images/triton).

The `tritonserver` binary (2.51) and its python backend come from the `nvidia-pytriton` wheel in
`.venv-triton` (installed by `make setup`). That wheel ships the python backend only, which is
what the model needs: `criteo_dcn` is a python-backend model running onnxruntime. Setting it up
outside pytriton takes three things:

- a backend directory `backends/python/` holding `libtriton_python.so`,
  `triton_python_backend_utils.py` and the stub built for Python 3.11
  (`python_backend_stubs/3.11/triton_python_backend_stub`); links here, under `work_dir`;
- PATH with `.venv-triton/bin` first: the stub's interpreter is that venv's python, so the model
  imports its numpy and onnxruntime;
- LD_LIBRARY_PATH with that interpreter's own lib dir (else the stub links the system's
  libpython, a different 3.11) and the wheel's `nvidia_pytriton.libs` (the binaries' RPATH is
  relative to where they lie in the wheel, so it does not resolve through the links).

The server binds HTTP, gRPC and metrics to 127.0.0.1 on free ports, with explicit model control:
nothing loads until a client asks (`TritonHook.load_model`), as in production. The CLI asks, once
the server is ready, for every model whose config.pbtxt names a version, so a restarted server
serves the production version at once (`--no-load`: nothing).

    python -m local_servers.triton --model-repository .data/bucket/model_repository
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from .process import REPO_ROOT, LocalServer, ServerProcess, free_port, http_ok, serve_until_stopped, stop_on_sigterm

TRITON_VENV = REPO_ROOT / ".venv-triton"
PYTHON_VERSION = "3.11"  # the stub must match the venv's interpreter


def _site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{PYTHON_VERSION}" / "site-packages"


def triton_dist(venv: Path = TRITON_VENV) -> Path:
    """The tritonserver distribution inside the pytriton wheel; a clear error when it is missing."""
    dist = _site_packages(venv) / "pytriton" / "tritonserver"
    if not (dist / "bin" / "tritonserver").exists():
        raise FileNotFoundError(
            f"tritonserver not found at {dist / 'bin' / 'tritonserver'}: the local Triton comes from the "
            f"nvidia-pytriton wheel in {venv}; run `make setup`")
    return dist


def _interpreter_libdir(python: Path) -> str:
    """The lib dir of the venv's base interpreter (where its libpython3.11.so lies)."""
    out = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_config_var('LIBDIR'))"],
                         capture_output=True, text=True, timeout=60, check=True)
    return out.stdout.strip()


class LocalTriton(LocalServer):
    """`with LocalTriton(model_repository) as t:` a ready tritonserver at `t.grpc_url`.

    :param model_repository: a folder, or gs://bucket/path (pass the emulator's variables in `env`).
    :param work_dir: where the backend directory is prepared.
    :param log_path: the server's output (default: work_dir/tritonserver.log).
    :param env: extra environment, e.g. LocalGcsEmulator.env() for a gs:// repository.
    :param log_verbose: tritonserver --log-verbose level.
    :param extra_args: more tritonserver flags.
    """

    def __init__(self, model_repository: str | Path, work_dir: str | Path | None = None,
                 log_path: str | Path | None = None, env: dict[str, str] | None = None,
                 log_verbose: int = 0, extra_args: list[str] | None = None, venv: str | Path | None = None,
                 startup_timeout_s: float = 60, grpc_port: int | None = None, http_port: int | None = None,
                 metrics_port: int | None = None):
        self.model_repository = str(model_repository)
        if work_dir is None:
            import tempfile

            work_dir = tempfile.mkdtemp(prefix="criteo-triton-")
        self.work_dir = Path(work_dir)
        self.log_path = Path(log_path) if log_path else self.work_dir / "tritonserver.log"
        self.extra_env = dict(env or {})
        self.log_verbose = log_verbose
        self.extra_args = list(extra_args or [])
        self.venv = Path(venv) if venv else TRITON_VENV
        self.startup_timeout_s = startup_timeout_s
        # Free ports unless given (the CLI lets a user pin e.g. gRPC to 8001, the Variable's default).
        ports: set[int] = {p for p in (grpc_port, http_port, metrics_port) if p}

        def pick(port: int | None) -> int:
            while not port or (port in ports and port not in (grpc_port, http_port, metrics_port)):
                port = free_port()
            ports.add(port)
            return port

        self.grpc_port, self.http_port, self.metrics_port = pick(grpc_port), pick(http_port), pick(metrics_port)
        self.process: ServerProcess | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def backend_directory(self) -> Path:
        """work_dir/backends/python with the python backend and the 3.11 stub (links)."""
        dist = triton_dist(self.venv)
        stub = dist / "python_backend_stubs" / PYTHON_VERSION / "triton_python_backend_stub"
        if not stub.exists():
            raise FileNotFoundError(f"python backend stub for Python {PYTHON_VERSION} missing at {stub}; "
                                    "run `make setup`")
        backends = self.work_dir / "backends"
        python_dir = backends / "python"
        python_dir.mkdir(parents=True, exist_ok=True)
        for src in (dist / "backends" / "python" / "libtriton_python.so",
                    dist / "backends" / "python" / "triton_python_backend_utils.py", stub):
            dst = python_dir / src.name
            if dst.is_symlink() or dst.exists():
                if dst.is_symlink() and os.readlink(dst) == str(src):
                    continue
                dst.unlink()
            dst.symlink_to(src)
        return backends

    def environment(self) -> dict[str, str]:
        python = self.venv / "bin" / "python"
        if not python.exists():
            raise FileNotFoundError(f"{python} missing: the python backend's interpreter; run `make setup`")
        libs = _site_packages(self.venv) / "nvidia_pytriton.libs"
        env = dict(os.environ)
        env.update(self.extra_env)
        env["PATH"] = os.pathsep.join([str(self.venv / "bin"), env.get("PATH", "/usr/bin:/bin")])
        env["LD_LIBRARY_PATH"] = os.pathsep.join(
            filter(None, [_interpreter_libdir(python), str(libs), env.get("LD_LIBRARY_PATH")]))
        env["VIRTUAL_ENV"] = str(self.venv)
        env.pop("PYTHONPATH", None)   # the stub's interpreter must not see another venv's packages
        env.pop("PYTHONHOME", None)
        env.setdefault("CRITEO_ORT_THREADS", "1")
        return env

    def argv(self) -> list[str]:
        dist = triton_dist(self.venv)
        return [
            str(dist / "bin" / "tritonserver"),
            f"--model-repository={self.model_repository}",
            f"--backend-directory={self.backend_directory()}",
            f"--cache-directory={dist / 'caches'}",
            "--model-control-mode=explicit",
            # Ready means "the server is up and answers". With strict readiness (Triton's default)
            # /v2/health/ready is false whenever any model version is not READY, e.g. for the ~1 s in
            # which the previous version is UNLOADING after a switch; callers check model readiness
            # per version instead (TritonHook.ready_versions).
            "--strict-readiness=false",
            "--exit-on-error=false",        # a model that fails to load must not stop the server
            "--exit-timeout-secs=10",       # on SIGTERM: in-flight requests get 10 s, then it exits
            "--http-address=127.0.0.1", f"--http-port={self.http_port}",
            "--grpc-address=127.0.0.1", f"--grpc-port={self.grpc_port}",
            "--metrics-address=127.0.0.1", f"--metrics-port={self.metrics_port}",
            "--allow-gpu-metrics=false",
            # Latency quantiles per model version (nv_inference_*_summary_us): the dashboard's p50/p99.
            "--metrics-config=summary_latencies=true",
            "--pinned-memory-pool-byte-size=0",  # no GPU: no pinned host memory
            f"--log-verbose={self.log_verbose}",
            *self.extra_args,
        ]

    def check_links(self, env: dict[str, str]) -> None:
        """`ldd` on the stub and the backend library with the server's environment: every library
        must resolve, libpython to the venv interpreter's own (a failure here would otherwise only
        show at the first model load, as a stub that dies)."""
        import shutil

        if not shutil.which("ldd"):
            return
        python_dir = self.work_dir / "backends" / "python"
        libdir = env["LD_LIBRARY_PATH"].split(os.pathsep)[0]
        for binary in (python_dir / "triton_python_backend_stub", python_dir / "libtriton_python.so"):
            out = subprocess.run(["ldd", str(binary)], env=env, capture_output=True, text=True, timeout=60).stdout
            missing = [line.strip() for line in out.splitlines() if "not found" in line]
            if missing:
                raise FileNotFoundError(f"{binary.name}: shared libraries not found with LD_LIBRARY_PATH="
                                        f"{env['LD_LIBRARY_PATH']}: {missing}; run `make setup`")
            libpython = [line.strip() for line in out.splitlines() if "libpython" in line]
            if libpython and libdir not in libpython[0]:
                raise RuntimeError(f"{binary.name} links {libpython[0]}, not the libpython of {self.venv} in {libdir}")

    def start(self) -> LocalTriton:
        if self.running:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        argv, env = self.argv(), self.environment()
        self.check_links(env)
        ready_url = f"{self.http_url}/v2/health/ready"
        self.process = ServerProcess("tritonserver", argv, self.log_path, env=env, ready=lambda: http_ok(ready_url),
                                     cwd=self.work_dir)
        # Once in many starts on a loaded machine, tritonserver 2.51 aborts while its gRPC server
        # comes up ("Epoll1Poller ... epoll_wait error: Bad file descriptor", SIGABRT): start it again.
        self.process.start(timeout_s=self.startup_timeout_s, crash_retries=1)
        return self


def production_models(model_repository: str) -> list[str]:
    """The models of a repository (a folder or gs://) whose config.pbtxt exists: the ones that name
    a version to serve (deploy writes config.pbtxt when it promotes a version)."""
    import fsspec

    fs, root = fsspec.core.url_to_fs(model_repository)
    return sorted(p.rstrip("/").split("/")[-2] for p in fs.glob(f"{root.rstrip('/')}/*/config.pbtxt"))


def load_production(triton: LocalTriton, models: list[str] | None = None) -> dict[str, list[int]]:
    """Load `models` (default: every model whose config.pbtxt names a version) on a started
    server, so that it serves production at once; returns each model's ready versions."""
    from operators.hooks.triton import TritonHook

    hook = TritonHook(triton.grpc_url, timeout_s=300)
    loaded = {}
    for model in production_models(triton.model_repository) if models is None else models:
        hook.load_model(model)
        loaded[model] = hook.ready_versions(model)
    return loaded


def main(argv: list[str] | None = None) -> int:
    import argparse
    import logging
    import time

    p = argparse.ArgumentParser(prog="python -m local_servers.triton",
                                description="Run the local Triton (tritonserver 2.51 from .venv-triton) in the "
                                            "foreground on a model repository, explicit model control.")
    p.add_argument("--model-repository", required=True, help="a folder or gs://bucket/path")
    p.add_argument("--work-dir", default=None, help="backend directory and log (default: a temporary folder)")
    p.add_argument("--load", action="append", default=[], metavar="MODEL",
                   help="load this model once ready (default: every model whose config.pbtxt names a version, "
                        "so a restarted server serves production at once)")
    p.add_argument("--no-load", action="store_true", help="load nothing: wait for a client to ask (deploy does)")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--grpc-port", type=int, default=None, help="default: a free port")
    p.add_argument("--http-port", type=int, default=None, help="default: a free port")
    p.add_argument("--metrics-port", type=int, default=None, help="default: a free port")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    repo = a.model_repository if "://" in a.model_repository else str(Path(a.model_repository).resolve())
    if "://" not in repo:
        Path(repo).mkdir(parents=True, exist_ok=True)  # Triton refuses to start on a missing folder
    triton = LocalTriton(repo, work_dir=a.work_dir, log_verbose=a.log_verbose, grpc_port=a.grpc_port,
                         http_port=a.http_port, metrics_port=a.metrics_port)
    t0 = time.monotonic()
    stop_on_sigterm()
    try:
        with triton:
            print(f"tritonserver ready in {time.monotonic() - t0:.1f}s on {repo}\n  gRPC    {triton.grpc_url}\n"
                  f"  HTTP    {triton.http_url}\n  metrics {triton.metrics_url}\n  log     {triton.log_path}\n"
                  f"for the DAGs: export AIRFLOW_VAR_CRITEO_TRITON_GRPC_URL={triton.grpc_url}", flush=True)
            loaded = {} if a.no_load else load_production(triton, a.load or None)
            for model, versions in loaded.items():
                print(f"loaded {model}: versions ready {versions}", flush=True)
            if not loaded and not a.no_load:
                print(f"no model in {repo} names a version to serve yet: nothing loaded (deploy loads it)", flush=True)
            if not serve_until_stopped(triton):
                print(f"tritonserver exited; last lines of {triton.log_path}:\n{triton.tail()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass  # asked to stop before it was serving: `with` stopped tritonserver
    return 0


if __name__ == "__main__":
    sys.exit(main())
