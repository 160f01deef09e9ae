"""The step code's storage seam: partitions published by a commit, on three filesystems.

Each partition test runs on local disk, on a folder with gcsfuse's flat-bucket semantics
(tests/fixtures/gcsfuse.py: folder renames refused with EMFILE, file renames as copy + delete), and
on gs:// through gcsfs against the GCS emulator (.venv only: the emulator's binary ships there).
Readers are the public API: `is_published`, `resolve`, then reads below the resolved folder.
"""
import errno
import os
import shutil
import time

import pytest

from criteo_kernel import storage
from tests.fixtures import gcsfuse


def _read(url: str) -> dict[str, bytes]:
    """Every file of the partition at `url` as readers see it: through the commit, below one attempt."""
    fs, root = storage.fs_root(storage.resolve(url))
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def _write(url: str, files: dict[str, bytes]) -> None:
    with storage.staged_partition(url) as attempt:
        for name, data in files.items():
            storage.write_bytes(storage.join(attempt, name), data)


def test_a_partition_is_invisible_until_committed_then_read_whole(base):
    day = storage.join(base, "day=3")
    with storage.staged_partition(day) as attempt:
        storage.write_json(storage.join(attempt, "train", "a.json"), {"x": 1})
        assert not storage.is_published(day)                       # nothing visible while it is built
        with pytest.raises(storage.NotPublished, match=f"{day}/_COMMITTED: missing"):
            storage.resolve(day)
    assert storage.is_published(day)
    assert _read(day) == {"train/a.json": b'{\n  "x": 1\n}', "_SUCCESS": b""}
    commit = storage.read_json(storage.join(day, "_COMMITTED"))
    assert storage.resolve(day) == storage.join(day, commit["attempt"])
    assert commit["files"] == ["_SUCCESS", "train/a.json"] and commit["previous"] is None


def test_a_rerun_replaces_the_partition_whole_and_collects_the_old_attempt(base):
    day = storage.join(base, "day=1")
    _write(day, {"train/a.bin": b"old", "eval/b.bin": b"old"})
    old = storage.resolve(day)
    _write(day, {"train/c.bin": b"new"})
    assert _read(day) == {"train/c.bin": b"new", "_SUCCESS": b""}
    assert storage.read_json(storage.join(day, "_COMMITTED"))["previous"] == old.rsplit("/", 1)[-1]
    fs, root = storage.fs_root(day)
    assert not fs.find(storage.fs_root(old)[1])                     # the replaced attempt is gone
    names = sorted(p.rstrip("/").rsplit("/", 1)[-1] for p in fs.ls(root, detail=False))
    assert names == sorted(["_COMMITTED", storage.resolve(day).rsplit("/", 1)[-1]])


def test_a_retained_attempt_outlives_the_rerun_that_replaces_it(base):
    """A model version's lineage names files inside its package's attempt: once deploy retains it, a
    rerun of the step commits a new attempt and readers of the partition get the new one, but the
    retained attempt stays whole where the lineage points. An unretained one is still collected."""
    day = storage.join(base, "day=1")
    _write(day, {"checkpoint.pt": b"deployed"})
    deployed = storage.resolve(day)
    storage.retain(deployed, "criteo_dcn-run key/1")                # a holder name with odd characters
    _write(day, {"checkpoint.pt": b"rerun"})
    rerun = storage.resolve(day)
    assert rerun != deployed and _read(day)["checkpoint.pt"] == b"rerun"
    fs, _ = storage.fs_path(deployed)
    assert fs.cat_file(storage.fs_path(storage.join(deployed, "checkpoint.pt"))[1]) == b"deployed"
    _write(day, {"checkpoint.pt": b"third"})                         # the unretained rerun attempt goes
    assert not fs.find(storage.fs_root(rerun)[1])
    assert fs.cat_file(storage.fs_path(storage.join(deployed, "checkpoint.pt"))[1]) == b"deployed"


def test_a_failure_midway_leaves_the_old_version(base):
    day = storage.join(base, "day=1")
    _write(day, {"a.bin": b"old"})
    with pytest.raises(RuntimeError), storage.staged_partition(day) as attempt:
        storage.write_bytes(storage.join(attempt, "a.bin"), b"half")
        raise RuntimeError("killed")
    assert _read(day) == {"a.bin": b"old", "_SUCCESS": b""}
    fs, root = storage.fs_root(day)
    assert len(fs.ls(root, detail=False)) == 2                      # the failed attempt was removed


def test_a_stale_uncommitted_attempt_is_collected_but_a_live_one_is_not(base, monkeypatch):
    day = storage.join(base, "day=1")
    fs, root = storage.fs_root(day)
    crashed = f"{root}/.attempt-{int(time.time()) - storage.STALE_ATTEMPT_S - 60}-0123abcd"
    live = f"{root}/.attempt-{int(time.time()) - 60}-4567cdef"
    for folder in (crashed, live):
        storage.write_bytes(storage.join(day, folder.rsplit("/", 1)[-1], "train", "x.bin"), b"x")
    _write(day, {"a.bin": b"new"})
    assert not fs.find(crashed) and fs.find(live)                   # another writer may still be at `live`
    assert _read(day) == {"a.bin": b"new", "_SUCCESS": b""}


def test_a_folder_complete_in_itself_resolves_to_itself(base):
    """A model version (and what is inside it, e.g. the workflow an incremental run reads) carries its
    own `_SUCCESS` and is read in place; without it and without a commit, a folder is not published."""
    version = storage.join(base, "model_repository", "criteo_dcn", "3", "preprocessing")
    storage.write_bytes(storage.join(version, "nvt", "workflow.pkl"), b"w")
    assert not storage.is_published(version)
    storage.write_bytes(storage.join(version, "_SUCCESS"), b"")
    assert storage.is_published(version) and storage.resolve(version) == version


def test_a_commit_object_that_is_not_one_is_refused(base):
    day = storage.join(base, "day=1")
    storage.write_json(storage.join(day, "_COMMITTED"), {"attempt": "../elsewhere"})
    with pytest.raises(ValueError, match="_COMMITTED: not a commit object"):
        storage.resolve(day)


def test_files_appear_whole_and_days_are_found(base):
    storage.write_bytes(storage.join(base, "sub", "f.bin"), b"abc")
    fs, root = storage.fs_root(storage.join(base, "sub"))
    assert fs.cat_file(f"{root}/f.bin") == b"abc"
    assert [p.rsplit("/", 1)[-1] for p in fs.find(root)] == ["f.bin"]  # the temporary name is gone
    storage.write_bytes(storage.join(base, "day_4.gz"), b"")
    assert storage.find_day_file(base, 4) == f"{base}/day_4.gz"
    with pytest.raises(FileNotFoundError,
                       match=f"raw day 5 not found: expected {base}/day_5 or {base}/day_5.gz"):
        storage.find_day_file(base, 5)


def test_download_of_a_resolved_partition(base, tmp_path_factory):
    day = storage.join(base, "day=1")
    _write(day, {"train/a.bin": b"a"})
    local = storage.download_dir(storage.resolve(day), str(tmp_path_factory.mktemp("dl") / "p"))
    assert open(os.path.join(local, "train", "a.bin"), "rb").read() == b"a"


@pytest.mark.unit
def test_the_fake_refuses_folder_renames_as_gcsfuse_does(tmp_path):
    """The fake itself: EMFILE for a folder (pathlib and shutil go through it), a file moves whole."""
    (tmp_path / "d" / "sub").mkdir(parents=True)
    (tmp_path / "d" / "sub" / "f").write_bytes(b"f")
    (tmp_path / "x").write_bytes(b"x")
    outer = os.rename
    gcsfuse.install(tmp_path)
    try:
        with pytest.raises(OSError) as exc:
            os.rename(tmp_path / "d", tmp_path / "e")
        assert exc.value.errno == errno.EMFILE
        with pytest.raises(OSError):
            (tmp_path / "d").replace(tmp_path / "e")
        os.replace(tmp_path / "x", tmp_path / "y")
        assert (tmp_path / "y").read_bytes() == b"x" and not (tmp_path / "x").exists()
        shutil.move(tmp_path / "d", tmp_path / "e")                 # falls back to copy + delete
        assert (tmp_path / "e" / "sub" / "f").read_bytes() == b"f"
    finally:
        gcsfuse.uninstall()
    assert os.rename is outer                                        # uninstalled: what was there before


@pytest.mark.unit
def test_the_fake_reaches_a_child_process(tmp_path):
    import subprocess
    import sys

    (tmp_path / "d").mkdir()
    src, dst = str(tmp_path / "d"), str(tmp_path / "e")
    code = f"import os\ntry:\n os.rename({src!r}, {dst!r})\nexcept OSError as e:\n print(e.errno)"
    out = subprocess.run([sys.executable, "-c", code], env=gcsfuse.subprocess_env(tmp_path),
                         capture_output=True, text=True, check=True).stdout
    assert out.strip() == str(errno.EMFILE)


@pytest.mark.unit
def test_publish_by_copy_makes_a_version_folder_without_renaming_it(tmp_path):
    """The model repository's use: files copied in, the marker last; a taken number is left alone."""
    import fsspec

    gcsfuse.install(tmp_path)
    try:
        fs = fsspec.filesystem("file")
        first = _staged(fs, str(tmp_path / ".staging-a"), {"model.onnx": b"a", "sub/b.bin": b"b", "_SUCCESS": b""})
        written = []
        copy, touch = fs.copy, fs.touch
        fs.copy = lambda src, dst, **kw: written.append(dst.rsplit("/", 1)[-1]) or copy(src, dst, **kw)
        fs.touch = lambda path, **kw: written.append(path.rsplit("/", 1)[-1]) or touch(path, **kw)
        try:
            assert storage.publish_by_copy(fs, first, str(tmp_path / "1"))
        finally:
            del fs.copy, fs.touch
        assert written[-1] == "_SUCCESS" and sorted(written) == ["_SUCCESS", "b.bin", "model.onnx"]
        second = _staged(fs, str(tmp_path / ".staging-b"), {"model.onnx": b"b"})
        assert not storage.publish_by_copy(fs, second, str(tmp_path / "1"))
    finally:
        gcsfuse.uninstall()
    assert (tmp_path / "1" / "model.onnx").read_bytes() == b"a" and (tmp_path / "1" / "_SUCCESS").exists()
    assert (tmp_path / "1" / "sub" / "b.bin").read_bytes() == b"b"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["1"]


def _staged(fs, staging: str, files: dict[str, bytes]) -> str:
    for name, data in files.items():
        fs.makedirs(f"{staging}/{name}".rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(f"{staging}/{name}", data)
    return staging


@pytest.mark.unit
def test_one_rule_for_local():
    assert storage.is_local("/data/bucket") and storage.is_local("file:///data/bucket")
    assert not storage.is_local("gs://bucket/base")


@pytest.mark.unit
def test_under_criteo_fake_gcsfuse_every_test_folder_refuses_folder_renames(tmp_path):
    """What `make test-steps` relies on for its second pass: the session's folders are a gcsfuse mount."""
    if os.environ.get("CRITEO_FAKE_GCSFUSE") != "1":
        pytest.skip("only under CRITEO_FAKE_GCSFUSE=1")
    (tmp_path / "d").mkdir()
    with pytest.raises(OSError) as exc:
        os.rename(tmp_path / "d", tmp_path / "e")
    assert exc.value.errno == errno.EMFILE
