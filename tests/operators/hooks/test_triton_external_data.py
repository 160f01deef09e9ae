"""A model version whose weights are ONNX external data (model.onnx.data beside model.onnx, what the
export writes past protobuf's 2 GiB: criteo_kernel.onnx_size), served by the real tritonserver's
python backend from the version folder. The threshold is lowered to 0 so a small model takes that path;
bench/bench_large_model.py serves one really past 2 GiB."""
import shutil
import time

import numpy as np
import pytest

from tests.fixtures.partitions import committed
from tests.fixtures.serving import MODEL, set_policy

pytestmark = pytest.mark.integration
TOL = 1e-5


def test_a_version_with_external_data_serves_the_same_predictions(packages, tmp_path, monkeypatch):
    from criteo_kernel.onnx_size import EXTERNAL_DATA_ENV
    from local_servers.triton import LocalTriton
    from operators.hooks.triton import TritonHook
    from operators.runtime.catalogue import STEPS
    from operators.runtime.local import LocalProcessRuntime

    # package 0's checkpoint exported again, every weight of 1 KiB or more into model.onnx.data
    monkeypatch.setenv(EXTERNAL_DATA_ENV, "0")
    checkpoint = committed(packages.root / "train0") / "checkpoint.pt"
    LocalProcessRuntime().run(STEPS["export"], ["--checkpoint", str(checkpoint), "--workflow",
                                                str(packages.root / "workflow"), "--output", str(tmp_path / "package")])
    pkg = committed(tmp_path / "package")               # the package partition's committed attempt
    onnx_bytes, data_bytes = (pkg / "model.onnx").stat().st_size, (pkg / "model.onnx.data").stat().st_size
    assert onnx_bytes < 100_000 < data_bytes          # the embedding table is in the data file
    repo = tmp_path / "model_repository"
    shutil.copytree(pkg, repo / MODEL / "1")           # as deploy installs a version
    set_policy(repo, 1, pkg / "config.pbtxt")
    work = tmp_path / "triton"
    server = LocalTriton(str(repo), work_dir=work, log_path=work / "tritonserver.log")
    server.start()
    try:
        hook = TritonHook(server.grpc_url, timeout_s=30)
        t0 = time.monotonic()
        try:
            hook.load_model(MODEL)
        except Exception as exc:
            raise AssertionError(f"{exc}\n--- tritonserver log:\n{server.tail(40)}") from None
        print(f"model load: {time.monotonic() - t0:.2f}s ({onnx_bytes} + {data_bytes} bytes)")
        assert hook.ready_versions(MODEL) == [1]
        got, version = hook.infer(MODEL, packages.dense_raw, packages.cat_hash)
        assert version == 1
        diff = float(np.max(np.abs(got - packages.predictions[0])))
        assert got.shape == packages.predictions[0].shape and diff <= TOL, f"max |Triton - offline| = {diff:.3g}"
    finally:
        server.stop()
