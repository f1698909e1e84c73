"""The worker's model of ARM's read bucket: refilled at ARM's rate, corrected by ARM's remaining-reads header,
paused by a 429's Retry-After, and leased from a shared budget a chunk at a time."""

from __future__ import annotations

import pytest

from acr_transfer.azure.read_budget import REMAINING, ReadPacer, subscription_of

SUB = "00000000-0000-0000-0000-000000000001"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def pacer(clock: Clock, **kw: object) -> ReadPacer:
    return ReadPacer(250, 25, reserve=25, clock=clock, sleep=clock.sleep, **kw)  # type: ignore[arg-type]


def test_a_burst_goes_at_once_then_reads_follow_the_refill_rate() -> None:
    clock = Clock()
    p = pacer(clock)
    for _ in range(225):  # 250 less the reserve
        assert p.take(SUB) == 0
    for _ in range(50):
        p.take(SUB)
    assert clock.now == pytest.approx(50 / 25, rel=0.05)  # then 25 a second


def test_the_header_is_the_truth_other_workers_spend_too() -> None:
    clock = Clock()
    p = pacer(clock)
    p.take(SUB)
    p.observe(SUB, 200, {REMAINING: "30"})  # another worker spent most of the bucket
    waited = sum(p.take(SUB) for _ in range(10))
    # 30 → 25 (the reserve) goes at once; the other 5 wait for ARM to refill, 1/25 s each
    assert waited == pytest.approx(6 / 25, abs=0.05)
    assert p.remaining(SUB) <= 26


def test_reads_still_in_flight_are_taken_off_the_header_not_handed_back() -> None:
    clock = Clock()
    p = pacer(clock)
    for _ in range(10):  # ten reads sent, none answered yet
        p.take(SUB)
    p.observe(SUB, 200, {REMAINING: "40"})  # the first answer: ARM may not have counted the other nine
    assert p.remaining(SUB) == 31
    assert sum(p.take(SUB) == 0 for _ in range(10)) == 6  # down to the reserve of 25, then paced
    p.abandon(SUB)  # a read whose connection dropped is not in flight any more
    p.observe(SUB, 200, {REMAINING: "40"})
    assert p.remaining(SUB) == 40 - 17  # 9 + 10 sent, one answered, one dropped: 17 still out


def test_a_429_pauses_the_subscription_for_its_retry_after() -> None:
    clock = Clock()
    p = pacer(clock)
    p.observe(SUB, 429, {"Retry-After": "3", REMAINING: "0"})
    waited = p.take(SUB)
    assert waited >= 3 and p.stats.throttled == 1


def test_a_bucket_smaller_than_the_reserve_is_read_slowly_never_emptied() -> None:
    clock = Clock()
    p = pacer(clock)
    actual = 9.0  # ARM's bucket of 10, refilled 5 a second (a lower tier, a test): below the reserve of 25
    for _ in range(20):
        before = clock.now
        p.take(SUB)
        actual = min(10.0, actual + (clock.now - before) * 5) - 1
        assert actual >= 0  # never a read into an empty bucket
        p.observe(SUB, 200, {REMAINING: str(int(actual))})


def test_a_shared_budget_is_leased_a_chunk_at_a_time() -> None:
    clock = Clock()
    leases: list[tuple[str, int]] = []
    p = pacer(clock, lease=lambda sub, n: leases.append((sub, n)), chunk=25)
    for _ in range(60):
        p.take(SUB)
    assert leases == [(SUB, 25)] * 3 and p.stats.leases == 3  # 60 reads, 3 calls: never one per read


def test_subscriptions_are_paced_apart_and_found_in_urls() -> None:
    clock = Clock()
    p = pacer(clock)
    other = "00000000-0000-0000-0000-000000000002"
    p.observe(SUB, 429, {"Retry-After": "10"})
    assert p.take(other) == 0  # another subscription's bucket is its own
    assert subscription_of(f"https://management.azure.com/subscriptions/{SUB}/resourceGroups/rg?x=1") == SUB
    assert subscription_of("https://management.azure.com/tenants?api-version=2022-12-01") is None


def test_a_budget_smaller_than_the_reserve_still_reads() -> None:
    clock = Clock()
    p = ReadPacer(16, 2, reserve=25, clock=clock, sleep=clock.sleep)  # ACR_TRANSFER_READ_BUDGET_BURST=16
    for _ in range(20):
        p.take(SUB)
    assert p.reserve == 8 and clock.now < 60  # the reserve is capped at half the bucket; reads go on
