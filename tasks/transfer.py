"""One Prefect task per runbook step; each calls the core and reports progress, nothing more."""

from __future__ import annotations

import re
import time
from typing import Any, TypeVar

from prefect import get_run_logger, task
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.runtime import flow_run

from acr_transfer import steps
from acr_transfer.azure.registry import RegistryAddress, RunState
from acr_transfer.azure.storage import BlobFacts
from acr_transfer.context import TransferContext, resolve_configured
from acr_transfer.errors import run_failure
from acr_transfer.events import EventName
from acr_transfer.models import ImportRequest, TransferRequest
from acr_transfer.naming import BatchPlan, derive_transfer_id, normalise_artifacts
from acr_transfer.progress import Notice, report
from acr_transfer.refs import ArtifactRef
from acr_transfer.results import ArtifactRow, TransferResult
from acr_transfer.retry import Retrying
from acr_transfer.settings import get_settings
from acr_transfer.watcher import OutageError
from tasks import clients, concurrency
from tasks.bookkeeping import backlog
from tasks.report import emit
from tasks.retry import outlasting, resume_command, step_options

T = TypeVar("T")


@task(name="plan-transfer", cache_policy=NO_CACHE)
def plan_transfer(request: TransferRequest) -> TransferContext:
    """Normalise and batch the artifacts and derive every name from the transfer id.

    The id is the request's, or derived from the flow run id, so retrying the same flow run continues the
    same transfer.
    """
    transfer_id = request.transfer_id or derive_transfer_id(str(flow_run.get_id() or time.time_ns()))
    ctx = resolve_configured(request, transfer_id)
    get_run_logger().info(
        "transfer %s: %s artifacts in %s batch(es) on route %s",
        transfer_id,
        len(ctx.plan.artifacts),
        len(ctx.plan.batches),
        ctx.route.name,
    )
    return ctx


def _watch(ctx: TransferContext, registry: RegistryAddress, run: RunState, batch: BatchPlan, step: str) -> RunState:
    """Wait for a run with a progress artifact and progress notices; raise when it failed."""
    log = get_run_logger()
    key = re.sub(r"[^a-z0-9-]", "-", f"{step}-{run.name.lower()}")
    # the progress artifact is written in the background: the run's reads start now, not after Prefect answered
    artifact: dict[str, Any] = {}
    later = backlog().later

    def create() -> None:
        artifact["id"] = create_progress_artifact(
            progress=float(run.percentage or 0), key=key, description=f"{step} run {run.name} (batch {batch.index})"
        )

    def update(**fields: Any) -> None:
        if artifact.get("id") is not None:  # its creation failed: nothing to update
            update_progress_artifact(artifact_id=artifact["id"], **fields)

    later(key, create, "create the progress artifact")
    last = [-1]

    def on_progress(state: RunState) -> None:
        pct = state.percentage if state.percentage is not None else 0
        report(Notice(ctx.transfer_id, batch.index, step, state.status or "Running", state.name, pct))
        # the Prefect server hears of steps of 25 % in the log (its lines go in batches) and of half-way and the
        # end on the artifact: each artifact update is an API request of its own
        if pct // 25 != last[0] // 25 or (state.terminal and pct != last[0]):
            halfway = pct // 50 != max(last[0], 0) // 50
            last[0] = pct
            # the line first: it is stamped when it is written, the artifact update after it is a request
            log.info("%s run %s: %s%% (%s)", step, state.name, pct, state.status or state.provisioning_state)
            if state.terminal or halfway:
                progress = float(min(pct, 100))
                later(key, lambda: update(progress=progress), "update progress", replaceable=True)

    last_told = [0.0]

    def on_outage(outage: Retrying | None) -> None:
        # what is down and since when, in the log (every 30 s at most) and on the progress artifact
        if outage is None:
            log.info("%s run %s: ARM answers again", step, run.name)
            description = f"{step} run {run.name} (batch {batch.index})"
        elif outage.attempts == 1 or time.monotonic() - last_told[0] >= 30:
            last_told[0] = time.monotonic()
            log.warning("%s run %s: %s", step, run.name, outage.line())
            description = f"{step} run {run.name} (batch {batch.index}) — ⚠ {outage.line()}"
        else:
            return
        pct = float(min(last[0], 100)) if last[0] >= 0 else 0.0
        later(key, lambda: update(progress=pct, description=description), "update progress")

    try:
        final = clients.shared().watcher.wait(registry, run.name, ctx.timeout_seconds, on_progress, on_outage)
    except OutageError as e:
        raise OutageError(f"transfer {ctx.transfer_id}: {e.message}; resume with `{resume_command(ctx)}`") from None
    if final.failed:
        report(Notice(ctx.transfer_id, batch.index, step, "Failed", final.error_message or ""))
        raise run_failure(final.error_message or f"provisioningState {final.provisioning_state}", final.name)
    report(Notice(ctx.transfer_id, batch.index, step, "Succeeded", final.name, 100))
    return final


@task(name="export-batch", **step_options())
@outlasting("export")
def export_batch(ctx: TransferContext, batch: BatchPlan) -> RunState:
    """Create (or find) the batch's export run and wait until it has written its blob."""
    concurrency.ensure_route_held(ctx.route.name, ctx.timeout_seconds)  # a lost lock is taken back first
    run = steps.start_export(clients.shared().arm, clients.shared().storage, clients.shared().vault, ctx, batch)
    get_run_logger().info(
        "export run %s for batch %s (%s artifacts) → blob %s", run.name, batch.index, len(batch.artifacts), run.blob
    )
    final = _watch(ctx, ctx.source, run, batch, "export")
    emit(
        ctx,
        EventName.EXPORTED,
        [final.blob_uri or final.blob or ""],
        batch=batch.index,
        run=final.name,
        catalog_digest=final.catalog_digest,
        artifacts=list(batch.artifacts),
    )
    return final


@task(name="bridge-blob", **step_options())
@outlasting("bridge")
def bridge_blob(ctx: TransferContext, batch: BatchPlan, export_run: RunState) -> BlobFacts | None:
    """Server-side copy of the blob to the import container when the two sides use different storage."""
    if not ctx.bridged:
        return None
    report(Notice(ctx.transfer_id, batch.index, "bridge", "Running", export_run.blob or ""))
    facts = steps.bridge(clients.shared().storage, clients.shared().vault, ctx, export_run)
    if facts is not None:
        get_run_logger().info(
            "bridged blob %s (%s bytes, MD5 kept) into %s", facts.name, facts.size, ctx.imp.container_uri
        )
    report(Notice(ctx.transfer_id, batch.index, "bridge", "Succeeded", export_run.blob or "", 100))
    return facts


@task(name="import-batch", **step_options())
@outlasting("import")
def import_batch(ctx: TransferContext, batch: BatchPlan, export_run: RunState) -> RunState:
    """Create (or find) the batch's import run — or adopt the source trigger's — and wait for it."""
    blob, digest = export_run.blob or "", export_run.catalog_digest
    concurrency.ensure_route_held(ctx.route.name, ctx.timeout_seconds)
    run = steps.start_import(clients.shared().arm, ctx, batch, blob, digest) or _adopt_trigger_run(
        ctx, batch, blob, digest
    )
    get_run_logger().info("import run %s for batch %s ← blob %s", run.name, batch.index, blob)
    return _watch(ctx, ctx.target, run, batch, "import")


def _adopt_trigger_run(ctx: TransferContext, batch: BatchPlan, blob: str, catalog_digest: str | None) -> RunState:
    """Wait for the run the source trigger creates for this blob; after a failed one, import by hand."""
    log = get_run_logger()
    settings = get_settings()
    wait = steps.TriggerWait(settings.trigger_wait_minutes * 60, settings.poll_min_seconds, settings.poll_max_seconds)
    log.info("import pipeline has its source trigger on: waiting for its run for blob %s", blob)
    run, adopted = steps.await_trigger_run(clients.shared().arm, ctx, batch, blob, catalog_digest, wait)
    if adopted:
        log.info("adopted source-trigger run %s", run.name)
    else:
        log.warning("the source trigger's run for blob %s failed; importing by hand as %s", blob, run.name)
    return run


def _compare_digests(ctx: TransferContext, results: list[steps.ArtifactResult]) -> list[steps.ArtifactResult]:
    log = get_run_logger()
    azure = clients.shared()
    refs = [ArtifactRef.parse(r.artifact) for r in results]
    # a batch's tags of one repository come from its tag listing (100 a request), not a HEAD each per side; the
    # source's listings are read once for all the transfer's batches (a digest that differs is read again)
    everything = (ArtifactRef.parse(a) for a in ctx.plan.artifacts)  # parsed only by the batch that makes it
    in_source = azure.snapshot_digests(f"{ctx.transfer_id}/source", ctx.source, everything)
    in_target = azure.digests(ctx.target, refs)
    in_source.prefetch(in_target)  # both sides' listings at once
    fresh = azure.digests(ctx.source, refs)
    results, notes = steps.compare_digests(results, in_source, in_target, fresh_source=fresh)
    for note in notes:
        log.warning("%s", note)
    return results


@task(name="verify-batch", **step_options())
@outlasting("verify")
def verify_batch(ctx: TransferContext, batch: BatchPlan, export_run: RunState, import_run: RunState) -> list[Any]:
    """Check that the import brought in every requested artifact of the batch."""
    results = steps.verify(batch, export_run, import_run)
    if get_settings().verify_digests:
        results = _compare_digests(ctx, results)
    report(Notice(ctx.transfer_id, batch.index, "verify", "Succeeded", f"{len(results)} artifacts", 100))
    return results


@task(name="plan-import", cache_policy=NO_CACHE)
def plan_import(request: ImportRequest) -> TransferContext:
    """Plan the import of one blob; the id is derived from pipeline and blob, so a repeated event or a retry
    finds the import it already started."""
    target = request.route.target
    seed = f"{target.import_pipeline if target else ''}/{request.blob}"
    transfer_id = request.transfer_id or derive_transfer_id(seed)
    as_transfer = TransferRequest(route=request.route, artifacts=request.artifacts, transfer_id=transfer_id)
    return resolve_configured(as_transfer, transfer_id)


@task(name="import-single-blob", **step_options())
@outlasting("import")
def import_single_blob(ctx: TransferContext, request: ImportRequest) -> TransferResult:
    """Import (or adopt the trigger's import of) one blob, wait, and verify what came in."""
    expected = normalise_artifacts(request.artifacts) if request.artifacts else []
    batch = BatchPlan(1, expected, request.blob)
    blob, digest = request.blob, request.catalog_digest
    run = steps.start_import(clients.shared().arm, ctx, batch, blob, digest) or _adopt_trigger_run(
        ctx, batch, blob, digest
    )
    get_run_logger().info("import run %s ← blob %s", run.name, blob)
    final = _watch(ctx, ctx.target, run, batch, "import")
    if expected:
        results = steps.verify(batch, None, final)
    else:
        imported = steps.ArtifactStatus.IMPORTED
        results = [steps.ArtifactResult(a, 1, "", final.name, imported, "") for a in final.imported_artifacts]
    rows = [ArtifactRow(**vars(r)) for r in results]
    result = TransferResult(
        route=ctx.route.name, transfer_id=ctx.transfer_id, succeeded=True, rows=rows, blobs=[request.blob]
    )
    emit(ctx, EventName.IMPORTED, [request.blob], run=final.name, imported=list(final.imported_artifacts))
    return result
