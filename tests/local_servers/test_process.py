"""ServerProcess against real child processes: a server that crashes while it starts is started
again when allowed; one that refuses its arguments is not."""
import sys

import pytest

pytestmark = pytest.mark.integration

# Aborts (SIGABRT) the first time, as tritonserver once did while its gRPC server came up; the
# second time it serves HTTP until stopped.
SERVER = r"""
import http.server, os, signal, sys
marker, port = sys.argv[1], int(sys.argv[2])
if not os.path.exists(marker):
    open(marker, "w").close()
    os.kill(os.getpid(), signal.SIGABRT)
http.server.HTTPServer(("127.0.0.1", port), http.server.SimpleHTTPRequestHandler).serve_forever()
"""


def server(tmp_path, code=SERVER):
    from local_servers.process import ServerProcess, free_port, http_ok

    port = free_port()
    return ServerProcess("crashy", [sys.executable, "-c", code, str(tmp_path / "crashed"), str(port)],
                         tmp_path / "crashy.log", ready=lambda: http_ok(f"http://127.0.0.1:{port}/"), cwd=tmp_path)


def test_a_crash_while_starting_is_started_again(tmp_path, caplog):
    proc = server(tmp_path)
    with proc.start(timeout_s=30, crash_retries=1):
        assert proc.running and (tmp_path / "crashed").exists()
    assert "crashy crashed while starting (crashy exited with code -6 before it was ready" in caplog.text


def test_without_retries_the_crash_is_raised(tmp_path):
    from local_servers.process import ExitedBeforeReady

    with pytest.raises(ExitedBeforeReady, match="exited with code -6 before it was ready") as err:
        server(tmp_path).start(timeout_s=30)
    assert err.value.returncode == -6


def test_an_exit_code_of_its_own_is_not_retried(tmp_path):
    from local_servers.process import ExitedBeforeReady

    proc = server(tmp_path, code="import sys; print('unknown flag --bogus'); sys.exit(2)")
    with pytest.raises(ExitedBeforeReady, match="exited with code 2 before it was ready") as err:
        proc.start(timeout_s=30, crash_retries=3)
    assert err.value.returncode == 2 and proc.tail().count("unknown flag") == 1  # started once


def test_tail_of_this_start_leaves_out_what_earlier_starts_wrote(tmp_path):
    from local_servers.process import ServerProcess

    say = "import time; print({!r}); time.sleep(0.3)"       # alive past start()'s first look
    proc = ServerProcess("echo", [sys.executable, "-c", say.format("first")], tmp_path / "echo.log")
    proc.start(timeout_s=30).proc.wait(timeout=30)
    proc.argv = [sys.executable, "-c", say.format("second")]
    proc.start(timeout_s=30).proc.wait(timeout=30)
    assert proc.tail() == "first\nsecond"
    assert proc.tail(this_start=True) == "second"
