"""A hook onto the Great Expectations data docs published under the bucket (a folder or gs://).

Each validation publishes one GX Data Docs site folder (see operators/pipeline/layout.py)::

    {data_docs_root}/{dag_id}/{safe_run_id}/{name}/index.html, static/..., validations/.../<batch>.html
                                                 /_summary.json   (verdict, failed expectations, "page")

Each site folder is a partition published by a commit (criteo_kernel.storage): its files lie in
`<site>/.attempt-*/`, and `<site>/_COMMITTED` names the current one. Paths given to and returned by
this hook are the logical ones above (what links and the result's `data_docs_page` carry); the
hook reads them inside the committed attempt, so a rerun that replaces a site is served whole.

This hook reads that tree through Airflow's ObjectStoragePath, and refuses any path that would
leave it. The plugin serves what it finds (plugins/criteo_mlops_plugin.py); the "Data docs"
extra link points at it (operators/links/data_docs.py).

Cheap to import: the plugin and the links module import it in every process.
"""
from __future__ import annotations

import json
import logging
import os
import re
from functools import cached_property

from criteo_kernel.artifacts import COMMIT
from criteo_kernel.storage import committed_attempt

from .storage import is_local, normalise, storage_path

log = logging.getLogger(__name__)

SUMMARY = "_summary.json"
SITE_DEPTH = 3  # {dag_id}/{safe_run_id}/{name}: one site, published as one partition


class InvalidPath(ValueError):
    """A requested path that is not a plain relative path inside the data docs root."""


def relative_to_root(location: str, root: str) -> str | None:
    """`location` relative to `root` ('' for the root itself), None when it is not under it."""
    loc, base = normalise(str(location)), normalise(str(root))
    if loc == base:
        return ""
    if loc.startswith(base.rstrip("/") + "/"):
        return loc[len(base.rstrip("/")) + 1:]
    return None


def safe_parts(rel: str) -> list[str]:
    """Split a requested relative path; raise InvalidPath for anything but a plain path inside the root.

    Rejected: absolute paths, URLs, backslashes, NUL, `..` and hidden (dot) segments (publishers
    stage their writes in hidden folders). `.` and empty segments are dropped.
    """
    if not isinstance(rel, str) or "\x00" in rel or "\\" in rel or "://" in rel:
        raise InvalidPath(f"invalid path {rel!r}")
    if rel.startswith("/") or re.match(r"^[A-Za-z]:", rel):
        raise InvalidPath(f"absolute path {rel!r}")
    parts = [p for p in rel.split("/") if p not in ("", ".")]
    for p in parts:
        if p == ".." or p.startswith("."):
            raise InvalidPath(f"path {rel!r} leaves the data docs root or names a hidden file")
    return parts


class DataDocsHook:
    """Read access to the data docs root (local folder or gs://...).

    :param root_url: the root (the caller's settings: <criteo_base_url>/data_docs, Layout.data_docs).
    """

    def __init__(self, root_url: str):
        self.root_url = root_url.rstrip("/")

    @cached_property
    def root(self):
        return storage_path(self.root_url)

    def resolve(self, rel: str):
        """The ObjectStoragePath of `rel` under the root (inside its site's committed attempt);
        InvalidPath when it would escape the root, FileNotFoundError when its site is not published."""
        parts = safe_parts(rel)
        if not parts:
            raise InvalidPath("empty path")
        path = self.root.joinpath(*parts)
        if len(parts) >= SITE_DEPTH:  # a site or a file of one: inside the attempt its commit names
            site = self.root.joinpath(*parts[:SITE_DEPTH])
            attempt = committed_attempt(site.fs, site.path)
            if attempt is None:
                raise FileNotFoundError(f"{site}/{COMMIT}: missing, the site is not published")
            path = site.joinpath(attempt, *parts[SITE_DEPTH:])
        if is_local(self.root_url):
            root_real = os.path.realpath(self.root.path)
            real = os.path.realpath(path.path)
            if real != root_real and not real.startswith(root_real + os.sep):
                raise InvalidPath(f"{rel!r} resolves outside the data docs root")  # a symlink out
        return path

    def find(self, rel: str):
        """The file at `rel`, or None. GX 1.x validation pages link their favicon one folder short
        (validations/static/...): a missing `.../static/...` falls back to the site's own static/."""
        try:
            path = self.resolve(rel)
        except FileNotFoundError:
            return None
        if path.is_file():
            return path
        parts = safe_parts(rel)
        if "static" in parts[SITE_DEPTH:]:
            i = len(parts) - 1 - parts[::-1].index("static")
            fallback = self.resolve("/".join(parts[:SITE_DEPTH] + parts[i:]))
            if fallback.is_file():
                return fallback
        return None

    def list_runs(self) -> list[dict]:
        """Every published site (its `_summary.json`), newest first.

        Each entry is the summary plus `dag_id` (the folder, what access is checked on), `run_id`,
        `name`, `site` (the site folder) and `page` (its main page), both relative to the root,
        `failed_count` and `warning_count`.
        """
        root = self.root
        try:
            if not root.exists():
                return []
            commits = list(root.glob(f"{'/'.join(['*'] * SITE_DEPTH)}/{COMMIT}"))
        except FileNotFoundError:
            return []
        runs = []
        for commit in commits:
            try:
                parts = safe_parts(str(commit.parent.relative_to(root)))
            except (InvalidPath, ValueError):
                continue  # a hidden folder
            try:
                attempt = committed_attempt(commit.parent.fs, commit.parent.path)
                if attempt is None:
                    continue  # gone since the listing (a rerun's garbage collection)
                path = commit.parent / attempt / SUMMARY
                summary = json.loads(path.read_text())
                if not isinstance(summary, dict) or len(parts) != 3:
                    raise ValueError("not a site summary")
            except (ValueError, OSError) as exc:
                log.warning("skipping data docs summary %s: %s", path, exc)
                continue
            site = "/".join(parts)
            try:
                page = "/".join(parts + safe_parts(str(summary.get("page") or "index.html")))
            except InvalidPath:
                page = f"{site}/index.html"
            runs.append({
                **summary,
                "dag_id": parts[0],
                "run_id": summary.get("run_id") or parts[1],
                "name": parts[2],
                "site": site,
                "page": page,
                "failed_count": len(summary.get("failed") or []),
                "warning_count": len(summary.get("warnings") or []),
            })
        runs.sort(key=lambda r: (str(r.get("validated_at") or ""), r["site"]), reverse=True)
        return runs
