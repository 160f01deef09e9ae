"""The step code's storage seam on a local folder: partitions and files appear whole."""
import json

import pytest

from criteo_kernel import storage

pytestmark = pytest.mark.unit


def test_a_partition_is_published_whole_and_replaced_whole(tmp_path):
    final = tmp_path / "work" / "day=3"
    with storage.staged_partition(str(final)) as staging:
        storage.write_json(storage.join(staging, "a.json"), {"x": 1})
        assert not final.exists()                            # nothing visible while it is built
    assert storage.is_published(str(final)) and json.loads((final / "a.json").read_text()) == {"x": 1}
    with storage.staged_partition(str(final)) as staging:
        storage.write_json(storage.join(staging, "b.json"), {"y": 2})
    assert sorted(p.name for p in final.iterdir()) == ["_SUCCESS", "b.json"]  # a rerun replaces it whole
    assert [p.name for p in (tmp_path / "work").iterdir()] == ["day=3"]       # no staging left


def test_a_failure_midway_leaves_nothing(tmp_path):
    final = tmp_path / "day=1"
    with pytest.raises(RuntimeError), storage.staged_partition(str(final)) as staging:
        storage.write_json(storage.join(staging, "a.json"), {})
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_files_appear_whole_and_days_are_found(tmp_path):
    storage.write_bytes(str(tmp_path / "sub" / "f.bin"), b"abc")
    assert (tmp_path / "sub" / "f.bin").read_bytes() == b"abc"
    assert [p.name for p in (tmp_path / "sub").iterdir()] == ["f.bin"]  # the temporary name is gone
    (tmp_path / "day_4.gz").write_bytes(b"")
    assert storage.find_day_file(str(tmp_path), 4) == f"{tmp_path}/day_4.gz"
    with pytest.raises(FileNotFoundError,
                       match=f"raw day 5 not found: expected {tmp_path}/day_5 or {tmp_path}/day_5.gz"):
        storage.find_day_file(str(tmp_path), 5)
