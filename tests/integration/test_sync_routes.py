"""sync-routes in process: a route whose transfer is still running is skipped, not run twice."""

from __future__ import annotations

from pathlib import Path

import pytest
from prefect.concurrency.sync import concurrency

from flows.routes import sync_routes
from tasks.concurrency import ensure_limit, route_lock_name
from tests.support.standin import StandIn

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]


def test_a_route_still_transferring_is_skipped(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGET_VAULT_URL", standin.topology["vaults"]["targetvault"]["url"])
    standin.clear_requests()
    ensure_limit(route_lock_name("direct"), 1)
    with concurrency(route_lock_name("direct"), occupy=1, strict=True):  # as a running transfer holds it
        outcomes = sync_routes(routes=["direct"], routes_file=str(ROOT / "routes.example.yaml"))
    assert [(o.route, o.status) for o in outcomes] == [("direct", "skipped")]
    assert "still running" in outcomes[0].message
    assert not [r for r in standin.requests("arm") if r["method"] == "PUT"]
