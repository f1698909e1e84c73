"""The Prefect UI of `make up`'s stack in a real browser (Debian's chromium, driven by Playwright): what a
newcomer sees in the first five minutes. The dashboard reaches its API; the `transfer` form is typed and offers
the routes of routes.yaml; a run submitted through it completes and shows its result artifact; a `sync-routes`
run lists one task run per route.

Each step that fails leaves a screenshot in build/screenshots/ and names it in the failure."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from deployments.stack import Stack
from tests.support import prefect_rest
from tests.support.browser import CHROMIUM, NOT_INSTALLED, screenshot, shot_on_failure

pytestmark = [pytest.mark.integration, pytest.mark.skipif(not CHROMIUM.exists(), reason=NOT_INSTALLED)]

UI_WAIT_MS = 60_000  # one page or element; the server shares 2 cores with the worker and the stand-in
BROKEN_UI = ("Can't connect to Server API", "Unable to connect to Prefect server")  # the v1 and v2 UIs' words
# routes.example.yaml: what each flow's form offers (the routes with the side(s) the flow uses)
TWO_SIDED = ["demo", "direct", "triggered"]
ALL_ROUTES = [*TWO_SIDED, "airgap-out", "airgap-in"]


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        try:
            yield b
        finally:
            b.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(UI_WAIT_MS)
    try:
        yield context.new_page()
    finally:
        context.close()


def ui(stack: Stack) -> str:
    return stack.urls["Prefect UI"]


def api_url(stack: Stack) -> str:
    return stack.env["PREFECT_API_URL"]


def test_the_dashboard_reaches_its_api(stack: Stack, page: Page) -> None:
    # the default UI (v2, at /) and the classic one (v1, /dashboard): both ask /ui-settings where the API is
    for version, path in (("v2", "/"), ("v1", "/dashboard")):
        with shot_on_failure(page, f"dashboard-{version}"):
            page.goto(ui(stack) + path, wait_until="networkidle", timeout=UI_WAIT_MS)
            # data from the API on the page (the worker's pool) means the UI got through; then look for the warning
            expect(page.get_by_text("acr-transfer", exact=True).first).to_be_visible()
            page.wait_for_load_state("networkidle", timeout=UI_WAIT_MS)
            for text in BROKEN_UI:
                expect(page.get_by_text(text)).to_have_count(0)
        screenshot(page, f"dashboard-{version}")  # what the newcomer sees, kept for a look


def test_the_transfer_form_is_typed_and_a_run_of_demo_completes_with_its_artifact(stack: Stack, page: Page) -> None:
    dep = prefect_rest.deployment(api_url(stack), "transfer", "transfer")
    with shot_on_failure(page, "transfer-form"):
        page.goto(f"{ui(stack)}/v2/deployments/deployment/{dep['id']}", timeout=UI_WAIT_MS)
        page.get_by_role("button", name="Run", exact=True).click()
        page.get_by_role("menuitem", name="Custom run").click()
        expect(page.get_by_role("heading", name="Parameters")).to_be_visible()
        # typed fields: the route a select of route names, dry_run a switch
        expect(page.get_by_role("switch", name="dry_run (Optional)")).to_be_visible()
        route = page.get_by_role("button", name="Select route")
        route.click()
        options = page.get_by_role("option")
        expect(options.first).to_be_visible()
        assert options.all_inner_texts() == TWO_SIDED
        page.get_by_role("option", name="demo", exact=True).click()
        expect(route).to_have_text("demo")
        for _ in range(3):
            with page.expect_response(
                lambda r: r.request.method == "POST" and r.url.endswith("/create_flow_run"), timeout=UI_WAIT_MS
            ) as created:
                page.get_by_role("button", name="Submit").click()
            if created.value.status != 503:
                break
            # SQLite's busy conflict under the full suite (Prefect's 503; the UI does not retry): a person submits again
            page.wait_for_timeout(2000)
        assert created.value.status == 201, created.value.text()
        run: dict[str, Any] = created.value.json()
        assert run["parameters"]["route"] == "demo"

    done = prefect_rest.wait_for(api_url(stack), run["id"], timeout=150)
    assert done["state_type"] == "COMPLETED", done["state"]
    # the run is named after its route and transfer id, and holds the transfer's artifacts itself
    assert re.fullmatch(r"demo-[a-z0-9]{6,20}", done["name"]), done["name"]
    with shot_on_failure(page, "transfer-run-artifacts"):
        page.goto(f"{ui(stack)}/v2/runs/flow-run/{run['id']}", timeout=UI_WAIT_MS)
        expect(page.get_by_text("Completed").first).to_be_visible()
        page.get_by_role("tab", name="Artifacts").click()
        expect(page.get_by_text("transfer-demo", exact=True)).to_be_visible()
        expect(page.get_by_text("transfer-summary-demo", exact=True)).to_be_visible()


def test_a_sync_routes_run_lists_a_task_run_per_route(stack: Stack, page: Page) -> None:
    dep = prefect_rest.deployment(api_url(stack), "sync-routes", "sync-routes")
    run = prefect_rest.start_run(api_url(stack), dep["id"])
    done = prefect_rest.wait_for(api_url(stack), run["id"], timeout=180)
    with shot_on_failure(page, "sync-routes-task-runs"):
        page.goto(f"{ui(stack)}/v2/runs/flow-run/{run['id']}", timeout=UI_WAIT_MS)
        page.get_by_role("tab", name="Task Runs").click()
        for name in ALL_ROUTES:
            expect(page.get_by_role("link", name=name, exact=True)).to_be_visible()
    # the nightly run over the shipped routes file: every route runs its own halves, so none fails
    assert done["state_type"] == "COMPLETED", done["state"]
