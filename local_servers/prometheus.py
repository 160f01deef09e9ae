"""A real Prometheus server as a local process: the embedded default's stand-in for the managed
Prometheus that scrapes the monitor and Triton in production.

The binary is Debian's `prometheus` (2.42, installed by `make setup`). The server gets its own
`prometheus.yml` (one scrape job per target, `metrics_path` taken from the target's URL), its own
TSDB folder under `work_dir`, and listens on 127.0.0.1 on a free port. `--web.enable-lifecycle`
is on, so targets can be added while it runs (`add_target`: the config is rewritten, then
`POST /-/reload`). Ready when `/-/ready` answers 200.

    with LocalPrometheus(["127.0.0.1:8002", "http://127.0.0.1:9100/metrics"], work_dir=...) as prom:
        PrometheusHook(prom.url).query("up")

    python -m local_servers.prometheus --target 127.0.0.1:8002
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path
from urllib.parse import urlsplit

from .process import LocalServer, ServerProcess, free_port, http_ok, serve_until_stopped, stop_on_sigterm

BINARY_CANDIDATES = ("/usr/bin/prometheus",)


def prometheus_binary(binary: str | None = None) -> str:
    """The prometheus executable; a clear error naming `make setup` when it is missing."""
    candidates = [binary] if binary else [shutil.which("prometheus"), *BINARY_CANDIDATES]
    for c in candidates:
        if c and Path(c).is_file():
            return str(c)
    looked = ", ".join(c for c in candidates if c) or "PATH"
    raise FileNotFoundError(
        f"the prometheus binary was not found (looked at {looked}): the local Prometheus is Debian's "
        f"`prometheus` package; run `make setup` (or `apt-get install -y --no-install-recommends prometheus`)")


def _duration(seconds: float) -> str:
    """Seconds as a Prometheus duration ("1s", "500ms")."""
    ms = max(1, int(round(float(seconds) * 1000)))
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


def scrape_job(target: str, index: int) -> dict:
    """One scrape job for "host:port" (path /metrics) or a full URL "http://host:port/path"."""
    parts = urlsplit(target if "://" in target else f"http://{target}")
    if not parts.hostname or not parts.port:
        raise ValueError(f"scrape target {target!r}: expected 'host:port' or 'http://host:port/path'")
    job = f"target{index}_{parts.hostname.replace('.', '_')}_{parts.port}"
    return {
        "job_name": job,
        "scheme": parts.scheme or "http",
        "metrics_path": parts.path or "/metrics",
        "static_configs": [{"targets": [parts.netloc]}],
    }


class LocalPrometheus(LocalServer):
    """`with LocalPrometheus(targets, work_dir, log_path) as p:` a ready Prometheus at `p.url`.

    :param scrape_targets: "127.0.0.1:PORT" (scraped at /metrics) or full metrics URLs.
    :param work_dir: holds prometheus.yml and the TSDB (`data/`).
    :param log_path: the server's output (default: work_dir/prometheus.log).
    :param scrape_interval_s: how often every target is scraped (and rules evaluated).
    :param binary: the prometheus executable (default: found on PATH, else /usr/bin/prometheus).
    :param port: the port to listen on (default: a free one).
    """

    def __init__(self, scrape_targets: list[str], work_dir: str | Path, log_path: str | Path | None = None,
                 scrape_interval_s: float = 1.0, binary: str | None = None, port: int | None = None,
                 startup_timeout_s: float = 60):
        self.targets = [str(t) for t in scrape_targets]
        for i, t in enumerate(self.targets):
            scrape_job(t, i)  # a malformed target fails here, not as a Prometheus config error
        self.work_dir = Path(work_dir)
        self.log_path = Path(log_path) if log_path else self.work_dir / "prometheus.log"
        self.scrape_interval_s = float(scrape_interval_s)
        self.binary = binary
        self.port = port or free_port()
        self.startup_timeout_s = startup_timeout_s
        self.process: ServerProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.work_dir / "prometheus.yml"

    def config(self) -> dict:
        interval = _duration(self.scrape_interval_s)
        return {
            "global": {"scrape_interval": interval, "scrape_timeout": interval, "evaluation_interval": interval},
            "scrape_configs": [scrape_job(t, i) for i, t in enumerate(self.targets)],
        }

    def write_config(self) -> Path:
        """prometheus.yml (JSON is valid YAML), written atomically: a reload never reads half a file."""
        self.work_dir.mkdir(parents=True, exist_ok=True)
        tmp = self.config_path.with_suffix(".yml.tmp")
        tmp.write_text(json.dumps(self.config(), indent=2) + "\n")
        tmp.replace(self.config_path)
        return self.config_path

    def argv(self) -> list[str]:
        return [
            prometheus_binary(self.binary),
            f"--config.file={self.config_path}",
            f"--storage.tsdb.path={self.work_dir / 'data'}",
            f"--web.listen-address=127.0.0.1:{self.port}",
            "--web.enable-lifecycle",
            "--log.level=info",
        ]

    def start(self) -> LocalPrometheus:
        if self.running:
            return self
        argv = self.argv()  # the missing-binary error comes before anything is written
        self.write_config()
        self.process = ServerProcess("prometheus", argv, self.log_path,
                                     ready=lambda: http_ok(f"{self.url}/-/ready"), cwd=self.work_dir)
        self.process.start(timeout_s=self.startup_timeout_s)
        return self

    def add_target(self, target: str) -> None:
        """Scrape one more target: rewrite the config and ask the running server to reload it."""
        scrape_job(target, len(self.targets))
        self.targets.append(str(target))
        self.write_config()
        if self.running:
            self.reload()

    def reload(self) -> None:
        import httpx

        resp = httpx.post(f"{self.url}/-/reload", timeout=10)
        if resp.status_code != 200:
            raise RuntimeError(f"Prometheus at {self.url} refused to reload {self.config_path}: "
                               f"HTTP {resp.status_code} {resp.text.strip()}")


def main(argv=None) -> int:
    import argparse
    import sys
    import tempfile

    p = argparse.ArgumentParser(prog="python -m local_servers.prometheus",
                                description="Run a local Prometheus on 127.0.0.1 scraping targets.")
    p.add_argument("--target", action="append", default=[], help="host:port or a full metrics URL (repeatable)")
    p.add_argument("--work-dir", default=None)
    p.add_argument("--scrape-interval-s", type=float, default=1.0)
    p.add_argument("--port", type=int, default=None,
                   help="default: a free port (9090 is the Variable criteo_prometheus_url's default)")
    a = p.parse_args(argv)
    work = a.work_dir or tempfile.mkdtemp(prefix="criteo-prometheus-")
    stop_on_sigterm()
    try:
        with LocalPrometheus(a.target, work_dir=work, scrape_interval_s=a.scrape_interval_s, port=a.port) as prom:
            print(f"Prometheus ready at {prom.url} (config {prom.config_path}, log {prom.log_path}); Ctrl-C stops it",
                  flush=True)
            if not serve_until_stopped(prom):
                print(f"prometheus exited; last lines of {prom.log_path}:\n{prom.tail()}", file=sys.stderr)
                return 1
    except KeyboardInterrupt:
        pass  # asked to stop before it was serving: `with` stopped prometheus
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
