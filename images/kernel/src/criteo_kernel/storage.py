"""The storage seam of the step code: one base URL, a local folder or gs://, through fsspec.

Every output partition is built in a hidden staging folder next to its final place and published
in one move. A partition counts as present only when its `_SUCCESS` marker is there, so readers
never see half of one: on a local disk the move is one rename; on an object store the marker is
the last object written. Single files appear whole too (`write_json`, `write_bytes`): a temporary
name, then a rename; on an object store one upload.
"""
from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .artifacts import SUCCESS
from .schema import day_file_names


def fs_path(url: str):
    """(filesystem, path) of a URL or local path."""
    import fsspec

    return fsspec.core.url_to_fs(url)


def fs_root(url: str):
    """(filesystem, path without a trailing slash) of a folder URL."""
    fs, path = fs_path(url)
    return fs, path.rstrip("/")


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *[p.strip("/") for p in parts]])


def is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def is_local_fs(fs) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def local_path(url: str) -> str:
    return url[len("file://"):] if url.startswith("file://") else url


def exists(url: str) -> bool:
    fs, path = fs_path(url)
    return fs.exists(path)


def is_published(url: str) -> bool:
    return exists(join(url, SUCCESS))


def find_day_file(folder: str, day: int) -> str:
    """The URL of raw day N in `folder`: `day_N`, else `day_N.gz`."""
    names = day_file_names(day)
    for name in names:
        url = join(folder, name)
        if exists(url):
            return url
    raise FileNotFoundError(f"raw day {day} not found: expected {' or '.join(join(folder, n) for n in names)}")


def read_json(url: str) -> dict:
    fs, path = fs_path(url)
    with fs.open(path, "r") as fh:
        return json.load(fh)


def write_bytes(url: str, data: bytes) -> None:
    """Write a file that appears whole: a hidden temporary name then a rename (one upload on GCS)."""
    fs, path = fs_path(url)
    parent = path.rsplit("/", 1)[0]
    fs.makedirs(parent, exist_ok=True)
    if not is_local_fs(fs):
        with fs.open(path, "wb") as fh:
            fh.write(data)
        return
    tmp = f"{parent}/.{path.rsplit('/', 1)[-1]}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def write_json(url: str, payload: dict, indent: int | None = 2) -> None:
    write_bytes(url, json.dumps(payload, indent=indent, sort_keys=True, default=str).encode())


def local_copy(url: str) -> str:
    """A local path holding the file at `url` (the path itself for a local URL)."""
    if is_local(url):
        return local_path(url)
    import tempfile

    fs, path = fs_path(url)
    dst = os.path.join(tempfile.mkdtemp(), os.path.basename(path))
    fs.get(path, dst)
    return dst


@contextmanager
def staged_partition(final_url: str) -> Iterator[str]:
    """Yield a staging folder; on success publish it atomically as `final_url`.

    A rerun replaces an existing partition whole (idempotent); a crash leaves only a hidden
    `.staging-*` folder that no reader looks at.
    """
    parent, name = final_url.rstrip("/").rsplit("/", 1)
    staging = join(parent, f".staging-{name}-{uuid.uuid4().hex[:8]}")
    fs, spath = fs_path(staging)
    fs.makedirs(spath, exist_ok=True)
    try:
        yield staging
        with fs.open(join(spath, SUCCESS), "w") as fh:
            fh.write("")
        publish(staging, final_url)
    except BaseException:
        try:
            fs.rm(spath, recursive=True)
        except OSError as exc:  # a read-only or full bucket: the hidden staging folder stays, unread
            print(f"WARNING: could not remove the staging folder {staging}: {exc}", flush=True)
        raise


def publish(staging_url: str, final_url: str) -> None:
    fs, spath = fs_path(staging_url)
    _, fpath = fs_path(final_url)
    if is_local(final_url):
        old = None
        if os.path.exists(fpath):
            old = f"{os.path.dirname(fpath)}/.replaced-{os.path.basename(fpath)}-{uuid.uuid4().hex[:8]}"
            os.rename(fpath, old)
        os.rename(spath, fpath)
        if old:
            import shutil

            shutil.rmtree(old, ignore_errors=True)
        return
    # Object store: drop the old marker first, copy everything but the marker, marker last.
    if fs.exists(join(fpath, SUCCESS)):
        fs.rm(join(fpath, SUCCESS))
    if fs.exists(fpath):
        fs.rm(fpath, recursive=True)
    for src in fs.find(spath):
        rel = src[len(spath.rstrip("/")) + 1:]
        if rel != SUCCESS:
            fs.copy(src, join(fpath, rel))
    fs.touch(join(fpath, SUCCESS))
    fs.rm(spath, recursive=True)


def download_dir(url: str, local_dir: str) -> str:
    """Bring a published folder to local disk (a no-op for a local base URL)."""
    if is_local(url):
        return local_path(url)
    fs, path = fs_path(url)
    fs.get(path.rstrip("/") + "/", local_dir, recursive=True)
    return local_dir


def upload_dir(local_dir: str, url: str) -> None:
    """Copy a local folder's contents into `url` (a staging folder)."""
    fs, path = fs_path(url)
    for root, _, files in os.walk(local_dir):
        for f in files:
            src = os.path.join(root, f)
            rel = os.path.relpath(src, local_dir)
            fs.makedirs(os.path.dirname(join(path, rel)), exist_ok=True)
            fs.put_file(src, join(path, rel))
