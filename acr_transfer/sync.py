"""What a sync sends: the difference between what a route selects and what the other side already holds.

A route with ``select:`` is planned in three steps, and only the first two touch a registry:

1. **list** the source (``RegistryListing``: repositories, tags with digests, referrers) and select from it
   (``acr_transfer/selection.py``);
2. **compare** with what is already there: the target's tags (both sides reachable) or this route's export
   ledger (an export-only route, for disconnected clouds);
3. **decide** (here, pure): every selected tag and referrer is either sent, with why, or skipped, with why.

The decision is frozen as a :class:`SyncPlan`, stored next to the blobs under the transfer id
(:func:`plan_blob`), so a retried or resumed transfer sends the same list in the same batches even when tags
moved meanwhile. The :class:`Ledger` (:func:`ledger_blob`) records what a route exported successfully, by
reference and digest; it is written with conditional writes (etags), so two workers cannot lose each other's
entries. Neither holds a secret.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, Field

from acr_transfer.listing import ArtifactSize, ListedTag, Referrer
from acr_transfer.refs import ArtifactRef

STATE_PREFIX = "acr-transfer-state"
MAX_LAYER_BYTES = 8 * 1000**3  # ACR Transfer handles layers of at most 8 GB (Microsoft's troubleshooting page)


def plan_blob(route: str, transfer_id: str) -> str:
    """Where a transfer's frozen plan lives in the export container."""
    return f"{STATE_PREFIX}/{route}/plans/{transfer_id}.json"


def ledger_blob(route: str) -> str:
    """Where a route's export ledger lives in the export container."""
    return f"{STATE_PREFIX}/{route}/ledger.json"


class SendReason(StrEnum):
    """Why an artifact is in a plan."""

    LISTED = "listed"  # named in the route's artifacts:, always sent
    NEW = "new"  # not in the target (or the ledger)
    CHANGED = "changed"  # the target's tag points at other content
    REFERRER = "referrer"  # a signature, SBOM or attestation of a sent subject, not yet on the other side
    FULL = "full"  # --full: sent whatever the other side holds


class SkipReason(StrEnum):
    """Why a selected artifact is not sent."""

    IDENTICAL = "identical in target"
    IN_LEDGER = "in ledger"
    EXCLUDED = "excluded"


class PlanEntry(BaseModel):
    """One artifact a transfer sends."""

    reference: str = Field(..., description="repo:tag or repo@sha256:… as the export run names it")
    digest: str = Field("", description="The manifest digest it had when the plan was made")
    why: SendReason
    subject: str | None = Field(None, description="For a referrer: the digest it refers to")
    artifact_type: str | None = None
    size: int = Field(0, description="Bytes its manifests and layers take")


class SkippedEntry(BaseModel):
    """One selected artifact a transfer does not send, and why."""

    reference: str
    digest: str = ""
    why: SkipReason
    rule: str = Field("", description="For an exclusion: the rule that excluded it")


class SyncPlan(BaseModel):
    """A transfer's frozen decision: what it sends, in which batches, and what it skipped."""

    version: int = 1
    route: str
    transfer_id: str
    created: datetime
    full: bool = False
    send: list[PlanEntry] = Field(default_factory=list)
    skipped: list[SkippedEntry] = Field(default_factory=list)
    batches: list[list[str]] = Field(default_factory=list, description="References per batch, in batch order")

    @property
    def changed(self) -> int:
        return sum(1 for e in self.send if e.why in (SendReason.NEW, SendReason.CHANGED, SendReason.FULL))

    @property
    def referrers(self) -> int:
        return sum(1 for e in self.send if e.why is SendReason.REFERRER)

    @property
    def identical(self) -> int:
        return sum(1 for s in self.skipped if s.why in (SkipReason.IDENTICAL, SkipReason.IN_LEDGER))

    @property
    def excluded(self) -> int:
        return sum(1 for s in self.skipped if s.why is SkipReason.EXCLUDED)

    @property
    def total_bytes(self) -> int:
        return sum(e.size for e in self.send)

    def summary(self) -> str:
        """One line: ``3 changed, 197 identical, 2 referrers, 4 excluded; 12.3 MiB to export``."""
        parts = [f"{self.changed} changed", f"{self.identical} identical"]
        listed = sum(1 for e in self.send if e.why is SendReason.LISTED)
        if listed:
            parts.insert(0, f"{listed} listed")
        if self.referrers:
            parts.append(f"{self.referrers} referrers")
        if self.excluded:
            parts.append(f"{self.excluded} excluded")
        size = f"; {human_bytes(self.total_bytes)} to export" if self.send else "; nothing to export"
        return ", ".join(parts) + size


class Ledger(BaseModel):
    """What one route exported successfully: reference → digest (the newest export of each reference wins)."""

    version: int = 1
    route: str
    exported: dict[str, str] = Field(default_factory=dict)
    updated: datetime | None = None

    def holds(self, reference: str, digest: str) -> bool:
        return bool(digest) and self.exported.get(reference) == digest

    def with_exported(self, entries: Iterable[PlanEntry], when: datetime | None = None) -> Ledger:
        exported = dict(self.exported)
        for entry in entries:
            if entry.digest:
                exported[entry.reference] = entry.digest
        return Ledger(route=self.route, exported=exported, updated=when or datetime.now(UTC))


def human_bytes(size: int) -> str:
    """``1536`` → ``1.5 KiB``."""
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


# Whether the other side already holds something: the target's tag → digest per repository, the target's
# manifests by digest (for referrers), or the route's ledger. None on a side that is not known.
TargetTags = Mapping[str, Mapping[str, str]]


def decide(
    route: str,
    transfer_id: str,
    *,
    listed: Iterable[str] = (),
    selected: Iterable[ListedTag] = (),
    excluded: Iterable[tuple[str, str]] = (),
    referrers: Mapping[str, list[Referrer]] | None = None,
    target_tags: TargetTags | None = None,
    target_has: Callable[[str, str], bool] | None = None,
    ledger: Ledger | None = None,
    skip_identical: bool = True,
    full: bool = False,
    now: datetime | None = None,
) -> SyncPlan:
    """Decide what a transfer sends (pure). Batches are not cut here (:func:`cut_batches`).

    Args:
        route, transfer_id: whose plan this is.
        listed: the route's fixed ``artifacts:``, always sent.
        selected: the tags the selection chose in the source.
        excluded: ``(what, rule)`` of what the selection left out, reported as skipped.
        referrers: subject digest → its referrers in the source (when the route carries referrers).
        target_tags: the target's tags per repository (both sides reachable): a tag pointing at the same digest
            there is identical; at another digest, changed.
        target_has: ``(repo, digest) → bool``, whether the target holds a manifest (for referrers).
        ledger: an export-only route's ledger: what it holds is skipped.
        skip_identical: the route's ``skip: identical``; off, everything selected is sent.
        full: ``--full``: send everything selected, ignoring target and ledger.
    """
    send: list[PlanEntry] = []
    skipped: list[SkippedEntry] = []
    seen: set[str] = set()
    compare = skip_identical and not full

    def add(entry: PlanEntry) -> None:
        if entry.reference not in seen:
            seen.add(entry.reference)
            send.append(entry)

    for ref in listed:
        add(PlanEntry(reference=str(ArtifactRef.parse(ref)), why=SendReason.LISTED))
    for tag in sorted(selected, key=lambda t: (t.repo, t.tag)):
        held = _held(tag.repo, tag.tag, tag.digest, target_tags, ledger) if compare else None
        if held is not None and held[0]:
            skipped.append(SkippedEntry(reference=tag.reference, digest=tag.digest, why=held[1]))
        else:
            why = SendReason.FULL if full else SendReason.CHANGED if held is not None else SendReason.NEW
            add(PlanEntry(reference=tag.reference, digest=tag.digest, why=why))
        for referrer in (referrers or {}).get(tag.digest, []):
            _referrer(tag, referrer, compare, target_has, ledger, add, skipped)
    for what, rule in excluded:
        skipped.append(SkippedEntry(reference=what, why=SkipReason.EXCLUDED, rule=rule))
    return SyncPlan(
        route=route, transfer_id=transfer_id, created=now or datetime.now(UTC), full=full, send=send, skipped=skipped
    )


def _held(
    repo: str, tag: str, digest: str, target_tags: TargetTags | None, ledger: Ledger | None
) -> tuple[bool, SkipReason] | None:
    """(already there, how we know) for one selected tag; None when the other side has no such tag at all."""
    if target_tags is not None:
        there = target_tags.get(repo, {}).get(tag)
        if there is None:
            return None
        return there == digest, SkipReason.IDENTICAL
    if ledger is not None:
        before = ledger.exported.get(f"{repo}:{tag}")
        if before is None:
            return None
        return before == digest, SkipReason.IN_LEDGER
    return None


def unchanged(tag: ListedTag, target_tags: TargetTags | None, ledger: Ledger | None) -> bool:
    """Whether the other side already holds this tag at this digest (the target's tag, else the ledger)."""
    held = _held(tag.repo, tag.tag, tag.digest, target_tags, ledger)
    return held is not None and held[0]


def _referrer(
    subject: ListedTag,
    referrer: Referrer,
    compare: bool,
    target_has: Callable[[str, str], bool] | None,
    ledger: Ledger | None,
    add: Callable[[PlanEntry], None],
    skipped: list[SkippedEntry],
) -> None:
    """A referrer travels unless the other side already holds that exact manifest."""
    reference = referrer.reference
    if compare and target_has is not None and target_has(referrer.repo, referrer.digest):
        skipped.append(SkippedEntry(reference=reference, digest=referrer.digest, why=SkipReason.IDENTICAL))
        return
    if compare and target_has is None and ledger is not None and ledger.holds(reference, referrer.digest):
        skipped.append(SkippedEntry(reference=reference, digest=referrer.digest, why=SkipReason.IN_LEDGER))
        return
    add(
        PlanEntry(
            reference=reference,
            digest=referrer.digest,
            why=SendReason.REFERRER,
            subject=subject.digest,
            artifact_type=referrer.artifact_type or None,
        )
    )


def with_sizes(plan: SyncPlan, sizes: Mapping[str, ArtifactSize]) -> SyncPlan:
    """The plan with each entry's size (``sizes`` by reference; unknown ones stay 0)."""
    send = [
        e.model_copy(update={"size": sizes[e.reference].total_bytes}) if e.reference in sizes else e for e in plan.send
    ]
    return plan.model_copy(update={"send": send})


def oversized(sizes: Mapping[str, ArtifactSize], limit: int = MAX_LAYER_BYTES) -> list[str]:
    """One line per artifact with a layer larger than ACR Transfer handles, naming the artifact and the layer."""
    return [
        f"{reference}: layer {size.largest_layer_digest} is {human_bytes(size.largest_layer_bytes)} "
        f"({size.largest_layer_bytes:,} bytes), more than the {human_bytes(limit)} ACR Transfer handles per layer"
        for reference, size in sorted(sizes.items())
        if size.largest_layer_bytes > limit
    ]


def cut_batches(send: list[PlanEntry], batch_size: int) -> list[list[str]]:
    """References per batch: a subject and its referrers share a batch where they fit (a group larger than a
    batch is split), groups kept in plan order; every batch holds at most ``batch_size``."""
    groups: list[list[str]] = []
    subjects: dict[str, int] = {}
    for entry in send:
        if entry.why is SendReason.REFERRER and entry.subject in subjects:
            groups[subjects[entry.subject]].append(entry.reference)
            continue
        groups.append([entry.reference])
        if entry.digest:
            subjects.setdefault(entry.digest, len(groups) - 1)
    batches: list[list[str]] = []
    for group in groups:
        if batches and len(batches[-1]) + len(group) <= batch_size:
            batches[-1].extend(group)
            continue
        for start in range(0, len(group), batch_size):
            batches.append(group[start : start + batch_size])
    return batches


def latest_pushes(pushes: Iterable[ListedTag]) -> list[ListedTag]:
    """One entry per pushed tag: the last push of each (a burst may push a tag twice), sorted by reference."""
    last: dict[tuple[str, str], ListedTag] = {}
    for push in pushes:
        key = (push.repo, push.tag)
        if key not in last or push.updated >= last[key].updated:
            last[key] = push
    return sorted(last.values(), key=lambda t: (t.repo, t.tag))
