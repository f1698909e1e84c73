"""Flows that name a route instead of spelling it out: what deployments, schedules and events start.

Each loads routes.yaml at run time (``routes_file``, else ``$ACR_TRANSFER_ROUTES``, else ``routes.yaml`` in
the working directory), so routes.yaml stays the one source of truth and the Prefect UI form is short.
:func:`load_configured_routes` is that lookup and load, with this process's limits; the CLI uses it too.

Two transfers of one route never run at once, whichever way they start (these flows, the CLI, a deployment):
the transfer holds the route's lock (``tasks/concurrency.py``) from its plan to its end. A manual ``transfer``
of a busy route waits for the running one up to the route's ``timeout_minutes``, then names it; ``sync-routes``
skips a route only while a live transfer holds it (naming that transfer), and reclaims a lock whose holder is
gone.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger, tags, task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture, as_completed
from prefect.settings import get_current_settings
from prefect.states import Failed, State
from prefect.task_runners import ThreadPoolTaskRunner
from pydantic import BaseModel

from acr_transfer.errors import AcrTransferError, ConfigError, redact, shown
from acr_transfer.models import ImportRequest, PushedTag, TransferRequest, TransferRoute, parameter_size_problem
from acr_transfer.results import ExportedBlob, TransferResult
from acr_transfer.retry import backoff_delay
from acr_transfer.routes import RouteLimits, RoutesFile, load_routes, routes_path
from acr_transfer.settings import get_settings
from flows.transfer import export_artifacts, registry_transfer, run_export, run_import, run_transfer
from tasks import resume
from tasks.cleanup import RunListings, abandoned_blobs
from tasks.concurrency import LockHolder, PrefectApi, RouteLockTimeout, live_holder
from tasks.pushes import collect_pushes

LOCK_WAIT_SECONDS = 60
PUSH_WINDOW_SECONDS = 30.0  # export-on-push's trigger `within` (prefect.yaml)
PUSH_GRACE_SECONDS = 6.0  # Prefect stores events in batches (its event persister flushes every 5 s)


def route_limits() -> RouteLimits:
    """What this process's settings let a routes file ask for: ``ACR_TRANSFER_MAX_ARTIFACTS`` artifacts a route,
    registries in ``ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS`` (else ``AZURE_SUBSCRIPTION_ID``), a file of at most
    ``ACR_TRANSFER_ROUTES_MAX_FILE_BYTES`` with at most ``ACR_TRANSFER_ROUTES_MAX_ROUTES`` routes, requests no
    larger than Prefect's ``PREFECT_SERVER_API_MAX_PARAMETER_SIZE`` (as this process's Prefect settings say).

    Raises:
        ConfigError: the settings themselves are invalid.
    """
    settings = get_settings()
    return RouteLimits(
        max_artifacts=settings.max_artifacts,
        allowed_subscriptions=settings.permitted_subscriptions(),
        max_file_bytes=settings.routes_max_file_bytes,
        max_routes=settings.routes_max_routes,
        max_parameter_bytes=parameter_limit(),
    )


def parameter_limit() -> int:
    """The most bytes a flow run's parameters may take, as Prefect's API counts them (0: no limit)."""
    return get_current_settings().server.api.max_parameter_size


def load_configured_routes(routes_file: str | Path | None) -> RoutesFile:
    """The routes file ``routes_file`` names (else ``$ACR_TRANSFER_ROUTES``, else ``routes.yaml``), loaded with
    :func:`route_limits`.

    Raises:
        ConfigError: the file does not exist (the message names the working directory), or does not load.
    """
    path = routes_path(routes_file)
    if not path.exists():
        raise ConfigError(f"routes file '{path}' not found (working directory {Path.cwd()}); set routes_file")
    return load_routes(path, route_limits())


def _route(name: str, routes_file: str | None) -> TransferRoute:
    return load_configured_routes(routes_file).get(name)


@flow(name="transfer")
def transfer_route(
    route: str,
    artifacts: list[str] | None = None,
    transfer_id: str | None = None,
    dry_run: bool = False,
    routes_file: str | None = None,
    full: bool = False,
) -> TransferResult:
    """Run ``registry-transfer`` for one route of routes.yaml (waits while the route is already transferring).

    Args:
        route: Route name in routes.yaml.
        artifacts: Transfer these instead of the route's artifacts (repo, repo:tag or repo@sha256:…).
        transfer_id: Continue this transfer (6-20 lowercase letters or digits); empty for a new one.
        dry_run: Only plan and check; create nothing.
        routes_file: Routes file; default $ACR_TRANSFER_ROUTES, else routes.yaml in the working directory.
        full: Send everything the route selects, even what the target already holds.
    """
    rt = _route(route, routes_file)
    request = TransferRequest(route=rt, artifacts=artifacts, transfer_id=transfer_id, dry_run=dry_run, full=full)
    with tags(f"route:{route}"):  # the route's lock is taken once the transfer id is known
        return run_transfer(request)  # in this run, not a subflow: its page holds the task runs and artifacts


@flow(name="export-route")
def export_route(
    route: str,
    artifacts: list[str] | None = None,
    routes_file: str | None = None,
    pushed_since: str | None = None,
    window_seconds: float = PUSH_WINDOW_SECONDS,
    full: bool = False,
) -> list[ExportedBlob]:
    """Export a route's artifacts (the source half), or what a burst of pushes brought: what ``export-on-push``
    runs.

    Args:
        route: Route name in routes.yaml (its source side is used).
        artifacts: Export these instead of the route's artifacts.
        routes_file: Routes file; default $ACR_TRANSFER_ROUTES, else routes.yaml in the working directory.
        pushed_since: When the burst's first push happened (the trigger passes
            ``{{ event.occurred.isoformat() }}``): export the tags pushed to the source registry from then until
            ``window_seconds`` later, as the route selects them; empty: the route's artifacts (or its selection).
        window_seconds: How long a burst lasts: the trigger's ``within``.
        full: Send everything, even what the export ledger says was exported already.
    """
    rt = _route(route, routes_file)
    with tags(f"route:{route}"):
        if pushed_since is None:
            return run_export(TransferRequest(route=rt, artifacts=artifacts, full=full))
        request = _pushed_request(rt, _when(pushed_since), window_seconds, full)
        if request is None:
            return []
        return run_export(request)


def _when(text: str) -> datetime:
    try:
        when = datetime.fromisoformat(text.strip().replace(" ", "T"))
    except ValueError:
        raise ConfigError(f"pushed_since '{shown(text)}' is not a time (ISO 8601, like 2026-12-01T10:00:00Z)") from None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def _pushed_request(rt: TransferRoute, since: datetime, window: float, full: bool) -> TransferRequest | None:
    """Wait for the burst to end, then the request that exports what it pushed; None when the route wants none."""
    log = get_run_logger()
    if rt.source is None:
        raise ConfigError(f"route '{rt.name}' has no source to export from")
    until = since + timedelta(seconds=max(0.0, window))
    wait = (until - datetime.now(UTC)).total_seconds() + PUSH_GRACE_SECONDS
    if wait > 0:
        log.info("waiting %.0f s for the burst of pushes that began at %s to end", wait, since.isoformat())
        time.sleep(wait)
    registry = rt.source.registry.parts(get_settings().subscription_id)[2]
    pushes = collect_pushes(registry, since - timedelta(seconds=PUSH_GRACE_SECONDS), until)
    if rt.select is not None:
        pushed = [PushedTag(repository=p.repo, tag=p.tag, digest=p.digest, occurred=p.updated) for p in pushes]
        return TransferRequest(route=rt, pushed=pushed, full=full)
    listed = set(rt.artifacts)
    wanted = [p.reference for p in pushes if p.reference in listed]  # a plain route exports its own list's tags
    if not wanted:
        log.info("route %s lists none of the %s pushed tag(s): nothing to export", rt.name, len(pushes))
        return None
    return TransferRequest(route=rt, artifacts=wanted, full=full)


@flow(name="import-route-blob")
def import_route_blob(
    route: str,
    blob: str,
    catalog_digest: str | None = None,
    routes_file: str | None = None,
) -> TransferResult:
    """Import one blob that arrived in a route's import container: what ``import-on-blob`` runs.

    Args:
        route: Route name in routes.yaml (its target side is used).
        blob: Blob name in the import pipeline's container.
        catalog_digest: sha256 of the blob from its export run, when known.
        routes_file: Routes file; default $ACR_TRANSFER_ROUTES, else routes.yaml in the working directory.
    """
    rt = _route(route, routes_file)
    with tags(f"route:{route}"):
        return run_import(ImportRequest(route=rt, blob=blob, catalog_digest=catalog_digest))


class RouteStatus(StrEnum):
    """How one route of a sync ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"


class RouteOutcome(BaseModel):
    """One row of the sync-routes summary."""

    route: str
    status: RouteStatus
    transfer_id: str = ""
    verified: int = 0
    requested: int = 0
    message: str = ""


@task(name="sync-route", task_run_name="{route}", cache_policy=NO_CACHE)
def sync_route(route: str, routes_file: str | None) -> RouteOutcome | State:
    """One route of a sync, by its halves: both sides transfer, an export-only route exports, an import-only
    route is skipped (it waits for a blob event); skipped too when the route is already transferring.

    Never raises: a failed route is an outcome, returned in a Failed state so the run graph shows it red while
    the sync goes on with the other routes.
    """
    try:
        rt = _route(route, routes_file)
        if rt.source is None:
            return RouteOutcome(
                route=route,
                status=RouteStatus.SKIPPED,
                message="import-only: it imports when a blob arrives (import-on-blob), not on a schedule",
            )
        half = export_artifacts if rt.target is None else registry_transfer
        # continue the transfer an earlier (killed or failed) sync started, else start one: same names, so
        # nothing done is done again
        api = PrefectApi()
        planned_from = resume.planned_from(rt)
        transfer_id = resume.unfinished(route, planned_from, api) or uuid.uuid4().hex[:12]
        holder = live_holder(route, transfer_id)  # a lock whose holder is gone is reclaimed below
        if holder is not None:
            return _busy(route, holder)
        request = TransferRequest(route=rt, transfer_id=transfer_id)
        too_large = parameter_size_problem(request, parameter_limit())  # Prefect would refuse it with a 422
        if too_large:
            raise ConfigError(too_large)
        resume.remember(route, transfer_id, planned_from, api)
        completed, result = _run_outlasting_prefect(route, rt, lambda: _run_half(half, request, route))
        if completed:
            resume.forget(route, api)
    except Exception as e:
        result = e
    if isinstance(result, RouteLockTimeout) and result.holder is not None:
        return _busy(route, result.holder)  # it became busy meanwhile, and stayed so
    outcome = _outcome_of(route, result)
    if outcome.status is RouteStatus.FAILED:
        return Failed(message=f"route {route} failed: {outcome.message[:500]}", data=outcome)
    return outcome


PREFECT_OUTAGE_SECONDS = 600  # at most this long (and the route's timeout) a route waits out an overloaded Prefect


def _run_half(half: Any, request: TransferRequest, route: str) -> tuple[bool, object]:
    try:
        with tags(f"route:{route}"):
            state: State[Any] = half(request, lock_wait_seconds=LOCK_WAIT_SECONDS, return_state=True)
    except Exception as e:  # the subflow could not even be created
        return False, e
    return state.is_completed(), state.result(raise_on_failure=False)


def _run_outlasting_prefect(
    route: str, rt: TransferRoute, run: Callable[[], tuple[bool, object]]
) -> tuple[bool, object]:
    """Run a route's half; while it fails only because the Prefect API could not keep up (a 5xx or a dropped
    connection creating or tracking its flow and task runs: Prefect's bookkeeping, not Azure), run it again
    with backoff under the same transfer id — every step is idempotent, so nothing Azure finished is redone —
    for up to the route's timeout (at most ``PREFECT_OUTAGE_SECONDS``)."""
    deadline = time.monotonic() + min(rt.timeout_minutes * 60, PREFECT_OUTAGE_SECONDS)
    attempt = 0
    while True:
        completed, result = run()
        if completed or not prefect_unavailable(result) or time.monotonic() >= deadline:
            return completed, result
        attempt += 1
        delay = min(backoff_delay(attempt, 2.0, 30.0), max(deadline - time.monotonic(), 0.0))
        get_run_logger().warning(
            "route %s: the Prefect API did not keep up (%s); continuing the same transfer in %.0f s",
            route,
            shown(redact(str(result)), 200),
            delay,
        )
        time.sleep(delay)


def prefect_unavailable(result: object) -> bool:
    """Whether a route failed only because the Prefect API answered 5xx/429 or dropped the connection."""
    import httpx
    from prefect.exceptions import PrefectHTTPStatusError

    if isinstance(result, PrefectHTTPStatusError):
        return result.response.status_code >= 500 or result.response.status_code == 429
    if isinstance(result, httpx.TransportError):
        return True
    if type(result).__name__ == "ConcurrencySlotAcquisitionError":
        return " 503 " in f" {result} " or "Service Unavailable" in str(result)
    if isinstance(result, AcrTransferError):  # batches that failed on Prefect's task runs, not on Azure
        lines = [line for line in str(result).splitlines() if line.startswith("batch ")]
        return bool(lines) and all("PrefectHTTPStatusError" in line and "Server error" in line for line in lines)
    return False


def _report_abandoned(routes: RoutesFile, outcomes: list[RouteOutcome]) -> None:
    """After the routes ran: the blobs of each route's abandoned transfers, reported (log lines and an
    ``abandoned-blobs-<route>`` artifact) and deleted by the route's policy; noted in the route's outcome.
    Bookkeeping: a failure here is a warning, never a failed sync."""
    listings = RunListings()
    for outcome in outcomes:
        if outcome.status is RouteStatus.SKIPPED:
            continue
        try:
            found = abandoned_blobs(routes.get(outcome.route), listings=listings)
        except Exception as e:
            get_run_logger().warning(
                "route %s: abandoned blobs not checked: %s", outcome.route, redact(shown(str(e), 300))
            )
            continue
        if found:
            kept = sum(not a.deleted for a in found)
            note = f"abandoned transfer(s) {', '.join(a.transfer_id for a in found)}: blobs "
            note += "deleted" if not kept else f"reported in artifact abandoned-blobs-{outcome.route.lower()}"
            outcome.message = f"{outcome.message}; {note}" if outcome.message else note


def _busy(route: str, holder: LockHolder) -> RouteOutcome:
    return RouteOutcome(
        route=route,
        status=RouteStatus.SKIPPED,
        transfer_id=holder.transfer_id,
        message=f"still running: {holder.describe()}",
    )


def _outcome_of(route: str, result: object) -> RouteOutcome:
    if isinstance(result, TransferResult):
        return RouteOutcome(
            route=route,
            status=RouteStatus.SUCCEEDED if result.succeeded else RouteStatus.FAILED,
            transfer_id=result.transfer_id,
            verified=result.verified,
            requested=len(result.rows),
            message="; ".join(result.failures) or (result.plan.summary() if result.plan else ""),
        )
    if result == []:
        return RouteOutcome(
            route=route,
            status=RouteStatus.SUCCEEDED,
            message="nothing to export: every selected artifact is in the ledger",
        )
    if isinstance(result, list) and all(isinstance(e, ExportedBlob) for e in result):
        exported = sum(len(e.artifacts) for e in result)
        return RouteOutcome(
            route=route,
            status=RouteStatus.SUCCEEDED,
            verified=0,
            requested=exported,
            message=f"exported {exported} artifacts to {len(result)} blob(s): " + ", ".join(e.blob for e in result),
        )
    message = result.message if isinstance(result, AcrTransferError) else f"{type(result).__name__}: {result}"
    return RouteOutcome(route=route, status=RouteStatus.FAILED, message=redact(message)[:2000])


@flow(name="sync-routes", task_runner=ThreadPoolTaskRunner(max_workers=100))  # type: ignore[arg-type]
def sync_routes(
    routes: list[str] | None = None,
    max_concurrent: int = 4,
    routes_file: str | None = None,
) -> list[RouteOutcome]:
    """Run every route (or the named ones) concurrently within a limit; a failing route never stops the
    others. Publishes a summary table; ends Failed when any route failed, after all of them ran.

    Args:
        routes: Route names to run; empty runs every route of the file.
        max_concurrent: How many routes transfer at the same time (1-100).
        routes_file: Routes file; default $ACR_TRANSFER_ROUTES, else routes.yaml in the working directory.
    """
    log = get_run_logger()
    if not 1 <= max_concurrent <= 100:
        raise ConfigError(f"max_concurrent must be between 1 and 100, not {max_concurrent}")
    path = routes_path(routes_file)
    configured = load_configured_routes(path)
    names = [r.name for r in configured.select(routes)]
    by_route: dict[str, RouteOutcome] = {}
    pending, running = list(names), dict[PrefectFuture[RouteOutcome | State[Any]], str]()
    while pending or running:  # a sliding window of at most max_concurrent routes
        while pending and len(running) < max_concurrent:
            name = pending.pop(0)
            running[sync_route.submit(name, str(path))] = name
        done = next(as_completed(list(running)))
        name = running.pop(done)
        outcome = done.result(raise_on_failure=False)  # a failed route's outcome rides in its Failed state
        if not isinstance(outcome, RouteOutcome):
            outcome = RouteOutcome(route=name, status=RouteStatus.FAILED, message=redact(str(outcome))[:2000])
        by_route[name] = outcome
    outcomes = [by_route[n] for n in names]
    _report_abandoned(configured, outcomes)
    create_table_artifact(
        key="sync-routes-summary",
        table=[o.model_dump() for o in outcomes],
        description="sync-routes: "
        + ", ".join(f"{sum(o.status is status for o in outcomes)} {status}" for status in RouteStatus),
    )
    for o in outcomes:
        log.info("route %s: %s %s", o.route, o.status.value, o.message)
    failed = [o.route for o in outcomes if o.status is RouteStatus.FAILED]
    if failed:
        raise AcrTransferError(f"sync-routes: route(s) {', '.join(failed)} failed; the others ran (see the summary)")
    return outcomes
