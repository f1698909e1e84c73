"""Waiting for a pipeline run: adaptive intervals within a shared read budget, never a fixed 30 s poll.

The next read of a run is scheduled from what the last one said:
- early on, often (``min_seconds``), then stretching with the run's age (10 % of elapsed time), so a
  long transfer costs few reads while a short one is noticed quickly;
- ``progress.percentage`` predicts the finish: elapsed × (100 − p) / p; the next read lands at that
  prediction when it is sooner than the age-based interval;
- when ARM reports few remaining reads (``x-ms-ratelimit-remaining-subscription-reads`` < 50) every
  interval doubles; a 429's ``Retry-After`` is honoured by the caller's retry (see ``retry.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from acr_transfer.azure.registry import RunState
from acr_transfer.errors import NotFoundError, RunTimeoutError, TransientError

LOW_READS = 50


@dataclass
class PollPlan:
    """Bounds of the adaptive interval."""

    min_seconds: float = 0.5
    max_seconds: float = 15.0


def next_delay(elapsed: float, percentage: int | None, remaining_reads: int | None, plan: PollPlan) -> float:
    """Seconds until the next read of a run that has been running ``elapsed`` seconds."""
    delay = elapsed * 0.1
    if percentage is not None and 0 < percentage < 100 and elapsed > 0:
        predicted = elapsed * (100 - percentage) / percentage
        delay = min(delay, predicted)
    delay = min(max(delay, plan.min_seconds), plan.max_seconds)
    if remaining_reads is not None and remaining_reads < LOW_READS:
        delay = min(delay * 2, plan.max_seconds * 2)
    return delay


def wait_for_run(
    read: Callable[[], RunState | None],
    *,
    name: str,
    timeout: float,
    plan: PollPlan,
    remaining_reads: Callable[[], int | None] = lambda: None,
    on_progress: Callable[[RunState], None] = lambda state: None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    started_elapsed: float = 0.0,
) -> RunState:
    """Read the run until it is terminal; returns the terminal state (Succeeded or Failed).

    Args:
        read: one GET of the run (None when it does not exist).
        timeout: seconds this wait may take before ``RunTimeoutError``.
        started_elapsed: how long the run had been going before this wait began (resume).

    Raises:
        NotFoundError: the run disappeared (deleted by someone).
        RunTimeoutError: still running after ``timeout`` seconds.
        TransientError: from ``read`` after its own retries gave up.
    """
    start = clock()
    while True:
        state = _read_tolerating_blips(read, sleep)
        if state is None:
            raise NotFoundError(f"pipeline run '{name}' disappeared while being watched (was it deleted?)")
        on_progress(state)
        if state.terminal:
            return state
        waited = clock() - start
        if waited >= timeout:
            raise RunTimeoutError(
                f"pipeline run '{name}' is still {state.status or state.provisioning_state} after {waited:.0f} s "
                f"(timeout {timeout:.0f} s); it keeps running in ACR — raise timeout_minutes or re-run to resume it"
            )
        delay = next_delay(started_elapsed + waited, state.percentage, remaining_reads(), plan)
        sleep(min(delay, max(timeout - waited, 0.05)))


def _read_tolerating_blips(read: Callable[[], RunState | None], sleep: Callable[[float], None]) -> RunState | None:
    """A transient read failure (after the SDK's own retries) is worth a few more tries before giving up."""
    for attempt in range(3):
        try:
            return read()
        except TransientError as e:
            if attempt == 2:
                raise
            sleep(max(e.retry_after or 0, 1.0 * (attempt + 1)))
    return None  # unreachable


__all__ = ["NotFoundError", "PollPlan", "next_delay", "wait_for_run"]
