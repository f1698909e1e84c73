"""Our own Prefect API calls — artifacts, run names, budget leases — never fail or stall a transfer.

Azure completes a transfer whether or not the Prefect server heard of its progress, so a failed bookkeeping
call is one warning (per kind of call, at most a minute apart) and the step goes on. Progress updates are tried
once (:func:`quick`: no client retries, whose backoff would hold the step for half a minute per call); what a
person must see at the end (the summary) keeps the client's retries first.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from acr_transfer.errors import redact, shown

T = TypeVar("T")
WARN_EVERY_SECONDS = 60
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


def bookkeeping(call: Callable[[], T], what: str, *, retries: bool = False) -> T | None:
    """Run one of our Prefect API calls; on failure, warn (once a minute per ``what``) and return None.

    Args:
        call: the call, without arguments.
        what: names it in the warning (``"update progress"``).
        retries: keep the Prefect client's retries (for what must reach the server, like the final summary).
    """
    try:
        if retries:
            return call()
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
