"""The sync plan of a ``select:`` route as Prefect tasks: list and select, compare, decide, freeze; and the ledger.

The decisions are :mod:`acr_transfer.sync`'s and :mod:`acr_transfer.selection`'s; this module only reads the
registries (:class:`~acr_transfer.azure.acr_listing.RegistryListing`) and the export container, in parallel
where it can, and logs what it found.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import TypeVar

from prefect import get_run_logger, task

from acr_transfer import selection, sync
from acr_transfer.azure.acr_listing import RegistryListing
from acr_transfer.azure.storage import WriteConflict
from acr_transfer.context import TransferContext
from acr_transfer.errors import PreflightError
from acr_transfer.listing import ArtifactSize, ListedTag, Referrer
from acr_transfer.models import Selection, TransferRequest
from acr_transfer.naming import plan_batches
from acr_transfer.refs import ArtifactRef
from acr_transfer.sas import SasToken
from tasks import clients
from tasks.retry import outlasting, step_options

T = TypeVar("T")
R = TypeVar("R")
WORKERS = 8
LEDGER_WRITE_ATTEMPTS = 8


def _parallel(fn: Callable[[T], R], items: Iterable[T]) -> list[R]:
    with ThreadPoolExecutor(max_workers=WORKERS, thread_name_prefix="sync-plan") as pool:
        return list(pool.map(fn, items))


def _export_container(ctx: TransferContext) -> tuple[str, SasToken | None]:
    """The export container and what authorises this worker there: the export pipeline's SAS (it may write
    the blobs, so it may write the plan and the ledger), or the worker's identity in ManagedIdentity mode."""
    facts = ctx.export
    if facts.secret_uri and facts.storage_access_mode.lower() == "sastoken":
        return facts.container_uri, clients.shared().vault.sas(facts.secret_uri)[1]
    return facts.container_uri, None


def read_frozen(ctx: TransferContext) -> sync.SyncPlan | None:
    """The plan this transfer froze when it first ran, if it did."""
    container, sas = _export_container(ctx)
    found = clients.shared().storage.read_text(container, sync.plan_blob(ctx.route.name, ctx.transfer_id), sas)
    return None if found is None else sync.SyncPlan.model_validate_json(found[0])


def read_ledger(ctx: TransferContext) -> tuple[sync.Ledger, str | None]:
    """The route's export ledger and its etag (None: there is none yet)."""
    container, sas = _export_container(ctx)
    found = clients.shared().storage.read_text(container, sync.ledger_blob(ctx.route.name), sas)
    if found is None:
        return sync.Ledger(route=ctx.route.name), None
    return sync.Ledger.model_validate_json(found[0]), found[1]


def _list_source(
    listing: RegistryListing, login: str, rules: Selection
) -> tuple[list[ListedTag], list[tuple[str, str]], dict[str, list[ListedTag]]]:
    """Selected tags, exclusions ``(what, rule)``, and every listed tag per selected repository."""
    excluded: list[tuple[str, str]] = []
    repos = []
    for repo in listing.repositories(login):
        why = selection.repository_excluded(rules, repo)
        if why is None:
            repos.append(repo)
        elif why.startswith("exclude_"):  # the rest of the registry is simply not this route's
            excluded.append((repo, why))
    listed = dict(zip(repos, _parallel(lambda repo: listing.tags(login, repo), repos), strict=True))
    chosen = selection.select(rules, listed)
    excluded += [(e.what, e.rule) for e in chosen.excluded]
    return chosen.tags, excluded, listed


def _pushed(
    listing: RegistryListing, login: str, rules: Selection, request: TransferRequest
) -> tuple[list[ListedTag], list[tuple[str, str]], dict[str, list[ListedTag]]]:
    """The pushed tags the route selects (the last push of each), and the tags of their repositories (for
    cosign's referrer tags)."""
    pushes = sync.latest_pushes(
        ListedTag(p.repository, p.tag, p.digest, p.occurred, p.occurred) for p in request.pushed or []
    )
    chosen, excluded = [], []
    for push in pushes:
        why = selection.pushed_excluded(rules, push.repo, push.tag)
        if why is None:
            chosen.append(push)
        else:
            excluded.append((push.reference, why))
    repos = sorted({t.repo for t in chosen})
    listed = dict(zip(repos, _parallel(lambda repo: listing.tags(login, repo), repos), strict=True))
    return chosen, excluded, listed


class _Known:
    """What the other side holds per repository, read once per repository and shared by threads."""

    def __init__(self, read: Callable[[str], set[str]]) -> None:
        self._read = read
        self._known: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def __call__(self, repo: str) -> set[str]:
        with self._lock:
            if repo in self._known:
                return self._known[repo]
        found = self._read(repo)
        with self._lock:
            return self._known.setdefault(repo, found)


def _referrers(
    listing: RegistryListing,
    login: str,
    chosen: list[ListedTag],
    listed: dict[str, list[ListedTag]],
    unchanged: set[tuple[str, str]],
    known: Callable[[str], set[str]],
) -> dict[str, list[Referrer]]:
    """Subject digest → its referrers in the source.

    A subject that is sent is looked up in full (the referrers API, one request per distinct digest). A subject
    the other side already holds is not: ACR throttles the referrers API (250 a minute per identity on
    Standard), and a nightly sync of 10,000 unchanged tags would spend 40 minutes on it. Instead, per repository,
    the manifests the source holds untagged that the other side does not know (one paged listing each side) are
    read, and those whose ``subject`` leads to an unchanged subject travel; cosign's digest tags come from the
    tag listing itself.
    """
    sent = sorted({(t.repo, t.digest) for t in chosen} - unchanged)
    found = _parallel(lambda s: listing.referrers(login, s[0], s[1], tags=listed.get(s[0], [])), sent)
    by_digest: dict[str, list[Referrer]] = {}
    for (_, digest), referrers in zip(sent, found, strict=True):
        by_digest.setdefault(digest, []).extend(referrers)
    by_repo: dict[str, set[str]] = {}
    for repo, digest in unchanged:
        by_repo.setdefault(repo, set()).add(digest)
    repos = sorted(by_repo)
    for new in _parallel(lambda repo: _new_referrers(listing, login, repo, by_repo[repo], listed, known), repos):
        for subject, referrers in new.items():
            by_digest.setdefault(subject, []).extend(referrers)
    return by_digest


def _new_referrers(
    listing: RegistryListing,
    login: str,
    repo: str,
    subjects: set[str],
    listed: dict[str, list[ListedTag]],
    known: Callable[[str], set[str]],
) -> dict[str, list[Referrer]]:
    """The referrers of ``subjects`` in ``repo`` that the other side does not hold yet, keyed by subject."""
    held = known(repo)
    untagged = [d for d, tags in listing.manifests(login, repo).items() if not tags and d not in held]
    candidates = [r for r in _parallel(lambda d: listing.referrer(login, repo, d), untagged) if r is not None]
    cosign = [
        t for t in listed.get(repo, []) if selection.digest_tag_subject(t.tag) in subjects and t.digest not in held
    ]
    for tag in cosign:  # cosign's tags name their subject: no request needed to place them
        subject = selection.digest_tag_subject(tag.tag)
        assert subject is not None
        candidates.append(Referrer(repo, tag.digest, subject, "", "", 0, "cosign-tag", tag.tag))
    # follow each candidate's subject up to an unchanged subject (a signature of a new SBOM of an old image)
    parent = {r.digest: r.subject for r in candidates}
    by_subject: dict[str, list[Referrer]] = {}
    for referrer in candidates:
        top, hops = referrer.subject, 0
        while top not in subjects and top in parent and hops < 8:
            top, hops = parent[top], hops + 1
        if top in subjects:
            by_subject.setdefault(top, []).append(referrer)
    return by_subject


@task(name="plan-sync", **step_options())
@outlasting("sync plan")
def plan_sync(ctx: TransferContext, request: TransferRequest) -> TransferContext:
    """Select, compare and decide what this transfer sends, and freeze it; a transfer that froze its plan
    before (a retry, a resume, ``--transfer-id``) uses that plan and lists nothing.

    Raises:
        PreflightError: an artifact has a layer larger than ACR Transfer handles (nothing is created).
    """
    log = get_run_logger()
    rules = ctx.route.select
    assert rules is not None
    frozen = read_frozen(ctx)
    if frozen is not None:
        log.info("transfer %s continues its frozen plan of %s: %s", ctx.transfer_id, frozen.created, frozen.summary())
        return _with_plan(ctx, frozen)
    aws = clients.shared()
    listing = aws.listing
    source = aws.login_server(ctx.source)
    if request.pushed is not None:  # export-on-push: what the burst pushed, not the whole source
        chosen, excluded, listed = _pushed(listing, source, rules, request)
    else:
        chosen, excluded, listed = _list_source(listing, source, rules)
    target_tags = None
    target_has = None
    ledger = None
    full = request.full
    compare = ctx.route.effective_skip == "identical" and not full
    if ctx.has_target:
        target = aws.login_server(ctx.target)
        repos = sorted({t.repo for t in chosen})
        held = _parallel(lambda repo: {t.tag: t.digest for t in listing.tags(target, repo)}, repos)
        target_tags = dict(zip(repos, held, strict=True))
        on_target = _Known(lambda repo: set(listing.manifests(target, repo)))

        def target_has(repo: str, digest: str) -> bool:
            return digest in on_target(repo)

        known: Callable[[str], set[str]] = on_target
    else:
        if not full:
            ledger, _ = read_ledger(ctx)
        exported = ledger.exported if ledger is not None else {}

        def known(repo: str) -> set[str]:
            return {d for ref, d in exported.items() if ref.startswith(f"{repo}:") or ref.startswith(f"{repo}@")}

    unchanged = {(t.repo, t.digest) for t in chosen if sync.unchanged(t, target_tags, ledger)} if compare else set()
    referrers = _referrers(listing, source, chosen, listed, unchanged, known) if rules.referrers else {}
    plan = sync.decide(
        ctx.route.name,
        ctx.transfer_id,
        listed=ctx.route.artifacts,
        selected=chosen,
        excluded=excluded,
        referrers=referrers,
        target_tags=target_tags,
        target_has=target_has,
        ledger=ledger,
        skip_identical=ctx.route.effective_skip == "identical",
        full=full,
    )
    sizes = _sizes(listing, source, [e.reference for e in plan.send])
    too_large = sync.oversized(sizes)
    if too_large:
        raise PreflightError(
            f"preflight of route '{ctx.route.name}' failed: {len(too_large)} artifact(s) cannot be transferred; "
            "nothing was created:\n" + "\n".join(f"✗ {line}" for line in too_large),
            failures=too_large,
        )
    plan = sync.with_sizes(plan, sizes)
    plan = plan.model_copy(update={"batches": sync.cut_batches(plan.send, ctx.route.batch_size)})
    log.info("transfer %s plans: %s", ctx.transfer_id, plan.summary())
    if plan.send and not request.dry_run:
        plan = _freeze(ctx, plan)
    return _with_plan(ctx, plan)


def _sizes(listing: RegistryListing, login: str, references: list[str]) -> dict[str, ArtifactSize]:
    def one(reference: str) -> ArtifactSize:
        ref = ArtifactRef.parse(reference)
        return listing.size(login, ref.repository, ref.reference)

    return dict(zip(references, _parallel(one, references), strict=True))


def _freeze(ctx: TransferContext, plan: sync.SyncPlan) -> sync.SyncPlan:
    """Store the plan under the transfer id; if another run of this transfer froze one first, that one wins."""
    container, sas = _export_container(ctx)
    blob = sync.plan_blob(ctx.route.name, ctx.transfer_id)
    try:
        clients.shared().storage.write_text(container, blob, plan.model_dump_json(), sas, etag=None)
    except WriteConflict:
        stored = read_frozen(ctx)
        if stored is not None:
            return stored
        raise
    return plan


def _with_plan(ctx: TransferContext, plan: sync.SyncPlan) -> TransferContext:
    batches = plan_batches(ctx.route.name, ctx.route.blob_name_template, ctx.transfer_id, plan.batches)
    return replace(ctx, plan=batches, sync=plan)


@task(name="record-exported", **step_options())
@outlasting("ledger update")
def record_exported(ctx: TransferContext, references: list[str]) -> int:
    """Add what this transfer exported successfully to the route's ledger (a conditional write: a concurrent
    writer's entries are kept, and the write tried again). Returns how many entries the ledger holds."""
    if ctx.sync is None:
        return 0
    done = set(references)
    entries = [e for e in ctx.sync.send if e.reference in done]
    container, sas = _export_container(ctx)
    blob = sync.ledger_blob(ctx.route.name)
    for _ in range(LEDGER_WRITE_ATTEMPTS):
        ledger, etag = read_ledger(ctx)
        updated = ledger.with_exported(entries)
        try:
            clients.shared().storage.write_text(container, blob, updated.model_dump_json(), sas, etag=etag)
        except WriteConflict:
            continue
        get_run_logger().info("ledger of route %s: %s exported artifact(s) recorded", ctx.route.name, len(entries))
        return len(updated.exported)
    raise WriteConflict(f"the ledger of route '{ctx.route.name}' kept changing under {LEDGER_WRITE_ATTEMPTS} writes")
