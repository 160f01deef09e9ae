"""The serving side of the embedded default, started together: Triton on the bucket's model
repository, the monitor on the bucket's request log and retrain log, and Prometheus scraping both.

Used by `make demo-loop`, the loop tests and the serving bench. It exports the Airflow Variables
(as AIRFLOW_VAR_*) that point the DAG tasks at these servers, and stops everything on exit.
"""
from __future__ import annotations

import os
from contextlib import ExitStack
from pathlib import Path

from criteo_kernel import retrain_log
from criteo_kernel.signature import MODEL_NAME

from .process import ServerProcess, free_port, http_ok


def monitor_process(request_log: str, model_repository: str, model: str, log_path: Path,
                    window_rows: int = 5000, min_rows: int = 500, interval_s: float = 1.0,
                    retrain_log: str | None = None) -> ServerProcess:
    """The monitor (images/monitoring) as a local process of its image's environment."""
    from operators.runtime.catalogue import IMAGES
    from operators.runtime.local import LOCAL_ENVIRONMENTS

    local = LOCAL_ENVIRONMENTS["monitoring"]
    port = free_port()
    env = dict(os.environ, PYTHONPATH=local.pythonpath, PYTHONUNBUFFERED="1")
    argv = [local.python, "-m", IMAGES["monitoring"], "monitor", "--request-log", request_log,
            "--model-repository", model_repository, "--model", model, "--port", str(port),
            "--window-rows", str(window_rows), "--min-rows", str(min_rows), "--interval-s", str(interval_s)]
    if retrain_log:
        argv += ["--retrain-log", retrain_log]
    proc = ServerProcess("monitor", argv, log_path, env=env, ready=lambda: http_ok(f"http://127.0.0.1:{port}/metrics"))
    proc.metrics_url = f"http://127.0.0.1:{port}/metrics"
    return proc


def ensure_folder(url: str) -> None:
    """A folder, or on gs:// a placeholder object under the prefix: Triton refuses to start on a
    model repository it cannot stat, and an empty GCS prefix does not exist."""
    if "://" not in url:
        Path(url).mkdir(parents=True, exist_ok=True)
        return
    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if not fs.exists(path):
        fs.pipe_file(f"{path}/.keep", b"")


def _gcs_env() -> dict[str, str]:
    """The emulator's variables from this process's environment, for Triton's GCS client."""
    keys = ("STORAGE_EMULATOR_HOST", "CLOUD_STORAGE_EMULATOR_ENDPOINT", "GOOGLE_CLOUD_PROJECT")
    return {k: os.environ[k] for k in keys if k in os.environ}


class ServingStack(ExitStack):
    """with ServingStack(base, work) as s: s.triton, s.monitor, s.prometheus are up, and the Variables
    criteo_triton_grpc_url / criteo_prometheus_url point at them; monitor=False or prometheus=False
    leave those out (the training demo and tests need Triton only, for deploy)."""

    def __init__(self, base: str | Path, work_dir: str | Path, model: str = MODEL_NAME, monitor: bool = True,
                 prometheus: bool = True, window_rows: int = 5000, min_rows: int = 500,
                 scrape_interval_s: float = 1.0, triton_grpc_port: int | None = None,
                 prometheus_port: int | None = None):
        super().__init__()
        self.triton_grpc_port = triton_grpc_port      # None: free ports (tests); make airflow pins the Variables'
        self.prometheus_port = prometheus_port
        self.base = str(base).rstrip("/")   # a folder or gs://bucket/prefix
        self.work_dir = Path(work_dir)
        self.model = model
        self.with_monitor = monitor
        self.with_prometheus = prometheus
        self.window_rows = window_rows
        self.min_rows = min_rows
        self.scrape_interval_s = scrape_interval_s
        self.triton = self.monitor = self.prometheus = None
        self._saved_env: dict[str, str | None] = {}

    @property
    def model_repository(self) -> str:
        return f"{self.base}/model_repository"

    @property
    def request_log(self) -> str:
        return f"{self.base}/request_log"

    @property
    def retrain_log(self) -> str:
        return retrain_log.folder(self.base)

    def _set_var(self, name: str, value: str) -> None:
        key = f"AIRFLOW_VAR_{name.upper()}"
        self._saved_env.setdefault(key, os.environ.get(key))
        os.environ[key] = value

    def __enter__(self) -> ServingStack:
        super().__enter__()
        from .triton import LocalTriton

        try:
            for folder in (self.model_repository, self.request_log):
                ensure_folder(folder)
            self.triton = LocalTriton(model_repository=self.model_repository, work_dir=self.work_dir / "triton",
                                      log_path=self.work_dir / "triton.log", env=_gcs_env(),
                                      grpc_port=self.triton_grpc_port)
            self.enter_context(self.triton)
            self._set_var("criteo_triton_grpc_url", self.triton.grpc_url)
            targets = [self.triton.metrics_url]
            if self.with_monitor:
                self.monitor = monitor_process(str(self.request_log), str(self.model_repository), self.model,
                                               self.work_dir / "monitor.log", self.window_rows, self.min_rows,
                                               retrain_log=self.retrain_log)
                self.enter_context(self.monitor)
                targets.append(self.monitor.metrics_url)
            if self.with_prometheus:
                from .prometheus import LocalPrometheus

                self.prometheus = LocalPrometheus(targets, work_dir=self.work_dir / "prometheus",
                                                  log_path=self.work_dir / "prometheus.log",
                                                  scrape_interval_s=self.scrape_interval_s,
                                                  port=self.prometheus_port)
                self.enter_context(self.prometheus)
                self._set_var("criteo_prometheus_url", self.prometheus.url)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc):
        try:
            return super().__exit__(*exc)
        finally:
            for key, value in self._saved_env.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value

