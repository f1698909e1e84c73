"""What keeps concurrent transfers apart and within ARM's limits: route locks and the shared ARM read budget.

Both are Prefect global concurrency limits, so they hold across every process and worker:

- a **route lock** is a one-slot limit ``acr-transfer-route-<route>``, held with a lease that a thread renews,
  so two transfers of one route never run at once. Its holder (transfer id, flow run, lease) is recorded in the
  Prefect variable ``acr_transfer_lock_<route>``, so a lock cannot strand: a waiter reclaims a slot whose holder's
  flow run has ended, or that nobody has recorded (Prefect 3.9 keeps leases in memory by default, and a server
  restart forgets them while the slot stays counted); a holder whose lease was forgotten takes it back before
  its next pipeline run (:func:`ensure_route_held`);
- the optional **shared read budget** (``ACR_TRANSFER_READ_BUDGET_SHARED=prefect``) is a rate limit
  ``<read_budget>-<subscription>`` (burst ``read_budget_burst``, refilled at ``read_budget_per_second``) that
  each worker's read pacer (``acr_transfer/azure/read_budget.py``) leases ``read_budget_lease_chunk`` reads of
  at a time. By default workers share ARM's own remaining-reads counter instead, and make no Prefect call for
  reads. ``ensure_read_budget`` creates it when missing (``acr-transfer setup`` does the same, idempotently).
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import httpx

from acr_transfer.errors import retry_after_seconds
from acr_transfer.settings import Settings
from tasks.bookkeeping import RETRYABLE_STATUSES, patiently, quick

log = logging.getLogger("acr_transfer.budget")
LEASE_SECONDS = 120  # Prefect takes 60 s at least
RENEW_SECONDS = LEASE_SECONDS / 3  # how often a held lease is renewed (and a lost one noticed)
STALE_AFTER = 10.0  # seconds a taken slot may go without a recorded holder before it counts as stranded


def budget_name(subscription: str, settings: Settings) -> str:
    return f"{settings.read_budget}-{subscription.lower()}"


def route_lock_name(route: str) -> str:
    """The concurrency limit (1 slot) that keeps two transfers of one route from running at once."""
    return f"acr-transfer-route-{route}"


def ensure_limit(name: str, limit: int, per_second: float | None = None, api: PrefectApi | None = None) -> bool:
    """Create a Prefect global concurrency limit (or rate limit, with ``per_second``) when missing.

    Returns True when it was created now. Idempotent, and safe when two processes race to create it.
    """
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    client = api or PrefectApi()
    try:
        client().read_global_concurrency_limit_by_name(name)
        return False
    except ObjectNotFound:
        try:
            client().create_global_concurrency_limit(
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


def active_slots(name: str, api: PrefectApi | None = None) -> int:
    """Slots currently held on a concurrency limit (0 when it does not exist)."""
    from prefect.exceptions import ObjectNotFound

    client = api or PrefectApi()
    try:
        return int(client().read_global_concurrency_limit_by_name(name).active_slots)
    except ObjectNotFound:
        return 0


def _retry_after(response: httpx.Response, default: float) -> float:
    """When Prefect's 423 says a slot frees up (seconds or an HTTP date); ``default`` when it does not say."""
    seconds = retry_after_seconds(response.headers.get("Retry-After"))
    return default if seconds is None else seconds


class PrefectApi:
    """Our own calls to the Prefect API (route locks, holders, resume records), through this process's one client
    for the API in use (:func:`_our_client`), shared by every thread (httpx is thread-safe).

    ``api().<method>(...)`` makes the call :func:`~tasks.bookkeeping.patiently`: retried at short intervals
    while the server says "later" (a route lock taken or released on the client's 2-s backoff holds a transfer
    up by as much); :meth:`client` is the client itself. Nothing to close: the client is open until the process
    exits.
    """

    def client(self) -> Any:
        return _our_client()

    def __call__(self) -> Any:
        return _Patient(self.client())


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _our_client() -> Any:
    """This process's client for our own calls to the Prefect API at ``PREFECT_API_URL`` (one per URL), opened on
    first use and closed at exit.

    One for the process, not one per lock or route: each client builds its own TLS context (the CA bundle parsed
    again) and connection pool, and a sync of 100 routes made 300 of them, 115 MiB and 12 s of CPU more than one.
    The engine's own client cannot be used: it lacks :func:`_last_try`.
    """
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL

    url = str(PREFECT_API_URL.value())
    with _clients_lock:
        client = _clients.get(url)
        if client is None:
            client = get_client(sync_client=True, httpx_settings={"event_hooks": {"response": [_last_try]}})
            client.__enter__()
            if not _clients:
                atexit.register(_close_clients)
            _clients[url] = client
        return client


def _close_clients() -> None:
    with _clients_lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        with contextlib.suppress(Exception):
            client.__exit__(None, None, None)


def _last_try(response: httpx.Response) -> None:
    """A "later" answer to a call tried once (:func:`~tasks.bookkeeping.quick`) is returned at once.

    Prefect 3.9's client sleeps its backoff (2 s for the first) after a 408/429/502/503 even when no retry
    follows — with ``PREFECT_CLIENT_MAX_RETRIES=0`` too — unless the answer carries a Retry-After. So a call
    tried once that met SQLite's momentary 503 came back 2 s late; :func:`~tasks.bookkeeping.patiently` does the
    waiting instead. Calls with the client's own retries are left as they are.
    """
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    later = response.status_code in RETRYABLE_STATUSES and "Retry-After" not in response.headers
    if later and PREFECT_CLIENT_MAX_RETRIES.value() == 0:
        response.headers["Retry-After"] = "0"


class _Patient:
    """A Prefect client whose method calls go through :func:`~tasks.bookkeeping.patiently`."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)

        def call(*args: Any, **kwargs: Any) -> Any:
            return patiently(lambda: method(*args, **kwargs))

        return call


@dataclass(frozen=True)
class LockHolder:
    """Who holds a route's lock, as recorded in the Prefect variable beside it (no secrets)."""

    transfer_id: str
    flow_run_id: str | None
    lease_id: str
    since: str

    def describe(self) -> str:
        run = f"flow run {self.flow_run_id}" if self.flow_run_id else "no flow run"
        return f"transfer {self.transfer_id} ({run}, since {self.since})"


class RouteLockTimeout(TimeoutError):
    """The route's lock was not free within the wait; names who holds it."""

    def __init__(self, route: str, holder: LockHolder | None, waited: float) -> None:
        self.route, self.holder = route, holder
        who = holder.describe() if holder else "a transfer that has not recorded itself yet"
        super().__init__(
            f"route {route} is locked by {who}; gave up after {waited:.0f} s: wait for it to finish, or stop it"
        )


def holder_variable(route: str) -> str:
    """The Prefect variable that names the holder of a route's lock (variables allow ``[a-z0-9_]``)."""
    return "acr_transfer_lock_" + route.replace("-", "_")


def read_holder(route: str, api: PrefectApi) -> LockHolder | None:
    """The recorded holder of a route's lock, if any."""
    variable = api().read_variable_by_name(holder_variable(route))
    value = getattr(variable, "value", None)
    if not isinstance(value, dict):
        return None
    try:
        return LockHolder(
            str(value["transfer_id"]), value.get("flow_run_id"), str(value["lease_id"]), str(value["since"])
        )
    except KeyError:
        return None


def holder_is_live(holder: LockHolder, api: PrefectApi, me: str | None = None, transfer_id: str | None = None) -> bool:
    """The holder's flow run exists, is not this very run, and has not ended; and it is another transfer: a
    re-run of the same transfer id continues it (a killed process leaves its flow run Running), it never waits
    for itself."""
    from prefect.exceptions import ObjectNotFound

    if transfer_id and holder.transfer_id == transfer_id:
        return False
    if holder.flow_run_id is None:
        return True  # nothing to check it against: only its lease can expire
    if holder.flow_run_id == me:
        return False
    try:
        run = api().read_flow_run(UUID(holder.flow_run_id))
    except (ObjectNotFound, ValueError):
        return False
    return not (run.state is not None and run.state.is_final())


class RouteLock:
    """A route's one-slot lock that cannot strand (see the module docstring).

    It is a Prefect concurrency limit held with a lease that a thread renews, plus a record of its holder in a
    Prefect variable. A waiter that finds the slot taken checks the holder: one whose flow run has ended (or a
    slot nobody has recorded for ``STALE_AFTER`` seconds, as after a Prefect restart with in-memory leases) is
    reclaimed. A holder whose lease vanished (the server forgot it) re-acquires it; :meth:`ensure_held` makes
    the next pipeline run wait until it has.
    """

    def __init__(self, route: str, transfer_id: str, flow_run_id: str | None, api: PrefectApi | None = None) -> None:
        self.route, self.transfer_id, self.flow_run_id = route, transfer_id, flow_run_id
        self.name = route_lock_name(route)
        self.api = api or PrefectApi()
        self._lease: str | None = None
        self._held = threading.Event()
        self._stop = threading.Event()
        self._turn = threading.Lock()  # the renewer's tick and the release never interleave
        self._renewer: threading.Thread | None = None

    # --- acquiring ---------------------------------------------------------------------------------------------
    def acquire(self, wait_seconds: float | None) -> None:
        """Take the slot, reclaiming it from a holder that is gone; wait at most ``wait_seconds`` (None: forever).

        Raises:
            RouteLockTimeout: a live transfer held it for longer than ``wait_seconds``; names that transfer.
        """
        ensure_limit(self.name, 1, api=self.api)
        started = time.monotonic()
        unrecorded_since: float | None = None
        while True:
            retry_after = self._try_take()
            if retry_after is None:
                break
            holder = read_holder(self.route, self.api)
            now = time.monotonic()
            if holder is None:
                unrecorded_since = unrecorded_since or now
                stale = now - unrecorded_since >= STALE_AFTER
            else:
                unrecorded_since = None
                stale = not holder_is_live(holder, self.api, self.flow_run_id, self.transfer_id)
            if stale:
                self._reclaim(holder)
                continue
            if wait_seconds is not None and now - started >= wait_seconds:
                raise RouteLockTimeout(self.route, holder, now - started)
            time.sleep(min(retry_after, 5))
        self._held.set()
        self._renewer = threading.Thread(target=self._renew, name=f"lease-{self.route}", daemon=True)
        self._renewer.start()

    def _try_take(self) -> float | None:
        """One acquisition: None when taken (and recorded), else how long to wait before the next one."""
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            answer = self.api().increment_concurrency_slots_with_lease(
                names=[self.name], slots=1, mode="concurrency", lease_duration=LEASE_SECONDS
            )
        except PrefectHTTPStatusError as e:
            if e.response.status_code != 423:
                raise
            return _retry_after(e.response, 1.0) or 1.0
        self._lease = str(answer.json()["lease_id"])
        self._record()
        return None

    def _record(self) -> None:
        from prefect.client.schemas.actions import VariableCreate, VariableUpdate

        value = {
            "transfer_id": self.transfer_id,
            "flow_run_id": self.flow_run_id,
            "lease_id": self._lease,
            "since": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }
        name = holder_variable(self.route)
        try:
            if self.api().read_variable_by_name(name) is None:
                self.api().create_variable(VariableCreate(name=name, value=value))
            else:
                self.api().update_variable(VariableUpdate(name=name, value=value))
        except Exception as e:  # bookkeeping: the lock holds without its record, waiters just learn less
            log.warning("could not record the holder of route lock %s: %s", self.name, type(e).__name__)

    def _reclaim(self, holder: LockHolder | None) -> None:
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

        who = holder.describe() if holder else "nobody on record (a Prefect restart forgets in-memory leases)"
        log.warning("route lock %s: its holder is gone (%s); reclaiming it", self.name, who)
        self.api().update_global_concurrency_limit(self.name, GlobalConcurrencyLimitUpdate(active_slots=0))

    # --- holding -----------------------------------------------------------------------------------------------
    def _renew(self) -> None:
        from prefect.exceptions import PrefectHTTPStatusError

        while not self._stop.wait(RENEW_SECONDS if self._held.is_set() else 1):
            with self._turn:
                if self._stop.is_set():  # released while this tick waited its turn: a take-back would re-take it
                    return
                try:
                    if self._held.is_set():
                        self.api().renew_concurrency_lease(self._lease, LEASE_SECONDS)
                    else:
                        self._take_back()
                except PrefectHTTPStatusError as e:
                    if e.response.status_code in (404, 410):  # the server no longer knows the lease
                        log.warning("route lock %s: its lease was lost; taking it back", self.name)
                        self._held.clear()
                except Exception:  # the Prefect API is down: the next tick tries again
                    pass

    def _take_back(self) -> None:
        """After a lost lease: take the slot again; a slot still counted for our own lost lease is ours."""
        old = self._lease
        if self._try_take() is None:
            self._held.set()
            return
        holder = read_holder(self.route, self.api)
        if holder is None or holder.lease_id == old or not holder_is_live(holder, self.api, None):
            self._reclaim(holder)
            if self._try_take() is None:
                self._held.set()

    def ensure_held(self, timeout: float | None = None) -> None:
        """Block until the lock is held again after a lost lease (call before creating a pipeline run).

        Raises:
            RouteLockTimeout: it could not be taken back within ``timeout`` seconds.
        """
        if not self._held.wait(timeout):
            raise RouteLockTimeout(self.route, read_holder(self.route, self.api), timeout or 0)

    def release(self) -> None:
        """Give the slot back and forget the record. A lease the server forgot (a restart) cannot be released:
        then the slot is freed by hand, as long as the record still names this holder."""
        self._stop.set()
        # a renewer tick in flight (a take-back after a lost lease) finishes first; none starts after this
        with self._turn:
            self._release()

    def _release(self) -> None:
        from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
        from prefect.exceptions import PrefectHTTPStatusError

        try:
            holder = read_holder(self.route, self.api)
            mine = holder is not None and holder.lease_id == self._lease
            if self._lease is not None:
                # the server answers a release of a lease it forgot with success and frees nothing, so ask first
                try:
                    self.api().renew_concurrency_lease(self._lease, LEASE_SECONDS)
                    forgotten = False
                except PrefectHTTPStatusError as e:
                    if e.response.status_code not in (404, 410):
                        raise
                    forgotten = True
                if not forgotten:
                    self.api().release_concurrency_slots_with_lease(self._lease)
                elif mine:
                    self.api().update_global_concurrency_limit(self.name, GlobalConcurrencyLimitUpdate(active_slots=0))
            if mine:
                self.api().delete_variable_by_name(holder_variable(self.route))
        except Exception as e:  # bookkeeping: an unreleased slot is reclaimed by the next transfer of the route
            log.warning("could not release route lock %s (%s); the next transfer reclaims it", self.name, e)


_held: dict[str, RouteLock] = {}
_held_lock = threading.Lock()


@contextmanager
def route_lock(
    route: str,
    wait_seconds: float | None = None,
    *,
    transfer_id: str = "",
    flow_run_id: str | None = None,
    api: PrefectApi | None = None,
) -> Iterator[RouteLock]:
    """Hold the route's lock for the block (see :class:`RouteLock`).

    Raises:
        RouteLockTimeout: a live transfer held it for longer than ``wait_seconds`` (None: wait as long as it takes).
    """
    lock = RouteLock(route, transfer_id, flow_run_id, api)
    lock.acquire(wait_seconds)
    with _held_lock:
        _held[route] = lock
    try:
        yield lock
    finally:
        with _held_lock:
            if _held.get(route) is lock:
                del _held[route]
        lock.release()


def ensure_route_held(route: str, timeout: float | None = None) -> None:
    """Before a pipeline run is created: the route's lock, when this process holds it, is held right now."""
    with _held_lock:
        lock = _held.get(route)
    if lock is not None:
        lock.ensure_held(timeout)


def live_holder(route: str, transfer_id: str | None = None) -> LockHolder | None:
    """The transfer holding the route's lock, when a live one other than ``transfer_id`` does; None when the lock
    is free, unrecorded (stranded: the transfer that takes it next reclaims it), held by a flow run that has
    ended, or by ``transfer_id`` itself (which a re-run continues)."""
    api = PrefectApi()
    if active_slots(route_lock_name(route), api) == 0:
        return None
    holder = read_holder(route, api)
    return holder if holder is not None and holder_is_live(holder, api, None, transfer_id) else None


class ReadBudget:
    """The shared ARM read budget as coarse leases: a chunk of reads per Prefect API call (see the module docstring).

    This is ``prefect.concurrency.sync.rate_limit`` done directly: inside a task run, Prefect routes that call
    through its slot-acquisition service, which added about 2 s to every read here; the API call itself takes
    milliseconds. A 423 (budget empty) is retried after its Retry-After, as Prefect's own service does.
    """

    def __init__(self, settings: Settings, api: PrefectApi | None = None) -> None:
        self.settings = settings
        self.api = api or PrefectApi()
        self._known: set[str] = set()
        self._lock = threading.Lock()
        self._last_warning = 0.0

    def lease(self, subscription: str, reads: int) -> None:
        """Take ``reads`` ARM reads from the shared budget in one Prefect API call (blocks while it is empty):
        the worker's read pacer asks for a chunk at a time, never a call per read."""
        from prefect.exceptions import PrefectHTTPStatusError

        name = budget_name(subscription, self.settings)
        with self._lock:
            if name not in self._known:
                ensure_read_budget(subscription, self.settings)
                self._known.add(name)
        while True:
            try:
                with quick():  # tried once: the client's retries would hold the read for half a minute
                    self.api.client().increment_concurrency_slots(names=[name], slots=reads, mode="rate_limit")
                return
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

    def _unavailable(self, name: str, why: str) -> None:
        """The budget is a courtesy to ARM, whose own 429 + Retry-After stays the safety net: when Prefect cannot
        count a read (its API is overloaded after its own retries), the read goes ahead, with a warning a minute."""
        if time.monotonic() - self._last_warning > 60:
            self._last_warning = time.monotonic()
            log.warning("ARM read budget %s could not be counted (%s); reading anyway", name, why)
