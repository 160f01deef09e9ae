"""The "Data docs" extra link of the validation tasks, and the plugin routes it points at.

The plugin (plugins/criteo_mlops_plugin.py) serves the data docs tree (operators/hooks/data_docs.py)
at `{api root}/criteo-data-docs/site/<path under the root>`; a step result's `data_docs_page` maps
to that URL here.

How the extra link works in Airflow 3: when a task ends in any terminal state (success, failed,
up for retry), the task runner calls `get_link()` of every link on the operator and stores the
result as the XCom `_link_DataDocsLink` (`finalize()` in airflow/sdk/execution_time/task_runner.py);
the API server only reads that XCom back (XComOperatorLink). A failed validation therefore gets
its link too, provided the operator pushed its result (XCom `step_result`) before raising.

Cheap to import: DAG files import it through operators.step; the data docs hook and the XCom
backend are imported where they are used.
"""
from __future__ import annotations

import logging
import os
from urllib.parse import quote

from airflow.sdk import BaseOperatorLink

log = logging.getLogger(__name__)

ROUTE_PREFIX = "/criteo-data-docs"     # where the plugin's FastAPI app is mounted in the API server
SITE_ROUTE = "site"                    # {ROUTE_PREFIX}/site/{path under the data docs root}
VALIDATION_STEPS = frozenset({"validate", "validate_processed"})


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


def page_url(result: dict | None, root: str | None = None) -> str:
    """Route URL of a step result's `data_docs_page`; '' when it has none or it lies outside the root."""
    from ..hooks.data_docs import InvalidPath, relative_to_root, safe_parts
    from ..pipeline.config import Settings
    from ..pipeline.layout import Layout

    page = (result or {}).get("data_docs_page") if isinstance(result, dict) else None
    if not page:
        return ""
    root = root or Layout(Settings.load()).data_docs   # outside a task: read per request
    rel = relative_to_root(str(page), root)
    if not rel:
        log.warning("data docs page %s is not under the data docs root %s", page, root)
        return ""
    try:
        return route_url("/".join(safe_parts(rel)))
    except InvalidPath:
        return ""


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
