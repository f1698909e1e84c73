"""The shared run watcher, as pure logic over a fake ARM adapter (no network)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from acr_transfer.azure.registry import RegistryAddress, RunState
from acr_transfer.errors import NotFoundError, RunTimeoutError
from acr_transfer.polling import PollPlan
from acr_transfer.watcher import RunWatcher

REG = RegistryAddress("sub", "rg", "sourceregistry")


def state(name: str, done: bool, pct: int) -> RunState:
    status, prov = ("Succeeded", "Succeeded") if done else ("Running", "Creating")
    return RunState.from_json({"name": name, "properties": {"provisioningState": prov, "response": {
        "status": status, "progress": {"percentage": str(pct)}}}})  # fmt: skip


class FakeArm:
    """Runs finish ``seconds`` after they are first read; counts what each read costs."""

    def __init__(self, names: list[str], seconds: float, page_size: int = 20, history: int = 0) -> None:
        self.names, self.seconds, self.page_size = names, seconds, page_size
        self.history = [f"old{i}" for i in range(history)]
        self.first_seen: dict[str, float] = {}
        self.gets = self.pages = 0
        self.remaining_reads = 250
        self.lock = threading.Lock()

    def _state(self, name: str) -> RunState:
        start = self.first_seen.setdefault(name, time.monotonic())
        elapsed = time.monotonic() - start
        return state(name, elapsed >= self.seconds, min(99, int(100 * elapsed / self.seconds)))

    def get_run(self, registry: RegistryAddress, name: str) -> RunState | None:
        with self.lock:
            self.gets += 1
            return self._state(name) if name in self.names else None

    def list_run_pages(self, registry: RegistryAddress) -> Any:
        everything = self.history + self.names
        for i in range(0, len(everything), self.page_size):
            with self.lock:
                self.pages += 1
                page = [
                    self._state(n) if n in self.names else state(n, True, 100)
                    for n in everything[i : i + self.page_size]
                ]
            yield page


def wait_all(watcher: RunWatcher, names: list[str], timeout: float = 10) -> dict[str, Any]:
    results: dict[str, Any] = {}

    def one(name: str) -> None:
        try:
            results[name] = watcher.wait(REG, name, timeout)
        except Exception as e:
            results[name] = e

    threads = [threading.Thread(target=one, args=(n,)) for n in names]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    return results


def test_many_runs_in_one_registry_share_list_reads() -> None:
    names = [f"run{i}" for i in range(40)]
    arm = FakeArm(names, seconds=0.6)
    results = wait_all(RunWatcher(arm, PollPlan(0.05, 0.2)), names)  # type: ignore[arg-type]
    assert all(isinstance(r, RunState) and r.succeeded for r in results.values())
    polls_if_each_polled_alone = len(names) * (0.6 / 0.05)
    assert arm.pages + arm.gets < polls_if_each_polled_alone / 4
    assert arm.pages > 0  # the LIST was used


def test_a_long_history_keeps_the_watcher_on_gets() -> None:
    names = ["runa", "runb"]
    arm = FakeArm(names, seconds=0.3, page_size=5, history=500)
    results = wait_all(RunWatcher(arm, PollPlan(0.05, 0.2)), names)  # type: ignore[arg-type]
    assert all(isinstance(r, RunState) and r.succeeded for r in results.values())
    assert arm.pages <= 3  # one cut-short LIST at most, never the 100 pages of history


def test_progress_reaches_the_waiting_thread() -> None:
    arm = FakeArm(["runp"], seconds=0.4)
    seen: list[int] = []
    final = RunWatcher(arm, PollPlan(0.05, 0.1)).wait(REG, "runp", 5, lambda s: seen.append(s.percentage or 0))  # type: ignore[arg-type]
    assert final.succeeded and seen and seen[-1] >= 0 and len(seen) >= 2


def test_a_disappearing_run_and_a_timeout_are_errors() -> None:
    arm = FakeArm(["slow1"], seconds=60)
    watcher = RunWatcher(arm, PollPlan(0.05, 0.1))  # type: ignore[arg-type]
    with pytest.raises(NotFoundError):
        watcher.wait(REG, "gone1", 5)
    with pytest.raises(RunTimeoutError):
        watcher.wait(REG, "slow1", 0.3)


class FlakyArm(FakeArm):
    """ARM that answers 503 to the first ``failures`` reads (an outage), then as FakeArm."""

    def __init__(self, failures: int, **kw: Any) -> None:
        super().__init__(["r1"], **kw)
        self.failures = failures

    def get_run(self, registry: RegistryAddress, name: str) -> RunState | None:
        from acr_transfer.errors import ServiceUnavailableError

        with self.lock:
            if self.failures > 0:
                self.failures -= 1
                raise ServiceUnavailableError("503 from ARM", status=503)
        return super().get_run(registry, name)


def test_an_outage_shorter_than_the_deadline_costs_time_not_the_run() -> None:
    arm = FlakyArm(failures=8, seconds=0.05)
    outages: list[Any] = []
    watcher = RunWatcher(arm, PollPlan(0.01, 0.02))  # type: ignore[arg-type]
    final = watcher.wait(REG, "r1", timeout=30, on_outage=outages.append)
    assert final.succeeded
    reported = [o for o in outages if o is not None]
    assert [o.attempts for o in reported] == list(range(1, 9))  # each failed read is told, in order
    assert "503 from ARM" in reported[-1].line() and "retrying for up to" in reported[-1].line()
    assert outages[-1] is None  # and the recovery


def test_an_outage_that_outlasts_the_deadline_names_the_run_and_the_way_back() -> None:
    from acr_transfer.watcher import OutageError

    arm = FlakyArm(failures=10_000, seconds=0.05)
    watcher = RunWatcher(arm, PollPlan(0.01, 0.02))  # type: ignore[arg-type]
    with pytest.raises(OutageError, match=r"reads of pipeline run 'r1' have failed for .* last: 503 from ARM") as e:
        watcher.wait(REG, "r1", timeout=1.0)
    assert "re-run with the same transfer id to continue" in str(e.value)
    assert isinstance(e.value, RunTimeoutError)  # permanent: the step is not retried past the deadline


def _watched(watcher: RunWatcher, names: list[str], started: float) -> list[Any]:
    from acr_transfer.watcher import _Watch

    watches = [_Watch(REG, n, started, started + 3600, next_due=0.0) for n in names]
    watcher._watches.extend(watches)
    return watches


def test_runs_one_list_reads_come_due_together_at_the_list_cadence() -> None:
    # 30 runs, 100 s old: alone, each would next be read in 10 s (a tenth of its age); one LIST reads them all, so
    # the LIST comes again after a quarter second a page and tells every run at once
    now = [1000.0]
    names = [f"run{i}" for i in range(30)]
    arm = FakeArm(names, seconds=10_000)
    watcher = RunWatcher(arm, PollPlan(0.5, 15.0), clock=lambda: now[0])  # type: ignore[arg-type]
    watches = _watched(watcher, names, started=now[0] - 100)
    watcher._refresh(watches[:5])
    assert arm.pages == 2 and arm.gets == 0  # one LIST of two pages (20 a page)
    assert {w.next_due for w in watches} == {now[0] + 0.5}  # two pages: 0.5 s, for all 30 together


def test_a_lone_run_keeps_its_own_adaptive_interval() -> None:
    now = [1000.0]
    arm = FakeArm(["runa"], seconds=10_000)
    watcher = RunWatcher(arm, PollPlan(0.5, 15.0), clock=lambda: now[0])  # type: ignore[arg-type]
    (watch,) = _watched(watcher, ["runa"], started=now[0] - 100)
    watcher._refresh([watch])
    assert arm.gets == 1 and arm.pages == 0
    assert watch.next_due == pytest.approx(now[0] + 10.0)  # a tenth of its age: a long run costs few reads
