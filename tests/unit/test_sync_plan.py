"""The sync decision (pure): what is sent and skipped, and why; batches that keep referrers with their subject."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from acr_transfer.listing import ArtifactSize, ListedTag, Referrer
from acr_transfer.sync import (
    MAX_LAYER_BYTES,
    Ledger,
    PlanEntry,
    SendReason,
    SkipReason,
    cut_batches,
    decide,
    human_bytes,
    ledger_blob,
    oversized,
    plan_blob,
)

T0 = datetime(2026, 11, 1, tzinfo=UTC)


def digest(n: int) -> str:
    return f"sha256:{n:064x}"


def tag(repo: str, name: str, n: int) -> ListedTag:
    return ListedTag(repo, name, digest(n), T0, T0)


def signature(repo: str, subject: int, n: int) -> Referrer:
    return Referrer(repo, digest(n), digest(subject), "application/vnd.dev.sigstore.bundle.v0.3+json", "m", 10, "api")


def sent(plan) -> dict[str, SendReason]:
    return {e.reference: e.why for e in plan.send}


def skipped(plan) -> dict[str, SkipReason]:
    return {s.reference: s.why for s in plan.skipped}


SELECTED = [tag("app/web", "v1", 1), tag("app/web", "v2", 2), tag("app/api", "v1", 3)]


def test_with_the_target_known_only_new_and_moved_tags_are_sent() -> None:
    target = {"app/web": {"v1": digest(1), "v2": digest(99)}}  # v2 moved in the source; app/api is new
    plan = decide("r", "t1", selected=SELECTED, target_tags=target)
    assert sent(plan) == {"app/api:v1": SendReason.NEW, "app/web:v2": SendReason.CHANGED}
    assert skipped(plan) == {"app/web:v1": SkipReason.IDENTICAL}
    assert (plan.changed, plan.identical) == (2, 1)


def test_everything_identical_sends_nothing_and_says_so() -> None:
    target = {"app/web": {"v1": digest(1), "v2": digest(2)}, "app/api": {"v1": digest(3)}}
    plan = decide("r", "t1", selected=SELECTED, target_tags=target)
    assert plan.send == []
    assert plan.summary() == "0 changed, 3 identical; nothing to export"


def test_full_sends_everything_whatever_the_target_holds() -> None:
    target = {"app/web": {"v1": digest(1), "v2": digest(2)}, "app/api": {"v1": digest(3)}}
    plan = decide("r", "t1", selected=SELECTED, target_tags=target, full=True)
    assert set(sent(plan).values()) == {SendReason.FULL}
    assert len(plan.send) == 3 and plan.skipped == []


def test_skip_none_sends_everything_selected() -> None:
    target = {"app/web": {"v1": digest(1)}}
    plan = decide("r", "t1", selected=SELECTED, target_tags=target, skip_identical=False)
    assert len(plan.send) == 3


def test_an_export_only_route_skips_what_its_ledger_holds_at_the_same_digest() -> None:
    ledger = Ledger(route="r", exported={"app/web:v1": digest(1), "app/web:v2": digest(50)})
    plan = decide("r", "t1", selected=SELECTED, ledger=ledger)
    assert skipped(plan) == {"app/web:v1": SkipReason.IN_LEDGER}
    assert sent(plan) == {"app/web:v2": SendReason.CHANGED, "app/api:v1": SendReason.NEW}


def test_a_new_referrer_of_an_unchanged_image_travels_alone() -> None:
    target = {"app/web": {"v1": digest(1), "v2": digest(2)}, "app/api": {"v1": digest(3)}}
    referrers = {digest(2): [signature("app/web", 2, 70)], digest(1): [signature("app/web", 1, 71)]}
    there = {("app/web", digest(71))}  # v1's signature already arrived earlier
    plan = decide(
        "r", "t1", selected=SELECTED, referrers=referrers, target_tags=target, target_has=lambda r, d: (r, d) in there
    )
    assert sent(plan) == {f"app/web@{digest(70)}": SendReason.REFERRER}
    assert plan.send[0].subject == digest(2)
    assert skipped(plan)[f"app/web@{digest(71)}"] is SkipReason.IDENTICAL


def test_listed_artifacts_are_always_sent_and_exclusions_are_reported() -> None:
    plan = decide(
        "r",
        "t1",
        listed=["base/os"],
        selected=SELECTED[:1],
        excluded=[("app/web:v0-rc1", "exclude_tags '.*-rc\\d+'")],
        target_tags={"app/web": {"v1": digest(1)}},
    )
    assert sent(plan) == {"base/os:latest": SendReason.LISTED}
    rc = next(s for s in plan.skipped if s.why is SkipReason.EXCLUDED)
    assert (rc.reference, rc.rule) == ("app/web:v0-rc1", "exclude_tags '.*-rc\\d+'")
    assert plan.summary().startswith("1 listed, 0 changed, 1 identical, 1 excluded")


def test_batches_keep_a_subject_with_its_referrers_where_they_fit() -> None:
    send = [PlanEntry(reference=f"a:t{i}", digest=digest(i), why=SendReason.NEW) for i in range(4)]
    send.insert(4, PlanEntry(reference="a@s1", digest=digest(100), why=SendReason.REFERRER, subject=digest(3)))
    send.insert(5, PlanEntry(reference="a@s2", digest=digest(101), why=SendReason.REFERRER, subject=digest(3)))
    assert cut_batches(send, 4) == [["a:t0", "a:t1", "a:t2"], ["a:t3", "a@s1", "a@s2"]]
    assert cut_batches(send, 50) == [["a:t0", "a:t1", "a:t2", "a:t3", "a@s1", "a@s2"]]
    # a group larger than a batch is split rather than refused
    assert cut_batches(send, 2) == [["a:t0", "a:t1"], ["a:t2"], ["a:t3", "a@s1"], ["a@s2"]]


@pytest.mark.parametrize("count,size", [(0, 50), (1, 50), (50, 50), (51, 50), (2500, 50), (7, 3)])
def test_batches_hold_every_reference_once_within_the_limit(count: int, size: int) -> None:
    send = [PlanEntry(reference=f"a:t{i}", digest=digest(i), why=SendReason.NEW) for i in range(count)]
    batches = cut_batches(send, size)
    assert [r for b in batches for r in b] == [e.reference for e in send]
    assert all(0 < len(b) <= size for b in batches)
    assert len(batches) == -(-count // size)


def test_an_oversized_layer_is_named_with_its_artifact() -> None:
    sizes = {
        "big/model:v1": ArtifactSize(digest(1), MAX_LAYER_BYTES + 10, MAX_LAYER_BYTES + 1, digest(9)),
        "app/web:v1": ArtifactSize(digest(2), 100, 60, digest(8)),
    }
    lines = oversized(sizes)
    assert len(lines) == 1
    assert lines[0].startswith(f"big/model:v1: layer {digest(9)} is 7.5 GiB (8,000,000,001 bytes)")


def test_ledger_keeps_the_newest_digest_per_reference() -> None:
    ledger = Ledger(route="r", exported={"a:v1": digest(1)})
    after = ledger.with_exported([PlanEntry(reference="a:v1", digest=digest(2), why=SendReason.CHANGED)])
    assert after.holds("a:v1", digest(2)) and not after.holds("a:v1", digest(1))
    assert ledger.holds("a:v1", digest(1))  # the original is not changed


def test_state_blobs_live_under_one_prefix_per_route() -> None:
    assert plan_blob("nightly", "abc123") == "acr-transfer-state/nightly/plans/abc123.json"
    assert ledger_blob("nightly") == "acr-transfer-state/nightly/ledger.json"
    assert human_bytes(1536) == "1.5 KiB" and human_bytes(12) == "12 B"
