"""The compose stack (docker-compose.yaml) up on the engine with Debian's docker-compose 1.29
(tests/fixtures/compose.py: every image the one `make images` built, every service on the host
network by a test override).

Through the stack's own REST API: a full retrain, then the daily run of the next day, each step a
sibling container started by the scheduler's task; Triton in its container serves the new version;
the UI's login in Chromium; `docker-compose down` leaves no container (after every other test on
the shared stack, tests/faults/test_database_restart.py included).
"""
from __future__ import annotations

import httpx
import pytest

from tests.fixtures.compose import PROJECT

from .conftest import REPO, TAG, podman

pytestmark = pytest.mark.containers


def test_a_full_retrain_and_a_daily_run_through_the_stacks_rest_api(compose_stack):
    st = compose_stack
    st.wait_for("the DAGs parsed", lambda: {d["dag_id"] for d in st.api("GET", "/dags?limit=50")["dags"]} >=
                {"criteo_full_retrain", "criteo_incremental_training"}, timeout=300)
    for dag_id in ("criteo_full_retrain", "criteo_incremental_training"):
        st.api("PATCH", f"/dags/{dag_id}", {"is_paused": False})
    small = {"epochs": 2, "learning_rate": 0.005, "mlp_dims": "64,64", "batch_size": 2048, "auc_floor": 0.55}
    full = st.run_dag("criteo_full_retrain", "2026-01-02T00:00:00Z", {"end_day": 1, "window_days": 2, **small})
    assert full["state"] == "success", full["tasks"]
    daily = st.run_dag("criteo_incremental_training", "2026-01-03T00:00:00Z", {"auc_floor": 0.55})
    assert daily["state"] == "success", daily["tasks"]
    # every step ran as a sibling container of its image (the runtime removes those that succeeded)
    events = podman("events", "--stream=false", "--since", "30m", "--filter", "event=create",
                    "--format", "{{.Image}}").stdout.split()
    assert {f"localhost/criteo-{n}:{TAG}" for n in ("merlin", "validator")} <= set(events), set(events)
    # Triton, in its container, serves the daily run's version (2) of the model
    ready = f"http://127.0.0.1:{st.ports['triton_http']}/v2/models/criteo_dcn/versions/2/ready"
    st.wait_for("Triton serving version 2", lambda: httpx.get(ready, timeout=5).status_code == 200, timeout=120)


def test_the_uis_login_works_in_chromium(compose_stack):
    from playwright.sync_api import sync_playwright

    from tests.live.test_browser import CHROMIUM, CHROMIUM_ARGS

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{compose_stack.url}/auth/login")
            page.fill("input[name=username]", "admin")
            page.fill("input[name=password]", compose_stack.secrets["AIRFLOW_ADMIN_PASSWORD"])
            page.click("button[type=submit]")
            page.wait_for_url(f"{compose_stack.url}/", timeout=60_000)
            page.goto(f"{compose_stack.url}/dags")
            page.get_by_text("criteo_full_retrain", exact=True).first.wait_for(timeout=60_000)
            shots = REPO / ".data" / "test-artifacts" / "compose"
            shots.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(shots / "dag-list.png"))
        finally:
            browser.close()


@pytest.mark.compose_last
def test_down_leaves_no_container(compose_stack):
    compose_stack.compose("down", "-v", "--remove-orphans", timeout=300)
    left = podman("ps", "-a", "--filter", f"label=com.docker.compose.project={PROJECT}",
                  "--format", "{{.Names}}").stdout
    assert left.strip() == ""
    assert "criteo-bucket" not in podman("volume", "ls", "--format", "{{.Name}}").stdout
