"""``acr-transfer setup``: the Prefect objects transfers rely on, created idempotently."""

from __future__ import annotations

from pathlib import Path

from rich.console import Console

from acr_transfer.routes import load_routes
from acr_transfer.settings import get_settings


def setup(routes_file: Path | None, console: Console) -> None:
    """Create the shared ARM read budget (a global concurrency rate limit) for every subscription in use."""
    from tasks.clients import ensure_read_budget

    settings = get_settings()
    subscriptions = {settings.subscription_id} if settings.subscription_id else set()
    if routes_file is not None:
        for route in load_routes(routes_file).routes.values():
            for side in (route.source, route.target):
                if side is not None:
                    subscriptions.add(side.registry.parts(settings.subscription_id)[0])
    for sub in sorted(s for s in subscriptions if s):
        name = ensure_read_budget(sub, settings)
        console.print(
            f"✓ ARM read budget {name}: {settings.read_budget_burst} burst, {settings.read_budget_per_second}/s"
        )
    if not subscriptions:
        console.print("nothing to set up: no subscription in AZURE_SUBSCRIPTION_ID or the routes file")
