"""The Airflow side's storage seam: a URL (a local folder or gs://...) as an ObjectStoragePath.

Airflow's ObjectStoragePath, so a bucket is reached with the provider's filesystem and Airflow's
connections; the step images use fsspec through criteo_kernel.storage for the same URLs.
"""
from __future__ import annotations

import os
import posixpath
import uuid

from criteo_kernel.storage import is_local  # one rule for what a local URL is, both seams

__all__ = ["is_local", "normalise", "storage_path", "write_text_atomic"]


def storage_path(url: str):
    """The ObjectStoragePath of a URL or a local path."""
    from airflow.sdk import ObjectStoragePath

    return ObjectStoragePath(url if "://" in url else f"file://{url}")


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
    if path.protocol in ("file", "local", ""):
        tmp = path.parent / f".{path.name}.{uuid.uuid4().hex[:8]}"
        tmp.write_text(text)
        os.replace(tmp.path, path.path)
    else:
        path.write_text(text)
