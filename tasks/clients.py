"""The adapters a worker process shares, and the shared ARM read budget they spend.

Every ARM read takes one slot of a Prefect global concurrency *rate limit* named
``<read_budget>-<subscription>`` (burst ``read_budget_burst``, refilled at ``read_budget_per_second``), so
concurrent transfers in any number of processes and workers share one budget below ARM's 250/25 per s.
``ensure_read_budget`` creates the limit when missing (``acr-transfer setup`` does the same, idempotently).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any

import httpx

from acr_transfer.azure.acr_data import RegistryDataPlane
from acr_transfer.azure.keyvault import KeyVaultSecrets
from acr_transfer.azure.registry import RegistryAddress, RegistryArm
from acr_transfer.azure.storage import BlobStorage
from acr_transfer.polling import PollPlan
from acr_transfer.settings import Settings, get_credential, get_settings
from acr_transfer.watcher import RunWatcher

log = logging.getLogger("acr_transfer.budget")
_known: set[str] = set()
READ_CHUNK = 4
_local_reads: dict[str, int] = {}
_local_lock = threading.Lock()
_known_lock = threading.Lock()


def budget_name(subscription: str, settings: Settings | None = None) -> str:
    settings = settings or get_settings()
    return f"{settings.read_budget}-{subscription.lower()}"


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


def ensure_read_budget(subscription: str, settings: Settings | None = None) -> str:
    """Create the subscription's ARM read rate limit if it does not exist; returns its name."""
    settings = settings or get_settings()
    name = budget_name(subscription, settings)
    ensure_limit(name, settings.read_budget_burst, settings.read_budget_per_second)
    return name


def route_lock_name(route: str) -> str:
    """The concurrency limit (1 slot) that keeps two transfers of one route from running at once."""
    return f"acr-transfer-route-{route}"


LEASE_SECONDS = 120


@contextmanager
def route_lock(route: str, wait_seconds: float | None = None) -> Iterator[None]:
    """Hold the route's one-slot lock (a Prefect concurrency limit, with a lease renewed while held).

    Taken straight through the API: Prefect's ``concurrency()`` queues acquisitions through a service that,
    with 50 routes starting at once on SQLite, took over a minute for some of them.

    Raises:
        TimeoutError: the lock was not free within ``wait_seconds`` (None: wait as long as it takes).
    """
    from prefect.exceptions import PrefectHTTPStatusError

    name = route_lock_name(route)
    ensure_limit(name, 1)
    deadline = None if wait_seconds is None else time.monotonic() + wait_seconds
    while True:
        try:
            answer = _api().increment_concurrency_slots_with_lease(
                names=[name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
            )
            lease_id = answer.json()["lease_id"]
            break
        except PrefectHTTPStatusError as e:
            if e.response.status_code != 423:
                raise
            if deadline is not None and time.monotonic() >= deadline:
                raise TimeoutError(f"route {route} is locked by another transfer") from None
            time.sleep(min(float(e.response.headers.get("Retry-After", "1") or 1), 5))
    stop = threading.Event()

    def renew() -> None:
        while not stop.wait(LEASE_SECONDS / 3):
            with contextlib.suppress(Exception):  # a missed renewal is retried at the next tick
                _api().renew_concurrency_lease(lease_id, LEASE_SECONDS)

    renewer = threading.Thread(target=renew, name=f"lease-{route}", daemon=True)
    renewer.start()
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(Exception):  # an expired lease frees the slot by itself
            _api().release_concurrency_slots_with_lease(lease_id)


def active_slots(name: str) -> int:
    """Slots currently held on a concurrency limit (0 when it does not exist)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            return int(client.read_global_concurrency_limit_by_name(name).active_slots)
        except ObjectNotFound:
            return 0


def spend_read(subscription: str) -> None:
    """Take one ARM read from the shared budget (blocks while the budget is empty).

    This is ``prefect.concurrency.sync.rate_limit`` done directly: inside a task run, Prefect routes that call
    through its slot-acquisition service, which added about 2 s to every read here; the API call itself takes
    milliseconds. A 423 (budget empty) is retried after its Retry-After, as Prefect's own service does.
    """
    from prefect.exceptions import PrefectHTTPStatusError

    name = budget_name(subscription)
    if name not in _known:
        with _known_lock:
            if name not in _known:
                ensure_read_budget(subscription)
                _known.add(name)
    with _local_lock:
        if _local_reads.get(name, 0) > 0:  # a read already paid for by the last chunk
            _local_reads[name] -= 1
            return
    while True:
        try:
            # a few reads per API call: each call is a write on the Prefect server, which on SQLite stalls
            # under concurrent writes; the budget stays exact, only its accounting is batched
            _api().increment_concurrency_slots(names=[name], slots=READ_CHUNK, mode="rate_limit")
            break
        except PrefectHTTPStatusError as e:
            if e.response.status_code == 423:
                time.sleep(float(e.response.headers.get("Retry-After", "0.1") or 0.1))
                continue
            if e.response.status_code < 500:
                raise
            _budget_unavailable(name, f"{e.response.status_code} from the Prefect API")
            return
        except httpx.HTTPError as e:
            _budget_unavailable(name, type(e).__name__)
            return
    with _local_lock:
        _local_reads[name] = _local_reads.get(name, 0) + READ_CHUNK - 1


_last_warning = [0.0]


def _budget_unavailable(name: str, why: str) -> None:
    """The budget is a courtesy to ARM, whose own 429 + Retry-After stays the safety net: when Prefect cannot
    count a read (its API is overloaded after its own retries), the read goes ahead, with a warning a minute."""
    if time.monotonic() - _last_warning[0] > 60:
        _last_warning[0] = time.monotonic()
        log.warning("ARM read budget %s could not be counted (%s); reading anyway", name, why)


@lru_cache(maxsize=1)
def _api() -> Any:
    """One Prefect API client for budget reads, shared by every thread (its httpx client is thread-safe)."""
    from prefect.client.orchestration import get_client

    client = get_client(sync_client=True)
    client.__enter__()
    return client


@lru_cache(maxsize=1)
def arm() -> RegistryArm:
    return RegistryArm(get_settings(), get_credential(), before_read=spend_read)


@lru_cache(maxsize=1)
def watcher() -> RunWatcher:
    """The process's one run watcher: every wait shares its reads."""
    settings = get_settings()
    return RunWatcher(arm(), PollPlan(settings.poll_min_seconds, settings.poll_max_seconds))


@lru_cache(maxsize=1)
def data_plane() -> RegistryDataPlane:
    return RegistryDataPlane(get_settings(), get_credential())


@lru_cache(maxsize=64)
def login_server(registry: RegistryAddress) -> str:
    """A registry's login server, read once per process."""
    return arm().login_server(registry)


@lru_cache(maxsize=1)
def vault() -> KeyVaultSecrets:
    return KeyVaultSecrets(get_settings(), get_credential())


@lru_cache(maxsize=1)
def storage() -> BlobStorage:
    return BlobStorage(get_settings(), get_credential())
