"""``acr-transfer setup``: the Prefect objects transfers rely on, created idempotently.

- the variable ``acr_transfer_work_pool`` that prefect.yaml reads (default ``acr-transfer``, or
  ``$ACR_TRANSFER_WORK_POOL``), and a *process* work pool of that name when none exists (production points the
  variable at a Kubernetes or ACI pool it created itself);
- per subscription, the shared ARM read budget (a rate limit: burst and refill from settings);
- per route, the one-slot lock that keeps two transfers of the route from overlapping.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

from rich.console import Console

from acr_transfer.settings import get_settings

POOL_VARIABLE = "acr_transfer_work_pool"


def ensure_work_pool(console: Console) -> str:
    """The work pool named by the variable (created as a process pool when missing); returns its name."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import VariableCreate, WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        variable = client.read_variable_by_name(POOL_VARIABLE)
        if variable is None:
            name = os.environ.get("ACR_TRANSFER_WORK_POOL", "acr-transfer")
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_variable(VariableCreate(name=POOL_VARIABLE, value=name))
            console.print(f"✓ variable {POOL_VARIABLE} = {name} (created)")
        else:
            name = str(variable.value)
            console.print(f"✓ variable {POOL_VARIABLE} = {name}")
        try:
            pool = client.read_work_pool(name)
            console.print(f"✓ work pool {name} ({pool.type})")
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            with contextlib.suppress(ObjectAlreadyExists):
                client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            console.print(f"✓ work pool {name} (process, created)")
    return name


def setup(routes_file: Path | None, console: Console) -> None:
    """Create the work pool variable and pool, the ARM read budgets and the route locks."""
    from flows.routes import load_configured_routes
    from tasks.concurrency import ensure_limit, ensure_read_budget, route_lock_name

    settings = get_settings()
    ensure_work_pool(console)
    subscriptions = {settings.subscription_id} if settings.subscription_id else set()
    routes = load_configured_routes(routes_file).routes.values() if routes_file is not None else []
    for route in routes:
        for side in (route.source, route.target):
            if side is not None:
                subscriptions.add(side.registry.parts(settings.subscription_id)[0])
        ensure_limit(route_lock_name(route.name), 1)
        console.print(f"✓ route lock {route_lock_name(route.name)} (1 slot)")
    for sub in sorted(s for s in subscriptions if s):
        name = ensure_read_budget(sub, settings)
        console.print(
            f"✓ ARM read budget {name}: {settings.read_budget_burst} burst, {settings.read_budget_per_second}/s"
        )
