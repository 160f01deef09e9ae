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


def is_local(where) -> bool:
    """Whether `where` is on the local disk: a URL or path (no scheme, or file://), or anything with
    an fsspec `protocol` (a filesystem, Airflow's ObjectStoragePath). The one rule for every seam:
    a local disk publishes by rename, an object store by marker-last copies."""
    protocol = getattr(where, "protocol", None)
    if protocol is None:
        url = os.fspath(where)
        return "://" not in url or url.startswith("file://")
    protocols = (protocol,) if isinstance(protocol, str) else tuple(protocol)
    return bool(set(protocols) & {"file", "local", ""})


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
    if not is_local(fs):
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
        publish(fs, spath, fs_path(final_url)[1], replace=True)
    except BaseException:
        try:
            fs.rm(spath, recursive=True)
        except OSError as exc:  # a read-only or full bucket: the hidden staging folder stays, unread
            print(f"WARNING: could not remove the staging folder {staging}: {exc}", flush=True)
        raise


def publish(fs, staging: str, final: str, replace: bool) -> bool:
    """Make the folder `staging` visible whole as `final` on filesystem `fs`, its `_SUCCESS` marker
    included; the staging folder is gone afterwards. The one publish of the step code and of the
    Airflow side's model repository (operators/hooks/model_repository.py).

    Local disk: the marker goes into the staging folder, then one rename. Object store: everything
    but the marker is copied, the marker last, so a reader never takes a half-copied folder.
    `replace`: an existing `final` is replaced whole (a rerun of a step); else a `final` already
    there (a concurrent deploy took this version number) leaves it alone, removes the staging
    folder and returns False.
    """
    staging, final = staging.rstrip("/"), final.rstrip("/")
    if is_local(fs):
        return _publish_local(fs, staging, final, replace)
    # The objects under `final`, not fs.exists(final): an object store has no folders, and some
    # fsspec versions (2022.5, Merlin's) answer False for a prefix that holds only objects.
    if fs.find(final):
        if not replace:
            fs.rm(staging, recursive=True)
            return False
        if fs.exists(join(final, SUCCESS)):  # the old marker first: a half-deleted folder is never "present"
            fs.rm(join(final, SUCCESS))
        fs.rm(fs.find(final))
    for src in fs.find(staging):
        rel = src[len(staging) + 1:]
        if rel != SUCCESS:
            fs.copy(src, join(final, rel))
    fs.touch(join(final, SUCCESS))
    fs.rm(staging, recursive=True)
    return True


def _publish_local(fs, staging: str, final: str, replace: bool) -> bool:
    import errno

    fs.touch(join(staging, SUCCESS))
    old = None
    if replace and os.path.exists(final):
        old = f"{os.path.dirname(final)}/.replaced-{os.path.basename(final)}-{uuid.uuid4().hex[:8]}"
        os.rename(final, old)
    try:
        # rename() of a folder onto a non-empty one fails: without `replace`, whoever renamed first wins.
        os.rename(staging, final)
    except OSError as exc:
        if replace or exc.errno not in (errno.EEXIST, errno.ENOTEMPTY):
            raise  # the disk (read-only, full): the caller's cleanup and message
        fs.rm(staging, recursive=True)
        return False
    if old:
        import shutil

        shutil.rmtree(old, ignore_errors=True)
    return True


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
