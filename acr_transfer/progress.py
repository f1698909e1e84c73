"""In-process progress notices, so a terminal display can follow a flow running in the same process.

Steps call ``report``; anything (the CLI's live table) may ``subscribe``. No Prefect, no I/O.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Notice:
    """One thing that happened: ``step`` is preflight|export|bridge|import|verify|cleanup."""

    transfer_id: str
    batch: int
    step: str
    state: str
    detail: str = ""
    percentage: int | None = None


_listeners: list[Callable[[Notice], None]] = []
_lock = threading.Lock()


def subscribe(listener: Callable[[Notice], None]) -> Callable[[], None]:
    """Receive every notice; returns a function that unsubscribes."""
    with _lock:
        _listeners.append(listener)

    def unsubscribe() -> None:
        with _lock:
            if listener in _listeners:
                _listeners.remove(listener)

    return unsubscribe


def report(notice: Notice) -> None:
    """Hand a notice to every listener; a failing listener never breaks a transfer."""
    with _lock:
        listeners = list(_listeners)
    for listener in listeners:
        with contextlib.suppress(Exception):  # display problems must not fail transfers
            listener(notice)
