"""Retry one Azure SDK call on transient errors, honouring the service's Retry-After.

The storage SDK's own retry policy ignores ``Retry-After`` and backs off for 15 s and more, so the storage
adapter builds its clients with ``retry_total=0`` and wraps every call in :func:`call_with_retries`, which
keys on the error taxonomy of :mod:`acr_transfer.errors` and nothing else: a ``TransientError`` is tried
again, a ``PermanentError`` is raised at once.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

from acr_transfer.errors import PermanentError, TransientError, classify

T = TypeVar("T")


def backoff_delay(attempt: int, base_delay: float, max_delay: float, retry_after: float | None = None) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based).

    Exponential (``base_delay * 2**(attempt-1)``, capped at ``max_delay``) with "equal jitter": a random
    value in the upper half, so concurrent callers spread out but nobody retries immediately. A
    ``retry_after`` from the service is a floor, never shortened by ``max_delay``: the service asked for it.
    """
    ceiling = min(max_delay, base_delay * 2 ** (attempt - 1))
    delay = random.uniform(ceiling / 2, ceiling)
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def call_with_retries(
    fn: Callable[[], T],
    what: str,
    *,
    attempts: int = 4,
    base_delay: float = 0.5,
    max_delay: float = 30,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Run ``fn()``; retry it while it fails with a transient error.

    Args:
        fn: the call, without arguments (bind them with a lambda or ``functools.partial``).
        what: names the call for error messages, e.g. ``"read properties of blob 'x' in container https://…"``;
            it must not contain a SAS signature (messages are redacted anyway).
        attempts: how many times ``fn`` may run in total (at least 1).
        base_delay: the first backoff in seconds; it doubles per attempt, with jitter.
        max_delay: the longest backoff in seconds (a longer Retry-After is still honoured).
        sleep: how to wait; tests pass a recorder.

    Returns:
        What ``fn`` returned.

    Raises:
        PermanentError: at once, on the first permanent failure (any exception is classified).
        TransientError: the last attempt's error when every attempt failed transiently.
    """
    attempts = max(1, attempts)
    for attempt in range(1, attempts + 1):
        try:
            return fn()
        except Exception as exc:
            error = classify(exc, what)
            if not isinstance(error, TransientError) or attempt == attempts:
                if error is exc:
                    raise
                # `from None`: the SDK's exception text can carry the request URL with its SAS query,
                # and a chained cause is printed (and stored by Prefect) unredacted
                raise error from None
            sleep(backoff_delay(attempt, base_delay, max_delay, error.retry_after))
    raise AssertionError("unreachable")  # pragma: no cover - the loop always returns or raises


@dataclass(frozen=True)
class Retrying:
    """A step keeps failing transiently: what a person should see while it is retried."""

    what: str
    since: datetime
    seconds: float
    attempts: int
    last_error: str
    seconds_left: float

    def line(self) -> str:
        return (
            f"{self.what}: failing since {self.since:%H:%M:%S} UTC ({self.seconds:.0f} s, {self.attempts} "
            f"attempts; last: {self.last_error}); retrying for up to {max(self.seconds_left, 0) / 60:.1f} min more"
        )


class GaveUp(PermanentError):
    """A step failed transiently until its deadline: ``str()`` names the outage; the caller adds how to resume."""


def call_until_deadline(
    fn: Callable[[], T],
    what: str,
    deadline_seconds: float,
    *,
    base_delay: float = 1.0,
    max_delay: float = 30,
    on_retry: Callable[[Retrying], object] = lambda _: None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> T:
    """Run ``fn()``; while it fails with a transient error, run it again with capped backoff and jitter until
    ``deadline_seconds`` after the first attempt: an outage shorter than the route's deadline costs time, not
    the transfer.

    Args:
        fn: the step, without arguments; it must be safe to run again (every step is idempotent).
        what: names the step for messages, e.g. ``"export batch 2"``.
        deadline_seconds: how long transient failures are retried (the route's ``timeout_minutes``).
        base_delay: the first pause in seconds; it doubles per attempt, up to ``max_delay`` (a longer
            Retry-After from the service is honoured, but never past the deadline).
        on_retry: told before each pause what is failing and since when.
        clock, sleep: injected by tests.

    Raises:
        PermanentError: at once, on a permanent failure (any exception is classified).
        GaveUp: transient failures lasted until the deadline; the message names the last one.
    """
    started, since = clock(), datetime.now(UTC)
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            error = classify(exc, what)
            if not isinstance(error, TransientError):
                if error is exc:
                    raise
                raise error from None
            attempt += 1
            elapsed = clock() - started
            left = deadline_seconds - elapsed
            if left <= 0:
                raise GaveUp(
                    f"{what} failed for {elapsed:.0f} s ({attempt} attempts, since {since:%H:%M:%S} UTC) until "
                    f"the route's deadline of {deadline_seconds / 60:.0f} min; last: {error.message}"
                ) from None
            on_retry(Retrying(what, since, elapsed, attempt, error.message, left))
            sleep(min(backoff_delay(attempt, base_delay, max_delay, error.retry_after), left))
