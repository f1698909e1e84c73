"""Calls that must reach Prefect (the route lock, the summary) are retried at short intervals while the server
says "later", never on an answer that retrying cannot change."""

from __future__ import annotations

from collections.abc import Callable

import httpx
import pytest
from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

from tasks import bookkeeping
from tasks.bookkeeping import patiently


def answer(status: int, headers: dict[str, str] | None = None) -> httpx.HTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/v2/concurrency_limits/increment-with-lease")
    response = httpx.Response(status, headers=headers, request=request)
    return httpx.HTTPStatusError(f"{status}", request=request, response=response)


def failing(*errors: Exception) -> tuple[Callable[[], str], list[int]]:
    """A call that raises ``errors`` one per try, then answers "ok"; and the client retries each try saw."""
    left, seen = list(errors), []

    def call() -> str:
        seen.append(PREFECT_CLIENT_MAX_RETRIES.value())
        if left:
            raise left.pop(0)
        return "ok"

    return call, seen


@pytest.fixture
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    waited: list[float] = []
    monkeypatch.setattr(bookkeeping.time, "sleep", waited.append)
    return waited


def test_a_503_is_tried_again_after_50_ms_then_100_ms_jittered(sleeps: list[float]) -> None:
    call, seen = failing(answer(503), answer(503), answer(503))
    assert patiently(call) == "ok"
    assert len(sleeps) == 3
    for slept, interval in zip(sleeps, (0.05, 0.1, 0.2), strict=True):
        assert interval / 2 <= slept <= interval
    assert seen == [0, 0, 0, 0]  # each try without the client's own retries, whose first waits 2 s


def test_a_dropped_connection_is_tried_again(sleeps: list[float]) -> None:
    call, seen = failing(httpx.ConnectError("connection refused"))
    assert patiently(call) == "ok"
    assert len(seen) == 2


def test_a_429_waits_what_its_retry_after_asks(sleeps: list[float]) -> None:
    call, _ = failing(answer(429, {"Retry-After": "1.5"}))
    assert patiently(call) == "ok"
    assert sleeps == [1.5]


@pytest.mark.parametrize("status", [400, 404, 409, 423])
def test_an_answer_retrying_cannot_change_is_raised_at_once(sleeps: list[float], status: int) -> None:
    call, seen = failing(answer(status))
    with pytest.raises(httpx.HTTPStatusError) as raised:
        patiently(call)
    assert raised.value.response.status_code == status
    assert len(seen) == 1 and sleeps == []


def test_it_gives_up_after_its_patience_with_the_last_error(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [1000.0]
    monkeypatch.setattr(bookkeeping.time, "monotonic", lambda: clock[0])
    monkeypatch.setattr(bookkeeping.time, "sleep", lambda s: clock.__setitem__(0, clock[0] + s))
    call, seen = failing(*[answer(503) for _ in range(100)])
    with pytest.raises(httpx.HTTPStatusError):
        patiently(call, within=10)
    assert clock[0] - 1000 <= 10
    # 50 ms doubling to 2 s, each interval jittered to half to all of itself: whole intervals put the tenth try
    # at 0.05+0.1+0.2+0.4+0.8+1.6+2+2+2 = 9.15 s; half intervals put the fifteenth at 1.575 + 8 × 1 = 9.575 s
    assert 10 <= len(seen) <= 15


def test_other_errors_are_raised_at_once(sleeps: list[float]) -> None:
    call, seen = failing(ValueError("not an HTTP failure"))
    with pytest.raises(ValueError):
        patiently(call)
    assert len(seen) == 1
