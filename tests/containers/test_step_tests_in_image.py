"""The step tests (make test-steps: the kernel's and the merlin image's) inside the built merlin
image, on its versions (Python 3.10, the base's torch, numpy, pandas, pyarrow, dask, protobuf, onnx), as its
user, with the repository mounted read-only: what `make test-steps` proves in .venv-steps, proven
where the code ships."""
from __future__ import annotations

import re

import pytest

from .conftest import REPO, podman

pytestmark = pytest.mark.containers


def test_the_step_tests_pass_inside_the_merlin_image(images):
    proc = podman("run", "--rm", "-v", f"{REPO}:/repo:ro", "-w", "/repo", "-e", "PYTHONDONTWRITEBYTECODE=1",
                  "--entrypoint", "python", images["merlin"], "-m", "pytest", "-q",
                  "-p", "no:cacheprovider", "-rfEs", "tests/images/kernel", "tests/images/merlin",
                  check=False, timeout=1500)
    tail = (proc.stdout + proc.stderr)[-6000:]
    print(tail)
    assert proc.returncode == 0, tail
    summary = re.search(r"(\d+) passed", tail)
    assert summary and int(summary.group(1)) > 100, tail


def test_hugectrs_saved_files_convert_inside_the_hugectr_image(images):
    """criteo_merlin.hugectr.hugectr_onnx on the hugectr base's onnx and onnxruntime (Merlin's 1.15.1): HugeCTR's
    files written in its layout convert to the served model and match the reference forward pass."""
    proc = podman("run", "--rm", "-v", f"{REPO}:/repo:ro", "-w", "/repo", "-e", "PYTHONDONTWRITEBYTECODE=1",
                  "--entrypoint", "python", images["hugectr"], "-m", "pytest", "-q", "-p", "no:cacheprovider",
                  "-rfEs", "tests/images/merlin/test_hugectr_onnx.py", check=False, timeout=600)
    tail = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, tail
    assert re.search(r"(\d+) passed", tail) and int(re.search(r"(\d+) passed", tail).group(1)) >= 8, tail
