"""Routes on the stand-in's default topology, and reading back what Prefect stored."""

from __future__ import annotations

import uuid
from typing import Any

from acr_transfer.models import TransferRequest, TransferRoute
from tests.support import azure
from tests.support.standin import StandIn


def route(standin: StandIn, name: str, import_pipeline: str = "importpipeline", **overrides: Any) -> TransferRoute:
    """A route sourceregistry/exportpipeline → targetregistry/<import_pipeline>, bridged with acrbridgesas."""
    vault = standin.topology["vaults"]["targetvault"]["url"]
    doc: dict[str, Any] = {
        "name": name,
        "source": {
            "registry": {"resource_group": azure.RG, "name": "sourceregistry"},
            "export_pipeline": "exportpipeline",
        },
        "target": {
            "registry": {"resource_group": azure.RG, "name": "targetregistry"},
            "import_pipeline": import_pipeline,
        },
        "bridge": {"secret_uri": f"{vault}/secrets/acrbridgesas"},
        "timeout_minutes": 2,
    }
    doc.update(overrides)
    return TransferRoute.model_validate(doc)


def request(rt: TransferRoute, artifacts: list[str], **kw: Any) -> TransferRequest:
    return TransferRequest(
        route=rt, artifacts=artifacts, transfer_id=kw.pop("transfer_id", uuid.uuid4().hex[:12]), **kw
    )


def arm_puts(standin: StandIn, kind: str = "pipelineRuns") -> list[dict[str, Any]]:
    return [r for r in standin.requests("arm") if r["method"] == "PUT" and f"/{kind}/" in r["path"]]


def prefect_records() -> dict[str, list[Any]]:
    """Everything the Prefect server stored that a secret could leak into: logs, parameters, artifacts, events."""
    from prefect.client.orchestration import get_client
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all()

    def every(read: Any) -> list[Any]:  # page by page: a long session holds more than one page of each
        found, offset = [], 0
        while True:
            page = read(limit=200, offset=offset)
            found += page
            if len(page) < 200:
                return found
            offset += 200

    with get_client(sync_client=True) as client:
        all_logs = every(client.read_logs)
        runs = every(client.read_flow_runs)
        artifacts = every(client.read_artifacts)
        page = client.read_events(limit=50)
        events = [e.model_dump(mode="json") for e in page.events]
        while page.next_page:
            page = client.read_events_page(str(page.next_page))
            events += [e.model_dump(mode="json") for e in page.events]
    return {
        "logs": [log.message for log in all_logs],
        "parameters": [r.parameters for r in runs],
        "states": [r.state.message if r.state else "" for r in runs],
        "artifacts": [a.data for a in artifacts] + [a.description for a in artifacts],
        "events": events,
    }


def routes_file_text(name: str, artifact: str, *, import_pipeline: str = "directimport", keep_blob: bool = True) -> str:
    """A routes.yaml of one route sourceregistry/exportpipeline → targetregistry/<import_pipeline> (no bridge)."""
    cleanup = "    cleanup: {delete_export_blob: false}\n" if keep_blob else ""
    return (
        "version: 1\nroutes:\n"
        f"  - name: {name}\n"
        "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: "
        f"{import_pipeline}}}\n"
        f"{cleanup}"
        f"    artifacts: [{artifact}]\n"
    )
