"""Retry only what can pass: every step task retries a ``TransientError`` and nothing else."""

from __future__ import annotations

from typing import Any

from prefect.tasks import exponential_backoff

from acr_transfer.errors import TransientError
from acr_transfer.settings import get_settings


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
        "retries": settings.task_retries,
        "retry_delay_seconds": exponential_backoff(backoff_factor=settings.retry_base_seconds)
        if settings.retry_base_seconds > 0
        else 0,
        "retry_jitter_factor": 0.5 if settings.retry_base_seconds > 0 else None,
        "retry_condition_fn": retry_transient,
    }
