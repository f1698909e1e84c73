"""A transfer's batches as chains of steps, each step submitted when the one before it finished.

A task given an upstream *future* starts at once and waits in its thread, and Prefect reads every such future's
state from the API to record lineage: a 50-batch transfer's 150 waiting import and verify tasks made 150 API
reads while its exports were being created, on a server they kept busy. Here a step is submitted only once its
batch's previous step has finished, with that step's *value*: no waiting threads, no reads, and Prefect still
draws the dependency from the value it knows it returned.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future
from concurrent.futures import wait as wait_any
from typing import Any, TypeVar

from prefect.exceptions import UnfinishedRun
from prefect.futures import PrefectFuture, PrefectWrappedFuture

B = TypeVar("B")
# (the batch, the outcomes of its earlier steps) → the step's future, or None when the step does not apply
Step = Callable[[B, list[Any]], PrefectFuture[Any] | None]


def run_chains(batches: Sequence[B], steps: Sequence[Step[B]]) -> list[list[Any]]:
    """Run every batch through ``steps`` in order, all batches at once; returns each batch's outcomes.

    A batch's outcome of a step is its value, its exception when it failed, or None when it did not apply or
    never ran because an earlier step failed.
    """
    outcomes: list[list[Any]] = [[] for _ in batches]
    running: dict[Future[Any], tuple[int, PrefectFuture[Any]]] = {}

    def advance(i: int) -> None:
        """Submit batch i's next step that applies; fill in what never runs after a failure."""
        while len(outcomes[i]) < len(steps):
            if any(isinstance(o, BaseException) for o in outcomes[i]):
                outcomes[i].append(None)
                continue
            future = steps[len(outcomes[i])](batches[i], outcomes[i])
            if future is None:
                outcomes[i].append(None)
                continue
            running[_wrapped(future)] = (i, future)
            return

    for i in range(len(batches)):
        advance(i)
    while running:
        done, _ = wait_any(list(running), return_when=FIRST_COMPLETED)
        for wrapped in done:
            i, future = running.pop(wrapped)
            outcomes[i].append(outcome(future))
            advance(i)
    return outcomes


def outcome(future: PrefectFuture[Any]) -> Any:
    """A step's value, or its exception; a step that never ran gives None."""
    try:
        return future.result(raise_on_failure=False)
    except UnfinishedRun:
        return None


def _wrapped(future: PrefectFuture[Any]) -> Future[Any]:
    if not isinstance(future, PrefectWrappedFuture) or not isinstance(future.wrapped_future, Future):
        raise TypeError(f"run_chains needs futures of a thread pool task runner, not {type(future).__name__}")
    return future.wrapped_future
