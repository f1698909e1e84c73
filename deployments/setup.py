"""``acr-transfer setup``: the Prefect objects transfers rely on, created idempotently.

- the variable ``acr_transfer_work_pool`` that prefect.yaml reads (default ``acr-transfer``, or
  ``$ACR_TRANSFER_WORK_POOL``), and a *process* work pool of that name when none exists (production points the
  variable at a Kubernetes or ACI pool it created itself);
- per subscription, the shared ARM read budget (a rate limit: burst and refill from settings);
- per route, the one-slot lock that keeps two transfers of the route from overlapping;
- the automation that ends a flow run of ours Crashed when its process died (SIGKILL, a lost node): every flow
  run sends a heartbeat event (``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``, 30 s where this project starts the
  process), and a run whose heartbeats stop for ``ACR_TRANSFER_CRASH_AFTER_SECONDS`` (90) without a final state
  is set Crashed, so it is not left Running forever and a waiting transfer reclaims its route lock;
- for the route-named flows already deployed (``transfer``, ``export-route``, ``import-route-blob``), their
  ``route`` parameter as a choice of the routes file's names, so the UI's run form offers a select. ``prefect
  deploy`` writes the schema from the flow's signature again, so run setup after deploying (``make up`` does).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console

from acr_transfer.models import TransferRoute
from acr_transfer.routes import RoutesFile
from acr_transfer.settings import get_settings

POOL_VARIABLE = "acr_transfer_work_pool"
CRASH_AUTOMATION = "acr-transfer: crashed flow runs (no heartbeat)"
HEARTBEAT_SECONDS = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY where this project starts a flow's process

# which routes each route-named flow can run: the side(s) of the route it uses must be there
ROUTE_FLOWS: dict[str, Callable[[TransferRoute], bool]] = {
    "transfer": lambda r: r.source is not None and r.target is not None,
    "export-route": lambda r: r.source is not None,
    "import-route-blob": lambda r: r.target is not None,
}


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


def our_flow_names() -> list[str]:
    """Every flow of this project, by name: the crash automation touches these runs and no one else's."""
    from flows import cleanup, routes, transfer

    found = {
        obj.name
        for module in (cleanup, routes, transfer)
        for obj in vars(module).values()
        if type(obj).__name__ == "Flow" and getattr(obj, "__module__", None) is not None
    }
    return sorted(found)


def crash_automation(within_seconds: float, flow_names: list[str]) -> Any:
    """The automation (Prefect's proactive trigger): after a heartbeat of one of ``flow_names``' runs, expect
    another event of that run (a heartbeat or its final state) within ``within_seconds``; if none comes, set
    the run Crashed."""
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    return AutomationCore(
        name=CRASH_AUTOMATION,
        description="A flow run of acr-transfer whose heartbeats stopped without a final state: its process died. "
        "A re-run of the same transfer continues it.",
        trigger=EventTrigger(
            match={"prefect.resource.id": "prefect.flow-run.*"},
            match_related={"prefect.resource.role": "flow", "prefect.resource.name": flow_names},
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.*"},
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=within_seconds,
        ),
        actions=[
            ChangeFlowRunState(
                state=StateType.CRASHED,
                message=f"no heartbeat for {within_seconds:.0f} s: the process running this flow run died; re-run "
                "the same transfer (same transfer id, or the next sync-routes) to continue it",
            )
        ],
    )


def ensure_crash_detection(console: Console, within_seconds: float | None = None) -> None:
    """Create (or bring up to date) :data:`CRASH_AUTOMATION`; idempotent."""
    from prefect.client.orchestration import get_client

    within = within_seconds if within_seconds is not None else get_settings().crash_after_seconds
    wanted = crash_automation(within, our_flow_names())
    with get_client(sync_client=True) as client:
        found = client.read_automations_by_name(CRASH_AUTOMATION)
        if not found:
            client.create_automation(wanted)
            console.print(f"✓ automation '{CRASH_AUTOMATION}' (Crashed after {within:.0f} s, created)")
            return
        current = found[0]
        same = current.trigger == wanted.trigger and current.actions == wanted.actions and current.enabled
        if not same:
            client.update_automation(current.id, wanted)
        console.print(f"✓ automation '{CRASH_AUTOMATION}' (Crashed after {within:.0f} s{'' if same else ', updated'})")
        for extra in found[1:]:  # two setups at once: keep one
            client.delete_automation(extra.id)


def setup(routes_file: Path | None, console: Console) -> None:
    """Create the work pool variable and pool, the ARM read budgets and the route locks; offer the route names
    in the run forms of the route-named deployments already deployed (:func:`offer_route_names`)."""
    from flows.routes import load_configured_routes
    from tasks.concurrency import ensure_limit, ensure_read_budget, route_lock_name

    settings = get_settings()
    ensure_work_pool(console)
    ensure_crash_detection(console)
    subscriptions = {settings.subscription_id} if settings.subscription_id else set()
    loaded = load_configured_routes(routes_file) if routes_file is not None else None
    routes = loaded.routes.values() if loaded is not None else []
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
    if loaded is not None:
        offer_route_names(loaded, console)


def with_route_choices(schema: dict[str, Any], names: list[str]) -> dict[str, Any]:
    """``schema`` (a deployment's parameter schema) with its ``route`` property limited to ``names``: an
    ``enum``, which Prefect's UI renders as a select and the server enforces when a run is created."""
    properties = dict(schema.get("properties") or {})
    properties["route"] = {**properties["route"], "enum": names}
    return {**schema, "properties": properties}


def offer_route_names(routes: RoutesFile, console: Console) -> None:
    """Make ``route`` a choice of ``routes``' names on every deployment of :data:`ROUTE_FLOWS` (the routes each
    flow can run); deployments not there yet, or already up to date, are left alone, and so is one whose
    default ``route`` is not among the choices (the server would refuse the schema; the line printed says so).
    A route named outside the choice (another ``routes_file``) is then refused when the run is created: run
    setup again after editing the routes file.

    Raises:
        prefect.exceptions.PrefectHTTPStatusError: the Prefect API refused a read or an update.
    """
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import DeploymentUpdate
    from prefect.client.schemas.filters import FlowFilter, FlowFilterName

    with get_client(sync_client=True) as client:
        for flow_name, can_run in ROUTE_FLOWS.items():
            names = [r.name for r in routes.routes.values() if can_run(r)]
            found = client.read_deployments(flow_filter=FlowFilter(name=FlowFilterName(any_=[flow_name])))
            for deployment in found:
                schema = deployment.parameter_openapi_schema or {}
                if not names or "route" not in (schema.get("properties") or {}):
                    continue
                wanted = with_route_choices(schema, names)
                label = f"{flow_name}/{deployment.name}"
                default = (deployment.parameters or {}).get("route")
                if default is not None and default not in names:
                    console.print(
                        f"! deployment {label}: its default route '{default}' is not one of {', '.join(names)}"
                        f" ({routes.source}), so route stays free text; change the default in prefect.yaml"
                    )
                    continue
                if wanted == schema:
                    console.print(f"✓ deployment {label}: route is one of {', '.join(names)}")
                    continue
                client.update_deployment(deployment.id, DeploymentUpdate(parameter_openapi_schema=wanted))
                console.print(f"✓ deployment {label}: route is one of {', '.join(names)} (updated)")
