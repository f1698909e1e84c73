"""Waiting for a pipeline run: adaptive intervals within a shared read budget, never a fixed 30 s poll.

The next read of a run is scheduled from what the last one said:
- early on, often (``min_seconds``), then stretching with the run's age (10 % of elapsed time), so a
  long transfer costs few reads while a short one is noticed quickly;
- ``progress.percentage`` predicts the finish: elapsed × (100 − p) / p; the next read lands at that
  prediction when it is sooner than the age-based interval — just after it, even sooner than ``min_seconds``
  (down to a fifth of it), when the run says it is about to finish;
- when ARM reports few remaining reads (``x-ms-ratelimit-remaining-subscription-reads`` < 50) every
  interval doubles; a 429's ``Retry-After`` is honoured by the caller's retry (see ``retry.py``).

``watcher.RunWatcher`` applies it, sharing reads among every run a process waits on.
"""

from __future__ import annotations

from dataclasses import dataclass

LOW_READS = 50
PREDICTION_SLACK = 0.05  # seconds after the predicted finish that its read lands


@dataclass
class PollPlan:
    """Bounds of the adaptive interval."""

    min_seconds: float = 0.5
    max_seconds: float = 15.0


def next_delay(elapsed: float, percentage: int | None, remaining_reads: int | None, plan: PollPlan) -> float:
    """Seconds until the next read of a run that has been running ``elapsed`` seconds."""
    delay, floor = elapsed * 0.1, plan.min_seconds
    if percentage is not None and 0 < percentage < 100 and elapsed > 0:
        predicted = elapsed * (100 - percentage) / percentage
        if predicted < delay:
            delay = predicted + PREDICTION_SLACK
            floor = plan.min_seconds / 5  # about to finish: one read just after, not a whole interval later
    delay = min(max(delay, floor), plan.max_seconds)
    if remaining_reads is not None and remaining_reads < LOW_READS:
        delay = min(delay * 2, plan.max_seconds * 2)
    return delay
