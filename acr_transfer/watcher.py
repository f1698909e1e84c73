"""One watcher per process for every run being waited on: reads scale with registries, not with runs.

Each run has a due time from the adaptive interval of ``polling.next_delay``. One background thread
serves all waits: per registry, the runs that are due are refreshed either one GET each or — when more runs
are due than a LIST of the registry's runs costs pages — by one LIST, which refreshes every watched run of
that registry at once. The page count is learnt from the last LIST (and a LIST is cut short as soon as it
would cost more than the GETs it replaces), so a registry with a long run history keeps using GETs.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from acr_transfer.azure.registry import RegistryAddress, RegistryArm, RunState
from acr_transfer.errors import AcrTransferError, NotFoundError, RunTimeoutError, TransientError
from acr_transfer.polling import LOW_READS, PollPlan, next_delay
from acr_transfer.retry import Retrying, backoff_delay

OUTAGE_MAX_DELAY = 30.0  # the longest pause between two reads while ARM does not answer
# a registry whose watched runs one LIST refreshes is LISTed at least this often per page it costs: its runs' own
# intervals stretch with their age, but while a LIST reads them all at once, one more read of it tells every run.
# A quarter second a page is 4 reads/s per registry and process, whatever the number of runs: a sixth of ARM's 25/s,
# halved again when ARM says few reads are left (LOW_READS); a 5-page history is LISTed every 1.25 s
LIST_SECONDS_PER_PAGE = 0.25


class OutageError(RunTimeoutError):
    """Reads of a run kept failing until the route's deadline (the run itself may well have finished)."""


@dataclass
class _Watch:
    registry: RegistryAddress
    name: str
    started: float
    deadline: float
    next_due: float = 0.0
    state: RunState | None = None
    error: BaseException | None = None
    misses: int = 0
    outage_since: float | None = None  # clock time of the first failed read of an unbroken run of them
    outage: TransientError | None = None
    done: threading.Event = field(default_factory=threading.Event)
    updated: threading.Event = field(default_factory=threading.Event)


class RunWatcher:
    """Waits on many runs with shared reads (see the module docstring)."""

    def __init__(self, arm: RegistryArm, plan: PollPlan, clock: Callable[[], float] = time.monotonic) -> None:
        self.arm = arm
        self.plan = plan
        self.clock = clock
        self._watches: list[_Watch] = []
        self._pages: dict[str, int] = {}  # registry id → pages its last full LIST took
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None

    def wait(
        self,
        registry: RegistryAddress,
        name: str,
        timeout: float,
        on_progress: Callable[[RunState], None] = lambda s: None,
        on_outage: Callable[[Retrying | None], None] = lambda o: None,
    ) -> RunState:
        """Block until the run is terminal; returns its last state.

        Raises:
            RunTimeoutError: not terminal within ``timeout`` seconds.
            NotFoundError: the run disappeared.
            TransientError: reads kept failing.
        """
        now = self.clock()
        watch = _Watch(registry, name, now, now + timeout, next_due=now)
        with self._cond:
            self._watches.append(watch)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="acr-run-watcher", daemon=True)
                self._thread.start()
            self._cond.notify_all()
        # progress callbacks run here, in the waiting thread, so a slow one never delays the shared reads
        seen: RunState | None = None
        told: tuple[float | None, int] = (None, 0)
        while not watch.done.is_set():
            watch.updated.wait()
            watch.updated.clear()
            if (watch.outage_since, watch.misses) != told:
                told = (watch.outage_since, watch.misses)
                with contextlib.suppress(Exception):
                    on_outage(self._outage(watch))
            if watch.state is not None and watch.state is not seen:
                seen = watch.state
                with contextlib.suppress(Exception):  # a progress display must not stop the wait
                    on_progress(seen)
        if watch.state is not None and watch.state is not seen:
            with contextlib.suppress(Exception):
                on_progress(watch.state)
        if watch.error is not None:
            raise watch.error
        assert watch.state is not None
        return watch.state

    # --- the one thread that reads ---------------------------------------------------------------------
    def _loop(self) -> None:
        while True:
            with self._cond:
                if not self._watches:
                    self._thread = None
                    return
                now = self.clock()
                due = [w for w in self._watches if w.next_due <= now]
                if not due:
                    self._cond.wait(timeout=max(0.01, min(w.next_due for w in self._watches) - now))
                    continue
            by_registry: dict[str, list[_Watch]] = {}
            for w in due:
                by_registry.setdefault(w.registry.id.lower(), []).append(w)
            for watches in by_registry.values():
                self._refresh(watches)

    def _refresh(self, due: list[_Watch]) -> None:
        registry = due[0].registry
        with self._cond:
            watched = [w for w in self._watches if w.registry.id.lower() == registry.id.lower()]
        states: dict[str, RunState] = {}
        pages = self._pages.get(registry.id.lower(), 1)
        try:
            if len(due) > pages:
                states = self._list(registry, budget=len(due), wanted={w.name for w in watched})
            missing = [w for w in due if w.name not in states]
            for w in missing:
                state = self.arm.get_run(registry, w.name)
                if state is not None:
                    states[w.name] = state
        except TransientError as e:
            for w in due:
                self._retry_later(w, e)
            return
        except AcrTransferError as e:
            for w in due:
                self._finish(w, error=e)
            return
        for w in watched if states else due:
            if w.name in states:
                self._update(w, states[w.name])
            elif w in due:
                self._finish(w, error=NotFoundError(f"pipeline run '{w.name}' disappeared while being watched"))
        if len(due) > pages:
            self._keep_listing(registry)

    def _keep_listing(self, registry: RegistryAddress) -> None:
        """After a LIST: while more runs of the registry are watched than a LIST costs pages, bring every one's
        next read to the registry's LIST cadence, so they come due together and one LIST serves them all. Reads
        scale with registries and their pages, not with runs; a lone run keeps its own adaptive GETs."""
        pages = self._pages.get(registry.id.lower(), 1)
        with self._cond:
            watched = [w for w in self._watches if w.registry.id.lower() == registry.id.lower()]
        if len(watched) <= pages:
            return
        cadence = max(self.plan.min_seconds, pages * LIST_SECONDS_PER_PAGE)
        if self.arm.remaining_reads is not None and self.arm.remaining_reads < LOW_READS:
            cadence *= 2
        due = self.clock() + cadence
        for w in watched:
            if w.outage_since is None:  # a run whose reads fail keeps its backoff
                w.next_due = min(w.next_due, due)

    def _list(self, registry: RegistryAddress, budget: int, wanted: set[str]) -> dict[str, RunState]:
        """LIST the registry's runs, giving up once it has cost ``budget`` pages (then GETs are cheaper)."""
        found: dict[str, RunState] = {}
        pages = 0
        complete = True
        for page in self.arm.list_run_pages(registry):
            pages += 1
            found.update({r.name: r for r in page if r.name in wanted})
            if pages >= budget and len(found) < len(wanted):
                complete = False
                break
        self._pages[registry.id.lower()] = (
            pages if complete else max(pages + 1, self._pages.get(registry.id.lower(), 0))
        )
        return found

    def _outage(self, w: _Watch) -> Retrying | None:
        if w.outage_since is None or w.outage is None:
            return None
        down = self.clock() - w.outage_since
        since = datetime.now(UTC) - timedelta(seconds=down)
        return Retrying(f"reads of run {w.name}", since, down, w.misses, w.outage.message, w.deadline - self.clock())

    def _update(self, w: _Watch, state: RunState) -> None:
        w.state, w.misses, w.outage_since, w.outage = state, 0, None, None
        w.updated.set()
        now = self.clock()
        if state.terminal:
            self._finish(w)
        elif now >= w.deadline:
            self._finish(w, error=RunTimeoutError(
                f"pipeline run '{w.name}' is still {state.status or state.provisioning_state} after "
                f"{now - w.started:.0f} s; it keeps running in ACR — raise timeout_minutes or re-run to resume it"
            ))  # fmt: skip
        else:
            delay = next_delay(now - w.started, state.percentage, self.arm.remaining_reads, self.plan)
            w.next_due = now + min(delay, max(w.deadline - now, 0.05))

    def _retry_later(self, w: _Watch, error: TransientError) -> None:
        """A failed read: try again, with capped backoff and jitter, until the watch's deadline (the route's
        ``timeout_minutes``): an ARM outage shorter than that costs time, not the transfer."""
        now = self.clock()
        w.misses += 1
        w.outage = error
        if w.outage_since is None:
            w.outage_since = now
        if now >= w.deadline:
            down = now - w.outage_since
            self._finish(w, error=OutageError(
                f"reads of pipeline run '{w.name}' have failed for {down:.0f} s ({w.misses} attempts; last: "
                f"{error.message}); gave up at the route's deadline ({now - w.started:.0f} s) — the run goes on in "
                "ACR: re-run with the same transfer id to continue"
            ))  # fmt: skip
            return
        delay = backoff_delay(w.misses, self.plan.min_seconds, OUTAGE_MAX_DELAY, error.retry_after)
        w.next_due = now + min(delay, max(w.deadline - now, 0.05))
        w.updated.set()

    def _finish(self, w: _Watch, error: BaseException | None = None) -> None:
        w.error = error
        with self._cond:
            if w in self._watches:
                self._watches.remove(w)
        w.done.set()
        w.updated.set()
