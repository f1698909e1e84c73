"""Progress that nothing waits for is written in the background: in order per key, latest wins, never raising."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from tasks import bookkeeping
from tasks.bookkeeping import Backlog

WHO: contextvars.ContextVar[str] = contextvars.ContextVar("who", default="nobody")


def test_calls_of_one_key_run_in_the_order_given_even_when_the_first_is_slow() -> None:
    backlog, done = Backlog(threads=4), []
    backlog.later("k", lambda: (time.sleep(0.3), done.append("create")), "create")
    backlog.later("k", lambda: done.append("update"), "update")
    backlog.later("other", lambda: done.append("other"), "other")  # another key does not wait for k
    assert backlog.drain(5)
    assert done == ["other", "create", "update"]


def test_an_update_overtaken_before_it_ran_is_dropped_and_the_latest_is_made() -> None:
    backlog, made = Backlog(threads=2), []
    gate = threading.Event()
    backlog.later("k", gate.wait, "create")
    for pct in (25, 50, 75, 100):
        backlog.later("k", lambda pct=pct: made.append(pct), "update", replaceable=True)
    gate.set()
    assert backlog.drain(5)
    assert made == [100]


def test_a_failed_call_is_a_warning_and_the_key_goes_on(monkeypatch: pytest.MonkeyPatch) -> None:
    warned: list[str] = []

    class Log:  # where the warning goes depends on the session's logging set-up: read it at the source
        def warning(self, message: str, *args: object) -> None:
            warned.append(message % args)

    monkeypatch.setattr(bookkeeping, "_log", Log)
    backlog, made = Backlog(threads=2), []

    def refused() -> None:
        raise RuntimeError("503 Service Unavailable")

    backlog.later("k", refused, "create the backlog test's artifact")  # warned once a minute per what: its own
    backlog.later("k", lambda: made.append("update"), "update progress")
    assert backlog.drain(5)
    assert made == ["update"]
    assert warned == [
        "could not create the backlog test's artifact (the Prefect API answered 503 Service Unavailable); "
        "the transfer goes on"
    ]


def test_each_call_runs_in_the_callers_context() -> None:
    backlog, seen = Backlog(threads=2), []
    token = WHO.set("task run 1")
    try:
        backlog.later("k", lambda: seen.append(WHO.get()), "read")
    finally:
        WHO.reset(token)
    assert backlog.drain(5)
    assert seen == ["task run 1"]


def test_drain_waits_only_for_the_keys_asked_for() -> None:
    backlog, gate = Backlog(threads=2), threading.Event()
    backlog.later("export-xaaaaaa", gate.wait, "slow, another transfer's")
    backlog.later("export-xbbbbbb", lambda: None, "quick")
    assert backlog.drain(5, containing="bbbbbb")
    assert not backlog.drain(0.2, containing="aaaaaa")
    gate.set()
    assert backlog.drain(5)
