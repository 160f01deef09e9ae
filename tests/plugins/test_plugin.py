"""The plugin: GX data docs served inside the Airflow UI, and the "Data docs" extra link.

One module-scoped bucket holds a data docs tree with a REAL GX site, published by the real
validator through the real operator (`dag.test()` of a one-task DAG on a tiny partition with a
bad label, so the task FAILS), plus a hand-written site and traps (a hidden staging folder, a
symlink out of the root, a file beside the root). The routes are exercised through Airflow's own
API-server app (`airflow.api_fastapi.app.create_app`), which mounts plugin FastAPI apps the way
`airflow api-server` does.
"""
from __future__ import annotations

import json
import os
import shutil
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import quote, urljoin, urlsplit

import pytest

from tests.fixtures.partitions import committed

REPO = Path(__file__).resolve().parents[2]
COLUMNS = ["label", *[f"I{i}" for i in range(1, 14)], *[f"C{i}" for i in range(1, 27)]]
DAG_ID = "test_criteo_data_docs"
OTHER_DAG = "criteo_full_retrain"
OTHER_RUN = "scheduled__2026-01-02T00_00_00_00_00"
PREFIX = "/criteo-data-docs"


# ------------------------------------------------------------------------------------------
# fixtures: the bucket, a real published site, the API server app
# ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def bucket(tmp_path_factory):
    base = tmp_path_factory.mktemp("bucket")
    old = os.environ.get("AIRFLOW_VAR_CRITEO_BASE_URL")
    os.environ["AIRFLOW_VAR_CRITEO_BASE_URL"] = str(base)
    yield base
    if old is None:
        os.environ.pop("AIRFLOW_VAR_CRITEO_BASE_URL", None)
    else:
        os.environ["AIRFLOW_VAR_CRITEO_BASE_URL"] = old


def write_partition(final: Path, rows: list[list[str]]) -> Path:
    """A partition as the extract step publishes it: train/ + eval/ parquet of strings, committed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from criteo_kernel import storage

    with storage.staged_partition(str(final)) as attempt:
        root = Path(attempt)

        schema = pa.schema([(c, pa.string()) for c in COLUMNS])
        for split, part in (("train", rows[:-20]), ("eval", rows[-20:])):
            (root / split).mkdir(parents=True)
            pq.write_table(pa.table({c: pa.array([r[j] for r in part], pa.string()) for j, c in enumerate(COLUMNS)},
                                    schema=schema), root / split / "part-00000.parquet")
        (root / "_extract.json").write_text(json.dumps({
            "source": "test", "rows": len(rows), "train_rows": len(rows) - 20, "eval_rows": 20,
            "positives": sum(r[0] == "1" for r in rows), "malformed_rows": 0, "malformed_examples": [],
            "num_fields_expected": 40}))
    return final


def tiny_gx_project(root: Path) -> Path:
    """A GX file project with a two-expectation raw_day suite (the repo's suites are not the point here)."""
    (root / "expectations").mkdir(parents=True)
    shutil.copy(REPO / "expectations" / "great_expectations.yml", root)
    (root / "expectations" / "raw_day.json").write_text(json.dumps({"name": "raw_day", "meta": {}, "expectations": [
        {"id": "5b0c3c8e-1f0e-4d52-9a51-000000000001", "type": "expect_column_values_to_be_in_set",
         "kwargs": {"column": "label", "value_set": ["0", "1"]}, "meta": {"batch": "rows"}, "severity": "critical"},
        {"id": "5b0c3c8e-1f0e-4d52-9a51-000000000002", "type": "expect_column_values_to_match_regex",
         "kwargs": {"column": "C1", "regex": "^[0-9a-f]{8}$"}, "meta": {"batch": "rows"}, "severity": "warning"},
    ]}))
    return root


def write_fake_site(final: Path, summary: dict) -> None:
    """A data docs site published as the validator publishes one (a commit, criteo_kernel.storage)."""
    from criteo_kernel import storage

    with storage.staged_partition(str(final)) as attempt:
        _fake_site_files(Path(attempt), summary)


def _fake_site_files(site: Path, summary: dict) -> None:
    (site / "validations" / "raw_day").mkdir(parents=True)
    (site / "static" / "styles").mkdir(parents=True)
    (site / "index.html").write_text("<html><body>fake index</body></html>")
    (site / "validations" / "raw_day" / "page.html").write_text("<html><body>fake page</body></html>")
    (site / "static" / "styles" / "x.css").write_text("body{}")
    (site / "_summary.json").write_text(json.dumps(summary))


@pytest.fixture(scope="module")
def published(bucket, tmp_path_factory):
    """Run a validation task (the real operator, validator and GX) that fails on a bad label."""
    from airflow.dag_processing.dagbag import DagBag, sync_bag_to_db
    from airflow.sdk import DAG

    from operators.pipeline.layout import safe_run_id
    from operators.step import CriteoStepOperator
    from operators.tasks.defaults import run_settings

    work = tmp_path_factory.mktemp("validate")
    rows = [["1" if i % 4 == 0 else "0", *[str(i % 97)] * 13, *[f"{(i * 7919) % 2**32:08x}"] * 26]
            for i in range(200)]
    rows[5][0] = "2"                       # a hard failure: label outside {0, 1}
    rows[9][14] = "NOTAHEX!"               # a soft one: C1 not 8 hex digits
    part = write_partition(work / "day=3", rows)
    gx_dir = tiny_gx_project(work / "gx")
    root = bucket / "data_docs"
    safe = "{{ run_id | replace(':', '_') | replace('+', '_') }}"  # safe_run_id() of a manual run id
    with DAG(DAG_ID, schedule=None, start_date=datetime(2026, 1, 1, tzinfo=UTC)) as dag:
        CriteoStepOperator(task_id="validate", step="validate", retries=0, settings=run_settings(), arguments={
            "--input": str(part), "--suite": "raw_day", "--run-name": "{{ run_id }}.day3",
            "--data-docs": f"{root}/{DAG_ID}/{safe}/day=3",
            "--expectations-dir": str(gx_dir), "--min-rows": 10, "--sample-rows": 0})
    # dag.test() runs DAGs of a bundle: serialize this one into the metadata DB first (the bundle
    # row must exist: on a fresh database nothing has created it yet).
    from airflow.dag_processing.bundles.manager import DagBundlesManager

    DagBundlesManager().sync_bundles_to_db()
    bag = DagBag(dag_folder=str(work / "no-dags"))
    bag.bag_dag(dag)
    sync_bag_to_db(bag, "dags-folder", None)
    dr = dag.test(logical_date=datetime(2026, 1, 4, tzinfo=UTC))
    site = root / DAG_ID / safe_run_id(dr.run_id) / "day=3"
    assert (committed(site) / "index.html").is_file(), f"the validator published no GX site at {site}"
    assert (committed(site) / "_summary.json").is_file(), "the validator publishes _summary.json with its site"

    # An older, passing site of another DAG, a hidden staging folder, and ways out of the root.
    write_fake_site(root / OTHER_DAG / OTHER_RUN / "processed", {
        "success": True, "suites": ["processed_day"], "run_name": "r", "input": "x",
        "page": "validations/raw_day/page.html", "pages": {}, "failed": [],
        "warnings": [{"expectation": "e", "column": "I1"}],
        "validated_at": "2026-01-02T01:00:00+00:00", "dag_id": OTHER_DAG, "run_id": OTHER_RUN})
    write_fake_site(root / OTHER_DAG / ".staging-123" / "day=1", {"success": True, "validated_at": "2099-01-01"})
    (bucket / "secret.txt").write_text("TOP SECRET")
    (root / OTHER_DAG / OTHER_RUN / "escape").symlink_to(bucket)
    return {"dag_run": dr, "site": site, "root": root, "task_state": dr.get_task_instance("validate").state}


@pytest.fixture(scope="module")
def app(published):
    from airflow.api_fastapi.app import create_app, purge_cached_app

    app = create_app(apps="core")
    yield app
    purge_cached_app()


def client_for(app, role: str | None = "admin"):
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from fastapi.testclient import TestClient

    client = TestClient(app)
    if role != "anonymous":
        token = get_auth_manager().generate_jwt(SimpleAuthManagerUser(username=f"u-{role}", role=role))
        client.cookies.set("_token", token)    # the UI's session cookie, as the browser sends it
    return client


@pytest.fixture(scope="module")
def client(app):
    return client_for(app)


class Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        for k, v in attrs:
            if k in ("href", "src") and v:
                self.links.append(v)


class ResourceLinks(HTMLParser):
    """What a browser fetches to render a page: stylesheets, scripts, images (not <a> links)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "script" and a.get("src") or tag == "img" and a.get("src"):
            self.urls.append(a["src"])
        elif tag == "link" and a.get("href") and a.get("rel") in ("stylesheet", "icon", "shortcut icon"):
            self.urls.append(a["href"])


def relative_links(html: str) -> list[str]:
    p = Links()
    p.feed(html)
    return [u for u in p.links if not urlsplit(u).scheme and not u.startswith(("#", "//"))]


# ------------------------------------------------------------------------------------------
# unit: paths and URL mapping
# ------------------------------------------------------------------------------------------

@pytest.mark.unit
@pytest.mark.parametrize("bad", ["../x", "a/../../x", "/etc/passwd", "a\\..\\b", "gs://b/x", "a/.staging/x",
                                 "C:/x", "a/\x00b"])
def test_safe_parts_rejects_escapes(bad):
    from operators.hooks.data_docs import InvalidPath, safe_parts

    with pytest.raises(InvalidPath):
        safe_parts(bad)


@pytest.mark.unit
def test_safe_parts_and_run_ids():
    from operators.hooks.data_docs import safe_parts
    from operators.pipeline.layout import safe_run_id

    assert safe_parts("d/r/day=3/./static//x.css") == ["d", "r", "day=3", "static", "x.css"]
    assert safe_run_id("scheduled__2026-01-02T00:00:00+00:00") == "scheduled__2026-01-02T00_00_00_00_00"


@pytest.mark.unit
def test_page_url_maps_a_step_result_to_the_plugin_route(tmp_path):
    from operators.links.data_docs import page_url

    root = tmp_path / "bucket" / "data_docs"
    page = f"{root}/d/r_1/day=3/validations/raw_day/run/t/extracted-day=3.html"
    assert page_url({"data_docs_page": page}, root=str(root)) == \
        f"{PREFIX}/site/d/r_1/day=3/validations/raw_day/run/t/extracted-day=3.html"
    assert page_url({"data_docs_page": "file://" + page}, root=f"{root}/") == page_url({"data_docs_page": page},
                                                                                      root=str(root))
    assert page_url({"data_docs_page": "gs://b/p/data_docs/d/r/n/index.html"}, root="gs://b/p/data_docs") == \
        f"{PREFIX}/site/d/r/n/index.html"
    assert page_url({"data_docs_page": "gs://b/other/d/r/n/index.html"}, root="gs://b/p/data_docs") == ""
    assert page_url({"data_docs_page": f"{root}/../x.html"}, root=str(root)) == ""
    assert page_url({"success": True}, root=str(root)) == ""
    assert page_url(None, root=str(root)) == ""


@pytest.mark.unit
def test_data_docs_link_reads_the_result_of_a_validation_task(monkeypatch, tmp_path):
    from airflow.sdk.execution_time import xcom

    from operators.links.data_docs import DataDocsLink
    from operators.step import CriteoStepOperator

    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(tmp_path))
    page = f"{tmp_path}/data_docs/d/r/day=1/validations/raw_day/x/y/p.html"
    stored = {"step_result": {"success": False, "data_docs_page": page}}
    calls = []

    def get_value(*, ti_key, key):
        calls.append(key)
        return stored.get(key)

    monkeypatch.setattr(xcom.XCom, "get_value", get_value)
    link = DataDocsLink()
    assert link.name == "Data docs" and link.xcom_key == "_link_DataDocsLink"
    assert CriteoStepOperator.operator_extra_links[0].name == "Data docs"
    validate = CriteoStepOperator(task_id="validate", step="validate")
    assert link.get_link(validate, ti_key=None) == f"{PREFIX}/site/d/r/day=1/validations/raw_day/x/y/p.html"
    assert calls == ["return_value", "step_result"]          # a failed task: no return value
    stored["return_value"] = {"success": True, "data_docs_page": page.replace("p.html", "ok.html")}
    assert link.get_link(validate, ti_key=None).endswith("/ok.html")
    calls.clear()
    assert link.get_link(CriteoStepOperator(task_id="train", step="train"), ti_key=None) == ""
    assert calls == []                                       # other steps never read XCom
    stored.clear()
    assert link.get_link(validate, ti_key=None) == ""


@pytest.mark.unit
@pytest.mark.parametrize("module", ["plugins/criteo_mlops_plugin.py", "operators/links/data_docs.py"])
def test_modules_are_cheap_to_import(module):
    """Every task process loads the plugin and DAG files import the link: only light imports at the
    top, of the module and of every project module it imports at the top, transitively."""
    import ast

    allowed = {"__future__", "functools", "html", "json", "logging", "mimetypes", "os", "posixpath", "re",
               "uuid", "urllib.parse", "airflow.configuration", "airflow.plugins_manager", "airflow.sdk"}
    todo, seen, top = [REPO / module], set(), set()
    while todo:
        path = todo.pop()
        if path in seen:
            continue
        seen.add(path)
        package = path.relative_to(REPO).parent.as_posix().replace("/", ".")
        for node in ast.parse(path.read_text()).body:
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: inside the module's own package
                    base = ".".join([*package.split(".")[:len(package.split(".")) - node.level + 1], base]).strip(".")
                names = [base]
            for name in names:
                own = REPO / name.replace(".", "/")
                if name.split(".")[0] == "operators" and (own.with_suffix(".py").exists() or own.is_dir()):
                    todo.append(own.with_suffix(".py") if own.with_suffix(".py").exists() else own / "__init__.py")
                else:
                    top.add(name)
    assert {p.relative_to(REPO).as_posix() for p in seen} >= {module}
    assert top <= allowed, top - allowed


# ------------------------------------------------------------------------------------------
# integration: Airflow's plugins manager, a real task run, the API server's routes
# ------------------------------------------------------------------------------------------

@pytest.mark.integration
def test_airflow_loads_the_plugin():
    from airflow import plugins_manager
    from fastapi import FastAPI

    info = {p["name"]: p for p in plugins_manager.get_plugin_info()}["criteo_mlops"]
    assert info["fastapi_apps"] == [{"app": "fastapi.applications.FastAPI", "url_prefix": PREFIX,
                                     "name": "Criteo data docs"}]
    nav, run_tab = info["external_views"]
    # Airflow 3.3's UI opens a nav view without url_route in a new tab, from the Browse menu
    assert nav["name"] == "Data docs" and nav["href"] == f"{PREFIX}/" and nav["destination"] == "nav"
    assert not nav.get("url_route") and nav["category"] == "browse"
    assert run_tab["destination"] == "dag_run" and run_tab["url_route"]
    assert run_tab["href"] == f"{PREFIX}/?dag_id={{DAG_ID}}&run_id={{RUN_ID}}"
    apps, _ = plugins_manager.get_fastapi_plugins()
    assert any(isinstance(a["app"], FastAPI) and a["url_prefix"] == PREFIX for a in apps)
    assert info["macros"]


@pytest.mark.integration
def test_a_failed_validation_pushes_its_result_and_gets_the_link(published, client):
    """Through the API server, as the UI asks: the task FAILED, yet its "Data docs" link is set."""
    dr, site = published["dag_run"], published["site"]
    assert published["task_state"] == "failed"
    base = f"/api/v2/dags/{DAG_ID}/dagRuns/{quote(dr.run_id, safe='')}/taskInstances/validate"
    r = client.get(f"{base}/xcomEntries/step_result")
    assert r.status_code == 200, r.text
    result = r.json()["value"]
    assert result["success"] is False and result["data_docs_page"].startswith(str(site))
    links = client.get(f"{base}/links")
    assert links.status_code == 200, links.text
    url = links.json()["extra_links"]["Data docs"]
    summary = json.loads((committed(site) / "_summary.json").read_text())
    assert url == f"{PREFIX}/site/{DAG_ID}/{site.parent.name}/day=3/{quote(summary['page'], safe='/=')}"
    page = client.get(url)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "expect_column_values_to_be_in_set" in page.text or "values must belong to this set" in page.text


@pytest.mark.integration
def test_the_index_lists_published_runs_newest_first(published, client):
    r = client.get(f"{PREFIX}/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    text = r.text
    assert DAG_ID in text and OTHER_DAG in text and ".staging" not in text and "2099" not in text
    assert text.index(DAG_ID) < text.index(OTHER_DAG)      # the real run is the newer one
    assert "FAILED" in text and "PASSED" in text
    rows = text.split("<tr>")[2:]
    assert "<td>1</td>" in rows[0] and "<td>1</td><td>1</td>" in rows[0]   # 1 failed, 1 warning
    assert "<td>0</td><td>1</td>" in rows[1]                               # 0 failed, 1 warning
    for href in relative_links(text):
        assert client.get(urljoin(str(r.url), href)).status_code == 200, href


@pytest.mark.integration
def test_the_index_says_so_when_nothing_is_published(app, monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_VAR_CRITEO_BASE_URL", str(tmp_path))
    r = client_for(app).get(f"{PREFIX}/")
    assert r.status_code == 200 and "No data docs published yet" in r.text


@pytest.mark.integration
def test_a_real_gx_page_and_its_relative_links_resolve(published, client):
    site, root = published["site"], published["root"]
    summary = json.loads((committed(site) / "_summary.json").read_text())
    for rel in ("index.html", summary["page"]):
        url = f"{PREFIX}/site/{site.relative_to(root)}/{rel}"
        r = client.get(url)
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/html"), url
        links = relative_links(r.text)
        assert any("static/" in u for u in links) and any(u.endswith("index.html") or "expectations/" in u
                                                          for u in links + [rel])
        for href in links:
            target = urljoin(str(r.url), href)
            got = client.get(target)
            assert got.status_code == 200, (url, href, target)
            if target.endswith(".ico"):
                assert got.headers["content-type"] == "image/x-icon"
    css = client.get(f"{PREFIX}/site/{site.relative_to(root)}/static/styles/data_docs_default_styles.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css")
    assert "https://" not in css.text and f"{PREFIX}/assets/gx/images/logo-long.png" in css.text
    assert css.headers["x-content-type-options"] == "nosniff"
    folder = client.get(f"{PREFIX}/site/{site.relative_to(root)}/", follow_redirects=False)
    assert folder.status_code == 307 and folder.headers["location"].endswith("/day=3/index.html")


@pytest.mark.integration
@pytest.mark.parametrize("path", [
    "..%2Fsecret.txt",
    f"{OTHER_DAG}/..%2F..%2Fsecret.txt",
    "%2E%2E/%2E%2E/secret.txt",
    "%2Fetc%2Fpasswd",
    f"{OTHER_DAG}/{OTHER_RUN}/escape/secret.txt",                      # a symlink out of the root
    f"{OTHER_DAG}/.staging-123/day=1/index.html",                      # hidden: not published yet
])
def test_paths_out_of_the_root_are_rejected(published, client, path):
    r = client.get(f"{PREFIX}/site/{path}")
    assert r.status_code in (400, 404), r.text
    assert "TOP SECRET" not in r.text


@pytest.mark.integration
def test_a_served_page_loads_nothing_from_another_origin(published, client):
    """GX's pages name bootstrap, jQuery, ... on public CDNs; served through the plugin, every
    resource they load is on the plugin's assets route and is there, and the CSP allows 'self' only."""
    site, root = published["site"], published["root"]
    summary = json.loads((committed(site) / "_summary.json").read_text())
    raw = (committed(site) / summary["page"]).read_text()
    assert "https://maxcdn.bootstrapcdn.com/" in raw and "https://code.jquery.com/" in raw   # as GX wrote it
    r = client.get(f"{PREFIX}/site/{site.relative_to(root)}/{summary['page']}")
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "connect-src 'none'" in csp
    resources = ResourceLinks()
    resources.feed(r.text)
    assert len(resources.urls) >= 15, resources.urls
    offsite = [u for u in resources.urls if urlsplit(u).scheme or u.startswith("//")]
    assert offsite == [], offsite
    assets = [u for u in resources.urls if u.startswith(f"{PREFIX}/assets/")]
    assert {"bootstrap@4.3.1", "jquery@3.7.1", "@fortawesome", "vega@5.33.1", "gx"} <= {
        u.split("/")[3] for u in assets}
    for url in assets:
        got = client.get(url)
        assert got.status_code == 200 and len(got.content) > 100, url
        assert got.headers["content-type"].split(";")[0] in ("text/css", "text/javascript", "image/png"), url


@pytest.mark.integration
def test_missing_files_are_404(published, client):
    assert client.get(f"{PREFIX}/site/{OTHER_DAG}/{OTHER_RUN}/processed/nope.html").status_code == 404
    assert client.get(f"{PREFIX}/site/no_such_dag/r/n/index.html").status_code == 404
    assert client.get(f"{PREFIX}/site/").status_code == 404


@pytest.mark.integration
def test_routes_require_an_airflow_login_and_dag_access(published, app):
    site = f"{PREFIX}/site/{OTHER_DAG}/{OTHER_RUN}/processed/index.html"
    anonymous = client_for(app, "anonymous")
    assert anonymous.get(f"{PREFIX}/").status_code == 401
    assert anonymous.get(site).status_code == 401
    no_role = client_for(app, None)                     # authenticated, but may read no DAG
    assert no_role.get(site).status_code == 403
    r = no_role.get(f"{PREFIX}/")
    assert r.status_code == 200 and OTHER_DAG not in r.text
    viewer = client_for(app, "viewer")
    assert viewer.get(site).status_code == 200
