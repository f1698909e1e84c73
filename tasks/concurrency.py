"""What keeps concurrent transfers apart and within ARM's limits: route locks and the shared ARM read budget.

Both are Prefect global concurrency limits, so they hold across every process and worker:

- a **route lock** is a one-slot limit ``acr-transfer-route-<route>``, held with a lease that a thread renews,
  so two transfers of one route never run at once;
- the **read budget** is a rate limit ``<read_budget>-<subscription>`` (burst ``read_budget_burst``, refilled
  at ``read_budget_per_second``) that every ARM read takes a slot of, keeping all transfers together below
  ARM's 250 burst and 25/s. ``ensure_read_budget`` creates it when missing (``acr-transfer setup`` does the
  same, idempotently).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx

from acr_transfer.errors import retry_after_seconds
from acr_transfer.settings import Settings

log = logging.getLogger("acr_transfer.budget")
READ_CHUNK = 4
LEASE_SECONDS = 120


def budget_name(subscription: str, settings: Settings) -> str:
    return f"{settings.read_budget}-{subscription.lower()}"


def route_lock_name(route: str) -> str:
    """The concurrency limit (1 slot) that keeps two transfers of one route from running at once."""
    return f"acr-transfer-route-{route}"


def ensure_limit(name: str, limit: int, per_second: float | None = None) -> bool:
    """Create a Prefect global concurrency limit (or rate limit, with ``per_second``) when missing.

    Returns True when it was created now. Idempotent, and safe when two processes race to create it.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(name)
            return False
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=name, limit=limit, slot_decay_per_second=per_second or 0.0)
                )
            except ObjectAlreadyExists:
                return False
    log.info("created Prefect concurrency limit %s (%s%s)", name, limit, f", {per_second}/s" if per_second else "")
    return True


def ensure_read_budget(subscription: str, settings: Settings) -> str:
    """Create the subscription's ARM read rate limit if it does not exist; returns its name."""
    name = budget_name(subscription, settings)
    ensure_limit(name, settings.read_budget_burst, settings.read_budget_per_second)
    return name


def active_slots(name: str) -> int:
    """Slots currently held on a concurrency limit (0 when it does not exist)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return int(client.read_global_concurrency_limit_by_name(name).active_slots)
        except ObjectNotFound:
            return 0


def _retry_after(response: httpx.Response, default: float) -> float:
    """When Prefect's 423 says a slot frees up (seconds or an HTTP date); ``default`` when it does not say."""
    seconds = retry_after_seconds(response.headers.get("Retry-After"))
    return default if seconds is None else seconds


class PrefectApi:
    """One sync Prefect API client, opened on first use and shared by every thread (httpx is thread-safe)."""

    def __init__(self) -> None:
        self._client: Any = None
        self._lock = threading.Lock()

    def __call__(self) -> Any:
        with self._lock:
            if self._client is None:
                from prefect.client.orchestration import get_client

                client = get_client(sync_client=True)
                client.__enter__()
                self._client = client
            return self._client

    def close(self) -> None:
        with self._lock:
            client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):
                client.__exit__(None, None, None)


@contextmanager
def route_lock(route: str, wait_seconds: float | None = None, api: PrefectApi | None = None) -> Iterator[None]:
    """Hold the route's one-slot lock (a Prefect concurrency limit, with a lease renewed while held).

    Taken straight through the API: Prefect's ``concurrency()`` queues acquisitions through a service that,
    with 50 routes starting at once on SQLite, took over a minute for some of them.

    Raises:
        TimeoutError: the lock was not free within ``wait_seconds`` (None: wait as long as it takes).
    """
    from prefect.exceptions import PrefectHTTPStatusError

    own_api = api is None
    api = api or PrefectApi()
    name = route_lock_name(route)
    ensure_limit(name, 1)
    deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
    while True:
        try:
            answer = api().increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
            )
            lease_id = answer.json()["lease_id"]
            break
        except PrefectHTTPStatusError as e:
            if e.response.status_code != 423:
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"route {route} is locked by another transfer") from None
            time.sleep(min(_retry_after(e.response, 1.0) or 1.0, 5))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_SECONDS / 3):
            with contextlib.suppress(Exception):  # a missed renewal is retried at the next tick
                api().renew_concurrency_lease(lease_id, LEASE_SECONDS)

    renewer = threading.Thread(target=renew, name=f"lease-{route}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):  # an expired lease frees the slot by itself
            api().release_concurrency_slots_with_lease(lease_id)
        if own_api:
            api.close()


class ReadBudget:
    """The shared ARM read budget, spent a few reads per Prefect API call (see the module docstring).

    This is ``prefect.concurrency.sync.rate_limit`` done directly: inside a task run, Prefect routes that call
    through its slot-acquisition service, which added about 2 s to every read here; the API call itself takes
    milliseconds. A 423 (budget empty) is retried after its Retry-After, as Prefect's own service does.
    """

    def __init__(self, settings: Settings, api: PrefectApi | None = None) -> None:
        self.settings = settings
        self.api = api or PrefectApi()
        self._known: set[str] = set()
        self._prepaid: dict[str, int] = {}
        self._lock = threading.Lock()
        self._last_warning = 0.0

    def spend(self, subscription: str) -> None:
        """Take one ARM read from the budget (blocks while it is empty)."""
        from prefect.exceptions import PrefectHTTPStatusError

        name = budget_name(subscription, self.settings)
        with self._lock:
            if name not in self._known:
                ensure_read_budget(subscription, self.settings)
                self._known.add(name)
            if self._prepaid.get(name, 0) > 0:  # a read already paid for by the last chunk
                self._prepaid[name] -= 1
                return
        while True:
            try:
                # a few reads per API call: each call is a write on the Prefect server, which on SQLite stalls
                # under concurrent writes; the budget stays exact, only its accounting is batched
                self.api().increment_concurrency_slots(names=[name], slots=READ_CHUNK, mode="rate_limit")
                break
            except PrefectHTTPStatusError as e:
                if e.response.status_code == 423:
                    time.sleep(_retry_after(e.response, 0.1))
                    continue
                if e.response.status_code < 500:
                    raise
                self._unavailable(name, f"{e.response.status_code} from the Prefect API")
                return
            except httpx.HTTPError as e:
                self._unavailable(name, type(e).__name__)
                return
        with self._lock:
            self._prepaid[name] = self._prepaid.get(name, 0) + READ_CHUNK - 1

    def _unavailable(self, name: str, why: str) -> None:
        """The budget is a courtesy to ARM, whose own 429 + Retry-After stays the safety net: when Prefect cannot
        count a read (its API is overloaded after its own retries), the read goes ahead, with a warning a minute."""
        if time.monotonic() - self._last_warning > 60:
            self._last_warning = time.monotonic()
            log.warning("ARM read budget %s could not be counted (%s); reading anyway", name, why)

    def close(self) -> None:
        self.api.close()
