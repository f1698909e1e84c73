"""``cleanup``: apply the run-record policy to one registry (see ``acr_transfer.cleanup``)."""

from __future__ import annotations

from prefect import flow, get_run_logger
from prefect.artifacts import create_table_artifact
from pydantic import BaseModel, Field

from acr_transfer.context import address as registry_address
from acr_transfer.models import RegistryRef
from acr_transfer.settings import get_settings
from tasks.cleanup import AbandonedBlobs, abandoned_blobs, delete_run, list_deletions


class CleanupResult(BaseModel):
    """What the cleanup deleted (or, on a dry run, would delete)."""

    registry: str
    dry_run: bool
    deleted: list[str] = Field(default_factory=list)
    kept: int = 0


@flow(name="cleanup")
def cleanup(registry: RegistryRef, older_than_days: float = 30, dry_run: bool = False) -> CleanupResult:
    """Delete run records the policy lets go: finished transfers older than ``older_than_days`` and old
    Succeeded runs of others; nothing of a failed or unfinished transfer."""
    log = get_run_logger()
    settings = get_settings()
    address = registry_address(registry, settings.subscription_id, settings.permitted_subscriptions())
    deletions, kept = list_deletions(address, older_than_days)
    deleted = []
    for d in deletions:
        if dry_run:
            log.info("would delete run %s (%s)", d.run, d.reason)
        elif delete_run(address, d.run):
            log.info("deleted run %s (%s)", d.run, d.reason)
        deleted.append(d.run)
    create_table_artifact(
        key=f"cleanup-{address.name.lower()}",
        table=[{"run": d.run, "reason": d.reason, "deleted": not dry_run} for d in deletions]
        or [{"run": "", "reason": "nothing to delete", "deleted": False}],
        description=f"Run records {'to delete' if dry_run else 'deleted'} on {address.name}",
    )
    log.info(
        "%s %s run record(s) on %s; kept %s", "would delete" if dry_run else "deleted", len(deleted), address.name, kept
    )
    return CleanupResult(registry=address.name, dry_run=dry_run, deleted=deleted, kept=kept)


class RouteCleanup(BaseModel):
    """What ``cleanup --route`` did on both registries of a route and with its abandoned transfers' blobs."""

    route: str
    registries: list[CleanupResult] = Field(default_factory=list)
    abandoned: list[dict[str, object]] = Field(default_factory=list)


@flow(name="cleanup-route")
def cleanup_route(route: str, routes_file: str | None = None, dry_run: bool = False) -> RouteCleanup:
    """A route's cleanup policy: run records older than ``cleanup.delete_runs_after_days`` on its registries,
    and the blobs of its abandoned transfers (reported; deleted after ``delete_abandoned_blobs_after_days``).

    Args:
        route: Route name in routes.yaml.
        routes_file: Routes file; default $ACR_TRANSFER_ROUTES, else routes.yaml in the working directory.
        dry_run: Only report what would be deleted.
    """
    from flows.routes import load_configured_routes, routes_path

    rt = load_configured_routes(routes_path(routes_file)).get(route)
    out = RouteCleanup(route=route)
    days = rt.cleanup.delete_runs_after_days
    if days is not None:
        for side in (rt.source, rt.target):
            if side is not None:
                out.registries.append(cleanup(side.registry, older_than_days=days, dry_run=dry_run))
    found: list[AbandonedBlobs] = abandoned_blobs(rt, dry_run=dry_run)
    out.abandoned = [vars(a) for a in found]
    if not found:
        get_run_logger().info("route %s: no abandoned transfer left blobs behind", route)
    return out
