"""ARM's read budget, paced in the worker: an azure-core policy on the ARM client's pipeline.

ARM throttles reads per principal and subscription with a token bucket (250 at once, then 25 a second) and tells
every caller how much is left in ``x-ms-ratelimit-remaining-subscription-reads``. That header is the one
counter every worker of a principal shares, so each worker process keeps a local model of ARM's bucket per
subscription — refilled at ARM's rate, corrected by every response's header — and lets a read go only while the
model says more than a reserve is left. Several workers each see their neighbours' reads in the header and slow
down together, with no request to anyone but ARM; a 429 pauses the subscription for its Retry-After.

Optionally (``lease``), a cross-worker share is taken in coarse chunks — e.g. one Prefect rate-limit call per
``chunk`` reads (``tasks/concurrency.py``) — never a request per read.

:class:`ReadBudgetPolicy` applies the pacer to every GET of the pipeline it is in (``per_call_policies``), so
SDK calls and raw requests alike are paced, and nothing is threaded through the adapters.
"""

from __future__ import annotations

import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from azure.core.pipeline import PipelineRequest, PipelineResponse
from azure.core.pipeline.policies import SansIOHTTPPolicy

from acr_transfer.errors import retry_after_from_headers

REMAINING = "x-ms-ratelimit-remaining-subscription-reads"
_SUBSCRIPTION = re.compile(r"/subscriptions/([0-9A-Fa-f-]{36})(?:/|$)")

Lease = Callable[[str, int], None]  # (subscription, reads): blocks until a shared budget grants that many


@dataclass
class _Bucket:
    tokens: float
    stamp: float
    paused_until: float = 0.0
    leased: int = 0
    in_flight: int = 0  # reads this process sent that have not been answered yet
    lock: threading.Lock = field(default_factory=threading.Lock)


@dataclass
class PacerStats:
    """What the pacer did, for benchmarks and tests."""

    reads: int = 0
    waited_seconds: float = 0.0
    throttled: int = 0  # 429s seen
    leases: int = 0  # shared-budget calls (each for ``chunk`` reads)


class ReadPacer:
    """A local model of ARM's read bucket per subscription (see the module docstring).

    Args:
        burst: ARM's bucket size (250).
        per_second: ARM's refill rate (25).
        reserve: reads left to the other workers and to retries: a read waits while the model holds no more.
        lease: optional cross-worker share, called for ``chunk`` reads at a time.
        chunk: reads per lease call.
        clock, sleep: injected by tests.
    """

    def __init__(
        self,
        burst: float,
        per_second: float,
        *,
        reserve: float | None = None,
        lease: Lease | None = None,
        chunk: int = 25,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], object] = time.sleep,
    ) -> None:
        self.burst, self.rate = float(burst), float(per_second)
        # never more than half the bucket: a reserve the bucket cannot exceed would hold every read forever
        self.reserve = min(float(reserve if reserve is not None else max(1.0, burst * 0.1)), self.burst / 2)
        self.lease, self.chunk = lease, max(1, chunk)
        self.clock, self.sleep = clock, sleep
        self.stats = PacerStats()
        self._buckets: dict[str, _Bucket] = {}
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Any, lease: Lease | None = None) -> ReadPacer:
        """ARM's bucket as the settings give it (``read_budget_burst``, ``read_budget_per_second``,
        ``read_budget_reserve``), and an optional cross-worker ``lease``."""
        return cls(
            settings.read_budget_burst,
            settings.read_budget_per_second,
            reserve=settings.read_budget_reserve,
            lease=lease,
            chunk=settings.read_budget_lease_chunk,
        )

    def _bucket(self, subscription: str) -> _Bucket:
        key = subscription.lower()
        with self._lock:
            if key not in self._buckets:
                self._buckets[key] = _Bucket(self.burst, self.clock())
            return self._buckets[key]

    def _refill(self, b: _Bucket, now: float) -> None:
        b.tokens = min(self.burst, b.tokens + (now - b.stamp) * self.rate)
        b.stamp = now

    def take(self, subscription: str) -> float:
        """Wait until a read of ``subscription`` may go; returns the seconds waited."""
        b = self._bucket(subscription)
        waited = 0.0
        while True:
            with b.lock:
                now = self.clock()
                self._refill(b, now)
                if now < b.paused_until:
                    delay = b.paused_until - now
                elif b.tokens - 1 >= self.reserve - 1e-9:
                    b.tokens -= 1
                    b.in_flight += 1
                    need_lease = self.lease is not None and b.leased <= 0
                    if self.lease is not None and not need_lease:
                        b.leased -= 1
                    break
                else:
                    # a bucket smaller than the reserve (a lower tier, a test) is read slowly, never into a 429
                    delay = max((self.reserve + 1 - b.tokens) / self.rate, 0.001)
            self.sleep(delay)
            waited += delay
        if need_lease:
            assert self.lease is not None
            started = self.clock()
            self.lease(subscription, self.chunk)  # outside the lock: it may block on the shared budget
            waited += self.clock() - started
            with b.lock:
                b.leased += self.chunk - 1
            self.stats.leases += 1
        self.stats.reads += 1
        self.stats.waited_seconds += waited
        return waited

    def observe(self, subscription: str, status: int, headers: Any) -> None:
        """Correct the model from a response: ARM's remaining count, and a 429's Retry-After.

        ARM's count may not include this process's other reads still in flight, so they are taken off it: taking
        the count as it is handed them back, and a burst of reads from two workers once met a 429.
        """
        b = self._bucket(subscription)
        remaining = headers.get(REMAINING) if headers is not None else None
        with b.lock:
            now = self.clock()
            self._refill(b, now)
            b.in_flight = max(0, b.in_flight - 1)
            if remaining is not None and str(remaining).isdigit():
                b.tokens = min(self.burst, float(remaining) - b.in_flight)
            if status == 429:
                self.stats.throttled += 1
                retry = retry_after_from_headers(headers) or 1.0
                b.paused_until = max(b.paused_until, now + retry)
                b.tokens = 0.0

    def abandon(self, subscription: str) -> None:
        """A read that got no answer (a dropped connection) is no longer in flight."""
        b = self._bucket(subscription)
        with b.lock:
            b.in_flight = max(0, b.in_flight - 1)

    def remaining(self, subscription: str) -> int:
        """The model's reads left for ``subscription`` now (what the watcher's poll interval adapts to)."""
        b = self._bucket(subscription)
        with b.lock:
            self._refill(b, self.clock())
            return int(b.tokens)


def subscription_of(url: str) -> str | None:
    match = _SUBSCRIPTION.search(url)
    return match.group(1) if match else None


class ReadBudgetPolicy(SansIOHTTPPolicy):
    """Paces every GET of its pipeline through a :class:`ReadPacer` and feeds it every GET's answer."""

    def __init__(self, pacer: ReadPacer) -> None:
        self.pacer = pacer

    def on_request(self, request: PipelineRequest) -> None:
        http = request.http_request
        if http.method == "GET" and (sub := subscription_of(http.url)):
            self.pacer.take(sub)

    def on_response(self, request: PipelineRequest, response: PipelineResponse) -> None:
        http = request.http_request
        if http.method == "GET" and (sub := subscription_of(http.url)):
            self.pacer.observe(sub, response.http_response.status_code, response.http_response.headers)

    def on_exception(self, request: PipelineRequest) -> None:
        http = request.http_request
        if http.method == "GET" and (sub := subscription_of(http.url)):
            self.pacer.abandon(sub)
