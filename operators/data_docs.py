"""Great Expectations data docs published under the bucket, as the Airflow UI shows them.

Each validation publishes one GX Data Docs site folder (see operators/layout.py)::

    {data_docs_root}/{dag_id}/{safe_run_id}/{name}/index.html, static/..., validations/.../<batch>.html
                                                 /_summary.json   (verdict, failed expectations, "page")

This module reads that tree (a local folder or gs://, through Airflow's ObjectStoragePath), maps
a step result's `data_docs_page` to the URL the plugin serves it at
(`/criteo-data-docs/site/<path under the root>`, see plugins/criteo_mlops_plugin.py), and defines
the "Data docs" operator extra link of CriteoStepOperator.

How the extra link works in Airflow 3: when a task ends in any terminal state (success, failed,
up for retry), the task runner calls `get_link()` of every link on the operator and stores the
result as the XCom `_link_DataDocsLink` (`finalize()` in airflow/sdk/execution_time/task_runner.py);
the API server only reads that XCom back (XComOperatorLink). A failed validation therefore gets
its link too, provided the operator pushed its result (XCom `step_result`) before raising.

Cheap to import: DAG files import it through operators.steps; ObjectStoragePath, fsspec and the
XCom backend are imported where they are used.
"""
from __future__ import annotations

import json
import logging
import os
import posixpath
import re
from functools import cached_property
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

ROUTE_PREFIX = "/criteo-data-docs"     # where the plugin's FastAPI app is mounted in the API server
SITE_ROUTE = "site"                    # {ROUTE_PREFIX}/site/{path under the data docs root}
SUMMARY = "_summary.json"
VALIDATION_STEPS = frozenset({"validate", "validate_processed"})
_UNSAFE_RUN_ID = re.compile(r"[^A-Za-z0-9._=-]")


class InvalidPath(ValueError):
    """A requested path that is not a plain relative path inside the data docs root."""


def safe_run_id(run_id: str) -> str:
    """The run id as a folder name: every char outside [A-Za-z0-9._=-] becomes `_`."""
    return _UNSAFE_RUN_ID.sub("_", run_id)


def default_root() -> str:
    from .config import PipelineConfig
    from .layout import Layout

    return Layout(PipelineConfig.load()).data_docs


def api_root_path() -> str:
    """The path part of Airflow's `[api] base_url` ('' when Airflow is served at /)."""
    from urllib.parse import urlsplit

    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="") or ""
    except Exception:  # no airflow-core (a bare task-sdk worker): the environment only
        base_url = os.environ.get("AIRFLOW__API__BASE_URL", "")
    return urlsplit(base_url).path.rstrip("/")


def route_url(rel: str) -> str:
    """The plugin URL serving `rel`, a path under the data docs root."""
    return f"{api_root_path()}{ROUTE_PREFIX}/{SITE_ROUTE}/{quote(rel.strip('/'), safe='/=')}"


def _is_local(url: str) -> bool:
    return "://" not in url or url.startswith("file://")


def _normalise(url: str) -> str:
    """A comparable form of a location: real path for local ones, normalised key for buckets."""
    if _is_local(url):
        path = url[len("file://"):] if url.startswith("file://") else url
        return "file://" + os.path.realpath(path)
    scheme, rest = url.split("://", 1)
    return f"{scheme}://{posixpath.normpath(rest)}"


def relative_to_root(location: str, root: str) -> str | None:
    """`location` relative to `root` ('' for the root itself), None when it is not under it."""
    loc, base = _normalise(str(location)), _normalise(str(root))
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


def page_url(result: dict | None, root: str | None = None) -> str:
    """Route URL of a step result's `data_docs_page`; '' when it has none or it lies outside the root."""
    page = (result or {}).get("data_docs_page") if isinstance(result, dict) else None
    if not page:
        return ""
    root = root or default_root()
    rel = relative_to_root(str(page), root)
    if not rel:
        log.warning("data docs page %s is not under the data docs root %s", page, root)
        return ""
    try:
        return route_url("/".join(safe_parts(rel)))
    except InvalidPath:
        return ""


class DataDocsStore:
    """Read access to the data docs root (local folder or gs://...)."""

    def __init__(self, root_url: str | None = None):
        self.root_url = (root_url or default_root()).rstrip("/")

    @cached_property
    def root(self):
        from .model_repository import storage_path

        return storage_path(self.root_url)

    def resolve(self, rel: str):
        """The ObjectStoragePath of `rel` under the root; InvalidPath when it would escape it."""
        parts = safe_parts(rel)
        if not parts:
            raise InvalidPath("empty path")
        path = self.root.joinpath(*parts)
        if _is_local(self.root_url):
            root_real = os.path.realpath(self.root.path)
            real = os.path.realpath(path.path)
            if real != root_real and not real.startswith(root_real + os.sep):
                raise InvalidPath(f"{rel!r} resolves outside the data docs root")  # a symlink out
        return path

    def find(self, rel: str):
        """The file at `rel`, or None. GX 1.x validation pages link their favicon one folder short
        (validations/static/...): a missing `.../static/...` falls back to the site's own static/."""
        path = self.resolve(rel)
        if path.is_file():
            return path
        parts = safe_parts(rel)
        if "static" in parts[3:]:
            i = len(parts) - 1 - parts[::-1].index("static")
            fallback = self.resolve("/".join(parts[:3] + parts[i:]))
            if fallback.is_file():
                return fallback
        return None

    def list_runs(self) -> list[dict]:
        """Every published site (its `_summary.json`), newest first.

        Each entry is the summary plus `site` (the site folder, relative to the root), `name`,
        `site_url` and `page_url` (plugin routes), `failed_count` and `warning_count`.
        """
        root = self.root
        try:
            if not root.exists():
                return []
            summaries = list(root.glob(f"*/*/*/{SUMMARY}"))
        except FileNotFoundError:
            return []
        runs = []
        for path in summaries:
            try:
                parts = safe_parts(str(path.parent.relative_to(root)))
            except (InvalidPath, ValueError):
                continue  # a hidden (staging) folder
            try:
                summary = json.loads(path.read_text())
                if not isinstance(summary, dict) or len(parts) != 3:
                    raise ValueError("not a site summary")
            except (ValueError, OSError) as exc:
                log.warning("skipping data docs summary %s: %s", path, exc)
                continue
            site = "/".join(parts)
            page = str(summary.get("page") or "index.html")
            try:
                page_rel = "/".join(parts + safe_parts(page))
            except InvalidPath:
                page_rel = f"{site}/index.html"
            runs.append({
                **summary,
                "dag_id": parts[0],             # the folder: what the site route authorizes on
                "run_id": summary.get("run_id") or parts[1],
                "name": parts[2],
                "site": site,
                "site_url": route_url(f"{site}/index.html"),
                "page_url": route_url(page_rel),
                "failed_count": len(summary.get("failed") or []),
                "warning_count": len(summary.get("warnings") or []),
            })
        runs.sort(key=lambda r: (str(r.get("validated_at") or ""), r["site"]), reverse=True)
        return runs


def list_runs(root: str | None = None) -> list[dict]:
    return DataDocsStore(root).list_runs()


class DataDocsLink(BaseOperatorLink):
    """"Data docs" on a validation task: its GX validation page, served by the plugin."""

    name = "Data docs"

    def get_link(self, operator, *, ti_key) -> str:
        if getattr(operator, "step", None) not in VALIDATION_STEPS:
            return ""
        from airflow.sdk.execution_time.xcom import XCom

        for key in ("return_value", "step_result"):
            value = XCom.get_value(ti_key=ti_key, key=key)
            if isinstance(value, dict) and value.get("data_docs_page"):
                return page_url(value)
        return ""
