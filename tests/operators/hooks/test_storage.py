"""The Airflow side reads partitions through the same commit objects as the steps (criteo_kernel.storage)."""
import pytest

from criteo_kernel import storage
from operators.hooks.storage import resolve_partition, storage_path
from tests.fixtures import gcsfuse

pytestmark = pytest.mark.unit


@pytest.mark.parametrize("mount", ["local", "gcsfuse"])
def test_a_partition_written_by_a_step_resolves_to_its_committed_attempt(tmp_path, mount):
    if mount == "gcsfuse":
        gcsfuse.install(tmp_path)
    try:
        part = str(tmp_path / "package")
        with pytest.raises(FileNotFoundError, match=f"{part}/_COMMITTED: missing, the partition {part} is not"):
            resolve_partition(part)
        for content in (b"old", b"new"):
            with storage.staged_partition(part) as attempt:
                storage.write_bytes(storage.join(attempt, "model.onnx"), content)
        resolved = resolve_partition(part)
    finally:
        if mount == "gcsfuse":
            gcsfuse.uninstall()
    assert resolved == storage.resolve(part)                      # the steps' reader and this side agree
    assert (storage_path(resolved) / "model.onnx").read_bytes() == b"new"
