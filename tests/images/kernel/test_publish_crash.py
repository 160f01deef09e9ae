"""A crash at any point of a publish leaves the old version or the new one visible, never a mix.

The crash is injected by a filesystem that counts every write (fsspec writes and os.replace) and,
from the Nth on, refuses them all, as if the process had died there (the writer's own cleanup
fails too). Each point of a publish is tried: the attempt's files, `_SUCCESS`, the commit object
and the garbage collection after it. Then the partition is read through the public reader API.
"""
import os

import pytest

from criteo_kernel import storage

MUTATING = {"makedirs", "mkdir", "pipe_file", "pipe", "touch", "rm", "rm_file", "copy", "cp_file",
            "put_file", "put", "mv"}


class Crash(OSError):
    """The process died here: everything after fails."""


class Plan:
    def __init__(self, crash_at: int | None):
        self.crash_at, self.done = crash_at, []

    def step(self, what: str) -> None:
        if self.crash_at is not None and len(self.done) >= self.crash_at:
            raise Crash(f"crashed before write {len(self.done)} ({what})")
        self.done.append(what)


class CrashingFS:
    def __init__(self, fs, plan: Plan):
        self._fs, self._plan = fs, plan

    def __getattr__(self, name):
        attr = getattr(self._fs, name)
        if name in MUTATING or name == "open":
            def op(*args, **kwargs):
                mode = args[1] if len(args) > 1 else kwargs.get("mode", "rb")
                if name != "open" or any(c in mode for c in "wa"):
                    self._plan.step(f"{name} {args[0] if args else ''}")
                return attr(*args, **kwargs)
            return op
        return attr


def _publish(day: str, files: dict[str, bytes], plan: Plan, monkeypatch) -> None:
    fs_path, replace = storage.fs_path, os.replace
    with monkeypatch.context() as m:
        m.setattr(storage, "fs_path", lambda url: (lambda fs, p: (CrashingFS(fs, plan), p))(*fs_path(url)))
        m.setattr(os, "replace", lambda src, dst: plan.step(f"replace {dst}") or replace(src, dst))
        try:
            with storage.staged_partition(day) as attempt:
                for name, data in files.items():
                    storage.write_bytes(storage.join(attempt, name), data)
        except Crash:
            pass


def _read(url: str) -> dict[str, bytes] | None:
    if not storage.is_published(url):
        return None
    fs, root = storage.fs_root(storage.resolve(url))
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


OLD = {"train/part.parquet": b"old-train", "eval/part.parquet": b"old-eval", "_meta.json": b"{}"}
NEW = {"train/part.parquet": b"new-train", "eval/part.parquet": b"new-eval", "_meta.json": b'{"v": 2}'}


@pytest.mark.parametrize("first", [True, False], ids=["first-publish", "replacing"])
def test_a_crash_at_every_write_leaves_old_or_new(base, first, monkeypatch):
    counted = Plan(None)  # the writes of a publish that replaces one (so the garbage collection's too)
    _publish(storage.join(base, "probe"), OLD, Plan(None), monkeypatch)
    _publish(storage.join(base, "probe"), NEW, counted, monkeypatch)
    commit_at = next(i for i, w in enumerate(counted.done) if storage.COMMIT in w and "makedirs" not in w)
    assert any(w.startswith("rm ") for w in counted.done[commit_at + 1:]), counted.done  # GC after the commit
    seen = set()
    for n in range(len(counted.done) + 1):
        day = storage.join(base, f"day-{n}")
        if not first:
            _publish(day, OLD, Plan(None), monkeypatch)
        _publish(day, NEW, Plan(n), monkeypatch)
        got = _read(day)
        expected_old = None if first else {**OLD, "_SUCCESS": b""}
        if n <= commit_at:
            assert got == expected_old, f"crash at write {n} ({counted.done[n]}): not the old version"
        else:
            assert got == {**NEW, "_SUCCESS": b""}, f"crash at write {n}: not the new version"
        seen.add("new" if got and got["_meta.json"] == NEW["_meta.json"] else "old")
        _publish(day, {"a.bin": b"after"}, Plan(None), monkeypatch)  # a rerun after the crash recovers
        assert _read(day) == {"a.bin": b"after", "_SUCCESS": b""}
    assert seen == {"old", "new"}
