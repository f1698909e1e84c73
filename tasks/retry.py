"""Retry only what can pass, for as long as the route allows.

Every step task that talks to Azure is wrapped by :func:`outlasting`: a ``TransientError`` (ARM, Key Vault,
storage or the registry unavailable, throttled, dropping connections) runs the step again — every step is
idempotent — with capped backoff and jitter until the route's ``timeout_minutes``, saying in the log and on a
progress artifact what is failing and since when; giving up names the outage, the transfer and the command
that resumes it. A permanent error fails the step at once. Tasks without a transfer context keep Prefect's own
retries (:func:`step_options`).
"""

from __future__ import annotations

import functools
import re
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.cache_policies import NO_CACHE
from prefect.tasks import exponential_backoff

from acr_transfer.context import TransferContext
from acr_transfer.errors import TransientError, redact
from acr_transfer.retry import GaveUp, Retrying, call_until_deadline
from acr_transfer.settings import get_settings
from acr_transfer.watcher import OutageError
from tasks.bookkeeping import bookkeeping

P = ParamSpec("P")
T = TypeVar("T")
TELL_EVERY_SECONDS = 30  # at most one log line and artifact update per step per this while retrying


def retry_transient(task: Any, task_run: Any, state: Any) -> bool:
    """``retry_condition_fn``: True only when the failure is a TransientError."""
    try:
        state.result()
    except TransientError:
        return True
    except BaseException:
        return False
    return False


def step_options() -> dict[str, Any]:
    """Task options shared by every step that talks to Azure."""
    settings = get_settings()
    return {
        # never cached: a step's effects are in Azure, and its idempotence is our names'. Prefect's default
        # policy would hash the inputs of every task run (a 2,500-artifact route's context, 150 times)
        "cache_policy": NO_CACHE,
        "retries": settings.task_retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=settings.retry_base_seconds)
        if settings.retry_base_seconds > 0
        else 0,
        "retry_jitter_factor": 0.5 if settings.retry_base_seconds > 0 else None,
        "retry_condition_fn": retry_transient,
    }


def resume_command(ctx: TransferContext) -> str:
    return f"acr-transfer run --route {ctx.route.name} --transfer-id {ctx.transfer_id}"


def outlasting(step: str) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """Decorate a step whose first argument is its :class:`TransferContext`: transient failures are retried
    until the route's deadline (see the module docstring). ``step`` names it in messages (``export batch``)."""

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        @functools.wraps(fn)
        def run(*args: P.args, **kwargs: P.kwargs) -> T:
            ctx = next((a for a in (*args, *kwargs.values()) if isinstance(a, TransferContext)), None)
            if ctx is None:  # not a transfer's step: one attempt, Prefect's retries apply
                return fn(*args, **kwargs)
            batch = next((getattr(a, "index", None) for a in args if hasattr(a, "artifacts")), None)
            what = f"{step} (batch {batch})" if isinstance(batch, int) else step
            return _until_deadline(ctx, what, lambda: fn(*args, **kwargs))

        return run

    return decorate


def _until_deadline(ctx: TransferContext, what: str, call: Callable[[], T]) -> T:
    settings = get_settings()
    teller = _Teller(ctx, what)
    try:
        result = call_until_deadline(
            call,
            what,
            ctx.timeout_seconds,
            base_delay=max(settings.retry_base_seconds, 0.05),
            max_delay=settings.retry_max_seconds,
            on_retry=teller.tell,
        )
    except GaveUp as e:
        raise OutageError(f"transfer {ctx.transfer_id}: {e.message}; resume with `{resume_command(ctx)}`") from None
    teller.recovered()
    return result


class _Teller:
    """What a person sees while a step is retried: a warning at the first retry and every 30 s, and a progress
    artifact whose description says what is failing and since when (bookkeeping: never fails the step)."""

    def __init__(self, ctx: TransferContext, what: str) -> None:
        self.ctx, self.what = ctx, what
        self.key = re.sub(r"[^a-z0-9-]", "-", f"retrying-{what}-{ctx.transfer_id}".lower())[:100]
        self.artifact: Any = None
        self.last_told = 0.0
        self.outage: Retrying | None = None

    def tell(self, outage: Retrying) -> None:
        self.outage = outage
        if outage.attempts > 1 and time.monotonic() - self.last_told < TELL_EVERY_SECONDS:
            return
        self.last_told = time.monotonic()
        line = f"transfer {self.ctx.transfer_id}: {outage.line()}"
        get_run_logger().warning("%s", line)
        description = f"⚠ {redact(line)}"
        if self.artifact is None:
            self.artifact = bookkeeping(
                lambda: create_progress_artifact(progress=0.0, key=self.key, description=description),
                "create the retry artifact",
            )
        else:
            artifact = self.artifact
            bookkeeping(
                lambda: update_progress_artifact(artifact_id=artifact, progress=0.0, description=description),
                "update the retry artifact",
            )

    def recovered(self) -> None:
        if self.outage is None:
            return
        line = f"transfer {self.ctx.transfer_id}: {self.what} succeeded after {self.outage.attempts} failed attempts"
        get_run_logger().info("%s", line)
        if self.artifact is not None:
            artifact = self.artifact
            bookkeeping(
                lambda: update_progress_artifact(artifact_id=artifact, progress=100.0, description=line),
                "update the retry artifact",
            )
