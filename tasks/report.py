"""Publishing what a transfer did: table and markdown artifacts, and Prefect events."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact, create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.client.orchestration import get_client
from prefect.events import emit_event
from prefect.runtime import flow_run

from acr_transfer.context import TransferContext
from acr_transfer.errors import redact
from acr_transfer.events import EventName, Label, transfer_resource_id
from acr_transfer.preflight import Check
from acr_transfer.results import ExportedBlob, TransferResult, markdown, plan_markdown
from acr_transfer.sync import SyncPlan
from tasks import clients
from tasks.bookkeeping import backlog, bookkeeping

PROGRESS_DRAIN_SECONDS = 15.0


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


def route_key(ctx: TransferContext, what: str) -> str:
    """An artifact key per route (``<what>-<route>``), so the Artifacts page shows each route's history."""
    return f"{what}-{ctx.route.name}"


def label_run(ctx: TransferContext) -> None:
    """Name the flow run ``<route>-<transfer id>`` and tag it ``route:<route>``, so a person finds it in the UI.

    Bookkeeping: a Prefect API error here is a warning, never a failed transfer.
    """
    run_id = flow_run.get_id()
    if run_id is None:
        return
    wanted = f"route:{ctx.route.name}"

    def rename() -> None:
        with get_client(sync_client=True) as client:
            tags = list(flow_run.get_tags() or [])
            client.update_flow_run(
                UUID(run_id),
                name=f"{ctx.route.name}-{ctx.transfer_id}",
                tags=tags if wanted in tags else [*tags, wanted],
            )

    bookkeeping(rename, "name this flow run after its transfer")


@task(name="publish-result", cache_policy=NO_CACHE)
def publish_result(ctx: TransferContext, result: TransferResult) -> TransferResult:
    """Table + markdown artifacts (keyed per route) and the final event (``acr.transfer.imported`` or
    ``acr.transfer.failed``)."""
    # the runs' progress artifacts, written in the background, reach the server first (or give up waiting)
    backlog().drain(PROGRESS_DRAIN_SECONDS, containing=ctx.transfer_id.lower())
    # the result is the transfer's, whatever the Prefect server could store: its API retried, then one warning
    bookkeeping(
        lambda: create_table_artifact(
            key=route_key(ctx, "transfer"),
            table=[r.model_dump(mode="json") for r in result.rows],
            description=f"Artifacts of transfer {ctx.transfer_id} on route {ctx.route.name}",
        ),
        "publish the transfer's artifact table",
        retries=True,
    )
    bookkeeping(
        lambda: create_markdown_artifact(
            key=route_key(ctx, "transfer-summary"),
            markdown=redact(markdown(result)),
            description=f"Transfer {ctx.transfer_id} on route {ctx.route.name}",
        ),
        "publish the transfer's summary",
        retries=True,
    )
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


@task(name="publish-preflight-failure", cache_policy=NO_CACHE)
def publish_preflight_failure(ctx: TransferContext, checks: list[Check]) -> None:
    """The ✓/✗ list of a failed preflight as an artifact, and an ``acr.transfer.failed`` event: nothing was
    created, and the run's page says why."""
    failed = [c for c in checks if not c.ok]
    lines = [
        f"# Preflight of route `{ctx.route.name}` failed: nothing was created",
        "",
        f"{len(failed)} of {len(checks)} checks failed (transfer `{ctx.transfer_id}`).",
        "",
        *[f"- {c.line}" for c in checks],
    ]
    bookkeeping(
        lambda: create_markdown_artifact(
            key=route_key(ctx, "preflight"),
            markdown=redact("\n".join(lines)),
            description=f"Preflight of transfer {ctx.transfer_id} on route {ctx.route.name}",
        ),
        "publish the preflight's checks",
        retries=True,
    )
    emit(ctx, EventName.FAILED, [], stage="preflight", failures=[redact(c.line) for c in failed])


@task(name="publish-exported-blobs", cache_policy=NO_CACHE)
def publish_exported_blobs(ctx: TransferContext, exported: list[ExportedBlob]) -> list[ExportedBlob]:
    """What an air-gap operator carries to the other side: each blob, its catalog digest and its artifacts."""
    bookkeeping(lambda: _export_table(ctx, exported), "publish the exported blobs", retries=True)
    return exported


def _export_table(ctx: TransferContext, exported: list[ExportedBlob]) -> object:
    return create_table_artifact(
        key=route_key(ctx, "export"),
        table=[
            {
                "batch": e.batch,
                "blob": e.blob,
                "catalog_digest": e.catalog_digest,
                "artifacts": ", ".join(e.artifacts),
                "run": e.run,
            }
            for e in exported
        ],
        description=f"Blobs of export {ctx.transfer_id} on route {ctx.route.name}: carry them to the import side "
        "and import each with its catalog digest",
    )


@task(name="publish-plan", cache_policy=NO_CACHE)
def publish_plan(ctx: TransferContext, plan: SyncPlan, dry_run: bool = False) -> SyncPlan:
    """What a select: route's transfer sends and skips, and why, as a markdown artifact (``plan-<route>``)."""
    head = "dry run: nothing created" if dry_run else "nothing to send: no run created" if not plan.send else "plan"
    text = "\n".join(
        [
            f"# Transfer `{ctx.transfer_id}` on route `{ctx.route.name}`: {head}",
            "",
            f"{plan.summary()}.",
            "",
            *plan_markdown(plan),
        ]
    )
    bookkeeping(
        lambda: create_markdown_artifact(
            key=route_key(ctx, "plan"),
            markdown=redact(text),
            description=f"Plan of transfer {ctx.transfer_id} on route {ctx.route.name}: {plan.summary()}",
        ),
        "publish the plan",
        retries=True,
    )
    return plan


@task(name="clean-up-blobs", cache_policy=NO_CACHE)
def clean_up_blobs(ctx: TransferContext, blobs: list[str]) -> list[str]:
    """Delete the export-side blobs after a verified import (route policy), eight at a time; returns the ones
    deleted. A failure only warns: the blob stays, and is named."""
    log = get_run_logger()
    export = ctx.export

    def one(blob: str) -> bool:
        try:
            deleted = clients.shared().storage.delete_blob(export.container_uri, blob, None)
        except Exception as e:
            # the container URI last: the UI's auto-linking would take a ':' after it into the link
            log.warning(
                "could not delete export blob %s: %s — it stays in %s", blob, redact(str(e)), export.container_uri
            )
            return False
        return deleted

    with ThreadPoolExecutor(max_workers=8, thread_name_prefix="clean-up-blobs") as pool:
        done = [blob for blob, deleted in zip(blobs, pool.map(one, blobs), strict=True) if deleted]
    if done:
        log.info("deleted %s export blob(s) from %s: %s", len(done), export.container_uri, ", ".join(done))
    return done
