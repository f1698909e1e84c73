"""sync-routes in process: a route a live transfer holds is skipped (naming it), a stranded lock is reclaimed."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

from flows.routes import sync_routes
from tasks.concurrency import active_slots, ensure_limit, holder_variable, route_lock, route_lock_name
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, routes_file_text

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def routes_env(standin: StandIn, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("TARGET_VAULT_URL", standin.topology["vaults"]["targetvault"]["url"])
    standin.clear_requests()
    return str(ROOT / "routes.example.yaml")


def test_a_route_a_live_transfer_holds_is_skipped_naming_it(standin: StandIn, routes_env: str) -> None:
    busy = uuid.uuid4().hex[:12]
    with route_lock("direct", transfer_id=busy):  # as a running transfer holds it (recorded, no flow run to ask)
        outcomes = sync_routes(routes=["direct"], routes_file=routes_env)
    assert [(o.route, o.status, o.transfer_id) for o in outcomes] == [("direct", "skipped", busy)]
    assert outcomes[0].message.startswith(f"still running: transfer {busy}")
    assert not arm_puts(standin)
    assert active_slots(route_lock_name("direct")) == 0


def test_a_stranded_route_lock_is_reclaimed_and_the_route_runs(standin: StandIn, tmp_path: Path) -> None:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(login, f"stranded/app{uuid.uuid4().hex[:6]}", "v1", b"stranded lock payload")
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_file_text("stranded", image.by_tag, keep_blob=False))
    # what a Prefect restart with in-memory leases leaves: the slot counted, no lease and no holder on record
    name = route_lock_name("stranded")
    ensure_limit(name, 1)
    with get_client(sync_client=True) as client:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))
        assert client.read_variable_by_name(holder_variable("stranded")) is None
    outcomes = sync_routes(routes_file=str(routes))
    assert [(o.route, o.status, o.verified) for o in outcomes] == [("stranded", "succeeded", 1)]
    assert active_slots(name) == 0  # released at the end, not left counted


def test_a_failed_sync_is_continued_by_the_next_not_started_over(standin: StandIn, tmp_path: Path) -> None:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(login, f"resumed/app{uuid.uuid4().hex[:6]}", "v1", b"a sync that resumes")
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_file_text("resumed", image.by_tag, keep_blob=False))
    standin.clear_requests()
    # the import run's creation is refused once (a permanent 400): the route fails after its export succeeded
    standin.add_fault(service="arm", method="PUT", path=r"/pipelineRuns/i[a-z0-9]+b001a1$", status=400, count=1)
    try:
        failed = sync_routes(routes_file=str(routes), return_state=True)
    finally:
        standin.clear_faults()
    assert failed.is_failed()
    exports = [r for r in arm_puts(standin) if "/pipelineRuns/x" in r["path"]]
    assert len(exports) == 1 and exports[0]["status"] < 300
    transfer_id = exports[0]["path"].rsplit("/x", 1)[1][:12]

    outcomes = sync_routes(routes_file=str(routes))
    assert [(o.route, o.status, o.transfer_id, o.verified) for o in outcomes] == [
        ("resumed", "succeeded", transfer_id, 1)
    ]
    # the export that had succeeded was imported, never exported again
    assert [r["path"].rsplit("/", 1)[1] for r in arm_puts(standin) if "/pipelineRuns/x" in r["path"]] == [
        f"x{transfer_id}b001a1"
    ]
    with get_client(sync_client=True) as client:  # finished: the next sync starts a new transfer
        assert client.read_variable_by_name("acr_transfer_unfinished_resumed") is None
