"""The runs a person opens in the UI hold what they need: a route's transfer run holds its task runs and
artifacts (no empty wrapper), is named ``<route>-<transfer id>`` and tagged with the route; a failed preflight
leaves its ✓/✗ list and an ``acr.transfer.failed`` event; an export-only run lists the blobs to carry across;
``sync-routes`` runs each route's halves, names each task by its route, and shows a failed route as failed."""

from __future__ import annotations

import json
import re
import time
import uuid
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterKey,
    FlowRunFilter,
    FlowRunFilterParentFlowRunId,
    TaskRunFilter,
    TaskRunFilterFlowRunId,
)
from prefect.events.filters import EventFilter, EventNameFilter
from prefect.events.worker import EventsWorker

from acr_transfer.errors import AcrTransferError, PreflightError
from flows.routes import export_route, sync_routes, transfer_route
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

ROUTES = """\
version: 1
defaults:
  source:
    registry: {resource_group: transfer-rg, name: sourceregistry}
    export_pipeline: exportpipeline
  target:
    registry: {resource_group: transfer-rg, name: targetregistry}
    import_pipeline: directimport
  timeout_minutes: 2
routes:
  - name: readable-both
    artifacts: [%(image)s]
  - name: readable-out
    target: null
    artifacts: [%(image)s]
  - name: readable-in
    source: null
  - name: readable-broken
    artifacts: [readable/absent%(suffix)s:v1]
"""


@pytest.fixture(scope="module")
def routes_file(standin: StandIn, tmp_path_factory: pytest.TempPathFactory) -> Path:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    suffix = uuid.uuid4().hex[:8]
    image = push_file_artifact(login, f"readable/app{suffix}", "v1", b"a run a person can read")
    path = tmp_path_factory.mktemp("readable") / "routes.yaml"
    path.write_text(ROUTES % {"image": image.by_tag, "suffix": suffix})
    return path


def _run(run_id: UUID) -> Any:
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id)


def _task_names(run_id: UUID) -> dict[str, str]:
    with get_client(sync_client=True) as client:
        runs = client.read_task_runs(task_run_filter=TaskRunFilter(flow_run_id=TaskRunFilterFlowRunId(any_=[run_id])))
    return {r.name: r.state.type.value if r.state else "" for r in runs}


def _latest_artifact(key: str) -> Any:
    with get_client(sync_client=True) as client:
        found = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key])), limit=50)
    assert found, f"no artifact with key {key}"
    return max(found, key=lambda a: a.created)


def _events(name: str, route: str) -> list[Any]:
    """The route's events of that name, waiting a while: the server persists events asynchronously."""
    EventsWorker.drain_all()
    deadline = time.monotonic() + 20
    while True:
        with get_client(sync_client=True) as client:
            page = client.read_events(filter=EventFilter(event=EventNameFilter(name=[name])), limit=50)
        mine = [e for e in page.events if e.payload.get("route") == route]
        if mine or time.monotonic() > deadline:
            return mine
        time.sleep(0.5)


def test_a_route_transfer_run_holds_its_task_runs_and_artifacts(routes_file: Path) -> None:
    state = transfer_route(route="readable-both", routes_file=str(routes_file), return_state=True)
    result = state.result()
    run = _run(state.state_details.flow_run_id)
    assert run.name == f"readable-both-{result.transfer_id}"
    assert "route:readable-both" in run.tags
    tasks = {re.sub(r"-[0-9a-f]{3}$", "", name) for name in _task_names(run.id)}  # Prefect's default suffix
    assert {"plan-transfer", "export-batch", "import-batch", "verify-batch", "publish-result"} <= tasks
    with get_client(sync_client=True) as client:  # no subflow holds them instead
        children = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[run.id]))
        )
    assert children == []
    table = _latest_artifact("transfer-readable-both")
    assert table.flow_run_id == run.id
    assert [row["status"] for row in _rows(table)] == ["verified"]


def test_a_failed_preflight_leaves_its_checks_and_a_failed_event(routes_file: Path) -> None:
    state = transfer_route(route="readable-broken", routes_file=str(routes_file), return_state=True)
    assert state.is_failed()
    with pytest.raises(PreflightError):
        state.result()
    run_id = state.state_details.flow_run_id
    checks = _latest_artifact("preflight-readable-broken")
    assert checks.flow_run_id == run_id
    assert "nothing was created" in str(checks.data)
    assert "✗ artifact 'readable/absent" in str(checks.data) and "✓ export pipeline 'exportpipeline'" in str(
        checks.data
    )
    failed = _events("acr.transfer.failed", "readable-broken")
    assert failed and failed[-1].payload["stage"] == "preflight"
    assert any("not found in source registry" in f for f in failed[-1].payload["failures"])


def test_an_export_only_run_lists_the_blobs_to_carry_across(routes_file: Path) -> None:
    state = export_route(route="readable-out", routes_file=str(routes_file), return_state=True)
    exported = state.result()
    table = _latest_artifact("export-readable-out")
    assert table.flow_run_id == state.state_details.flow_run_id
    assert exported[0].blob in str(table.data) and exported[0].catalog_digest in str(table.data)
    assert exported[0].catalog_digest.startswith("sha256:")


def test_sync_routes_runs_each_routes_halves_and_shows_a_failed_route_failed(routes_file: Path) -> None:
    state = sync_routes(routes_file=str(routes_file), return_state=True)
    assert state.is_failed()  # one route failed, after every route ran
    with pytest.raises(AcrTransferError, match="readable-broken failed"):
        state.result()
    # the sync's own task per route (beside them Prefect lists the subflows it started, and their tasks)
    tasks = _task_names(state.state_details.flow_run_id)
    assert not [name for name in tasks if name.startswith("sync-route")]
    assert {name: kind for name, kind in tasks.items() if name.startswith("readable-")} == {
        "readable-both": "COMPLETED",
        "readable-out": "COMPLETED",
        "readable-in": "COMPLETED",
        "readable-broken": "FAILED",
    }
    summary = {row["route"]: row for row in _rows(_latest_artifact("sync-routes-summary"))}
    assert {route: row["status"] for route, row in summary.items()} == {
        "readable-both": "succeeded",
        "readable-out": "succeeded",
        "readable-in": "skipped",
        "readable-broken": "failed",
    }
    assert "exported 1 artifacts to 1 blob(s)" in summary["readable-out"]["message"]
    assert "imports when a blob arrives" in summary["readable-in"]["message"]


def _rows(artifact: Any) -> list[dict[str, Any]]:
    data = artifact.data
    return json.loads(data) if isinstance(data, str) else list(data)
