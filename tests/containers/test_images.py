"""Each built image as a container: its user, the versions of its base, its entry point, signals
and memory limits as the engine enforces them."""
from __future__ import annotations

import re
import time

import pytest

from .conftest import REPO, podman

pytestmark = pytest.mark.containers


@pytest.mark.parametrize("name", ["merlin", "hugectr", "validator", "monitoring"])
def test_step_images_run_as_their_non_root_user(images, name):
    """uid 50000 in group 0, as Airflow's image: both write the bucket volume."""
    out = podman("run", "--rm", "--entrypoint", "id", images[name]).stdout
    assert out.startswith("uid=50000(criteo) gid=0(root)"), out


def base_versions(base: str) -> dict[str, str]:
    """A stand-in's package versions: its requirements.txt and no-deps.txt (the real base's list)."""
    pins = {}
    for name in ("requirements.txt", "no-deps.txt"):
        path = REPO / "images/bases" / base / name
        if path.exists():
            for line in path.read_text().splitlines():
                m = re.match(r"^([A-Za-z0-9_.-]+)(\[[^]]*\])?==([^\s;]+)", line)
                if m:
                    pins[m.group(1).lower().replace("_", "-")] = m.group(3)
    return pins


def image_versions(ref: str) -> dict[str, str]:
    out = podman("run", "--rm", "--entrypoint", "python", ref, "-m", "pip", "list", "--format=freeze").stdout
    return {n.lower().replace("_", "-"): v for n, _, v in (line.partition("==") for line in out.splitlines())}


@pytest.mark.parametrize("name, base, packages", [
    ("merlin", "merlin-pytorch", ["torch", "numpy", "pandas", "pyarrow", "dask", "distributed", "fsspec", "protobuf",
                                  "onnx", "onnxruntime", "merlin-core", "nvtabular", "merlin-dataloader"]),
    ("hugectr", "merlin-hugectr", ["numpy", "pandas", "pyarrow", "protobuf", "onnx", "onnxruntime"]),
])
def test_the_image_keeps_its_bases_versions(images, name, base, packages):
    """The image's own lock (--no-deps) replaced nothing of the base: every package the step code
    imports is at the version the real base has (images/bases/VERSIONS.md)."""
    want, got = base_versions(base), image_versions(images[name])
    assert {p: got.get(p) for p in packages} == {p: want[p] for p in packages}


def test_the_merlin_images_python_is_the_bases(images):
    out = podman("run", "--rm", "--entrypoint", "python", images["merlin"], "-c",
                 "import sys; print(sys.version_info[:2])").stdout
    assert out.strip() == "(3, 10)"


def test_train_hugectr_says_hugectr_is_missing_on_the_stand_in(images, tmp_path):
    proc = podman("run", "--rm", images["hugectr"], "train_hugectr", "--train", "/nowhere", "--output", "/tmp/out",
                  "--epochs", "1", "--batch-size", "16", "--lr", "0.001", "--embedding-dim", "16",
                  "--cross-layers", "2", "--mlp-dims", "64,64", check=False)
    assert proc.returncode == 1
    assert "No module named 'hugectr': HugeCTR runs only in the merlin image's hugectr target" in proc.stderr


def test_a_step_stops_promptly_on_sigterm(images):
    """PID 1 is the step itself (the image's entry point): it handles SIGTERM, so `docker stop` or a
    deleted pod stops it at once, not after the engine's kill timeout."""
    name = f"criteo-sigterm-{time.monotonic_ns()}"
    podman("run", "-d", "--name", name, images["merlin"], "synth", "--out", "/tmp/raw", "--days", "0-99",
           "--rows", "2000000")
    try:
        deadline = time.monotonic() + 120
        while "synth" not in podman("logs", name, check=False).stderr + podman("top", name, check=False).stdout:
            assert time.monotonic() < deadline, "the step did not start"
            time.sleep(0.5)
        time.sleep(2)
        t0 = time.monotonic()
        podman("stop", "-t", "30", name)
        took = time.monotonic() - t0
        code = podman("inspect", "--format", "{{.State.ExitCode}}", name).stdout.strip()
    finally:
        podman("rm", "-f", name, check=False)
    assert code == "143", f"exit code {code}"  # 128 + SIGTERM: the handler ran, not the engine's SIGKILL
    assert took < 10, f"stopping took {took:.1f} s"


def test_a_step_over_its_memory_limit_fails_without_retry_naming_the_limit(images, engine, monkeypatch):
    """The Docker runtime's own container (the DockerOperator through the engine's Docker API) for a
    step whose memory is too small: the kernel kills it (137), and the task fails saying so."""
    from dataclasses import replace

    from airflow.sdk.exceptions import AirflowFailException

    from operators.pipeline.config import Settings
    from operators.runtime.catalogue import STEPS
    from operators.runtime.docker import DockerRuntime
    from operators.step import CriteoStepOperator

    for key, value in {"criteo_base_url": "gs://unused/base", "criteo_docker_url": engine["DOCKER_HOST"],
                       "criteo_docker_network": "host", "criteo_docker_gpus": "0",
                       **{f"criteo_image_{n}": images[n] for n in ("merlin", "validator", "monitoring")}}.items():
        monkeypatch.setenv(f"AIRFLOW_VAR_{key.upper()}", value)
    settings = Settings.load()
    spec = replace(STEPS["synth"], memory="160Mi")
    outcome = DockerRuntime(settings).start(spec, ["--out", "/tmp/raw", "--days", "0", "--rows", "3000000"],
                                            task_id="synth", context={})
    assert (outcome.exit_code, outcome.reason) == (137, "OOMKilled"), outcome
    op = CriteoStepOperator(task_id="synth", step="synth", settings=settings.to_dict())
    with pytest.raises(AirflowFailException) as error:   # no retry: the same input needs the same memory
        op._finish({"ti": None}, spec, outcome)
    assert "ran out of memory under its limit of 160Mi" in str(error.value)
