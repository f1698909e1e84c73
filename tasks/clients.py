"""The process's one :class:`~acr_transfer.azure.clients.AzureClients`, with the ARM read budget's optional
Prefect share wired in.

Tasks ask :func:`shared` for it; it is built from :func:`~acr_transfer.settings.get_settings` on first use.
A test (or an embedding program) builds its own with :func:`build` and puts it in place with :func:`install`
instead of clearing caches.
"""

from __future__ import annotations

import threading

from acr_transfer.azure.clients import AzureClients
from acr_transfer.settings import Settings, get_credential, get_settings
from tasks.concurrency import ReadBudget

_lock = threading.Lock()
_shared: AzureClients | None = None


def build(settings: Settings | None = None, credential: object | None = None) -> AzureClients:
    """Clients whose ARM reads are paced by ARM's read budget; with ``read_budget_shared=prefect``, workers also
    share it through coarse leases of a Prefect rate limit."""
    settings = settings or get_settings()
    budget = ReadBudget(settings) if settings.read_budget_shared == "prefect" else None
    return AzureClients(
        settings,
        credential if credential is not None else get_credential(),
        read_lease=budget.lease if budget is not None else None,
    )


def shared() -> AzureClients:
    """This process's clients (built on first use)."""
    global _shared
    with _lock:
        if _shared is None:
            _shared = build()
        return _shared


def install(clients: AzureClients | None) -> None:
    """Make ``clients`` this process's clients (None: build anew on next use); the previous ones are closed."""
    global _shared
    with _lock:
        previous, _shared = _shared, clients
    if previous is not None and previous is not clients:
        previous.close()
