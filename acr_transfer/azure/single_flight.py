"""Concurrent identical ARM reads share one request (Go's ``singleflight``), so 100 routes' preflights starting
together read a shared pipeline, or the subscription's key vaults, once instead of 100 times.

Nothing is kept: a read that starts after the shared one has answered makes its own request, so a change made
before a read started (a revoked vault access, a fixed pipeline) is what that read sees, unless it joined a read
already in flight. A shared answer is the same object for every caller: callers only read it.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable
from concurrent.futures import Future
from typing import Any, TypeVar

T = TypeVar("T")


class SingleFlight:
    """Calls with one key made while one is in flight wait for it and get its answer (or its error)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._flights: dict[Hashable, Future[Any]] = {}
        self.shared = 0  # calls answered by another's request (for tests and the bench)

    def do(self, key: Hashable, call: Callable[[], T]) -> T:
        with self._lock:
            flight = self._flights.get(key)
            leading = flight is None
            if leading:
                flight = self._flights[key] = Future()
            else:
                self.shared += 1
        assert flight is not None
        if not leading:
            result: T = flight.result()
            return result
        try:
            answer = call()
        except BaseException as e:
            flight.set_exception(e)
            raise
        else:
            flight.set_result(answer)
            return answer
        finally:
            with self._lock:
                del self._flights[key]
