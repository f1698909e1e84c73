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
from typing import TypeVar

from acr_transfer.errors import TransientError, classify

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
