"""A local server process: started with its own log file, waited on until ready, stopped cleanly."""
from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

from operators.pipeline.config import REPO_ROOT  # noqa: F401 (the one definition; local_servers take it from here)

log = logging.getLogger(__name__)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(port: int) -> bool:
    """Whether something accepts TCP connections on 127.0.0.1:`port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _die_with_parent() -> None:
    """In the child before exec: its own process group, and SIGTERM when the parent dies (Linux),
    so a test or demo killed hard (SIGKILL, a CI timeout) leaves no server behind."""
    os.setsid()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def stop_on_sigterm() -> None:
    """From now on SIGTERM, like Ctrl-C, raises KeyboardInterrupt. A foreground CLI calls this before
    it starts its servers, so that asked to stop while it is still starting or loading (a loaded
    machine, a quick Ctrl-C) it leaves through its `with` blocks, which stop them, as it does once
    serving, instead of dying of the signal with its servers left behind."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)


def serve_until_stopped(server) -> bool:
    """Block while `server` runs: True once Ctrl-C or SIGTERM asks to stop, False if it died.
    The caller's `with server:` then stops it."""
    stop_on_sigterm()
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        return True
    return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except (urllib.error.URLError, OSError, ValueError):
        return False


class ExitedBeforeReady(RuntimeError):
    """The server's process ended before it was ready; `returncode` < 0: killed by that signal."""

    def __init__(self, message: str, returncode: int):
        super().__init__(message)
        self.returncode = returncode


class ServerProcess:
    """One server: `start()` launches it and waits for `ready()`; `stop()` ends its process group.

    Output goes to `log_path`; when the server dies or never gets ready, the error quotes the
    log's tail, so a failed start explains itself.
    """

    def __init__(self, name: str, argv: list[str], log_path: str | Path, env: dict[str, str] | None = None,
                 ready: Callable[[], bool] | None = None, cwd: str | Path | None = None):
        self.name = name
        self.argv = [str(a) for a in argv]
        self.log_path = Path(log_path)
        self.env = env
        self.ready = ready or (lambda: True)
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.log_offset = 0         # where this start's output begins in the log (a restart appends)

    def start(self, timeout_s: float = 60, crash_retries: int = 0) -> ServerProcess:
        """Start the process and wait until `ready()`. `crash_retries`: start again that many times
        if it dies from a signal before it is ready (a crash, not a refusal: a server that rejects
        its arguments exits with a code of its own, and that is raised at once)."""
        attempt = 0
        while True:
            try:
                return self._start(timeout_s)
            except ExitedBeforeReady as exc:
                if exc.returncode >= 0 or attempt >= crash_retries:
                    raise
                attempt += 1
                log.warning("%s crashed while starting (%s); starting it again", self.name, exc)

    def _start(self, timeout_s: float) -> ServerProcess:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log_fh = open(self.log_path, "ab")
        self.log_offset = log_fh.tell()
        log.info("starting %s: %s (log %s)", self.name, " ".join(self.argv), self.log_path)
        self.proc = subprocess.Popen(self.argv, stdout=log_fh, stderr=subprocess.STDOUT, env=self.env,
                                     cwd=self.cwd, preexec_fn=_die_with_parent)
        log_fh.close()
        deadline = time.monotonic() + timeout_s
        try:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    raise ExitedBeforeReady(f"{self.name} exited with code {self.proc.returncode} before it was "
                                            f"ready; last lines of {self.log_path}:\n{self.tail()}",
                                            self.proc.returncode)
                if self.ready():
                    log.info("%s is ready (pid %s)", self.name, self.proc.pid)
                    return self
                time.sleep(0.2)
        except BaseException:  # interrupted (Ctrl-C, SIGTERM) while it came up: take it down first
            self.stop()
            raise
        self.stop()
        raise TimeoutError(f"{self.name} was not ready after {timeout_s:g}s; last lines of {self.log_path}:\n"
                           f"{self.tail()}")

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 15) -> None:
        if not self.running:
            return
        assert self.proc is not None
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=timeout_s)
        except ProcessLookupError:
            pass
        log.info("stopped %s", self.name)

    def tail(self, lines: int = 30, this_start: bool = False) -> str:
        """The log's last `lines`; with `this_start`, only what the latest start wrote."""
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(self.log_offset if this_start else 0)
                text = fh.read().decode(errors="replace")
            return "\n".join(text.splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def __enter__(self) -> ServerProcess:
        return self if self.running else self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


class LocalServer:
    """What the local servers (Triton, Prometheus, the GCS emulator) share: one ServerProcess,
    `with server:` starts it (subclasses define `start()`) and stops it again."""

    process: ServerProcess | None = None

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.running

    def start(self):
        raise NotImplementedError

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def tail(self, lines: int = 30) -> str:
        return self.process.tail(lines) if self.process else "(not started)"

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
