"""The cleanup flow's steps: list the run records the policy lets go, delete one; report and (by policy)
delete the blobs of a route's abandoned transfers."""

from __future__ import annotations

from dataclasses import dataclass

from prefect import get_run_logger, task

from acr_transfer.azure.registry import RegistryAddress, RunState
from acr_transfer.cleanup import Deletion, abandoned_transfers, plan_cleanup
from acr_transfer.context import address as registry_address
from acr_transfer.models import TransferRoute
from acr_transfer.settings import get_settings
from tasks import clients, resume
from tasks.concurrency import PrefectApi, live_holder
from tasks.retry import step_options


@task(name="plan-cleanup", **step_options())
def list_deletions(registry: RegistryAddress, older_than_days: float) -> tuple[list[Deletion], int]:
    """The run records of ``registry`` that the policy lets go, and how many it keeps."""
    runs = list(clients.shared().arm.list_runs(registry))
    deletions = plan_cleanup(runs, older_than_days)
    return deletions, len(runs) - len(deletions)


@task(name="delete-run", **step_options())
def delete_run(registry: RegistryAddress, name: str) -> bool:
    """Delete one run record; False when it was already gone."""
    return clients.shared().arm.delete_run(registry, name)


@dataclass(frozen=True)
class AbandonedBlobs:
    """One abandoned transfer of a route as the cleanup reports it: its blobs still in storage, and what the
    policy did with them."""

    transfer_id: str
    why: str
    last_activity: str
    blobs: list[str]  # 'container URI/blob name' of each blob still there
    deleted: bool
    note: str


class RunListings:
    """Each registry's runs listed once, and each pipeline's container read once, for the routes of one sync or
    cleanup (a list costs a read a page; routes often share their pipelines)."""

    def __init__(self) -> None:
        self._runs: dict[str, list[RunState]] = {}
        self._containers: dict[tuple[str, str, str], str] = {}

    def __call__(self, registry: RegistryAddress) -> list[RunState]:
        if registry.id not in self._runs:
            self._runs[registry.id] = list(clients.shared().arm.list_runs(registry))
        return self._runs[registry.id]

    def container(self, registry: RegistryAddress, kind: str, pipeline: str) -> str:
        """The storage container URI of the registry's ``kind`` ("export"/"import") pipeline."""
        key = (registry.id.lower(), kind, pipeline.lower())
        if key not in self._containers:
            self._containers[key] = clients.shared().arm.get_pipeline(registry, kind, pipeline).container_uri
        return self._containers[key]


def abandoned_blobs(
    rt: TransferRoute, dry_run: bool = False, listings: RunListings | None = None
) -> list[AbandonedBlobs]:
    """Find the route's abandoned transfers (see :func:`acr_transfer.cleanup.abandoned_transfers`): report
    each one's blobs that are still in storage, and delete them once ``cleanup.delete_abandoned_blobs_after_days``
    have passed since its last run (never on a dry run). A transfer a sync will continue, or that holds the
    route's lock, is not abandoned. Blobs are read and deleted as this worker's identity."""
    log = get_run_logger()
    listings = listings or RunListings()
    if rt.source is None:
        return []
    settings = get_settings()
    aws = clients.shared()
    allowed = settings.permitted_subscriptions()
    source = registry_address(rt.source.registry, settings.subscription_id, allowed)
    containers = [listings.container(source, "export", rt.source.export_pipeline)]
    imports: list[RunState] = []
    if rt.target is not None:
        target = registry_address(rt.target.registry, settings.subscription_id, allowed)
        imports = listings(target)
        into = listings.container(target, "import", rt.target.import_pipeline)
        if into.rstrip("/") != containers[0].rstrip("/"):
            containers.append(into)  # a bridged route: the copy has the same name there
    found = abandoned_transfers(
        listings(source),
        imports,
        route=rt.name,
        template=rt.blob_name_template,
        keep=_continued(rt),
        has_target=rt.target is not None,
    )
    after = rt.cleanup.delete_abandoned_blobs_after_days
    reports = []
    for transfer in found:
        present = [(c, b) for c in containers for b in transfer.blobs if aws.storage.blob_facts(c, b, None)]
        if not present:
            continue
        due = transfer.due(after) and not dry_run
        for container, blob in present if due else []:
            aws.storage.delete_blob(container, blob, None)
        last = f"{transfer.last_activity:%Y-%m-%d %H:%M} UTC" if transfer.last_activity else "unknown"
        if due:
            note = f"deleted ({after} days after its last run)"
        elif after is None:
            note = "kept: cleanup.delete_abandoned_blobs_after_days is empty"
        else:
            note = f"{'would be ' if dry_run and transfer.due(after) else ''}deleted {after} days after its last run"
        names = [f"{c.rstrip('/')}/{b}" for c, b in present]
        reports.append(AbandonedBlobs(transfer.transfer_id, transfer.why, last, names, due, note))
        log.warning(
            "route %s: transfer %s was abandoned (%s; last run %s): %s blob(s) — %s; continue it with "
            "`acr-transfer run --route %s --transfer-id %s`",
            rt.name,
            transfer.transfer_id,
            transfer.why,
            last,
            len(names),
            note,
            rt.name,
            transfer.transfer_id,
        )
    if reports:
        _publish(rt.name, reports)
    return reports


def _publish(route: str, reports: list[AbandonedBlobs]) -> None:
    from prefect.artifacts import create_table_artifact

    try:
        create_table_artifact(
            key=f"abandoned-blobs-{route.lower()}",
            table=[
                {
                    "transfer": r.transfer_id,
                    "why": r.why,
                    "last run": r.last_activity,
                    "blobs": "\n".join(r.blobs),
                    "policy": r.note,
                }
                for r in reports
            ],
            description=f"Route {route}: blobs of {len(reports)} abandoned transfer(s)",
        )
    except Exception as e:  # bookkeeping: the log lines above said it already
        get_run_logger().warning("could not publish the abandoned-blobs artifact: %s", type(e).__name__)


def _continued(rt: TransferRoute) -> set[str]:
    """Transfer ids of the route that are not abandoned: the one a sync will continue, and the lock's holder."""
    keep = {tid} if (tid := resume.unfinished(rt.name, resume.planned_from(rt), PrefectApi())) else set()
    try:
        holder = live_holder(rt.name)
    except Exception:  # bookkeeping: without the record, the holder's transfer is judged by its runs
        holder = None
    if holder is not None:
        keep.add(holder.transfer_id)
    return keep
