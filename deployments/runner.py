"""``acr-transfer run`` and ``acr-transfer preflight``: a flow in this process, with a live display."""

from __future__ import annotations

import threading
from pathlib import Path

from rich.console import Console
from rich.live import Live
from rich.table import Table

from acr_transfer.context import resolve_configured
from acr_transfer.models import TransferRequest
from acr_transfer.progress import Notice, subscribe
from acr_transfer.results import TransferResult
from acr_transfer.steps import ArtifactStatus


def build_request(routes_file: Path, route: str, artifacts: list[str], transfer_id: str, dry_run: bool = False):
    """The flow parameter for one route of a routes file, loaded with this process's limits.

    Raises:
        ConfigError: the routes file does not load, or has no such route.
    """
    from flows.routes import load_configured_routes

    rt = load_configured_routes(routes_file).get(route)
    return TransferRequest(route=rt, artifacts=artifacts or None, transfer_id=transfer_id, dry_run=dry_run)


class ProgressBoard:
    """What the live display shows: one line per batch and step."""

    def __init__(self, transfer_id: str) -> None:
        self.transfer_id = transfer_id
        self.rows: dict[tuple[int, str], Notice] = {}
        self.lock = threading.Lock()

    def __call__(self, notice: Notice) -> None:
        if notice.transfer_id == self.transfer_id:
            with self.lock:
                self.rows[(notice.batch, notice.step)] = notice

    def render(self) -> Table:
        table = Table(title=f"transfer {self.transfer_id}", expand=False)
        for col in ("batch", "step", "state", "progress", "detail"):
            table.add_column(col)
        order = {"export": 0, "bridge": 1, "import": 2, "verify": 3}
        with self.lock:
            items = sorted(self.rows.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 9)))
        for (batch, step), n in items:
            pct = "" if n.percentage is None else f"{n.percentage:>3}%"
            colour = {"Succeeded": "green", "Failed": "red"}.get(n.state, "yellow")
            table.add_row(str(batch), step, f"[{colour}]{n.state}[/{colour}]", pct, n.detail)
        return table


def print_plan(request: TransferRequest, console: Console) -> None:
    ctx = resolve_configured(request, request.transfer_id or "")
    console.print(
        f"[bold]plan[/bold] transfer {ctx.transfer_id} on route {ctx.route.name}: "
        f"{len(ctx.plan.artifacts)} artifacts in {len(ctx.plan.batches)} batch(es)"
    )
    for b in ctx.plan.batches:
        console.print(
            f"  batch {b.index}: {len(b.artifacts)} artifacts → export run {b.export_run(ctx.transfer_id, 1)}"
            f" → blob {b.blob_name} → import run {b.import_run(ctx.transfer_id, 1)}"
        )


def result_table(result: TransferResult) -> Table:
    table = Table(title=f"transfer {result.transfer_id} ({result.route})")
    for col in ("artifact", "batch", "export run", "import run", "status", "digest"):
        table.add_column(col)
    for r in result.rows:
        colour = "green" if r.status is ArtifactStatus.VERIFIED else "red"
        status = f"[{colour}]{r.status.value}[/{colour}]"
        table.add_row(r.artifact, str(r.batch), r.export_run, r.import_run, status, r.digest[:19])
    return table


def run_command(
    routes_file: Path, route: str, artifacts: list[str], transfer_id: str, *, dry_run: bool, console: Console
) -> int:
    """Run ``registry_transfer``; exit code 0 only when every requested artifact was verified."""
    from flows.transfer import registry_transfer, transfer_preflight

    request = build_request(routes_file, route, artifacts, transfer_id, dry_run)
    print_plan(request, console)
    if dry_run:
        checks = transfer_preflight(request)
        for c in checks:
            console.print(c.line)
        return 0 if all(c.ok for c in checks) else 2
    board = ProgressBoard(transfer_id)
    unsubscribe = subscribe(board)
    try:
        with Live(board.render(), console=console, refresh_per_second=4, transient=True) as live:
            stop = threading.Event()

            def refresh() -> None:
                while not stop.wait(0.25):
                    live.update(board.render())

            threading.Thread(target=refresh, daemon=True).start()
            try:
                state = registry_transfer(request, return_state=True)
            finally:
                stop.set()
    finally:
        unsubscribe()
    console.print(board.render())
    result = state.result(raise_on_failure=False)
    if isinstance(result, TransferResult):
        console.print(result_table(result))
        ok = result.succeeded
    else:
        console.print(f"[red]✗ {result}[/red]")
        ok = False
    console.print(
        "[green]✓ every artifact verified in the target[/green]"
        if ok
        else f"[red]✗ transfer {transfer_id} did not complete; re-run with --transfer-id {transfer_id} "
        "to continue[/red]"
    )
    return 0 if ok else 1


def preflight_command(
    routes_file: Path, route: str, artifacts: list[str], transfer_id: str, *, console: Console
) -> int:
    """Print every preflight check with ✓ or ✗ and the fix; exit 0 only when all pass."""
    from flows.transfer import transfer_preflight

    request = build_request(routes_file, route, artifacts, transfer_id)
    checks = transfer_preflight(request)
    for c in checks:
        console.print(f"[{'green' if c.ok else 'red'}]{c.line}[/]")
    failed = [c for c in checks if not c.ok]
    console.print(f"{len(checks) - len(failed)} of {len(checks)} checks passed")
    return 0 if not failed else 2


def cleanup_command(registry: str, resource_group: str | None, days: float, dry_run: bool, console: Console) -> int:
    """Apply the run-record policy to one registry and list what went."""
    from acr_transfer.models import RegistryRef
    from flows.cleanup import cleanup

    if registry.startswith("/subscriptions/"):
        ref = RegistryRef(resource_id=registry)
    else:
        ref = RegistryRef(name=registry, resource_group=resource_group)
    result = cleanup(ref, older_than_days=days, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    for run in result.deleted:
        console.print(f"  {verb} {run}")
    console.print(f"{verb} {len(result.deleted)} run record(s) on {result.registry}; kept {result.kept}")
    return 0


def cleanup_route_command(routes_file: Path, route: str, dry_run: bool, console: Console) -> int:
    """Apply a route's ``cleanup.delete_runs_after_days`` to its source and target registries."""
    from flows.cleanup import cleanup
    from flows.routes import load_configured_routes

    rt = load_configured_routes(routes_file).get(route)
    days = rt.cleanup.delete_runs_after_days
    if days is None:
        console.print(f"route {route} keeps its run records (cleanup.delete_runs_after_days is empty)")
        return 0
    for side in (rt.source, rt.target):
        if side is not None:
            result = cleanup(side.registry, older_than_days=days, dry_run=dry_run)
            verb = "would delete" if dry_run else "deleted"
            console.print(f"{result.registry}: {verb} {len(result.deleted)} run record(s) older than {days} days")
    return 0
