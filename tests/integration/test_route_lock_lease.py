"""A route lock whose lease the Prefect server forgot (a restart with in-memory leases), on a real Prefect server:
the holder takes it back, and releasing it while that take-back is in flight leaves the slot free. A server that
answers the lock's writes 503 for a moment (SQLite's writer lock) holds it up only for that moment."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
from prefect.settings import PREFECT_API_URL, temporary_settings

import tasks.concurrency as concurrency
from tasks.concurrency import PrefectApi, active_slots, holder_variable, read_holder, route_lock, route_lock_name
from tests.support.prefect_proxy import PrefectProxy

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


class _SlowTakeBack(PrefectApi):
    """The real Prefect client; the renewer's calls while it takes back a lost lease are held up half a second,
    so a release is sure to overlap one (a slow or busy server does that by itself)."""

    def __init__(self, lock_held: threading.Event | None = None) -> None:
        super().__init__()
        self.taking_back = threading.Event()
        self.lock_held = lock_held

    def __call__(self) -> Any:
        mine = threading.current_thread().name.startswith("lease-")
        if mine and self.lock_held is not None and not self.lock_held.is_set():
            self.taking_back.set()
            time.sleep(0.5)
        return super().__call__()


def _forget_lease(route: str, lease: str) -> None:
    """What a Prefect restart leaves: the lease unknown to the server, its slot still counted."""
    name = route_lock_name(route)
    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(lease)
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=1))


def _wait(what: str, ready: Any, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not ready():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def test_a_forgotten_lease_is_taken_back_and_released(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(concurrency, "RENEW_SECONDS", 0.5)  # the renewer notices a lost lease at once
    route = f"lease{uuid.uuid4().hex[:6]}"
    with route_lock(route, transfer_id="t1") as lock:
        first = lock._lease
        assert first is not None
        _forget_lease(route, first)
        # the renewer notices within a tick and takes it back a second later: wait for the new lease, not for the
        # second between (a busy test process once polled straight past it)
        _wait("the renewer to take the lost lease back", lambda: lock._lease != first and lock._held.is_set())
        lock.ensure_held(timeout=30)  # as before the next pipeline run: held
        holder = read_holder(route, lock.api)
        assert holder is not None and holder.lease_id == lock._lease
        assert active_slots(route_lock_name(route)) == 1
    assert active_slots(route_lock_name(route)) == 0
    with get_client(sync_client=True) as client:
        assert client.read_variable_by_name(holder_variable(route)) is None


def test_a_release_during_a_take_back_leaves_the_slot_free(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(concurrency, "RENEW_SECONDS", 0.5)
    route = f"lease{uuid.uuid4().hex[:6]}"
    api = _SlowTakeBack()
    with route_lock(route, transfer_id="t2", api=api) as lock:
        api.lock_held = lock._held
        assert lock._lease is not None
        _forget_lease(route, lock._lease)
        assert api.taking_back.wait(30), "the renewer never noticed the lost lease"
        # the transfer ends now, while the renewer is taking the lock back
    _wait("the renewer to stop", lambda: not any(t.name == f"lease-{route}" for t in threading.enumerate()), 10)
    assert active_slots(route_lock_name(route)) == 0
    with get_client(sync_client=True) as client:
        assert client.read_variable_by_name(holder_variable(route)) is None


def test_a_momentarily_busy_server_delays_the_route_lock_by_milliseconds(monkeypatch: pytest.MonkeyPatch) -> None:
    """On SQLite a write that meets another writer's lock is answered 503 at once and goes through a moment later.
    The lock's calls are tried again at 50 ms, doubling; Prefect's client, which sleeps 2 s after such an answer
    even when it will not retry, is never told to back off for seconds."""
    proxy = PrefectProxy(str(PREFECT_API_URL.value()).removesuffix("/api"))
    proxy.start()
    told_to_sleep: list[float] = []
    sleep = time.sleep
    monkeypatch.setattr(time, "sleep", lambda s: (told_to_sleep.append(s), sleep(s)))
    route = f"busy{uuid.uuid4().hex[:6]}"
    try:
        proxy.refuse_next(r"^/api/v2/concurrency_limits/increment-with-lease$", 2)
        proxy.refuse_next(r"^/api/variables/name/", 2, method="DELETE")
        with temporary_settings({PREFECT_API_URL: f"{proxy.url}/api"}), route_lock(route, transfer_id="busy") as lock:
            assert lock._lease is not None
            holder = read_holder(route, lock.api)
            assert holder is not None and holder.transfer_id == "busy"
    finally:
        proxy.stop()
    refused = dict(proxy.refused)
    assert refused.pop("POST /api/v2/concurrency_limits/increment-with-lease") == 2
    assert refused == {f"DELETE /api/variables/name/{holder_variable(route)}": 2}
    assert active_slots(route_lock_name(route)) == 0  # taken and released, each after its 503s
    with get_client(sync_client=True) as client:
        assert client.read_variable_by_name(holder_variable(route)) is None
    assert told_to_sleep and max(told_to_sleep) < 1, told_to_sleep
