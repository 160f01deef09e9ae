"""The container layer: the images `make images` built, run by the engine `make engine` started
(Podman, host networking, no registry). `make test-containers` does both first; run alone, these
tests fail saying which of the two is missing."""
from __future__ import annotations

import os
import shlex
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
TAG = os.environ.get("CRITEO_IMAGE_TAG", "local")
IMAGES = {name: f"localhost/criteo-{name}:{TAG}" for name in ("merlin", "validator", "monitoring", "triton", "airflow")}
IMAGES["hugectr"] = f"localhost/criteo-merlin-hugectr:{TAG}"


def engine_env() -> dict[str, str]:
    out = subprocess.run(["bash", str(REPO / "scripts/containers/engine.sh"), "env"], check=True,
                         capture_output=True, text=True).stdout
    env = {}
    for line in out.splitlines():
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = value
    return env


def podman(*args: str, check: bool = True, timeout: float = 600, **kw) -> subprocess.CompletedProcess:
    env = {**os.environ, **ENGINE}
    proc = subprocess.run(["podman", *args], env=env, capture_output=True, text=True, timeout=timeout, **kw)
    if check and proc.returncode != 0:
        raise AssertionError(f"podman {shlex.join(args)} exited {proc.returncode}:\n{proc.stdout[-3000:]}\n"
                             f"{proc.stderr[-3000:]}")
    return proc


ENGINE = engine_env()


@pytest.fixture(scope="session")
def engine() -> dict[str, str]:
    """The engine's settings; fails naming `make engine` when its API does not answer."""
    sock = ENGINE["DOCKER_HOST"].removeprefix("unix://")
    ping = subprocess.run(["curl", "-sf", "--unix-socket", sock, "http://d/_ping"], capture_output=True, text=True)
    if ping.returncode != 0 or ping.stdout != "OK":
        pytest.fail(f"no container engine answers at {sock}: run `make engine` (or `make test-containers`)")
    return ENGINE


@pytest.fixture(scope="session")
def images(engine) -> dict[str, str]:
    missing = [ref for ref in IMAGES.values() if podman("image", "exists", ref, check=False).returncode != 0]
    if missing:
        pytest.fail(f"images not built: {missing}: run `make images` (or `make test-containers`)")
    return IMAGES
