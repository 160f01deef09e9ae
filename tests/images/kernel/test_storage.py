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

def _staged(fs, staging: str, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        fs.makedirs(f"{staging}/{name}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{staging}/{name}", data)
    return staging


def test_publish_without_replace_leaves_a_taken_folder_alone(tmp_path):
    """The model repository's use: a version number taken meanwhile is not overwritten."""
    import fsspec

    fs = fsspec.filesystem("file")
    first = _staged(fs, str(tmp_path / ".staging-a"), {"model.onnx": b"a"})
    assert storage.publish(fs, first, str(tmp_path / "1"), replace=False)
    second = _staged(fs, str(tmp_path / ".staging-b"), {"model.onnx": b"b"})
    assert not storage.publish(fs, second, str(tmp_path / "1"), replace=False)
    assert (tmp_path / "1" / "model.onnx").read_bytes() == b"a" and (tmp_path / "1" / "_SUCCESS").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


@pytest.mark.parametrize("replace", [True, False])
def test_publish_on_an_object_store_copies_the_marker_last(replace):
    """An object store has no folder rename: the content, then `_SUCCESS` (fsspec's memory filesystem)."""
    import uuid

    import fsspec

    fs = fsspec.filesystem("memory")
    root = f"/bucket-{uuid.uuid4().hex[:8]}"
    assert not storage.is_local(fs) and storage.is_local(fsspec.filesystem("file"))
    staging = _staged(fs, f"{root}/.staging-x", {"a.json": b"{}", "sub/b.bin": b"b", "_SUCCESS": b""})
    written = []
    copy = fs.copy
    fs.copy = lambda src, dst, **kw: written.append(dst.rsplit("/", 1)[-1]) or copy(src, dst, **kw)
    touch = fs.touch
    fs.touch = lambda path, **kw: written.append(path.rsplit("/", 1)[-1]) or touch(path, **kw)
    try:
        assert storage.publish(fs, staging, f"{root}/day=1", replace=replace)
    finally:
        del fs.copy, fs.touch
    assert written[-1] == "_SUCCESS" and sorted(written) == ["_SUCCESS", "a.json", "b.bin"]
    assert sorted(fs.find(f"{root}/day=1")) == [f"{root}/day=1/{n}" for n in ("_SUCCESS", "a.json", "sub/b.bin")]
    assert not fs.exists(staging)
    again = _staged(fs, f"{root}/.staging-y", {"c.json": b"{}"})
    assert storage.publish(fs, again, f"{root}/day=1", replace=replace) is replace
    assert fs.exists(f"{root}/day=1/c.json") is replace and fs.exists(f"{root}/day=1/a.json") is not replace
    assert not fs.exists(again)


def test_one_rule_for_local():
    assert storage.is_local("/data/bucket") and storage.is_local("file:///data/bucket")
    assert not storage.is_local("gs://bucket/base")
