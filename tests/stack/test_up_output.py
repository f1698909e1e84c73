"""What `make up` promises when it finishes: the UI it prints talks to the server it started, the run forms offer
the route names (and `acr-transfer setup` keeps them so, again and again), and the `curl` it prints is a push
webhook the receiver takes and the stack acts on.

Runs after the other stack tests: the pasted webhook starts an export of route airgap-out."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.setup import with_route_choices
from deployments.stack import ROOT, Stack
from tests.support import prefect_rest

pytestmark = pytest.mark.integration

# routes.example.yaml, by the side(s) each route-named flow uses
CHOICES = {
    ("transfer", "transfer"): ["demo", "direct", "triggered"],
    ("export-route", "export-on-push"): ["demo", "direct", "triggered", "airgap-out"],
    ("import-route-blob", "import-on-blob"): ["demo", "direct", "triggered", "airgap-in"],
}


def test_route_choices_keep_the_rest_of_the_schema() -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"route": {"type": "string", "position": 0}, "dry_run": {"type": "boolean"}},
        "required": ["route"],
    }
    offered = with_route_choices(schema, ["a", "b"])
    assert offered["properties"]["route"] == {"type": "string", "position": 0, "enum": ["a", "b"]}
    assert offered["properties"]["dry_run"] == schema["properties"]["dry_run"] and offered["required"] == ["route"]
    assert with_route_choices(offered, ["a", "b"]) == offered
    assert "enum" not in schema["properties"]["route"]  # the input is left as it was


def test_the_printed_ui_is_told_the_servers_api(stack: Stack) -> None:
    settings = httpx.get(f"{stack.urls['Prefect UI']}/ui-settings", timeout=30).json()
    assert settings["api_url"] == stack.env["PREFECT_API_URL"]
    assert httpx.get(f"{settings['api_url']}/health", timeout=30).status_code == 200


def test_route_is_a_choice_of_route_names_and_setup_leaves_it_so(stack: Stack) -> None:
    api = stack.env["PREFECT_API_URL"]
    before = {}
    for (flow, name), names in CHOICES.items():
        dep = prefect_rest.deployment(api, flow, name)
        assert dep["parameter_openapi_schema"]["properties"]["route"]["enum"] == names, (flow, name)
        before[flow] = dep["parameter_openapi_schema"]
    again = setup(stack)
    assert again.count("route is one of") == len(CHOICES) and "(updated)" not in again, again
    for flow, name in CHOICES:
        assert prefect_rest.deployment(api, flow, name)["parameter_openapi_schema"] == before[flow]
    with prefect_rest.api(api) as c:
        refused = c.post(
            f"/deployments/{prefect_rest.deployment(api, 'transfer', 'transfer')['id']}/create_flow_run",
            json={"parameters": {"route": "airgap-in"}},  # import-only: not a transfer the form offers
        )
    assert refused.status_code == 409, refused.text


def test_a_default_route_outside_the_routes_file_leaves_that_form_free(stack: Stack, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\n"
        "defaults:\n"
        "  source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        "  target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}\n"
        "routes:\n"
        "  - {name: other, artifacts: [demo/hello:v1]}\n"
    )
    api = stack.env["PREFECT_API_URL"]
    transfer = prefect_rest.deployment(api, "transfer", "transfer")["parameter_openapi_schema"]
    try:
        out = setup(stack, ACR_TRANSFER_ROUTES=str(routes))
        # prefect.yaml gives `transfer` the default route demo: a choice without it would be refused
        assert "default route 'demo' is not one of other" in out, out
        assert prefect_rest.deployment(api, "transfer", "transfer")["parameter_openapi_schema"] == transfer
        export = prefect_rest.deployment(api, "export-route", "export-on-push")["parameter_openapi_schema"]
        assert export["properties"]["route"]["enum"] == ["other"]
    finally:
        setup(stack)  # the shipped routes again, for the tests after this one
    for (flow, name), names in CHOICES.items():
        assert (
            prefect_rest.deployment(api, flow, name)["parameter_openapi_schema"]["properties"]["route"]["enum"] == names
        )


def test_the_printed_push_webhook_curl_starts_an_export(stack: Stack) -> None:
    curl = stack.push_webhook_curl()
    assert stack.env["ACR_TRANSFER_EVENTS_SECRET"] not in curl  # printed: it reads the key from a file
    dep = prefect_rest.deployment(stack.env["PREFECT_API_URL"], "export-route", "export-on-push")
    before = {r["id"] for r in prefect_rest.runs_of(stack.env["PREFECT_API_URL"], dep["id"])}
    pasted = subprocess.run(
        ["bash", "-c", curl], env=dict(os.environ), capture_output=True, text=True, timeout=60, check=True
    )
    assert json.loads(pasted.stdout) == {"emitted": 1, "duplicates": 0, "ignored": 0}, pasted.stdout
    deadline, new = time.monotonic() + 90, list[dict[str, Any]]()
    while time.monotonic() < deadline and not new:
        new = [r for r in prefect_rest.runs_of(stack.env["PREFECT_API_URL"], dep["id"]) if r["id"] not in before]
        time.sleep(1)
    assert len(new) == 1, f"export-on-push started {len(new)} runs for one pasted webhook"
    assert new[0]["parameters"]["route"] == "airgap-out"
    done = prefect_rest.wait_for(stack.env["PREFECT_API_URL"], new[0]["id"], timeout=150)
    assert done["state_type"] == "COMPLETED", done["state"]


def setup(stack: Stack, **env: str) -> str:
    """``acr-transfer setup`` against the stack (with ``env`` on top of its environment); returns its output."""
    run_env = {**stack.child_env(), "COLUMNS": "200", **env}  # rich wraps at 80 columns when not on a terminal
    done = subprocess.run(
        [sys.executable, "-m", "deployments", "setup"],
        cwd=ROOT,
        env=run_env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout
