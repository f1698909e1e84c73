"""Publishing what a transfer did: table and markdown artifacts, and Prefect events."""

from __future__ import annotations

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.events import emit_event

from acr_transfer.context import TransferContext
from acr_transfer.errors import redact
from acr_transfer.events import EventName, Label, transfer_resource_id
from acr_transfer.results import TransferResult, markdown
from tasks import clients


def _resources(ctx: TransferContext, blobs: list[str]) -> list[dict[str, str]]:
    related = [
        {
            "prefect.resource.id": f"azure.acr.{reg.id.lower()}",
            "prefect.resource.role": role,
            "prefect.resource.name": reg.name,
        }
        for reg, role in ctx.registries()
    ]
    for blob in blobs:
        related.append({"prefect.resource.id": f"azure.blob.{blob}", "prefect.resource.role": "blob"})
    return related


def emit(ctx: TransferContext, event: EventName, blobs: list[str], **payload: object) -> None:
    """A Prefect event about this transfer (resource ``acr.transfer.transfer.<id>``), with the registries
    and blobs as related resources; ``acr_transfer/events.py`` lists the names."""
    emit_event(
        event=event,
        resource={
            "prefect.resource.id": transfer_resource_id(ctx.transfer_id),
            "prefect.resource.name": f"{ctx.route.name}/{ctx.transfer_id}",
            Label.ROUTE: ctx.route.name,
        },
        related=_resources(ctx, blobs),
        payload={"route": ctx.route.name, "transfer_id": ctx.transfer_id, **payload},
    )


@task(name="publish-result")
def publish_result(ctx: TransferContext, result: TransferResult) -> TransferResult:
    """Table + markdown artifacts and the final event (``acr.transfer.imported`` or ``acr.transfer.failed``)."""
    key = f"transfer-{ctx.transfer_id}"
    create_table_artifact(
        key=key,
        table=[r.model_dump() for r in result.rows],
        description=f"Artifacts of transfer {ctx.transfer_id} on route {ctx.route.name}",
    )
    create_markdown_artifact(key=f"{key}-summary", markdown=redact(markdown(result)))
    if not result.dry_run:
        event = EventName.IMPORTED if result.succeeded else EventName.FAILED
        emit(
            ctx,
            event,
            result.blobs,
            verified=result.verified,
            requested=len(result.rows),
            failures=[redact(f) for f in result.failures],
        )
    get_run_logger().info(
        "transfer %s: %s of %s artifacts verified", ctx.transfer_id, result.verified, len(result.rows)
    )
    return result


@task(name="clean-up-blob")
def clean_up_blob(ctx: TransferContext, blob: str) -> bool:
    """Delete the export-side blob after a verified import (route policy); a failure only warns."""
    log = get_run_logger()
    export = ctx.export
    try:
        deleted = clients.shared().storage.delete_blob(export.container_uri, blob, None)
    except Exception as e:
        # the container URI last: the UI's auto-linking would take a ':' after it into the link
        log.warning("could not delete export blob %s: %s — it stays in %s", blob, redact(str(e)), export.container_uri)
        return False
    log.info("deleted export blob %s from %s", blob, export.container_uri)
    return deleted
