"""The merlin image's code (NVTabular, torch): runs in the step environment (.venv-steps), never imports
Airflow. Its sources are on the path as the image's Dockerfile copies them: the kernel and criteo_merlin."""
import sys

import pytest

from tests.conftest import REPO

for src in (REPO / "images" / "kernel" / "src", REPO / "images" / "merlin" / "src"):
    if str(src) not in sys.path:
        sys.path.insert(0, str(src))


@pytest.fixture(scope="session")
def small_days(tmp_path_factory):
    """Three small synthetic days, extracted; shared by the preprocessing and training tests."""
    from criteo_merlin.ingest import extract, synth

    root = tmp_path_factory.mktemp("days")
    synth.main(["--out", str(root / "raw"), "--days", "0-2", "--rows", "30000"])
    for d in range(3):
        extract.extract(str(root / "raw" / f"day_{d}"), str(root / "extracted" / f"day={d}"))
    return root


@pytest.fixture(scope="session")
def fitted(small_days):
    """A workflow fitted on days 0-1 and day 2 transformed incrementally."""
    from criteo_merlin.preprocess import preprocess

    root = small_days
    ex = [str(root / "extracted" / f"day={d}") for d in range(3)]
    full = preprocess.preprocess(ex[:2], str(root / "processed"), str(root / "workflow"), None)
    incr = preprocess.preprocess(ex[2:], str(root / "processed"), None, str(root / "workflow"))
    return root, full, incr


@pytest.fixture(scope="session")
def for_hugectr(fitted, tmp_path_factory):
    """Days 0-1 transformed again with the fitted workflow, written for HugeCTR's reader."""
    from criteo_merlin.preprocess import preprocess

    root, full, _ = fitted
    out = tmp_path_factory.mktemp("hugectr") / "processed"
    ex = [str(root / "extracted" / f"day={d}") for d in (0, 1)]
    res = preprocess.preprocess(ex, str(out), None, str(root / "workflow"), hugectr=True)
    return root, out, res
