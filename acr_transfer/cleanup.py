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

import re
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


@dataclass(frozen=True)
class Abandoned:
    """A transfer of a route that wrote blobs and never finished, and is not being continued."""

    transfer_id: str
    blobs: tuple[str, ...]  # export blob names; a bridged copy has the same name in the import container
    last_activity: datetime | None
    why: str

    def due(self, after_days: float | None, now: datetime | None = None) -> bool:
        """Whether the policy (``cleanup.delete_abandoned_blobs_after_days``) lets its blobs go now."""
        if after_days is None:
            return False
        last = self.last_activity or (now or datetime.now(UTC))
        return last < (now or datetime.now(UTC)) - timedelta(days=after_days)


def route_blob_pattern(template: str, route: str) -> re.Pattern[str] | None:
    """What the blob names of a route's ``blob_name_template`` start with, the transfer id captured: the
    template up to its ``{transfer_id}`` (or its first other placeholder), so a later attempt's blob
    (``batch001-a2.tar``) is the route's too. None when that part does not name the route (a template that
    starts with ``{date}``): its blobs cannot be told from other routes'."""
    out, named = [], False
    for i, part in enumerate(re.split(r"\{(\w+)\}", template)):
        if not i % 2:
            out.append(re.escape(part))
            continue
        if part == "route":
            out.append(re.escape(route))
            named = True
            continue
        if part == "transfer_id":
            out.append(r"(?P<tid>[a-z0-9]+)")
        break
    return re.compile("".join(out)) if named else None


def abandoned_transfers(
    exports: list[RunState],
    imports: list[RunState],
    *,
    route: str,
    template: str,
    keep: set[str],
    has_target: bool,
) -> list[Abandoned]:
    """The route's transfers whose export runs wrote blobs but that never finished (pure: no I/O).

    Args:
        exports: every run of the source registry; only this route's exports (by run name and blob name) count.
        imports: every run of the target registry (empty for an export-only route).
        route, template: the route's name and ``blob_name_template``, which attribute a blob to the route.
        keep: transfer ids still being continued (a sync's unfinished record, the route lock's live holder).
        has_target: False for an export-only route, whose finished exports are its delivery, not leftovers.

    A transfer is finished when every batch it exported has a Succeeded import (or, export-only, a Succeeded
    export); anything else is unfinished, and abandoned unless ``keep`` holds it.
    """
    pattern = route_blob_pattern(template, route)
    if pattern is None:
        return []
    transfers: dict[str, list[tuple[RunName, RunState]]] = defaultdict(list)
    for run in exports:
        name = RunName.parse(run.name)
        match = pattern.match(run.blob or "")
        if name is None or name.kind != "export" or match is None:
            continue
        if "tid" in pattern.groupindex and match.group("tid") != name.transfer_id:
            continue
        transfers[name.transfer_id].append((name, run))
    imported: dict[str, set[int]] = defaultdict(set)
    for run in imports:
        name = RunName.parse(run.name)
        if name is not None and name.kind == "import" and run.succeeded:
            imported[name.transfer_id].add(name.batch)
    found = []
    for tid, runs in sorted(transfers.items()):
        if tid in keep:
            continue
        batches = sorted({name.batch for name, _ in runs})
        exported = {name.batch for name, run in runs if run.succeeded}
        missing = [b for b in batches if b not in exported]
        unimported = [b for b in batches if b in exported and b not in imported[tid]] if has_target else []
        if not missing and not unimported:
            continue
        why = "; ".join(
            part
            for part in (
                f"export of batch(es) {', '.join(map(str, missing))} never succeeded" if missing else "",
                f"batch(es) {', '.join(map(str, unimported))} exported, never imported" if unimported else "",
            )
            if part
        )
        stamps = [s for _, r in runs if (s := _finished(r)) is not None]
        blobs = tuple(sorted({r.blob for _, r in runs if r.blob}))
        found.append(Abandoned(tid, blobs, max(stamps) if stamps else None, why))
    return found
