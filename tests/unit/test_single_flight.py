"""Concurrent identical ARM reads share one request; nothing is kept once it answered."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from acr_transfer.azure.single_flight import SingleFlight


def test_calls_made_while_one_is_in_flight_get_its_answer_from_one_request() -> None:
    flights, requests, gate = SingleFlight(), [], threading.Event()

    def read() -> dict[str, str]:
        requests.append(1)
        gate.wait(5)
        return {"container": "https://storage/transfer"}

    with ThreadPoolExecutor(8) as pool:
        answers = [pool.submit(flights.do, "pipeline", read) for _ in range(8)]
        while flights.shared < 7:  # the seven others have joined the first's request
            threading.Event().wait(0.01)
        gate.set()
        results = [a.result(5) for a in answers]
    assert len(requests) == 1
    assert all(r == {"container": "https://storage/transfer"} for r in results)


def test_a_call_after_the_answer_makes_its_own_request() -> None:
    flights, answers = SingleFlight(), iter(["before the fix", "after the fix"])
    assert flights.do("pipeline", lambda: next(answers)) == "before the fix"
    assert flights.do("pipeline", lambda: next(answers)) == "after the fix"  # nothing kept
    assert flights.shared == 0


def test_other_keys_do_not_wait() -> None:
    flights, gate = SingleFlight(), threading.Event()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(flights.do, "a", lambda: gate.wait(5) and "a")
        assert flights.do("b", lambda: "b") == "b"
        gate.set()
        assert slow.result(5) == "a"


def test_the_error_of_the_shared_request_reaches_every_caller_and_the_next_call_tries_again() -> None:
    flights, gate, calls = SingleFlight(), threading.Event(), []

    def failing() -> str:
        calls.append(1)
        gate.wait(5)
        raise PermissionError("403 on the vault listing")

    with ThreadPoolExecutor(3) as pool:
        futures = [pool.submit(flights.do, "vaults", failing) for _ in range(3)]
        while flights.shared < 2:
            threading.Event().wait(0.01)
        gate.set()
        for f in futures:
            with pytest.raises(PermissionError, match="403"):
                f.result(5)
    assert len(calls) == 1
    assert flights.do("vaults", lambda: "granted now") == "granted now"
