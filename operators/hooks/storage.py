"""The Airflow side's storage seam: a URL (a local folder or gs://...) as an ObjectStoragePath.

Airflow's ObjectStoragePath, so a bucket is reached with the provider's filesystem and Airflow's
connections; the step images use fsspec through criteo_kernel.storage for the same URLs.
"""
from __future__ import annotations

import os
import posixpath
import uuid

from criteo_kernel.storage import is_local  # one rule for what a local URL is, both seams

__all__ = ["BucketUnavailable", "check_bucket", "gcs_blob", "is_local", "normalise", "resolve_partition",
           "storage_path", "write_text_atomic"]


def storage_path(url: str):
    """The ObjectStoragePath of a URL or a local path."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url if "://" in url else f"file://{url}")


def resolve_partition(url: str) -> str:
    """The URL of the folder holding partition `url`'s current content: the attempt its commit object
    names (criteo_kernel.storage's protocol, read here through Airflow's filesystems). A step result
    names a partition by its logical URL; whoever reads its files on this side reads below this."""
    from criteo_kernel.artifacts import COMMIT
    from criteo_kernel.storage import committed_attempt

    path = storage_path(url)
    attempt = committed_attempt(path.fs, path.path)
    if attempt is None:
        raise FileNotFoundError(f"{url.rstrip('/')}/{COMMIT}: missing, the partition {url} is not published")
    return f"{url.rstrip('/')}/{attempt}"


def retain_partition(attempt_url: str, holder: str) -> None:
    """Pin a partition's committed attempt (what `resolve_partition` gave) against a later commit's
    collection, through Airflow's filesystems: criteo_kernel.storage.retain's protocol."""
    from criteo_kernel.storage import retain_on

    path = storage_path(attempt_url)
    retain_on(path.fs, path.path, holder)


def normalise(url: str) -> str:
    """A comparable form of a location: the real path for a local one, a normalised key for a bucket."""
    if is_local(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        return "file://" + os.path.realpath(path)
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}"


def write_text_atomic(path, text: str) -> None:
    """Replace a file's content so that a reader sees the old or the new, never half: a rename on
    a local disk, one object PUT on an object store."""
    if is_local(path):
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(text)
        os.replace(tmp.path, path.path)
    else:
        path.write_text(text)


def gcs_blob(path):
    """The google-cloud-storage Blob of a gs:// ObjectStoragePath, for what gcsfs cannot do: a write
    conditional on an object's generation (gcsfs offers only create-only, `mode="create"`). The
    client reaches the endpoint and uses the credentials of the path's own gcsfs filesystem: a
    connection's `gcs.endpoint` extra, else STORAGE_EMULATOR_HOST (the emulator; the client then
    needs no credentials) or storage.googleapis.com; the credentials gcsfs resolved (a connection's,
    or the environment's default ones)."""
    from google.cloud import storage

    fs = path.fs
    endpoint = getattr(fs, "_endpoint", None)
    credentials = getattr(getattr(fs, "credentials", None), "credentials", None)
    options = {"api_endpoint": endpoint} if endpoint else None
    if credentials is None and not (endpoint or os.environ.get("STORAGE_EMULATOR_HOST")):
        client = storage.Client.create_anonymous_client()   # gcsfs fell back to anonymous access too
    else:
        client = storage.Client(project=getattr(fs, "project", None) or None, credentials=credentials,
                                client_options=options)
    bucket, _, key = path.path.lstrip("/").partition("/")
    return client.bucket(bucket).blob(key)


class BucketUnavailable(RuntimeError):
    """The bucket a setting names does not exist or cannot be read: retrying cannot help."""


def check_bucket(url: str, setting: str = "criteo_base_url") -> None:
    """Fail, naming the setting and the URL, when the bucket of a gs:// URL is missing or unreadable.

    A local folder is created by the steps when needed; a bucket is not: without this, a run on a
    missing bucket would wait on its raw-day sensor for hours and then say only "not found".
    """
    if is_local(url):
        return
    scheme, rest = url.split("://", 1)
    bucket = rest.split("/", 1)[0]
    try:
        root = storage_path(f"{scheme}://{bucket}/")
        found = root.exists()
        if found:
            next(iter(root.iterdir()), None)   # readable, not only visible
    except Exception as exc:  # 403, bad credentials, DNS: all mean this bucket cannot be used
        raise BucketUnavailable(f"{setting}={url}: the bucket {scheme}://{bucket} cannot be read: "
                                f"{type(exc).__name__}: {exc}") from exc
    if not found:
        raise BucketUnavailable(f"{setting}={url}: the bucket {scheme}://{bucket} does not exist (create it, "
                                f"or point {setting} at an existing one)")

