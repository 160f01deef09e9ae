"""A real Airflow 3 on the embedded default: its API server (UI and REST), scheduler
(LocalExecutor), DAG processor and triggerer on loopback, with the serving side the DAGs talk to.

    make airflow           # python -m local_servers.airflow start: in the background, prints login and URLs
    make airflow-stop      # python -m local_servers.airflow stop
    python -m local_servers.airflow serve    # the same in the foreground (Ctrl-C stops)

`serve` is one supervisor process: it writes synthetic Criteo days into the bucket if it has none,
starts Triton (serving the production version of the model repository from the start), the monitor
and Prometheus on the addresses the Variables name (criteo_triton_grpc_url, criteo_prometheus_url;
defaults 127.0.0.1:8001 and :9090), then the four Airflow processes, and stops them all when
it is stopped. Each server dies with it (local_servers.process), so nothing outlives a kill -9.

LocalAirflow is also what the live tests start (tests/fixtures/airflow.py), on a home of their own.
"""
from __future__ import annotations

import json
import os
import re
import secrets
import signal
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

from .process import REPO_ROOT, ServerProcess, free_port, http_ok, listening

AIRFLOW = str(Path(sys.executable).parent / "airflow")
USER = "admin"
CONNECT_ARGS_MODULE = "criteo_sqlite_connect"
SQLITE_BUSY_TIMEOUT_S = 60


def known_exit(component: str, log_tail: str) -> str | None:
    """Which known Airflow defect made `component` exit, from the end of its log; None if none.

    Airflow 3.3.2 on SQLite: `airflow backfill create` commits each backfill run as it makes it
    (pysqlite ends a SAVEPOINT opened outside a transaction with a commit). When a later run hits
    "database is locked", `_cleanup_partial_backfill` deletes the backfill and the runs it made,
    though the scheduler may already be scheduling them. `_schedule_all_dag_runs` catches the
    resulting ObjectDeletedError, but its log line reads `run.run_id` of the deleted run, raises
    again, and the scheduler's loop ends. On PostgreSQL the cleanup's rollback takes the runs back
    before anyone sees them."""
    if (component == "scheduler" and "_schedule_all_dag_runs" in log_tail
            and "ObjectDeletedError: Instance '<DagRun" in log_tail):
        return ("Airflow 3.3.2 on SQLite: a failed `backfill create` deleted runs the scheduler was "
                "scheduling (docs/operations.md)")
    return None


class LocalAirflow:
    """The four Airflow processes on one AIRFLOW_HOME, and a REST client logged in with a token.

    :param home: AIRFLOW_HOME (its SQLite database, logs, the passwords file).
    :param env: the environment of every process (Variables as AIRFLOW_VAR_*, CRITEO_* knobs).
    :param port: the API server's port (default: a free one).
    :param password: the admin's password (default: kept in home/passwords.json, made on first start).
    """

    def __init__(self, home: Path, env: dict, port: int | None = None, password: str | None = None,
                 dags_folder: Path = REPO_ROOT / "dags", parallelism: int = 4):
        self.home = Path(home)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.password = password or self._stored_password()
        self.dags_folder = Path(dags_folder)
        self.env = {**env, **self.settings(dags_folder, parallelism)}
        self.processes: list[ServerProcess] = []
        self.token: str | None = None
        self.exited_groups: list[int] = []      # process groups of components that died: stop() ends them
        self.restarts: list[tuple[float, str, int | None]] = []      # (time, component, its exit code)
        self.held: set[str] = set()     # components stopped on purpose (a fault test's kill): revive leaves them

    def _stored_password(self) -> str:
        try:
            return json.loads((self.home / "passwords.json").read_text())[USER]
        except (OSError, ValueError, KeyError):
            return secrets.token_urlsafe(12)

    def _jwt_secret(self) -> str:
        """One secret per home, kept: tokens (the UI's cookie) stay valid across restarts."""
        path = self.home / "jwt_secret"
        if not path.is_file():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(secrets.token_urlsafe(48))
            path.chmod(0o600)
        return path.read_text().strip()

    def settings(self, dags_folder: Path, parallelism: int) -> dict[str, str]:
        """Airflow's configuration as environment variables (also what env.sh exports for the CLI)."""
        return {
            "AIRFLOW_HOME": str(self.home),
            "AIRFLOW__CORE__DAGS_FOLDER": str(dags_folder),
            "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO_ROOT / "plugins"),
            "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
            "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
            "AIRFLOW__CORE__PARALLELISM": str(parallelism),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            "AIRFLOW__API__PORT": str(self.port),
            "AIRFLOW__API__HOST": "127.0.0.1",
            "AIRFLOW__API_AUTH__JWT_SECRET": self._jwt_secret(),
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": f"{USER}:admin",
            "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(self.home / "passwords.json"),
            "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "1",
            "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
            "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "1",
            # SQLite: a writer waits up to SQLITE_BUSY_TIMEOUT_S for the lock (pysqlite's default is 5 s).
            # Under load the scheduler, API server, triggerer and tasks outwait that; a backfill whose
            # dag runs then fail to insert is left behind with none, blocking the DAG's next backfill.
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONNECT_ARGS": f"{CONNECT_ARGS_MODULE}.CONNECT_ARGS",
        }

    def _write_connect_args(self) -> None:
        """The module the setting above names, in $AIRFLOW_HOME/config (on Airflow's sys.path)."""
        config = self.home / "config"
        config.mkdir(parents=True, exist_ok=True)
        (config / f"{CONNECT_ARGS_MODULE}.py").write_text(
            f'"""Written by local_servers.airflow."""\nCONNECT_ARGS = {{"timeout": {SQLITE_BUSY_TIMEOUT_S}}}\n')

    def start(self) -> LocalAirflow:
        self.home.mkdir(parents=True, exist_ok=True)
        self._write_connect_args()
        (self.home / "passwords.json").write_text(json.dumps({USER: self.password}))
        (self.home / "passwords.json").chmod(0o600)
        if not http_ok(self.url, timeout=0.5) and listening(self.port):
            raise RuntimeError(f"port {self.port} is taken by another program; choose another (AIRFLOW_PORT=...)")
        out = subprocess.run([AIRFLOW, "db", "migrate"], env=self.env, capture_output=True, text=True, timeout=300)
        if out.returncode != 0:
            raise RuntimeError(f"airflow db migrate failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        # the deploy tasks' pool (operators/deploy.py): without it they are never scheduled
        out = subprocess.run([sys.executable, "-m", "operators.deploy", "create-pool"], env=self.env,
                             cwd=Path(__file__).resolve().parents[1], capture_output=True, text=True, timeout=120)
        if out.returncode != 0:
            raise RuntimeError(f"creating the deploy pool failed:\n{out.stdout[-2000:]}{out.stderr[-2000:]}")
        try:
            for name, argv in (("api-server", [AIRFLOW, "api-server", "--port", str(self.port)]),
                               ("scheduler", [AIRFLOW, "scheduler"]), ("dag-processor", [AIRFLOW, "dag-processor"]),
                               ("triggerer", [AIRFLOW, "triggerer"])):
                ready = (lambda: http_ok(f"{self.url}/api/v2/monitor/health")) if name == "api-server" else None
                proc = ServerProcess(name, argv, self.home / "logs" / f"{name}.log", env=self.env, ready=ready)
                self.processes.append(proc)
                proc.start(timeout_s=180)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_for_dags(self, dag_ids: list[str] | None = None, timeout_s: float = 300) -> list[str]:
        """Return once the REST API lists every DAG of `dag_ids` (default: each DAG file of the DAGs
        folder), i.e. once the DAG processor has parsed them: before that, `airflow dags list` and the
        UI show no DAGs. Raises naming the DAGs still missing, the import errors and the log to read."""
        wanted = sorted(dag_ids if dag_ids is not None else dag_ids_in(self.dags_folder))
        deadline = time.monotonic() + timeout_s
        missing, errors = wanted, []
        while True:
            try:
                listed = {d["dag_id"] for d in self.call("GET", "/api/v2/dags?limit=100")["dags"]}
                missing = [d for d in wanted if d not in listed]
                if not missing:
                    return wanted
                errors = [f"{e['filename']}: {e['stack_trace'].strip().splitlines()[-1]}"
                          for e in self.call("GET", "/api/v2/importErrors?limit=100")["import_errors"]]
            except (RuntimeError, OSError) as exc:     # the API server still starting, or a transient error
                errors = [str(exc)]
            if time.monotonic() > deadline:
                log = next((p.log_path for p in self.processes if p.name == "dag-processor"),
                           self.home / "logs" / "dag-processor.log")
                raise RuntimeError(
                    f"the DAG processor did not list {', '.join(missing)} within {timeout_s:.0f}s "
                    f"(DAGs folder {self.dags_folder})" + "".join(f"\n  import error: {e}" for e in errors) +
                    f"\nsee the DAG processor's log: {log}")
            time.sleep(1)

    def stop(self) -> None:
        for proc in reversed(self.processes):
            proc.stop()
        for pgid in self.exited_groups:       # what a dead leader left running (a kill -9 orphans its workers)
            try:
                os.killpg(pgid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def revive(self, say=print, crash_loop: tuple[int, float] = (5, 600.0), only_known: bool = False) -> list[str]:
        """Start again each component that has exited, as compose's `restart: unless-stopped` and a
        Deployment's pods do in production. Airflow's components exit on errors they do not handle
        (`known_exit` names the one seen here). Returns the components started again.

        Raises RuntimeError, quoting the log, once one has exited `crash_loop[0]` times within
        `crash_loop[1]` seconds (a crash loop is not healed by restarting it) and, with
        `only_known`, at an exit that is not a known Airflow defect: the tests restart only what
        they can explain, so a crash our code causes still fails them."""
        revived = []
        for proc in self.processes:
            if proc.running or proc.proc is None or proc.name in self.held:
                continue
            code, now, tail = proc.proc.returncode, time.time(), proc.tail(200, this_start=True)
            known = known_exit(proc.name, tail)
            if only_known and known is None:
                raise RuntimeError(f"Airflow's {proc.name} exited (code {code}), and not for a known Airflow "
                                   f"defect; last lines of {proc.log_path}:\n{proc.tail(60)}")
            self.exited_groups.append(proc.proc.pid)      # each ServerProcess leads a session of its own
            self.restarts.append((now, proc.name, code))
            limit, window_s = crash_loop
            recent = [t for t, name, _ in self.restarts if name == proc.name and now - t < window_s]
            if len(recent) >= limit:
                raise RuntimeError(f"Airflow's {proc.name} exited {len(recent)} times within {window_s:.0f}s "
                                   f"(last exit code {code}); not starting it again. Last lines of "
                                   f"{proc.log_path}:\n{proc.tail(40)}")
            say(f"Airflow's {proc.name} exited (code {code}"
                + (f"; {known}" if known else "") + "); starting it again, as a restart policy would "
                f"(its log: {proc.log_path})")
            proc.start(timeout_s=180)
            revived.append(proc.name)
        return revived

    @property
    def running(self) -> bool:
        return bool(self.processes) and all(p.running for p in self.processes)

    def __enter__(self) -> LocalAirflow:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def logs(self, lines: int = 25) -> str:
        return "\n".join(f"--- {p.name} ({p.log_path}):\n{p.tail(lines)}" for p in self.processes)

    # -- the REST API (/api/v2), as a user's script would call it ---------------------------------

    def login(self) -> str:
        import httpx

        resp = httpx.post(f"{self.url}/auth/token", json={"username": USER, "password": self.password}, timeout=30)
        if resp.status_code not in (200, 201):
            raise RuntimeError(f"login to {self.url} failed: {resp.status_code} {resp.text[:300]}")
        self.token = resp.json()["access_token"]
        return self.token

    def call(self, method: str, path: str, body=None):
        import httpx

        if self.token is None:
            self.login()
        resp = httpx.request(method, f"{self.url}{path}", json=body, timeout=30,
                             headers={"Authorization": f"Bearer {self.token}"})
        if resp.status_code >= 300:
            raise RuntimeError(f"{method} {path}: {resp.status_code} {resp.text[:500]}")
        return resp.json() if resp.content else None      # DELETE answers 204, no body


def dag_ids_in(folder: Path) -> list[str]:
    """The dag_id each DAG file of `folder` declares (`dag_id="..."`), read as text: nothing imported."""
    return sorted(m for f in Path(folder).glob("*.py")
                  for m in re.findall(r"""\bdag_id\s*=\s*["']([\w.-]+)["']""", f.read_text()))


def _port_of(address: str) -> int:
    """The port of "host:port" or "http://host:port"."""
    parts = urlsplit(address if "://" in address else f"//{address}")
    if not parts.port:
        raise ValueError(f"{address!r} names no port")
    return parts.port


class Paths:
    """Where `make airflow` keeps its state: work_dir/{home,services,supervisor.log,pid,ready.json,env.sh}."""

    def __init__(self, work_dir: Path):
        self.work_dir = Path(work_dir).resolve()
        self.home = self.work_dir / "home"
        self.services = self.work_dir / "services"
        self.log = self.work_dir / "supervisor.log"
        self.pid = self.work_dir / "supervisor.pid"
        self.ready = self.work_dir / "ready.json"
        self.env_sh = self.work_dir / "env.sh"


def seed_raw_days(base: str, days: int, rows: int) -> str:
    """Synthetic Criteo days day_0..day_{days-1} in the bucket's raw/ folder, unless it holds some."""
    raw = Path(base) / "raw"
    from criteo_kernel.schema import day_of_file

    present = sorted(p.name for p in raw.iterdir() if day_of_file(p.name) is not None) if raw.is_dir() else []
    if present:
        return f"the bucket's raw/ holds {len(present)} days already ({present[0]}..); none written"
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    LocalProcessRuntime().run(STEPS["synth"], ["--out", str(raw), "--days", f"0-{days - 1}", "--rows", str(rows)])
    return f"wrote synthetic days day_0..day_{days - 1} ({rows} rows each) to {raw}"


def serve(paths: Paths, port: int, days: int, rows: int) -> int:
    """The supervisor: everything up, ready.json written, then wait until stopped."""
    from operators.pipeline.config import Settings

    from .process import serve_until_stopped
    from .stack import ServingStack

    paths.work_dir.mkdir(parents=True, exist_ok=True)
    paths.ready.unlink(missing_ok=True)
    settings = Settings.load()
    base = settings.storage.base_url
    if "://" in base:
        raise SystemExit(f"make airflow runs the embedded default; criteo_base_url is {base} (a local folder expected)")
    print(seed_raw_days(base, days, rows), flush=True)
    triton_grpc, prometheus_url = settings.serving.triton_grpc_url, settings.monitoring.prometheus_url
    with ServingStack(base, paths.services, triton_grpc_port=_port_of(triton_grpc),
                      prometheus_port=_port_of(prometheus_url)) as stack:
        from .triton import load_production

        for model, versions in load_production(stack.triton).items():
            print(f"Triton serves {model} versions {versions} (production)", flush=True)
        env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW__")}
        with LocalAirflow(paths.home, env, port=port) as airflow:
            airflow.login()      # the printed password works
            dags = airflow.wait_for_dags()     # ready means `airflow dags list` and the UI show them
            print(f"the DAG processor lists {len(dags)} DAGs: {', '.join(dags)}", flush=True)
            info = {
                "ui": airflow.url, "user": USER, "password": airflow.password,
                "data_docs": f"{airflow.url}/criteo-data-docs/", "rest": f"{airflow.url}/api/v2",
                "triton_grpc": stack.triton.grpc_url, "triton_http": stack.triton.http_url,
                "prometheus": stack.prometheus.url, "monitor": stack.monitor.metrics_url,
                "bucket": base, "airflow_home": str(paths.home),
                "logs": {p.name: str(p.log_path) for p in airflow.processes} | {
                    "triton": str(paths.services / "triton.log"), "supervisor": str(paths.log)},
                "pid": os.getpid(),
            }
            exports = {k: v for k, v in airflow.env.items() if k.startswith("AIRFLOW")}
            paths.env_sh.write_text("# source this to use the airflow CLI against `make airflow`\n" + "".join(
                f"export {k}='{v}'\n" for k, v in sorted(exports.items())) +
                f"export PATH='{Path(AIRFLOW).parent}':\"$PATH\"\n")
            paths.ready.write_text(json.dumps(info, indent=2))
            print("ready", flush=True)
            while not (stopped := serve_until_stopped(airflow)):
                try:
                    airflow.revive(say=lambda line: print(line, flush=True))
                except RuntimeError as exc:
                    print(f"{exc}\n{airflow.logs()}", flush=True)
                    break
            if stopped:
                print("stopping", flush=True)
            paths.ready.unlink(missing_ok=True)
            return 0 if stopped else 1


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _running_pid(paths: Paths) -> int | None:
    try:
        pid = int(paths.pid.read_text())
    except (OSError, ValueError):
        return None
    return pid if _alive(pid) else None


def _banner(info: dict, paths: Paths) -> str:
    return f"""
Airflow 3 is running on the embedded default.

  UI             {info['ui']}      (login: {info['user']} / {info['password']})
  Data docs      {info['data_docs']}   (also Browse -> Data docs in the UI)
  REST API       {info['rest']}    (token: POST {info['ui']}/auth/token)
  Triton         {info['triton_grpc']} (gRPC), {info['triton_http']} (HTTP)
  Prometheus     {info['prometheus']}
  Monitor        {info['monitor']}
  Bucket         {info['bucket']}
  Logs           {paths.work_dir}/home/logs/, {paths.services}/

  The airflow CLI:   source {paths.env_sh}; airflow dags list
  Stop everything:   make airflow-stop
"""


def start(paths: Paths, port: int, days: int, rows: int, timeout_s: float = 600) -> int:
    pid = _running_pid(paths)
    if pid and paths.ready.is_file():
        print(f"already running (supervisor pid {pid})" + _banner(json.loads(paths.ready.read_text()), paths))
        return 0
    if pid:
        print(f"a supervisor (pid {pid}) is still starting or stopping; try again, or: make airflow-stop")
        return 1
    paths.work_dir.mkdir(parents=True, exist_ok=True)
    paths.ready.unlink(missing_ok=True)
    with open(paths.log, "ab") as log:
        proc = subprocess.Popen([sys.executable, "-m", "local_servers.airflow", "serve", "--work-dir",
                                 str(paths.work_dir), "--port", str(port), "--days", str(days), "--rows", str(rows)],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                cwd=REPO_ROOT, start_new_session=True)
    paths.pid.write_text(str(proc.pid))
    print(f"starting (supervisor pid {proc.pid}, log {paths.log}) ...", flush=True)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if paths.ready.is_file():
            print(_banner(json.loads(paths.ready.read_text()), paths))
            return 0
        if proc.poll() is not None:
            tail = "\n".join(paths.log.read_text(errors="replace").splitlines()[-40:])
            print(f"make airflow failed (exit {proc.returncode}); last lines of {paths.log}:\n{tail}")
            paths.pid.unlink(missing_ok=True)
            return 1
        time.sleep(1)
    print(f"not ready after {timeout_s:.0f}s; see {paths.log}; stopping")
    stop(paths)
    return 1


def stop(paths: Paths, timeout_s: float = 90) -> int:
    pid = _running_pid(paths)
    if pid is None:
        print("nothing to stop (make airflow is not running)")
        paths.pid.unlink(missing_ok=True)
        return 0
    os.kill(pid, signal.SIGTERM)       # the supervisor stops Airflow, then Prometheus, monitor, Triton
    deadline = time.monotonic() + timeout_s
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.5)
    if _alive(pid):
        os.killpg(pid, signal.SIGKILL)   # its servers get SIGTERM from the kernel as it dies
    paths.pid.unlink(missing_ok=True)
    paths.ready.unlink(missing_ok=True)
    print(f"stopped (supervisor pid {pid})")
    return 0


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m local_servers.airflow", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("start", "stop", "serve"))
    p.add_argument("--work-dir", type=Path, default=REPO_ROOT / ".data" / "airflow")
    p.add_argument("--port", type=int, default=8080, help="the UI and REST API (default 8080)")
    p.add_argument("--days", type=int, default=10, help="synthetic days written when the bucket has none")
    p.add_argument("--rows", type=int, default=50_000, help="rows per synthetic day")
    a = p.parse_args(argv)
    paths = Paths(a.work_dir)
    if a.command == "start":
        return start(paths, a.port, a.days, a.rows)
    if a.command == "stop":
        return stop(paths)
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    return serve(paths, a.port, a.days, a.rows)


if __name__ == "__main__":
    raise SystemExit(main())
