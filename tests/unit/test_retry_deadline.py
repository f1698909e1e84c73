"""Transient failures of a step are retried until the route's deadline, with capped, jittered backoff."""

from __future__ import annotations

import pytest

from acr_transfer.errors import AuthError, ServiceUnavailableError, ThrottledError
from acr_transfer.retry import GaveUp, Retrying, call_until_deadline


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.pauses: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds


UNAVAILABLE = ServiceUnavailableError("storage answered 503")


def failing(times: int, error: Exception = UNAVAILABLE):
    calls = {"n": 0}

    def fn() -> str:
        calls["n"] += 1
        if calls["n"] <= times:
            raise error
        return "done"

    return fn, calls


def test_an_outage_shorter_than_the_deadline_costs_time_not_the_step() -> None:
    clock = Clock()
    fn, calls = failing(40)  # far more than any fixed retry count
    told: list[Retrying] = []
    result = call_until_deadline(
        fn, "bridge (batch 1)", 1800, base_delay=1, max_delay=30, on_retry=told.append, clock=clock, sleep=clock.sleep
    )
    assert result == "done" and calls["n"] == 41
    assert max(clock.pauses) <= 30  # capped
    assert all(a < b for a, b in zip([t.seconds for t in told], [t.seconds for t in told][1:], strict=False))
    assert told[0].attempts == 1 and told[-1].attempts == 40
    assert "bridge (batch 1): failing since" in told[-1].line() and "storage answered 503" in told[-1].line()


def test_the_pauses_grow_with_jitter_up_to_the_cap() -> None:
    clock = Clock()
    fn, _ = failing(8)
    call_until_deadline(fn, "x", 3600, base_delay=1, max_delay=10, clock=clock, sleep=clock.sleep)
    for attempt, pause in enumerate(clock.pauses, start=1):
        ceiling = min(10, 2 ** (attempt - 1))
        assert ceiling / 2 <= pause <= ceiling


def test_giving_up_at_the_deadline_names_the_outage() -> None:
    clock = Clock()
    fn, calls = failing(10_000)
    with pytest.raises(GaveUp) as e:
        call_until_deadline(fn, "export (batch 2)", 120, base_delay=1, max_delay=30, clock=clock, sleep=clock.sleep)
    assert clock.now == pytest.approx(120)  # the last pause ends at the deadline, not past it
    message = str(e.value)
    assert message.startswith("export (batch 2) failed for 120 s")
    assert "storage answered 503" in message and "deadline of 2 min" in message
    assert calls["n"] > 5


def test_a_retry_after_is_honoured_but_never_past_the_deadline() -> None:
    clock = Clock()
    fn, _ = failing(1, ThrottledError("429 Too Many Requests", retry_after=50))
    call_until_deadline(fn, "x", 20, base_delay=1, max_delay=30, clock=clock, sleep=clock.sleep)
    assert clock.pauses == [20]


def test_a_permanent_error_is_raised_at_once() -> None:
    clock = Clock()
    fn, calls = failing(3, AuthError("403 from vault"))
    with pytest.raises(AuthError):
        call_until_deadline(fn, "x", 600, clock=clock, sleep=clock.sleep)
    assert calls["n"] == 1 and clock.pauses == []
