"""The Prefect REST API of a running server, as the UI uses it: for tests of the local stack (``make up``).

Every call retries 5xx as Prefect's own client does (SQLite is busy on a loaded machine)."""

from __future__ import annotations

import time
from typing import Any

import httpx

TERMINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


class RetryingTransport(httpx.HTTPTransport):
    """An HTTP transport that sends a request again (up to 6 times, backing off) while the answer is a 5xx."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        for attempt in range(6):
            response = super().handle_request(request)
            if response.status_code < 500 or attempt == 5:
                return response
            response.close()
            time.sleep(0.5 * 2**attempt)
        raise AssertionError("unreachable")


def api(api_url: str) -> httpx.Client:
    """A client of the Prefect API at ``api_url`` (``…/api``)."""
    return httpx.Client(base_url=api_url, timeout=60, transport=RetryingTransport())


def deployment(api_url: str, flow: str, name: str) -> dict[str, Any]:
    """The deployment ``flow/name``.

    Raises:
        httpx.HTTPStatusError: there is none.
    """
    with api(api_url) as c:
        r = c.get(f"/deployments/name/{flow}/{name}")
        r.raise_for_status()
        return dict(r.json())


def runs_of(api_url: str, deployment_id: str) -> list[dict[str, Any]]:
    """The (first 50) flow runs of a deployment."""
    with api(api_url) as c:
        r = c.post("/flow_runs/filter", json={"deployments": {"id": {"any_": [deployment_id]}}, "limit": 50})
        r.raise_for_status()
        return list(r.json())


def start_run(api_url: str, deployment_id: str, parameters: dict[str, Any] | None = None) -> dict[str, Any]:
    """A new flow run of a deployment, as the UI's Quick run creates it.

    Raises:
        httpx.HTTPStatusError: the server refused it (409: parameters outside the schema).
    """
    with api(api_url) as c:
        r = c.post(f"/deployments/{deployment_id}/create_flow_run", json={"parameters": parameters or {}})
        r.raise_for_status()
        return dict(r.json())


def wait_for(api_url: str, run_id: str, timeout: float = 180) -> dict[str, Any]:
    """The flow run once it is in a terminal state.

    Raises:
        AssertionError: it was not within ``timeout`` seconds (the message has its last state).
    """
    deadline = time.monotonic() + timeout
    run: dict[str, Any] = {}
    with api(api_url) as c:
        while time.monotonic() < deadline:
            run = c.get(f"/flow_runs/{run_id}").json()
            if run["state_type"] in TERMINAL:
                return dict(run)
            time.sleep(1)
    raise AssertionError(f"flow run {run_id} did not finish in {timeout:.0f} s; last state {run.get('state_type')}")
