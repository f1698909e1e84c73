"""Blobs of abandoned transfers are reported and cleaned by the route's policy, never silently left.

A transfer whose import was refused leaves its exported blob; the user starts over under a new transfer id, so
nothing will continue the first one. The next sync names it and its blob; once
``cleanup.delete_abandoned_blobs_after_days`` have passed, the route's cleanup deletes the blob (its run
records stay, for a person to read).
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from azure.storage.blob import ContainerClient

from acr_transfer.errors import AcrTransferError
from flows.cleanup import cleanup_route
from flows.routes import RouteStatus, load_configured_routes, sync_routes
from flows.transfer import registry_transfer
from tests.support import azure
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import request

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def _routes_text(name: str, artifact: str, days: int) -> str:
    return (
        "version: 1\nroutes:\n"
        f"  - name: {name}\n"
        "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}\n"
        f"    cleanup: {{delete_export_blob: true, delete_abandoned_blobs_after_days: {days}}}\n"
        f"    artifacts: [{artifact}]\n"
    )


def _blobs(standin: StandIn, prefix: str) -> list[str]:
    url = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    sas = azure.container_sas(standin, "sourcestorage", "transfer", "rl")[1:]
    return [b.name for b in ContainerClient.from_container_url(url, credential=sas).list_blobs(name_starts_with=prefix)]


def _artifact(key: str) -> list[object]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        return list(client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))))


def test_an_abandoned_transfers_blob_is_reported_then_deleted_by_policy(standin: StandIn, tmp_path: Path) -> None:
    name = f"abandon{uuid.uuid4().hex[:6]}"
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(login, f"abandon/{name}", "v1", b"left behind once")
    routes = tmp_path / "routes.yaml"
    routes.write_text(_routes_text(name, image.by_tag, days=30))
    rt = load_configured_routes(routes).get(name)

    first = request(rt, [image.by_tag])
    standin.add_fault(service="arm", method="PUT", path=rf"/pipelineRuns/i{first.transfer_id}b001a1$", status=400)
    try:
        with pytest.raises(AcrTransferError):
            registry_transfer(first)
    finally:
        standin.clear_faults()
    left = f"{name}/{first.transfer_id}/batch001.tar"
    assert _blobs(standin, name) == [left]  # exported, never imported

    [outcome] = sync_routes(routes_file=str(routes))  # a new transfer: nothing continues the first one
    assert outcome.status is RouteStatus.SUCCEEDED and outcome.verified == 1
    assert outcome.transfer_id != first.transfer_id
    assert f"abandoned transfer(s) {first.transfer_id}: blobs reported in artifact abandoned-blobs-{name}" in (
        outcome.message
    )
    [artifact] = _artifact(f"abandoned-blobs-{name}")
    assert left in str(artifact.data) and "deleted 30 days after its last run" in str(artifact.data)  # type: ignore[attr-defined]
    assert _blobs(standin, name) == [left]  # reported, not yet due: kept

    routes.write_text(_routes_text(name, image.by_tag, days=0))
    preview = cleanup_route(name, str(routes), dry_run=True)
    assert [(a["transfer_id"], a["deleted"]) for a in preview.abandoned] == [(first.transfer_id, False)]
    assert preview.abandoned[0]["why"] == "batch(es) 1 exported, never imported"
    assert _blobs(standin, name) == [left]  # a dry run deletes nothing

    done = cleanup_route(name, str(routes))
    assert [(a["transfer_id"], a["deleted"]) for a in done.abandoned] == [(first.transfer_id, True)]
    assert _blobs(standin, name) == []
    # its run record stays for a person to read
    assert azure.arm().pipeline_runs.get(azure.RG, "sourceregistry", f"x{first.transfer_id}b001a1")
    assert cleanup_route(name, str(routes)).abandoned == []  # nothing left to report
