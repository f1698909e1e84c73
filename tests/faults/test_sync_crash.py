"""``sync-routes`` over 10 routes, SIGKILLed mid-way, then run again: nothing lost, nothing done twice.

The sync runs in its own process (as on a worker) against a real Prefect server with ``acr-transfer setup``'s
crash automation. It is killed once some routes have finished, some are between batches and some have not
started. The next sync must verify every route, continue each unfinished transfer under its transfer id (no
artifact exported a second time: a Succeeded export is imported, not redone), leave no blob behind, and every
flow run of the killed process must end Crashed — none left Running.
"""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient
from rich.console import Console

from deployments.setup import CRASH_AUTOMATION, ensure_crash_detection
from flows.routes import RouteStatus, sync_routes
from tests.faults.record import record
from tests.support import azure
from tests.support.images import Pushed, manifest_digest, push_file_artifact
from tests.support.standin import StandIn

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]
ROUTES = 10
TAGS = ("v1", "v2")  # batch_size 1: two batches per route
CRASH_AFTER_SECONDS = 60  # the automation's grace (production: 90); heartbeats come every 30 s


@pytest.fixture
def crash_detection() -> Iterator[None]:
    """``acr-transfer setup``'s automation, removed afterwards (the rest of the session runs without it)."""
    from prefect.client.orchestration import get_client

    ensure_crash_detection(Console(file=io.StringIO()), within_seconds=CRASH_AFTER_SECONDS)
    try:
        yield
    finally:
        with get_client(sync_client=True) as client:
            for automation in client.read_automations_by_name(CRASH_AUTOMATION):
                client.delete_automation(automation.id)


def _routes_text(prefix: str) -> str:
    lines = ["version: 1", "routes:"]
    for i in range(ROUTES):
        lines += [
            f"  - name: {prefix}-{i}",
            "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: "
            "exportpipeline}",
            "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: "
            "directimport}",
            "    batch_size: 1",
            "    timeout_minutes: 5",
            "    cleanup: {delete_export_blob: true}",
            f"    select: {{repositories: ['{prefix}/r{i}'], tags: ['v\\d+']}}",
        ]
    return "\n".join(lines) + "\n"


def _export_runs(prefix: str) -> list[Any]:
    """Every export run of this test's routes (their blobs are named '<route>/<transfer id>/…')."""
    runs = azure.arm().pipeline_runs.list(azure.RG, "sourceregistry")
    return [r for r in runs if r.name.startswith("x") and _blob(r).startswith(prefix)]


def _blob(run: Any) -> str:
    return str(getattr(run.request.target, "name", "") or "") if run.request and run.request.target else ""


def _flow_runs_since(started: datetime) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterExpectedStartTime

    with get_client(sync_client=True) as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(expected_start_time=FlowRunFilterExpectedStartTime(after_=started)),
                limit=200,
            )
        )


@pytest.mark.timeout(600)
def test_a_killed_sync_of_ten_routes_is_continued_by_the_next(
    standin: StandIn, crash_detection: None, tmp_path: Path
) -> None:
    from prefect.settings import PREFECT_API_URL

    prefix = f"k{uuid.uuid4().hex[:6]}"
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    images: list[Pushed] = [
        push_file_artifact(login, f"{prefix}/r{i}", tag, f"{prefix} route {i} {tag}".encode())
        for i in range(ROUTES)
        for tag in TAGS
    ]
    routes = tmp_path / "routes.yaml"
    routes.write_text(_routes_text(prefix))
    started = datetime.now(UTC)
    standin.set_speed(1.0)  # runs last long enough for the kill to land between batches
    output = tmp_path / "killed-sync.log"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(ROOT)}
    try:
        with open(output, "wb") as out:
            proc = subprocess.Popen(
                [sys.executable, "-m", "tests.faults.sync_runner", str(routes), "4"],
                env=env,
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        try:
            deadline = time.monotonic() + 240
            while sum(r.provisioning_state == "Succeeded" for r in _export_runs(prefix)) < 7:
                assert proc.poll() is None, f"the sync ended before the kill:\n{output.read_text()[-3000:]}"
                assert time.monotonic() < deadline, f"the sync made no progress:\n{output.read_text()[-3000:]}"
                time.sleep(0.2)
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=10)
        finally:
            if proc.poll() is None:
                proc.kill()
        before = {r.name: r.provisioning_state for r in _export_runs(prefix)}
        killed_transfers = {_blob(r).split("/")[0]: r.name[1:13] for r in _export_runs(prefix)}
        assert len(killed_transfers) < ROUTES, "every route had started: the kill came too late to test resuming"

        outcomes = sync_routes(routes_file=str(routes), max_concurrent=4)
    finally:
        standin.set_speed(0.3)

    # every route verified: each tag in the target with the source's digest
    assert [(o.route, o.status) for o in outcomes] == [(f"{prefix}-{i}", RouteStatus.SUCCEEDED) for i in range(ROUTES)]
    target = standin.topology["registries"]["targetregistry"]["login_server"]
    for image in images:
        assert manifest_digest(target, image.repo, image.tag, standin.ca)[0] == image.digest, image.by_tag
    # an unfinished transfer was continued under its id, not started anew
    by_route = {o.route: o for o in outcomes}
    for route, transfer_id in killed_transfers.items():
        if by_route[route].verified:  # it still had something to send after the kill
            assert by_route[route].transfer_id == transfer_id, (route, by_route[route])
    # nothing exported twice: every artifact is in exactly one export run, and no export run was redone
    runs = _export_runs(prefix)
    exported = Counter(a for r in runs for a in r.request.artifacts)
    assert sorted(exported) == sorted(i.by_tag for i in images) and set(exported.values()) == {1}, exported
    assert all(r.provisioning_state == "Succeeded" for r in runs)
    assert all(r.name.endswith("a1") for r in runs), [r.name for r in runs]  # no second attempt of any batch
    for name, state in before.items():
        assert state != "Succeeded" or name in {r.name for r in runs}
    # no orphaned blob: every transfer's blobs were cleaned up after its import
    url = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    sas = azure.container_sas(standin, "sourcestorage", "transfer", "rl")[1:]
    left = [b.name for b in ContainerClient.from_container_url(url, credential=sas).list_blobs(name_starts_with=prefix)]
    assert left == [], left
    # no flow run left Running: the killed process's runs end Crashed by the automation
    deadline = time.monotonic() + CRASH_AFTER_SECONDS + 120
    while any(r.state.is_running() for r in _flow_runs_since(started)) and time.monotonic() < deadline:
        time.sleep(2)
    flow_runs = _flow_runs_since(started)
    assert not [r.name for r in flow_runs if r.state.is_running()], "flow runs left Running"
    crashed = [r for r in flow_runs if r.state.is_crashed()]
    assert crashed and all("no heartbeat" in (r.state.message or "") for r in crashed)
    assert {r.state.type.value for r in flow_runs} <= {"COMPLETED", "CRASHED"}
    record(
        "durability",
        case=f"sync-routes of {ROUTES} routes ({ROUTES * len(TAGS)} batches) SIGKILLed after "
        f"{sum(s == 'Succeeded' for s in before.values())} exports",
        outcome="re-run: every route verified, no artifact exported twice, no blob left, no flow run Running",
        observed=f"{len(killed_transfers)} transfers continued under their ids; {len(runs)} export runs in all; "
        f"{len(crashed)} killed flow runs set Crashed",
    )
