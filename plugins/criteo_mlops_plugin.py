"""Airflow plugin of the Criteo MLOps pipeline.

Macros: `{{ macros.criteo_mlops.criteo_day(logical_date) }}` gives the Criteo day number a date
maps to (see operators/pipeline/layout.py), for use in templates and the UI's rendered fields.

Data docs in the UI: a FastAPI app mounted in the API server at `/criteo-data-docs` (Airflow 3
mounts each plugin `fastapi_apps` entry with `app.mount(url_prefix, app)`, see `init_plugins()` in
airflow/api_fastapi/app.py):

- `GET /criteo-data-docs/`: every published validation site under the data docs root
  (operators/hooks/data_docs.py), newest first, with its verdict and counts;
  (`?dag_id=&run_id=` narrow it to one run);
- `GET /criteo-data-docs/site/{path}`: a file of a site, so GX's relative links (static/...,
  ../../index.html) work; HTML and CSS have their CDN URLs pointed at the assets route; 400 for a
  path escaping the root, 404 for a missing file;
- `GET /criteo-data-docs/assets/{path}`: bootstrap, jQuery, Font Awesome, vega (installed from
  the npm registry by `make setup`) and GX's styles and logo (operators/links/data_docs_assets.py),
  so the pages render offline.

Two `external_views`: "Data docs" in the UI's Browse menu, opening the index in a new tab,
and "Data docs", a tab of each DAG run's page with that run's sites (an iframe, same origin, so
the login cookie goes along). Each validation task has the "Data docs" extra link (DataDocsLink, declared
on CriteoStepOperator; it is not listed in `operator_extra_links` here: a plugin-registered link
would be evaluated in the API server, which cannot read XComs through the task SDK).

Authentication: the routes depend on Airflow's own `get_user` (airflow/api_fastapi/core_api/
security.py), the dependency the public API uses: a JWT from the `Authorization: Bearer` header
or the UI's `_token` cookie, checked by the configured auth manager (401 without one). Each site
file and index row is further checked with `is_authorized_dag(GET, TASK_INSTANCE, dag_id)`: a
user sees the data docs of the DAGs whose task instances they may read (403 otherwise).

Served pages get a Content-Security-Policy allowing same-origin content only: no request leaves
the machine, and a page's scripts cannot call the Airflow API with the user's cookie. GX 1.x
validation pages link their favicon one folder short; the site route falls back to the site's own
static/ (see DataDocsHook.find).

Cheap to import (every task process loads plugins for the macros): FastAPI and Airflow's API
security module are imported only when the API server asks for `fastapi_apps`. No
`from __future__ import annotations` here: FastAPI resolves the routes' annotations at runtime.
"""

import functools
import html
import mimetypes
from urllib.parse import urlsplit

from airflow.configuration import conf
from airflow.plugins_manager import AirflowPlugin

URL_PREFIX = "/criteo-data-docs"        # == operators.links.data_docs.ROUTE_PREFIX (not imported: keep this cheap)
ASSETS_ROUTE = "assets"                  # == operators.links.data_docs_assets.ASSETS_ROUTE
_API_ROOT = urlsplit(conf.get("api", "base_url", fallback="") or "").path.rstrip("/")

CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8", ".htm": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8", ".js": "text/javascript; charset=utf-8",
    ".json": "application/json", ".svg": "image/svg+xml", ".png": "image/png", ".gif": "image/gif",
    ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".ico": "image/x-icon", ".otf": "font/otf",
    ".ttf": "font/ttf", ".woff": "font/woff", ".woff2": "font/woff2", ".txt": "text/plain; charset=utf-8",
}
# What a served page may load: its own site, the plugin's assets, inline scripts and styles (GX
# writes many), data: URLs. Nothing from another origin, so no request leaves the machine and an
# asset missing from data_docs_assets.CDN_URLS shows as a blocked request; no calls back into the
# API with the user's cookie, no forms. 'unsafe-eval': vega compiles its expressions with Function.
SITE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self' 'unsafe-inline' 'unsafe-eval'; "
                               "style-src 'self' 'unsafe-inline'; img-src 'self' data:; font-src 'self' data:; "
                               "connect-src 'none'; form-action 'none'; object-src 'none'; base-uri 'none'; "
                               "frame-ancestors 'self'",
    "X-Content-Type-Options": "nosniff",
    "Cache-Control": "no-cache",
}
ASSET_HEADERS = {"X-Content-Type-Options": "nosniff", "Cache-Control": "public, max-age=86400"}


def criteo_day(logical_date) -> int:
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import day_for_date

    landing = Settings.load().landing
    return day_for_date(logical_date, landing.day0, landing.num_days)


def content_type(name: str) -> str:
    dot = name.rfind(".")
    ext = name[dot:].lower() if dot >= 0 else ""
    return CONTENT_TYPES.get(ext) or mimetypes.guess_type(name)[0] or "application/octet-stream"


def _can_read_dag(user, dag_id: str) -> bool:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    return get_auth_manager().is_authorized_dag(
        method="GET", access_entity=DagAccessEntity.TASK_INSTANCE, details=DagDetails(id=dag_id), user=user)


def _index_html(runs: list[dict], root: str, error: str | None = None) -> str:
    from operators.links.data_docs import route_url

    e = html.escape
    rows = []
    for r in runs:
        ok = r.get("success") is True
        verdict = "PASSED" if ok else "FAILED"
        rows.append(
            "<tr>"
            f"<td>{e(str(r.get('validated_at') or ''))}</td>"
            f"<td>{e(str(r['dag_id']))}</td><td>{e(str(r['run_id']))}</td><td>{e(r['name'])}</td>"
            f"<td class='{verdict.lower()}'>{verdict}</td>"
            f"<td>{r['failed_count']}</td><td>{r['warning_count']}</td>"
            f"<td>{e(', '.join(map(str, r.get('suites') or [])))}</td>"
            f"<td><a href='{e(route_url(r['page']))}'>validation page</a> · "
            f"<a href='{e(route_url(r['site'] + '/index.html'))}'>site</a></td>"
            "</tr>")
    if error:
        body = f"<p class='failed'>Cannot read the data docs root {e(root)}: {e(error)}</p>"
    elif not rows:
        body = (f"<p>No data docs published yet under {e(root)}. A validation task publishes its "
                "Great Expectations site there when it runs.</p>")
    else:
        body = ("<table><thead><tr><th>Validated at</th><th>DAG</th><th>Run</th><th>Data</th><th>Result</th>"
                "<th>Failed</th><th>Warnings</th><th>Suites</th><th></th></tr></thead><tbody>"
                + "".join(rows) + "</tbody></table>")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>Data quality docs</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 1.5rem; }}
table {{ border-collapse: collapse; }}
th, td {{ padding: .3rem .7rem; border-bottom: 1px solid #ddd; text-align: left; }}
.passed {{ color: #1a7f37; font-weight: 600; }} .failed {{ color: #cf222e; font-weight: 600; }}
</style></head>
<body><h1>Data quality docs</h1>
<p>Great Expectations validation results of the Criteo pipeline, newest first ({len(runs)} published).</p>
{body}
</body></html>"""


def create_data_docs_app():
    """The FastAPI app the API server mounts at URL_PREFIX."""
    from airflow.api_fastapi.core_api.security import GetUserDep
    from fastapi import FastAPI, HTTPException, Request
    from fastapi.responses import HTMLResponse, RedirectResponse, Response

    from operators.hooks.data_docs import DataDocsHook, InvalidPath, safe_parts
    from operators.pipeline.config import Settings
    from operators.pipeline.layout import Layout

    def data_docs_hook() -> DataDocsHook:   # the settings, read at each request (a Variable may change)
        return DataDocsHook(Layout(Settings.load()).data_docs)
    from operators.links import data_docs_assets as assets

    assets_url = f"{_API_ROOT}{URL_PREFIX}/{assets.ASSETS_ROUTE}"
    app = FastAPI(title="Criteo data docs", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get("/", response_class=HTMLResponse)
    def index(user: GetUserDep, dag_id: str | None = None, run_id: str | None = None) -> HTMLResponse:
        docs = data_docs_hook()
        try:
            runs = docs.list_runs()
        except Exception as exc:  # an unreachable bucket, missing credentials: say so in the page
            return HTMLResponse(_index_html([], docs.root_url, f"{type(exc).__name__}: {exc}"), status_code=503)
        # the DAG run tab passes its run (the UI fills {DAG_ID}/{RUN_ID}); the nav link passes none
        runs = [r for r in runs if (not dag_id or r["dag_id"] == dag_id) and (not run_id or r["run_id"] == run_id)]
        allowed = {d for d in {r["dag_id"] for r in runs} if _can_read_dag(user, d)}
        runs = [r for r in runs if r["dag_id"] in allowed]
        return HTMLResponse(_index_html(runs, docs.root_url), headers={**SITE_HEADERS, "Cache-Control": "no-cache"})

    @app.get("/site/{path:path}")
    def site(path: str, request: Request, user: GetUserDep) -> Response:
        docs = data_docs_hook()
        try:
            parts = safe_parts(path)
            if not parts:
                raise HTTPException(404, "Not Found") from None
            if not _can_read_dag(user, parts[0]):
                raise HTTPException(403, "Forbidden")
            found = docs.find(path)
            if found is None:
                folder = docs.resolve(path)
                if folder.is_dir() and (folder / "index.html").is_file():
                    return RedirectResponse(request.url.path.rstrip("/") + "/index.html")
                raise HTTPException(404, "Not Found")
            data = found.read_bytes()
        except InvalidPath as exc:
            raise HTTPException(400, str(exc)) from None
        except FileNotFoundError:
            raise HTTPException(404, "Not Found") from None
        media_type = content_type(parts[-1])
        if media_type.startswith(("text/html", "text/css")):
            data = assets.rewrite(data.decode("utf-8", errors="replace"), assets_url).encode()
        return Response(data, media_type=media_type, headers=SITE_HEADERS)

    @app.get(f"/{assets.ASSETS_ROUTE}/{{path:path}}")
    def asset(path: str) -> Response:
        # public third-party files (bootstrap, jQuery, GX's logo), like Airflow's own static files
        try:
            found = assets.resolve("/".join(safe_parts(path)))
        except InvalidPath as exc:
            raise HTTPException(400, str(exc)) from None
        except FileNotFoundError:
            absent = assets.missing()
            detail = f"Not Found; not installed: {', '.join(absent)} (make setup)" if absent else "Not Found"
            raise HTTPException(404, detail) from None
        return Response(found.read_bytes(), media_type=content_type(found.name), headers=ASSET_HEADERS)

    return app


@functools.cache
def _data_docs_app():
    return create_data_docs_app()


class CriteoMLOpsPlugin(AirflowPlugin):
    name = "criteo_mlops"
    macros = [criteo_day]
    # Airflow 3.3.2's UI: a nav view without url_route is a link that opens a new tab, in the menu
    # its category names (a top-level one renders as a <button href> that does nothing when
    # clicked); a dag_run view is a tab of the run's page, an iframe, {DAG_ID}/{RUN_ID} filled in.
    external_views = [
        {
            "name": "Data docs",
            "href": f"{_API_ROOT}{URL_PREFIX}/",
            "destination": "nav",
            "category": "browse",
            "icon": f"{_API_ROOT}{URL_PREFIX}/{ASSETS_ROUTE}/gx/images/favicon.ico",
        },
        {
            "name": "Data docs",
            "href": f"{_API_ROOT}{URL_PREFIX}/?dag_id={{DAG_ID}}&run_id={{RUN_ID}}",
            "url_route": "criteo-run-data-docs",
            "destination": "dag_run",
        },
    ]

    @property
    def fastapi_apps(self) -> list[dict]:  # built on first use: only the API server asks for it
        return [{"app": _data_docs_app(), "url_prefix": URL_PREFIX, "name": "Criteo data docs"}]
