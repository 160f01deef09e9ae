"""The UI as a user meets it: Debian's headless Chromium (driven by Playwright, no browser
download) against the live Airflow, logged in through the UI's own login form.

Each page is loaded until the network is idle and then asserted to have had no failed request, no
HTTP error and no console error: an unstyled data docs page (a CDN blocked, an asset missing) fails
here. Screenshots are saved under $CRITEO_TEST_ARTIFACTS/browser (default .data/test-artifacts).

Runs after test_backfill.py, on the same Airflow (tests/live/conftest.py): the data docs exist,
production is at the version the backfills left.
"""
import json
import os
import shutil
from pathlib import Path

import pytest

from tests.live.conftest import DAILY, FULL, model_dir

pytestmark = pytest.mark.live
REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("CRITEO_TEST_ARTIFACTS") or REPO / ".data" / "test-artifacts") / "browser"
CHROMIUM = os.environ.get("CRITEO_CHROMIUM", "/usr/bin/chromium")
# Headless Chromium hangs on a machine with no internet unless it stops calling Google's services.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                 "--disable-background-networking", "--disable-component-update", "--disable-dev-shm-usage",
                 "--disable-default-apps", "--disable-extensions"]


class Problems:
    """What a page did wrong while it loaded: failed requests, HTTP errors, console errors."""

    def __init__(self, context):
        self.seen: list[str] = []
        context.on("requestfailed", self._failed)
        context.on("response", lambda r: r.status >= 400 and self.seen.append(f"HTTP {r.status}: {r.url}"))
        context.on("console", lambda m: m.type == "error" and self.seen.append(f"console error: {m.text}"))
        context.on("weberror", lambda e: self.seen.append(f"page error: {e.error}"))

    def _failed(self, request) -> None:
        # net::ERR_ABORTED is a request the page itself cancelled: one left behind when the test
        # went on to the next page while the last was still polling, or a query the UI's own code
        # aborted (the grid cancels a ti_summaries fetch when its list of runs changes). Neither is
        # a failure a user sees; network errors, HTTP errors and console errors still count.
        if request.failure == "net::ERR_ABORTED":
            return
        self.seen.append(f"request failed: {request.url} ({request.failure})")

    def settle(self, page, what: str, shot: str | None = None, reloaded: bool = False):
        page.wait_for_load_state("networkidle", timeout=60_000)
        page.wait_for_timeout(1000)
        problems, self.seen = self.seen, []
        if problems and not reloaded and all(" 503" in p for p in problems):
            # Airflow's API answers 503 while the tests' SQLite stays locked (not on PostgreSQL):
            # reload once, as a user would; a page that fails again fails the test
            page.reload()
            return self.settle(page, what, shot, reloaded=True)
        if shot:
            ARTIFACTS.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(ARTIFACTS / f"{shot}.png"), full_page=False)
        assert problems == [], f"{what} ({page.url}):\n" + "\n".join(problems)


@pytest.fixture(scope="module")
def ui(live):
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: `make test-live` installs Debian's chromium")
    airflow, base = live
    shutil.rmtree(ARTIFACTS, ignore_errors=True)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1400, "height": 900})
        context.set_default_timeout(30_000)
        problems = Problems(context)
        page = context.new_page()
        try:
            yield airflow, base, context, page, problems
        finally:
            browser.close()


def test_log_in_through_the_form_and_see_the_dag_list(ui):
    airflow, _, _, page, problems = ui
    page.goto(f"{airflow.url}/auth/login")
    problems.settle(page, "the login page", "login")
    page.fill("input[name=username]", "admin")
    page.fill("input[name=password]", airflow.password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{airflow.url}/", timeout=30_000)
    problems.settle(page, "the home page")
    page.goto(f"{airflow.url}/dags")
    page.get_by_text(FULL, exact=True).first.wait_for()
    page.get_by_text(DAILY, exact=True).first.wait_for()
    problems.settle(page, "the DAG list", "dag-list")


def test_data_docs_open_in_a_new_tab_styled_and_offline(ui):
    airflow, _, context, page, problems = ui
    page.goto(f"{airflow.url}/dags/{DAILY}")
    problems.settle(page, "the DAG page")
    page.get_by_role("button", name="Browse").click()
    with context.expect_page() as opened:
        page.get_by_role("menuitem", name="Data docs").click()
    docs = opened.value
    docs.wait_for_load_state()
    assert docs.url == f"{airflow.url}/criteo-data-docs/", docs.url
    assert page.url.startswith(f"{airflow.url}/dags/{DAILY}")    # the UI stays in its own tab
    problems.settle(docs, "the data docs index", "data-docs-index")
    rows = docs.locator("tbody tr")
    assert rows.count() >= 5, docs.content()[:2000]
    # a GX validation page: styled by bootstrap (served by the plugin), nothing from the internet
    with docs.expect_navigation():
        docs.get_by_role("link", name="validation page").first.click()
    problems.settle(docs, "a GX validation page", "data-docs-validation")
    assert docs.evaluate("getComputedStyle(document.querySelector('nav.navbar')).display") == "flex"
    sheets = dict(docs.evaluate("Array.from(document.styleSheets).filter(s => s.href)"
                                ".map(s => [s.href.split('/assets/').pop(), s.cssRules.length])"))
    assert sheets.get("bootstrap@4.3.1/dist/css/bootstrap.min.css", 0) > 100, sheets
    assert all(rules > 0 for rules in sheets.values()), sheets          # every stylesheet loaded
    offsite = docs.evaluate("performance.getEntriesByType('resource').map(e => e.name)"
                            ".filter(u => !u.startsWith(location.origin))")
    assert offsite == [], offsite
    docs.close()


def test_a_run_s_data_docs_tab(ui):
    airflow, _, _, page, problems = ui
    run = next(r for r in airflow.runs(DAILY) if r["run_type"] == "backfill" and r["state"] == "success")
    page.goto(f"{airflow.url}/dags/{DAILY}/runs/{run['dag_run_id']}/plugin/criteo-run-data-docs")
    frame = page.frame_locator("iframe")
    frame.locator("tbody tr").first.wait_for()
    problems.settle(page, "the run's Data docs tab", "run-data-docs-tab")
    text = frame.locator("tbody").inner_text()
    assert run["dag_run_id"] in text and text.count("\n") >= 1, text


def _pick_date(page, field: int, day: str):
    page.locator("[role=dialog][data-state=open] [data-testid=datetime-input]").nth(field).click()
    popover = page.locator("[data-state=open] input[placeholder='YYYY/MM/DD']").last
    popover.fill(day)
    page.locator("[data-state=open] input[placeholder='HH:mm']").last.fill("00:00")
    page.get_by_role("heading", name=f"Run Backfill - {DAILY}").click()     # closes the popover only


def _param_input(dialog, title: str):
    label = dialog.locator("label", has_text=title).first
    return dialog.locator(f"[id='{label.get_attribute('for')}']")


def test_a_backfill_from_the_ui_backfill_form(ui):
    """Day 7 through Trigger -> Backfill, as docs/operations.md tells users: one backfill run on its own day,
    warm-started from the version the days before left in production."""
    airflow, base, _, page, problems = ui
    before = max(int(p.name) for p in model_dir(base).iterdir() if p.name.isdigit())
    airflow.wait("the earlier backfills to complete", lambda: all(
        b["completed_at"] for b in airflow.call("GET", f"/api/v2/backfills?dag_id={DAILY}")["backfills"]),
        timeout_s=300)
    page.goto(f"{airflow.url}/dags/{DAILY}")
    problems.settle(page, "the DAG page")
    page.click("[data-testid=trigger-dag-button]")
    dialog = page.locator("[role=dialog][data-state=open]").last
    dialog.locator("label[for$=':radio:input:backfill']").click()
    _pick_date(page, 0, "2026/01/08")
    _pick_date(page, 1, "2026/01/08")
    # Airflow 3.3.2's form sends the Params (dag_run_conf) only with this box ticked; without it the
    # runs silently take the DAG's defaults
    dialog.get_by_text("Override parameters on existing runs").click()
    floor = _param_input(dialog, "AUC floor")
    floor.fill("0.55")
    floor.press("Tab")
    submit = dialog.get_by_role("button", name="Run Backfill")
    submit.wait_for()
    dialog.get_by_text("Date Range").scroll_into_view_if_needed()     # the screenshot shows the dates
    problems.settle(page, "the backfill form", "backfill-form")
    assert submit.is_enabled()
    submit.click()

    def backfill_run():
        runs = [r for r in airflow.runs(DAILY)
                if r["run_type"] == "backfill" and r["logical_date"][:10] == "2026-01-08"]
        return runs[0] if runs and runs[0]["state"] in ("success", "failed") else None

    run = airflow.wait("the UI's backfill run", backfill_run, timeout_s=900, every_s=5)
    assert run["state"] == "success", airflow.task_states(DAILY, run["dag_run_id"])
    assert run["conf"].get("auc_floor") == 0.55, run["conf"]
    lineage = json.loads((model_dir(base) / str(before + 1) / "lineage.json").read_text())
    assert (lineage["days"], lineage["parent_version"]) == ([7], before)


def test_the_full_retrain_trigger_form_defaults_run_the_pipeline_to_the_gate(ui):
    """The form as it opens (end_day -1, logical date now), submitted unchanged: the window ends
    on the latest raw day in the bucket and every task up to the blessing gate succeeds. The gate's
    verdict depends on the data (7 days of 20k rows from scratch, against the production the
    backfills left): blessed, the run succeeds and deploys; not blessed, it fails at blessing_gate
    (no retry) saying so, and deploy never runs."""
    airflow, _, _, page, problems = ui
    page.goto(f"{airflow.url}/dags/{FULL}")
    problems.settle(page, "the full retrain's page")
    page.click("[data-testid=trigger-dag-button]")
    dialog = page.locator("[role=dialog][data-state=open]").last
    end_day = _param_input(dialog, "Last day of the window")
    assert end_day.input_value() == "-1"
    problems.settle(page, "the full retrain's trigger form", "full-retrain-trigger-form")
    before = {r["dag_run_id"] for r in airflow.runs(FULL)}
    dialog.locator("[data-testid=trigger-dag-submit]").click()
    run = airflow.wait("the triggered run", lambda: next(
        (r for r in airflow.runs(FULL) if r["dag_run_id"] not in before), None), timeout_s=60)
    assert run["run_type"] == "manual"
    done = airflow.finished_run(FULL, run["dag_run_id"], timeout_s=1200)
    states = airflow.task_states(FULL, run["dag_run_id"])
    log = airflow.task_log(FULL, run["dag_run_id"], "plan_full_retrain")
    assert "the latest raw day in the bucket, day_7" in log, log[-2000:]
    assert all(state == "success" for task, state in states.items() if task not in ("blessing_gate", "deploy")), states
    if done["state"] == "success":
        assert (states["blessing_gate"], states["deploy"]) == ("success", "success"), states
    else:
        assert (states["blessing_gate"], states["deploy"]) == ("failed", "upstream_failed"), states
        gate = airflow.task_log(FULL, run["dag_run_id"], "blessing_gate")
        assert "not blessed, nothing deployed, production unchanged: candidate AUC" in gate, gate[-2000:]
