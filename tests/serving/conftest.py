"""Serving tests: a real tritonserver (from .venv-triton) and a real GCS emulator, driven from the
Airflow environment (.venv) through operators/triton.py.

The model versions are real exported packages, built once per session on a tiny synthetic day
with the pipeline's own step CLIs (synth -> extract -> preprocess -> train -> export, in
.venv-steps); their offline predictions on the day's held-out rows come from each package's own
criteo_serving.CTRModel in a .venv-steps subprocess (.venv has no onnxruntime).
"""
import os
import shutil
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

# As in tests/airflow: set before anything imports Airflow (operators.steps does).
os.environ.setdefault("AIRFLOW_HOME", str(REPO / ".airflow"))
os.environ.setdefault("AIRFLOW__CORE__DAGS_FOLDER", str(REPO / "dags"))
os.environ.setdefault("AIRFLOW__CORE__PLUGINS_FOLDER", str(REPO / "plugins"))
os.environ.setdefault("AIRFLOW__CORE__LOAD_EXAMPLES", "False")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

MODEL = "criteo_dcn"
ROWS = 4000  # one synthetic day: 3600 training rows, 400 held out
SMALL_MODEL = ["--epochs", "1", "--batch-size", "512", "--mlp-dims", "32,32", "--embedding-dim", "8",
               "--cross-layers", "1", "--threads", "1"]

OFFLINE = r"""
import importlib.util, os, sys
import numpy as np
from criteo_steps.evaluate import raw_eval_rows

extracted, out, *packages = sys.argv[1:]
dense, cats, label = raw_eval_rows([extracted], None)
preds = {}
for i, pkg in enumerate(packages):
    # each package scored by the criteo_serving.py it ships, as the evaluate step does
    spec = importlib.util.spec_from_file_location(f"criteo_serving_{i}", os.path.join(pkg, "criteo_serving.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    preds[f"pred_{i}"] = mod.CTRModel(pkg).predict(dense, cats).astype(np.float32)
np.savez(out, dense_raw=dense.astype(np.float32), cat_hash=cats.astype(np.int64), label=label, **preds)
"""


class Packages:
    """Two exported versions of the model (different seeds) and their offline predictions."""

    def __init__(self, root: Path, packages: list[Path], offline: dict[str, np.ndarray]):
        self.root = root
        self.packages = packages
        self.dense_raw = offline["dense_raw"]
        self.cat_hash = offline["cat_hash"]
        self.predictions = [offline[f"pred_{i}"] for i in range(len(packages))]

    def install(self, repo: Path, version: int, package: int = 0) -> Path:
        """Copy package `package` in as <repo>/criteo_dcn/<version>/, as deploy does."""
        dst = repo / MODEL / str(version)
        if dst.exists():
            shutil.rmtree(dst)
        shutil.copytree(self.packages[package], dst)
        return dst


def set_policy(repo: Path, version: int, package_config: Path) -> None:
    """Point <repo>/criteo_dcn/config.pbtxt at one version, with deploy's own rewrite."""
    from operators.model_repository import with_version_policy

    text = with_version_policy(package_config.read_text(), version)
    (repo / MODEL / "config.pbtxt").write_text(text)


@pytest.fixture(scope="session")
def packages(tmp_path_factory) -> Packages:
    from operators.steps import IMAGES, STEPS, LocalProcessRuntime

    root = tmp_path_factory.mktemp("packages")
    rt = LocalProcessRuntime()
    rt.run(STEPS["synth"], ["--out", str(root / "raw"), "--days", "0", "--rows", str(ROWS)])
    rt.run(STEPS["extract"], ["--input", str(root / "raw"), "--day", "0", "--output", str(root / "extracted/day=0")])
    rt.run(STEPS["preprocess"], ["--extracted", str(root / "extracted/day=0"), "--output-root",
                                 str(root / "processed"), "--fit-workflow", str(root / "workflow")])
    pkgs = []
    for seed in (0, 1):
        rt.run(STEPS["train"], ["--train", str(root / "processed/day=0"), "--output", str(root / f"train{seed}"),
                                "--seed", str(seed), *SMALL_MODEL])
        rt.run(STEPS["export"], ["--checkpoint", str(root / f"train{seed}/checkpoint.pt"), "--workflow",
                                 str(root / "workflow"), "--output", str(root / f"package{seed}")])
        pkgs.append(root / f"package{seed}")
    image = IMAGES["merlin"]
    out = root / "offline.npz"
    env = dict(os.environ, PYTHONPATH=image.source_dir)
    proc = subprocess.run([image.local_python, "-c", OFFLINE, str(root / "extracted/day=0"), str(out),
                           *map(str, pkgs)], env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with np.load(out) as f:
        offline = {k: f[k] for k in f.files}
    return Packages(root, pkgs, offline)


@pytest.fixture(scope="module")
def local_repo(tmp_path_factory, packages) -> Path:
    """A local model repository: version 1 = package 0, version 2 = package 1; policy -> 1."""
    repo = tmp_path_factory.mktemp("model_repository")
    packages.install(repo, 1, package=0)
    packages.install(repo, 2, package=1)
    set_policy(repo, 1, packages.packages[0] / "config.pbtxt")
    return repo


@pytest.fixture(scope="module")
def triton(tmp_path_factory, local_repo):
    """A real tritonserver on the local repository (explicit model control), stopped afterwards."""
    from operators.local_services.triton import LocalTriton

    work = tmp_path_factory.mktemp("triton")
    server = LocalTriton(str(local_repo), work_dir=work, log_path=work / "tritonserver.log")
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    """The GCS emulator (fake-gcs-server), stopped afterwards."""
    from operators.local_services.gcs import LocalGcsEmulator

    work = tmp_path_factory.mktemp("gcs")
    emulator = LocalGcsEmulator(work_dir=work)
    emulator.start()
    try:
        yield emulator
    finally:
        emulator.stop()
