"""The storage seam of the step code: one base URL, a local folder or gs://, through fsspec.

Partitions are published by a commit protocol that needs no folder rename and no delete in place,
so it holds on a local disk, on gs:// through fsspec and on a GCS FUSE mount (gcsfuse renames a
folder only in a hierarchical-namespace bucket; in a flat one it refuses, EMFILE, past
`rename-dir-limit` or for a folder with subfolders: gcsfuse docs/semantics.md):

    <partition>/.attempt-<start>-<id>/...   one writer's files, `_SUCCESS` last (`staged_partition`)
    <partition>/_COMMITTED                  the commit object, written last: {"attempt": ..., "files": [...]}

A partition URL is the logical name (`.../day=3`); the commit object says which attempt is its
content. Writing it is the one step that changes what readers see: a file replace on a local disk
or a FUSE mount (gcsfuse renames files), one object upload on an object store; either way a
reader finds the old commit or the new one, whole. A published attempt is never changed: the
attempt the previous commit named is deleted only after the new commit, and an uncommitted one
only when older than STALE_ATTEMPT_S (a crashed writer's; a live writer's is younger).

Readers resolve: `resolve(url)` gives the committed attempt's URL and they read only below it;
`is_published(url)` says whether there is a commit. Step results and the Airflow side pass the
logical partition URL (what the layout names), never an attempt's: each reader resolves when it
reads, so a rerun that replaced a partition is read whole, and a URL stays the layout's.
The Airflow side resolves with `resolve_on(fs, path)` on its own filesystems.

Folders a reader takes as complete by their own `_SUCCESS`, read in place (the model repository's
version folders, which Triton loads), are claimed first by `reserve_folder` (a create-only write of
`<folder>/_RESERVED`: one writer wins a name), then filled, the `_SUCCESS` marker last.
Single files appear whole too (`write_json`, `write_bytes`): a temporary file, then a
file rename; on an object store one upload.
"""
from __future__ import annotations

import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from .artifacts import COMMIT, RESERVED, SUCCESS
from .schema import day_file_names

ATTEMPT_PREFIX = ".attempt-"
_ATTEMPT = re.compile(r"^\.attempt-(\d+)-[0-9a-f]{8}$")
# An uncommitted attempt older than this is a crashed writer's: no step runs for a week.
STALE_ATTEMPT_S = 7 * 24 * 3600
RETAINED = "_RETAINED"  # pins of attempts that something outside the partition names (`retain`)


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
    a local disk (a FUSE mount included) writes a file whole by a file rename, an object store by
    one upload."""
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
    """Write a file that appears whole: a hidden temporary file then a file rename (one upload on GCS)."""
    fs, path = fs_path(url)
    _write(fs, path, data)


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


class NotPublished(FileNotFoundError):
    """A partition URL with no commit object: never published, or its first attempt still running."""


def _read_commit(fs, path: str) -> dict | None:
    """The commit object of the partition folder `path` on `fs`, None when there is none."""
    try:
        raw = fs.cat_file(f"{path.rstrip('/')}/{COMMIT}")
    except FileNotFoundError:
        return None
    commit = json.loads(raw)
    attempt = commit.get("attempt") if isinstance(commit, dict) else None
    if not isinstance(attempt, str) or not _ATTEMPT.match(attempt):
        raise ValueError(f"{path}/{COMMIT}: not a commit object (no valid \"attempt\"): {raw[:200]!r}")
    return commit


def committed_attempt(fs, path: str) -> str | None:
    """The name of the attempt folder the commit of partition `path` on filesystem `fs` names (any
    fsspec filesystem, Airflow's ObjectStoragePath's `.fs` included); None when not published."""
    commit = _read_commit(fs, path)
    return None if commit is None else commit["attempt"]


def resolve_on(fs, path: str) -> str | None:
    """The committed attempt folder's path of partition `path` on `fs`; None when not published."""
    attempt = committed_attempt(fs, path)
    return None if attempt is None else f"{path.rstrip('/')}/{attempt}"


def _resolved(url: str) -> str | None:
    if _ATTEMPT.match(url.rstrip("/").rsplit("/", 1)[-1]):
        return url if exists(join(url, SUCCESS)) else None  # an attempt's own URL: never changed once complete
    fs, path = fs_root(url)
    commit = _read_commit(fs, path)
    if commit is not None:
        return join(url, commit["attempt"])
    # A folder complete in itself, read in place: a model version or a folder inside one (a version's
    # preprocessing/, the workflow an incremental run reads), or a partition written before commits.
    return url if fs.exists(f"{path}/{SUCCESS}") else None


def resolve(url: str) -> str:
    """The URL of the folder holding partition `url`'s current content (its committed attempt).

    Every reader of a partition goes through this once and reads only below what it returns: the
    content under one commit, never a mix of two. A folder that carries its own `_SUCCESS` and no
    commit (a model version, what is inside one) resolves to itself, as does an attempt's own URL.
    Raises NotPublished (a FileNotFoundError) naming the commit object otherwise.
    """
    resolved = _resolved(url)
    if resolved is None:
        raise NotPublished(f"{join(url, COMMIT)}: missing, the partition {url} is not published")
    return resolved


def is_published(url: str) -> bool:
    """Whether `resolve(url)` finds complete content."""
    return _resolved(url) is not None


def _attempt_name() -> str:
    # The start time in the name tells a crashed attempt's leftovers from one still being written.
    return f"{ATTEMPT_PREFIX}{int(time.time())}-{uuid.uuid4().hex[:8]}"


@contextmanager
def staged_partition(final_url: str) -> Iterator[str]:
    """Yield the folder of a new attempt at partition `final_url`; on success commit it.

    The attempt is `<final_url>/.attempt-<start>-<id>/`, written by this writer alone. Committing
    writes its `_SUCCESS`, then the commit object `<final_url>/_COMMITTED` (one file replace, one
    object upload), which is what makes it current. Then the attempt the previous commit named
    (replaced, a rerun's) and attempts older than STALE_ATTEMPT_S that no commit names (crashed
    writers') are deleted. An exception removes the attempt; a process killed outright leaves only
    an uncommitted attempt, never read, removed by a later commit.
    """
    fs, root = fs_root(final_url)
    name = _attempt_name()
    attempt = f"{root}/{name}"
    fs.makedirs(attempt, exist_ok=True)
    try:
        yield join(final_url, name)
        fs.touch(f"{attempt}/{SUCCESS}")
        previous = _read_commit(fs, root)
        files = sorted(p[len(attempt) + 1:] for p in fs.find(attempt))
        _write(fs, f"{root}/{COMMIT}", json.dumps({
            "attempt": name, "previous": previous and previous["attempt"], "files": files,
            "committed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2, sort_keys=True).encode())
    except BaseException:
        try:
            fs.rm(attempt, recursive=True)
        except OSError as exc:  # a read-only or full bucket: the uncommitted attempt stays, unread
            print(f"WARNING: could not remove the uncommitted attempt {join(final_url, name)}: {exc}", flush=True)
        raise
    _collect(fs, root, keep=name, replaced=previous and previous["attempt"])


def _collect(fs, root: str, keep: str, replaced: str | None) -> None:
    """Delete what no reader resolves to any more: the attempt the previous commit named, and
    uncommitted attempts old enough that no writer is still at them; never a retained one (`retain`).
    Best effort: a failure here leaves garbage, never a wrong partition."""
    doomed = {replaced} - {None, keep}
    try:
        for entry in fs.ls(root, detail=False):
            m = _ATTEMPT.match(entry.rstrip("/").rsplit("/", 1)[-1])
            if m and m.group(0) != keep and time.time() - int(m.group(1)) > STALE_ATTEMPT_S:
                doomed.add(m.group(0))
        for name in sorted(doomed):
            if fs.find(f"{root}/{RETAINED}/{name}"):
                continue
            if fs.find(f"{root}/{name}"):  # fs.exists on a prefix: False in some fsspec versions
                fs.rm(f"{root}/{name}", recursive=True)
            elif is_local(fs) and os.path.isdir(f"{root}/{name}"):
                fs.rm(f"{root}/{name}", recursive=True)
    except OSError as exc:
        print(f"WARNING: could not delete old attempts under {root}: {exc}", flush=True)


def retain(attempt_url: str, holder: str) -> None:
    """Keep the committed attempt `attempt_url` when a later commit replaces it: something outside
    its partition names files inside it (a model version's lineage names its package's checkpoint,
    which the next daily run warm-starts from), so a rerun of the step must not collect it."""
    parent = attempt_url.rstrip("/").rsplit("/", 1)[0]
    fs, root = fs_root(parent)
    retain_on(fs, f"{root}/{attempt_url.rstrip('/').rsplit('/', 1)[1]}", holder)


def retain_on(fs, attempt_path: str, holder: str) -> None:
    """`retain` on any fsspec filesystem (Airflow's ObjectStoragePath's `.fs` included). The pin is one
    small object beside the attempts, `<partition>/_RETAINED/<attempt>/<holder>`, never inside the
    attempt (a published attempt is never changed). A folder complete in itself (not an attempt) is
    never collected and needs none."""
    root, name = attempt_path.rstrip("/").rsplit("/", 1)
    if not _ATTEMPT.match(name):
        return
    holder = re.sub(r"[^A-Za-z0-9._=-]+", "_", holder).strip("_") or "holder"
    _write(fs, f"{root}/{RETAINED}/{name}/{holder}", json.dumps(
        {"holder": holder, "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}).encode())


def _write(fs, path: str, data: bytes) -> None:
    """Write a file that appears whole: on a local disk (a FUSE mount included) a hidden temporary
    file then os.replace of that FILE (gcsfuse renames files, not folders); elsewhere one upload."""
    parent, name = path.rsplit("/", 1)
    fs.makedirs(parent, exist_ok=True)
    if not is_local(fs):
        fs.pipe_file(path, data)
        return
    tmp = f"{parent}/.{name}.tmp-{uuid.uuid4().hex[:8]}"
    with open(tmp, "wb") as fh:
        fh.write(data)
    os.replace(tmp, path)


def reserve_folder(fs, folder: str, owner: dict | None = None) -> bool:
    """Claim the new folder `folder` on `fs` for this writer alone, before anything is written in it;
    False when another writer holds it (take the next name). The claim is a create-only write of
    `<folder>/_RESERVED` ({owner..., "token", "reserved_at"}): on an object store one upload with
    ifGenerationMatch=0 (gcsfs' `mode="create"`: the store answers 412 to every writer but the first,
    gcsfs raises FileExistsError), on a local disk os.mkdir of the folder, which only one writer wins.
    A folder that already holds objects and no marker (written before reservations) counts as taken.
    The marker stays: it says who wrote the folder and since when, so a claim whose writer died (no
    `_SUCCESS` ever comes) can be told from one still being written."""
    folder = folder.rstrip("/")
    token = uuid.uuid4().hex
    marker = f"{folder}/{RESERVED}"
    data = json.dumps({**(owner or {}), "token": token,
                       "reserved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                       "reserved_at_s": int(time.time())}, sort_keys=True).encode()
    if is_local(fs):
        try:
            os.mkdir(folder)
        except FileExistsError:
            return False
        _write(fs, marker, data)
        return True
    # The objects under `folder`, not fs.exists(folder): an object store has no folders, and some
    # fsspec versions (2022.5, Merlin's) answer False for a prefix that holds only objects.
    if fs.find(folder):
        return False
    try:
        fs.pipe_file(marker, data, mode="create")
    except FileExistsError:
        # 412: another writer's marker, or ours when gcsfs retried an upload whose answer was lost
        try:
            return json.loads(fs.cat_file(marker)).get("token") == token
        except (FileNotFoundError, ValueError):
            return False
    return True


def reservation(fs, folder: str) -> dict | None:
    """The `_RESERVED` marker of `folder` (`reserve_folder`), None when it has none."""
    try:
        return json.loads(fs.cat_file(f"{folder.rstrip('/')}/{RESERVED}"))
    except (FileNotFoundError, ValueError):
        return None


def publish_by_copy(fs, staging: str, final: str, owner: dict | None = None) -> bool:
    """Make the folder `staging` visible whole as the new folder `final` on `fs` without renaming a
    folder: `final` is claimed (`reserve_folder`), `staging`'s files are copied in, `_SUCCESS` last,
    then `staging` is deleted. For a reader that takes a folder as complete by its `_SUCCESS`. A
    `final` another writer claimed is left alone: staging is deleted and False returned.
    """
    staging, final = staging.rstrip("/"), final.rstrip("/")
    if not reserve_folder(fs, final, owner):
        fs.rm(staging, recursive=True)
        return False
    for src in sorted(fs.find(staging)):
        rel = src[len(staging) + 1:]
        if rel != SUCCESS:
            if is_local(fs):
                fs.makedirs(os.path.dirname(f"{final}/{rel}"), exist_ok=True)
            fs.copy(src, f"{final}/{rel}")
    fs.touch(f"{final}/{SUCCESS}")
    fs.rm(staging, recursive=True)
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
