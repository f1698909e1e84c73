"""Which pipeline-run records may go: like ``az acr pipeline-run clean``, but by policy.

- A run record is only a log of what happened; deleting it undoes nothing in the registry.
- Our runs (``x|i<tid>b<NNN>a<K>``) are grouped by transfer: a transfer whose every batch has a Succeeded
  attempt is finished, and all its records (earlier failed attempts included) go once the newest of them
  is older than the policy's age. A transfer with any batch lacking a Succeeded attempt is kept whole:
  never delete anything belonging to a failed transfer.
- Other runs (created by hand or by a source trigger) go when Succeeded and old enough; failed ones stay
  for a person to read.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from acr_transfer.azure.registry import RunState
from acr_transfer.refs import RunName


@dataclass(frozen=True)
class Deletion:
    """A run record the policy lets go, and why."""

    run: str
    reason: str


def _finished(run: RunState) -> datetime | None:
    stamp = run.finish_time or run.start_time
    if not stamp:
        return None
    try:
        when = datetime.fromisoformat(stamp.replace("Z", "+00:00"))
    except ValueError:
        return None
    return when if when.tzinfo else when.replace(tzinfo=UTC)


def plan_cleanup(runs: list[RunState], older_than_days: float, now: datetime | None = None) -> list[Deletion]:
    """The run records that may be deleted under the policy (pure: no I/O)."""
    now = now or datetime.now(UTC)
    cutoff = now - timedelta(days=older_than_days)
    transfers: dict[str, list[RunState]] = defaultdict(list)
    deletions = []
    for run in runs:
        ours = RunName.parse(run.name)
        if ours is not None:
            transfers[f"{ours.kind[0]}{ours.transfer_id}"].append(run)
        elif run.succeeded and (_finished(run) or now) < cutoff:
            deletions.append(Deletion(run.name, f"Succeeded before {cutoff:%Y-%m-%d}"))
    for key, group in transfers.items():
        by_batch: dict[int, list[RunState]] = defaultdict(list)
        for run in group:
            ours = RunName.parse(run.name)
            assert ours is not None
            by_batch[ours.batch].append(run)
        if not all(any(r.succeeded for r in batch) for batch in by_batch.values()):
            continue  # a failed or unfinished transfer: keep everything
        newest = max((_finished(r) or now) for r in group)
        if newest < cutoff:
            deletions += [Deletion(r.name, f"transfer {key[1:]} finished before {cutoff:%Y-%m-%d}") for r in group]
    return deletions
