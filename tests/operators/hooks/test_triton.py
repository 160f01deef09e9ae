"""TritonHook against a real tritonserver (2.51, python backend + onnxruntime) serving real exported
model versions: explicit loads, version switches by config.pbtxt, a broken version, a gs://
repository on the GCS emulator, and an address where nothing listens."""
import time
import urllib.request

import numpy as np
import pytest

from tests.fixtures.serving import MODEL, set_policy

pytestmark = pytest.mark.integration
TOL = 1e-5


def hook_for(server):
    from operators.hooks.triton import TritonHook

    return TritonHook(server.grpc_url, timeout_s=30)


def load(hook, server, model=MODEL):
    try:
        hook.load_model(model)
    except Exception as exc:
        raise AssertionError(f"{exc}\n--- tritonserver log:\n{server.tail(40)}") from None


def assert_matches(got, expected, what):
    diff = float(np.max(np.abs(got - expected)))
    assert got.shape == expected.shape and diff <= TOL, f"{what}: max |Triton - offline| = {diff:.3g}"


def test_serves_a_version_with_the_offline_predictions(triton, packages, local_repo):
    hook = hook_for(triton)
    assert hook.is_ready()
    set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")
    t0 = time.monotonic()
    load(hook, triton)
    print(f"model load: {time.monotonic() - t0:.2f}s")
    assert hook.ready_versions(MODEL) == [1]

    dense, cats, expected = packages.dense_raw, packages.cat_hash, packages.predictions[0]
    # real held-out rows, with missing values of both kinds in the batch
    assert np.isnan(dense[:64]).any() and (cats[:64] == -1).any()
    for batch in (1, 64):
        got, version = hook.infer(MODEL, dense[:batch], cats[:batch])
        assert version == 1 and got.dtype == np.float32
        assert_matches(got, expected[:batch], f"batch {batch}")
    got, version = hook.infer(MODEL, dense[64:128], cats[64:128], version=1)
    assert version == 1
    assert_matches(got, expected[64:128], "explicit version")

    # more rows than max_batch_size (8192): several requests, one answer
    reps = -(-8200 // len(dense))
    big_d, big_c = np.tile(dense, (reps, 1))[:8200], np.tile(cats, (reps, 1))[:8200]
    got, version = hook.infer(MODEL, big_d, big_c)
    assert version == 1
    assert_matches(got, np.tile(expected, reps)[:8200], "8200 rows")

    metrics = urllib.request.urlopen(triton.metrics_url, timeout=10).read().decode()
    assert f'nv_inference_request_success{{model="{MODEL}",version="1"}}' in metrics


def test_concurrent_requests_are_batched_and_answered_each_with_its_own_rows(triton, packages, local_repo):
    """The dynamic batcher hands several requests to one execute(); each gets its own predictions."""
    import tritonclient.grpc as grpcclient

    hook = hook_for(triton)
    set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")
    load(hook, triton)
    dense, cats, expected = packages.dense_raw, packages.cat_hash, packages.predictions[0]
    client = grpcclient.InferenceServerClient(triton.grpc_url)
    results, bounds = {}, [(i * 20, i * 20 + 3 + i) for i in range(16)]
    for i, (a, b) in enumerate(bounds):
        inputs = [grpcclient.InferInput("dense_raw", [b - a, 13], "FP32"),
                  grpcclient.InferInput("cat_hash", [b - a, 26], "INT64")]
        inputs[0].set_data_from_numpy(dense[a:b])
        inputs[1].set_data_from_numpy(cats[a:b])
        client.async_infer(MODEL, inputs, callback=lambda result, error, i=i: results.__setitem__(i, (result, error)))
    deadline = time.monotonic() + 30
    while len(results) < len(bounds) and time.monotonic() < deadline:
        time.sleep(0.01)
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    client.close()
    print(f"{stats['inference_count']} rows of {len(bounds)} requests in {stats['execution_count']} executions")
    # requests sent at once queue while one executes: the batcher merges them into one execute()
    assert int(stats["execution_count"]) < len(bounds), stats
    assert len(results) == len(bounds)
    for i, (a, b) in enumerate(bounds):
        result, error = results[i]
        assert error is None, error
        assert_matches(result.as_numpy("ctr").reshape(-1), expected[a:b], f"request {i}")


def test_version_policy_switches_the_served_version(triton, packages, local_repo):
    hook = hook_for(triton)
    set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")
    load(hook, triton)
    assert hook.ready_versions(MODEL) == [1]

    set_policy(local_repo, 2, packages.packages[1] / "config.pbtxt")
    assert "specific: { versions: [ 2 ] }" in (local_repo / MODEL / "config.pbtxt").read_text()
    t0 = time.monotonic()
    load(hook, triton)
    print(f"version switch: {time.monotonic() - t0:.2f}s")
    assert hook.ready_versions(MODEL) == [2]
    dense, cats = packages.dense_raw[:64], packages.cat_hash[:64]
    got, version = hook.infer(MODEL, dense, cats)
    assert version == 2
    assert_matches(got, packages.predictions[1][:64], "version 2")
    # the two versions are different models: the switch is visible in the predictions too
    assert np.max(np.abs(packages.predictions[0][:64] - packages.predictions[1][:64])) > 1e-3

    set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")  # back (a rollback)
    load(hook, triton)
    assert hook.ready_versions(MODEL) == [1]
    assert hook.infer(MODEL, dense, cats)[1] == 1


def test_a_broken_version_fails_to_load_and_the_previous_keeps_serving(triton, packages, local_repo):
    from operators.hooks.triton import TritonModelError

    hook = hook_for(triton)
    set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")
    load(hook, triton)
    broken = packages.install(local_repo, 3, package=1)
    (broken / "model.onnx").unlink()
    set_policy(local_repo, 3, packages.packages[1] / "config.pbtxt")
    try:
        with pytest.raises(TritonModelError) as err:
            hook.load_model(MODEL)
        message = str(err.value)
        # Triton's own message: the version, and the python backend's error from model.py
        assert "version 3" in message and "model.onnx" in message and "NO_SUCHFILE" in message, message
        assert triton.grpc_url in message
        assert hook.is_ready()
        assert hook.ready_versions(MODEL) == [1]
        state, reason = hook.model_states(MODEL)[3]
        assert state == "UNAVAILABLE" and "model.onnx" in reason
        got, version = hook.infer(MODEL, packages.dense_raw[:64], packages.cat_hash[:64])
        assert version == 1
        assert_matches(got, packages.predictions[0][:64], "previous version after the failed load")
        # asking for the failed version: the server answers and refuses (not "unavailable")
        with pytest.raises(TritonModelError, match="version 3"):
            hook.infer(MODEL, packages.dense_raw[:1], packages.cat_hash[:1], version=3)
    finally:
        set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")
    load(hook, triton)  # the repository restored: a reload is clean again
    assert hook.ready_versions(MODEL) == [1]


def test_unload_model(triton, packages, local_repo):
    from operators.hooks.triton import TritonModelError

    hook = hook_for(triton)
    set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")
    load(hook, triton)
    hook.unload_model(MODEL)
    assert hook.ready_versions(MODEL) == []
    assert hook.is_ready()  # the server stays ready without models
    with pytest.raises(TritonModelError, match="unknown model|no available versions|not found"):
        hook.infer(MODEL, packages.dense_raw[:1], packages.cat_hash[:1])
    with pytest.raises(TritonModelError, match="nope"):
        hook.load_model("nope")


@pytest.fixture
def gcs_triton(tmp_path, gcs, packages, monkeypatch):
    """A model repository in gs:// on the emulator, uploaded with the official google-cloud-storage
    client, and a tritonserver started on it; stopped afterwards."""
    from google.cloud import storage

    from criteo_kernel.triton_config import with_version_policy
    from local_servers.triton import LocalTriton

    for key, value in gcs.env().items():
        monkeypatch.setenv(key, value)
    gcs.create_bucket("criteo-serving")
    client = storage.Client()  # pointed at the emulator by STORAGE_EMULATOR_HOST
    bucket = client.bucket("criteo-serving")
    prefix = f"prod/model_repository/{MODEL}"
    pkg = packages.packages[0]
    files = [p for p in sorted(pkg.rglob("*")) if p.is_file()]
    for path in files:
        bucket.blob(f"{prefix}/4/{path.relative_to(pkg)}").upload_from_filename(str(path))
    bucket.blob(f"{prefix}/config.pbtxt").upload_from_string(
        with_version_policy((pkg / "config.pbtxt").read_text(), 4))
    assert len(gcs.list_objects("criteo-serving", prefix + "/4/")) == len(files)

    server = LocalTriton("gs://criteo-serving/prod/model_repository", work_dir=tmp_path / "triton", env=gcs.env())
    t0 = time.monotonic()
    server.start()
    print(f"tritonserver on gs:// ready in {time.monotonic() - t0:.2f}s")
    try:
        yield server
    finally:
        server.stop()


def test_serves_a_repository_in_gcs(gcs_triton, packages):
    """Triton reads the model repository from gs:// on the emulator (google-cloud-cpp client)."""
    hook = hook_for(gcs_triton)
    t0 = time.monotonic()
    load(hook, gcs_triton)
    print(f"model load from gs://: {time.monotonic() - t0:.2f}s")
    assert hook.ready_versions(MODEL) == [4]
    got, version = hook.infer(MODEL, packages.dense_raw[:64], packages.cat_hash[:64])
    assert version == 4
    assert_matches(got, packages.predictions[0][:64], "gs:// repository")


def test_nothing_listening_is_unavailable_quickly():
    from local_servers.process import free_port
    from operators.hooks.triton import TritonHook, TritonUnavailable

    url = f"127.0.0.1:{free_port()}"
    hook = TritonHook(url, timeout_s=3)
    t0 = time.monotonic()
    assert hook.is_ready() is False
    with pytest.raises(TritonUnavailable, match=url.replace(".", r"\.")):
        hook.ensure_ready()
    with pytest.raises(TritonUnavailable, match=url.replace(".", r"\.")):
        hook.load_model(MODEL)
    with pytest.raises(TritonUnavailable, match=url.replace(".", r"\.")):
        hook.infer(MODEL, np.zeros((1, 13), np.float32), np.zeros((1, 26), np.int64))
    assert time.monotonic() - t0 < 10


def test_the_cli_serves_the_production_version_from_the_start(packages, local_repo, tmp_path):
    """`python -m local_servers.triton` as docs/serving.md starts it (no --load): a restarted server
    serves the version config.pbtxt names without waiting for the next deploy."""
    import signal
    import subprocess
    import sys

    from local_servers.process import free_port
    from local_servers.triton import production_models
    from operators.hooks.triton import TritonHook

    set_policy(local_repo, 1, packages.packages[0] / "config.pbtxt")   # production: version 1
    assert production_models(str(local_repo)) == [MODEL]
    assert production_models(str(tmp_path)) == []
    grpc = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "local_servers.triton", "--model-repository", str(local_repo),
                             "--work-dir", str(tmp_path / "work"), "--grpc-port", str(grpc)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("loaded ") or "nothing loaded" in line:
                break
        assert f"loaded {MODEL}: versions ready [1]\n" in lines, "".join(lines)
        assert TritonHook(f"127.0.0.1:{grpc}", timeout_s=30).ready_versions(MODEL) == [1]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    assert proc.returncode == 0
