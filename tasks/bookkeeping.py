"""Our own Prefect API calls — artifacts, run names, budget leases — never fail or stall a transfer.

Azure completes a transfer whether or not the Prefect server heard of its progress, so a failed bookkeeping
call is one warning (per kind of call, at most a minute apart) and the step goes on. Progress updates are tried
once (:func:`quick`: no client retries, whose backoff would hold the step for half a minute per call); what a
person must see at the end (the summary), and the route lock's calls, are retried at short intervals first
(:func:`patiently`): the client's own retries wait 2 s before the first, and on SQLite a write that meets
another writer is answered 503 at once, clearing milliseconds later.

Progress that nothing waits for goes through :class:`Backlog`: a few background threads make those calls, in
order per key, so a step is never held by a slow Prefect server — a busy server once took seconds to answer a
progress artifact's creation, and the run's first read waited behind it.
"""

from __future__ import annotations

import contextvars
import random
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_all
from contextlib import contextmanager
from typing import Any, TypeVar

from acr_transfer.errors import redact, shown

T = TypeVar("T")
WARN_EVERY_SECONDS = 60
PATIENCE_SECONDS = 60.0  # how long :func:`patiently` retries: about what the client's own five retries take
FIRST_RETRY_SECONDS = 0.05  # then doubling, up to LONGEST_RETRY_SECONDS
LONGEST_RETRY_SECONDS = 2.0
RETRYABLE_STATUSES = frozenset({408, 429, 500, 502, 503, 504})
_warned: dict[str, float] = {}
_lock = threading.Lock()


_QUICK_CACHE = 8
_quick_settings: dict[int, tuple[Any, Any]] = {}  # id(settings) → (those settings, a copy without retries)


@contextmanager
def quick() -> Iterator[None]:
    """Prefect API calls made in this block (this thread) are tried once, without the client's retries.

    The copy of the settings without retries is made once per settings object and kept: Prefect's
    ``temporary_settings`` builds a new one each time, re-reading ``profiles.toml`` and ``pyproject.toml`` from
    disk, which under a 50-batch transfer's progress updates took most of the worker's CPU.
    """
    import prefect.context
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    context = prefect.context.get_settings_context()
    with _lock:
        kept = _quick_settings.get(id(context.settings))
        if kept is None or kept[0] is not context.settings:
            if len(_quick_settings) >= _QUICK_CACHE:
                _quick_settings.clear()
            copy = context.settings.copy_with_update(updates={PREFECT_CLIENT_MAX_RETRIES: 0})
            kept = _quick_settings[id(context.settings)] = (context.settings, copy)
    with prefect.context.SettingsContext(profile=context.profile, settings=kept[1]):
        yield


def retry_delay(error: BaseException) -> float | None:
    """How long to wait before trying a Prefect API call again after ``error`` (its Retry-After, when it gave
    one, else 0); None when trying again cannot help (a 4xx that is not 408/429, or not an HTTP failure)."""
    import httpx

    from acr_transfer.errors import retry_after_seconds

    if isinstance(error, httpx.HTTPStatusError):
        if error.response.status_code not in RETRYABLE_STATUSES:
            return None
        return retry_after_seconds(error.response.headers.get("Retry-After")) or 0.0
    return 0.0 if isinstance(error, httpx.TransportError) else None


def patiently(call: Callable[[], T], within: float = PATIENCE_SECONDS) -> T:
    """Make a Prefect API call, trying again at short intervals while the server says "later" (408, 429, 5xx)
    or the connection fails, for up to ``within`` seconds; then (or on any other error) raise the last error.

    The intervals start at 50 ms and double up to 2 s, each jittered to half to all of itself (a Retry-After is
    honoured), where the client's own
    retries wait 2, 4, 8… s: on SQLite a write that met another writer's lock is answered 503 at once and would
    go through milliseconds later, and a route lock taken or released 2 s late holds up the transfer by as much.
    """
    give_up = time.monotonic() + within
    delay = FIRST_RETRY_SECONDS
    while True:
        try:
            with quick():
                return call()
        except Exception as e:
            wait = retry_delay(e)
            if wait is None:
                raise
            # jittered (half to all of the interval), so callers that met one busy moment do not meet again
            wait = max(wait, random.uniform(delay / 2, delay))
            if time.monotonic() + wait > give_up:
                raise
            time.sleep(wait)
            delay = min(delay * 2, LONGEST_RETRY_SECONDS)


def bookkeeping(call: Callable[[], T], what: str, *, retries: bool = False) -> T | None:
    """Run one of our Prefect API calls; on failure, warn (once a minute per ``what``) and return None.

    Args:
        call: the call, without arguments.
        what: names it in the warning (``"update progress"``).
        retries: try again for a while (:func:`patiently`), for what must reach the server, like the summary.
    """
    try:
        if retries:
            return patiently(call)
        with quick():
            return call()
    except Exception as e:
        with _lock:
            due = time.monotonic() - _warned.get(what, -WARN_EVERY_SECONDS) >= WARN_EVERY_SECONDS
            if due:
                _warned[what] = time.monotonic()
        if due:
            _log().warning(
                "could not %s (the Prefect API answered %s); the transfer goes on", what, shown(redact(str(e)), 200)
            )
        return None


def _log() -> Any:
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        import logging

        return logging.getLogger("acr_transfer.bookkeeping")


class Backlog:
    """Bookkeeping calls that nothing waits for, made in the background (see the module docstring).

    Calls with one ``key`` run in the order they were given (a progress artifact is created before it is
    updated); an update overtaken by a newer one of its key before it ran is dropped (only the latest progress
    matters). Each call runs in a copy of the caller's context, so Prefect still files an artifact under the
    task run that asked for it, and goes through :func:`bookkeeping` (tried once, a failure one warning).

    Args:
        threads: how many calls may be in flight at once.
    """

    def __init__(self, threads: int = 4) -> None:
        self._pool = ThreadPoolExecutor(max_workers=threads, thread_name_prefix="acr-bookkeeping")
        self._lock = threading.Lock()
        self._last: dict[str, Future[None]] = {}  # key → its latest call
        self._latest: dict[str, int] = {}  # key → the number of its latest call
        self._pending: dict[Future[None], str] = {}  # call → its key

    def later(self, key: str, call: Callable[[], object], what: str, *, replaceable: bool = False) -> None:
        """Make ``call`` in the background after the earlier calls of ``key``.

        Args:
            key: orders calls (e.g. the progress artifact's key).
            call: the Prefect API call, without arguments.
            what: names it in the warning when it fails.
            replaceable: may be skipped when a newer call of ``key`` was given before this one ran.
        """
        context = contextvars.copy_context()
        with self._lock:
            before = self._last.get(key)
            number = self._latest[key] = self._latest.get(key, 0) + 1

            def run() -> None:
                if before is not None:  # FIFO: an earlier call of the key has started, so this waits on no queue
                    before.result()
                if replaceable and self._latest.get(key) != number:
                    return
                context.run(bookkeeping, call, what)

            future = self._pool.submit(run)
            self._last[key] = future
            self._pending[future] = key
        future.add_done_callback(self._done(key))

    def _done(self, key: str) -> Callable[[Future[None]], None]:
        def forget(future: Future[None]) -> None:
            with self._lock:
                self._pending.pop(future, None)
                if self._last.get(key) is future:
                    del self._last[key]
                    self._latest.pop(key, None)

        return forget

    def drain(self, timeout: float, containing: str = "") -> bool:
        """Wait up to ``timeout`` seconds for the calls given so far whose key contains ``containing`` (all by
        default); returns whether they were all made."""
        with self._lock:
            pending = {f for f, key in self._pending.items() if containing in key}
        if not pending:
            return True
        _, not_done = wait_all(pending, timeout=timeout)
        return not not_done


_backlog: Backlog | None = None


def backlog() -> Backlog:
    """This process's backlog, started on first use. What it still holds when the process ends is sent first:
    Python joins a thread pool's threads at exit (each call is tried once, so a server that is down costs little).
    """
    global _backlog
    with _lock:
        if _backlog is None:
            _backlog = Backlog()
        return _backlog
