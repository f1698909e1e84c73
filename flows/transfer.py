"""The transfer flows: ``registry_transfer`` end to end, and each half alone for disconnected clouds.

They read like the runbook in docs/architecture.md: plan → preflight → export → bridge → import → verify →
report → clean up. Branching and Azure calls live in tasks and the core.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from prefect import flow, get_run_logger
from prefect.context import TagsContext
from prefect.runtime import flow_run
from prefect.utilities.annotations import quote

from acr_transfer.context import TransferContext
from acr_transfer.errors import AcrTransferError, ConfigError, PreflightError, redact
from acr_transfer.models import ImportRequest, TransferRequest
from acr_transfer.preflight import Check
from acr_transfer.results import ExportedBlob, TransferResult, rows_for
from acr_transfer.sync import SyncPlan
from tasks.chains import outcome as _outcome
from tasks.chains import run_chains
from tasks.concurrency import route_lock
from tasks.preflight import check_artifacts, check_export_side, check_import_side, check_pipeline
from tasks.report import (
    clean_up_blobs,
    label_run,
    publish_exported_blobs,
    publish_plan,
    publish_preflight_failure,
    publish_result,
)
from tasks.sync import plan_sync, record_exported
from tasks.transfer import (
    bridge_blob,
    export_batch,
    import_batch,
    import_single_blob,
    plan_import,
    plan_transfer,
    verify_batch,
)


def run_preflight(
    ctx: TransferContext, raise_on_failure: bool = True, request: TransferRequest | None = None
) -> tuple[TransferContext, list[Check]]:
    """Every check of the route's sides, concurrently; raises PreflightError listing all failures before
    anything is created.

    For a ``select:`` route (and a ``request`` naming no artifacts of its own) the sync plan is made once the
    pipelines are known: it lists the registries and reads the export container. What it plans is then
    checked like any artifact list.
    """
    route = ctx.route
    exp = check_pipeline.submit(ctx.source, "export", route.source.export_pipeline) if route.source else None
    imp = check_pipeline.submit(ctx.target, "import", route.target.import_pipeline) if route.target else None
    exp_check, exp_facts = exp.result() if exp else (None, None)
    imp_check, imp_facts = imp.result() if imp else (None, None)
    checks = [c for c in (exp_check, imp_check) if c is not None]
    if all(c.ok for c in checks):
        ctx = ctx.with_pipelines(exp_facts, imp_facts)
        if request is not None and route.select is not None and route.source and not request.artifacts:
            ctx = plan_sync(ctx, request)
        sides = []
        if route.source and ctx.plan.batches:
            sides.append(check_export_side.submit(ctx))
            sides.append(check_artifacts.submit(ctx))
        if route.target:
            sides.append(check_import_side.submit(ctx))
        for side in sides:
            checks += side.result()
    failed = [c for c in checks if not c.ok]
    if failed and raise_on_failure:
        publish_preflight_failure(ctx, checks)
        raise PreflightError(
            f"preflight of route '{route.name}' failed ({len(failed)} of {len(checks)} checks); nothing was created:\n"
            + "\n".join(c.line for c in failed),
            failures=[c.line for c in failed],
        )
    return ctx, checks


@flow(name="registry-transfer")
def registry_transfer(
    request: TransferRequest, take_route_lock: bool = True, lock_wait_seconds: float | None = None
) -> TransferResult:
    """Transfer artifacts from the route's source registry to its target registry and prove they arrived.

    Preflight runs first and creates nothing when it fails. Every batch (≤ 50 artifacts) is exported, its
    blob bridged when the two sides use different storage, imported and verified; a retried flow run
    continues the same transfer. Returns the result; raises when any artifact was not verified.

    Args:
        request: the route, its artifacts (or others) and the transfer id.
        take_route_lock: hold the route's lock, so two transfers of one route never run at once (off only
            when you know better: it is said in the log).
        lock_wait_seconds: how long to wait for a busy route (default: the route's timeout_minutes).
    """
    return run_transfer(request, take_route_lock, lock_wait_seconds)


@contextmanager
def _task_runs_untagged() -> Iterator[None]:
    """Task runs created here carry no ``route:`` tag (the flow run does, for the UI's filters): Prefect asks
    its server for a concurrency slot of every tag of every task run as it starts, and 50 batches' tasks starting
    together waited seconds for those answers, one after another."""
    current = TagsContext.get().current_tags
    with TagsContext(current_tags={t for t in current if not t.startswith("route:")}):
        yield


@contextmanager
def _holding_route(ctx: TransferContext, take: bool, wait_seconds: float | None) -> Iterator[None]:
    """The route's lock around a transfer's work, with this flow run and transfer recorded as its holder."""
    if not take:
        get_run_logger().warning("route %s: transferring without its route lock, as asked", ctx.route.name)
        yield
        return
    wait = ctx.timeout_seconds if wait_seconds is None else wait_seconds
    with route_lock(ctx.route.name, wait, transfer_id=ctx.transfer_id, flow_run_id=flow_run.get_id()):
        yield


def run_transfer(
    request: TransferRequest, take_route_lock: bool = True, lock_wait_seconds: float | None = None
) -> TransferResult:
    """The body of :func:`registry_transfer`, run inside whichever flow the user started (its run holds the task
    runs and artifacts, named ``<route>-<transfer id>``)."""
    if request.route.source is None or request.route.target is None:
        raise ConfigError(f"route '{request.route.name}' needs both a source and a target for registry_transfer")
    ctx = plan_transfer(request)
    label_run(ctx)
    with _holding_route(ctx, take_route_lock, lock_wait_seconds), _task_runs_untagged():
        return _transfer(ctx, request)


def _transfer(ctx: TransferContext, request: TransferRequest) -> TransferResult:
    log = get_run_logger()
    ctx, _ = run_preflight(ctx, request=request)
    if request.dry_run or (ctx.sync is not None and not ctx.plan.batches):
        result = TransferResult(
            route=ctx.route.name,
            transfer_id=ctx.transfer_id,
            succeeded=True,
            dry_run=request.dry_run,
            rows=rows_for(ctx, {}, {}),
            plan=ctx.sync,
        )
        if ctx.sync is not None and not request.dry_run:
            log.info("transfer %s: nothing to send (%s); no run created", ctx.transfer_id, ctx.sync.summary())
        return publish_result(ctx, result)
    batches = ctx.plan.batches
    # quote: Prefect passes the context as it is instead of walking its every artifact for futures, once per task
    # of every batch (a 2,500-artifact route's context, 150 times)
    quoted = quote(ctx)
    # each batch: export → bridge (only when the two sides use different storage) → import → verify, every step
    # submitted with the value of the one before it once that finished (tasks/chains.py says why)
    chains = run_chains(
        batches,
        [
            lambda b, done: export_batch.submit(quoted, b),  # type: ignore[call-overload]
            lambda b, done: bridge_blob.submit(quoted, b, done[0]) if ctx.bridged else None,  # type: ignore[call-overload]
            lambda b, done: import_batch.submit(quoted, b, done[0]),  # type: ignore[call-overload]
            lambda b, done: verify_batch.submit(quoted, b, done[0], done[2]),  # type: ignore[call-overload]
        ],
    )

    verified, runs, failures, blobs = {}, {}, [], []
    for b, chain in zip(batches, chains, strict=True):
        export, _, imported, outcome = chain  # a step that did not apply or never ran reads None
        runs[b.index] = (getattr(export, "name", ""), getattr(imported, "name", ""))
        if getattr(export, "blob", None):
            blobs.append(export.blob)
        if isinstance(outcome, list):
            verified[b.index] = outcome
        else:  # the first step that failed says why; the later ones never ran
            error = next((x for x in chain if isinstance(x, BaseException)), outcome)
            failures.append(f"batch {b.index}: {_why(error)}")
    result = TransferResult(
        route=ctx.route.name,
        transfer_id=ctx.transfer_id,
        succeeded=not failures,
        rows=rows_for(ctx, verified, runs),
        failures=failures,
        blobs=blobs,
        plan=ctx.sync,
    )
    publish_result(ctx, result)
    if failures:
        raise AcrTransferError(
            f"transfer {ctx.transfer_id} on route '{ctx.route.name}': {len(failures)} batch(es) failed:\n"
            + "\n".join(failures)
        )
    if ctx.route.cleanup.delete_export_blob and blobs:
        clean_up_blobs(quoted, blobs)  # type: ignore[call-overload]
    log.info("transfer %s complete: %s artifacts verified", ctx.transfer_id, result.verified)
    return result


@flow(name="export-artifacts")
def export_artifacts(
    request: TransferRequest, take_route_lock: bool = True, lock_wait_seconds: float | None = None
) -> list[ExportedBlob]:
    """The source half alone: preflight the export side, export every batch, report the blobs.

    For disconnected clouds: carry the blobs to the other side, then run ``import_blob`` there. The route's
    lock is held as in :func:`registry_transfer`.
    """
    return run_export(request, take_route_lock, lock_wait_seconds)


def run_export(
    request: TransferRequest, take_route_lock: bool = True, lock_wait_seconds: float | None = None
) -> list[ExportedBlob]:
    """The body of :func:`export_artifacts`, run inside whichever flow the user started."""
    if request.route.source is None:
        raise ConfigError(f"route '{request.route.name}' has no source to export from")
    ctx = plan_transfer(request)
    label_run(ctx)
    with _holding_route(ctx, take_route_lock, lock_wait_seconds), _task_runs_untagged():
        return _export(ctx, request)


def _export(ctx: TransferContext, request: TransferRequest) -> list[ExportedBlob]:
    ctx, _ = run_preflight(ctx, request=request)
    if ctx.sync is not None and (request.dry_run or not ctx.plan.batches):
        get_run_logger().info(
            "export %s: %s%s", ctx.transfer_id, ctx.sync.summary(), "" if request.dry_run else "; no run created"
        )
        publish_plan(ctx, ctx.sync, dry_run=request.dry_run)
        return []
    quoted = quote(ctx)  # as in _transfer: not walked for futures once per batch
    futures = {b.index: export_batch.submit(quoted, b) for b in ctx.plan.batches}  # type: ignore[call-overload]
    exported, failures = [], []
    for b in ctx.plan.batches:
        run = _outcome(futures[b.index])
        if isinstance(run, BaseException) or run is None:
            failures.append(f"batch {b.index}: {_why(run)}")
            continue
        exported.append(
            ExportedBlob(
                batch=b.index,
                blob=run.blob or "",
                blob_uri=run.blob_uri or "",
                run=run.name,
                catalog_digest=run.catalog_digest or "",
                artifacts=list(b.artifacts),
            )
        )
    if exported:
        publish_exported_blobs(ctx, exported)
        if ctx.sync is not None:  # what the other side will hold once these blobs are imported
            record_exported(ctx, [ref for blob in exported for ref in blob.artifacts])
    if failures:
        raise AcrTransferError(f"export {ctx.transfer_id} failed:\n" + "\n".join(failures))
    get_run_logger().info("exported %s blob(s): %s", len(exported), ", ".join(e.blob for e in exported))
    return exported


@flow(name="import-blob")
def import_blob(request: ImportRequest) -> TransferResult:
    """The target half alone: import one blob already in the import container, wait, verify.

    Needs only the route's target. With the import pipeline's source trigger on, the trigger's run for
    the blob is adopted instead of importing it twice.
    """
    return run_import(request)


def run_import(request: ImportRequest) -> TransferResult:
    """The body of :func:`import_blob`, run inside whichever flow the user started."""
    if request.route.target is None:
        raise ConfigError(f"route '{request.route.name}' has no target to import into")
    ctx = plan_import(request)
    label_run(ctx)
    ctx, _ = run_preflight(ctx)
    return import_single_blob(ctx, request)


@dataclass(frozen=True)
class PreflightReport:
    """What ``transfer-preflight`` found: every check, and a ``select:`` route's plan (what it would send)."""

    checks: list[Check]
    plan: SyncPlan | None = None


@flow(name="transfer-preflight")
def transfer_preflight(request: TransferRequest) -> PreflightReport:
    """Only the checks of ``registry_transfer``, every one reported (passed or not), and the plan of a
    ``select:`` route; creates nothing (the plan is not frozen)."""
    ctx = plan_transfer(request)
    ctx, checks = run_preflight(ctx, raise_on_failure=False, request=request.model_copy(update={"dry_run": True}))
    if ctx.sync is not None:
        publish_plan(ctx, ctx.sync, dry_run=True)
    return PreflightReport(checks, ctx.sync)


def _why(error: object) -> str:
    if isinstance(error, AcrTransferError):
        return error.message
    if error is None:
        return "an earlier step did not finish"
    return redact(f"{type(error).__name__}: {error}")
