"""``acr-transfer run`` and ``acr-transfer preflight``: a flow in this process, with a live display or one
JSON document.

Exit codes: 0 done, 1 the transfer failed (or could not finish), 2 a preflight check failed or the input was
bad (nothing was created). What is shown is drawn in ``deployments/terminal.py``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from pydantic import ValidationError
from rich.console import Console, RenderableType
from rich.live import Live
from rich.text import Text

from acr_transfer.context import resolve_configured
from acr_transfer.errors import AcrTransferError, ConfigError, PreflightError, redact
from acr_transfer.models import TransferRequest
from acr_transfer.progress import subscribe
from acr_transfer.results import ArtifactRow, TransferResult

if TYPE_CHECKING:
    from flows.transfer import PreflightReport
from deployments.terminal import (
    PrefectLogFile,
    ProgressBoard,
    check_documents,
    checks_report,
    plan_document,
    plan_lines,
    preflight_failure,
    result_document,
    result_table,
    sync_document,
    sync_report,
)

EXIT_OK, EXIT_FAILED, EXIT_BAD_INPUT = 0, 1, 2


@dataclass(frozen=True)
class Output:
    """How a command reports: to a person (colours, a live table, Prefect's log in a file unless ``verbose``)
    or, with ``json``, to a script (one JSON document on stdout, nothing else there)."""

    console: Console
    json: bool = False
    verbose: bool = False
    show_runs: bool = False

    def show(self, *renderables: RenderableType) -> None:
        if not self.json:
            self.console.print(*renderables)

    def document(self, doc: dict[str, Any]) -> None:
        # straight to the stream: rich would wrap long strings and colour a terminal's copy
        self.console.file.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
        self.console.file.flush()

    def status(self, message: str) -> contextlib.AbstractContextManager[Any]:
        """A spinner while something runs; none when Prefect's log lines or JSON own the output."""
        if self.json or self.verbose:
            return contextlib.nullcontext()
        return self.console.status(message)


def build_request(
    routes_file: Path, route: str, artifacts: list[str], transfer_id: str, dry_run: bool = False, full: bool = False
) -> TransferRequest:
    """The flow parameter for one route of a routes file, loaded with this process's limits.

    Raises:
        ConfigError: the routes file does not load, has no such route, or an argument is invalid.
    """
    from flows.routes import load_configured_routes

    rt = load_configured_routes(routes_file).get(route)
    try:
        return TransferRequest(
            route=rt, artifacts=artifacts or None, transfer_id=transfer_id, dry_run=dry_run, full=full
        )
    except ValidationError as e:
        problems = "; ".join(str(err["msg"]).removeprefix("Value error, ") for err in e.errors())
        raise ConfigError(f"invalid request for route '{route}': {problems}") from None


def log_path(transfer_id: str) -> Path:
    """Where a transfer's Prefect log lines go while the terminal shows the live table (appended per run)."""
    from prefect.settings import PREFECT_HOME

    return Path(PREFECT_HOME.value()) / "acr-transfer" / "logs" / f"{transfer_id}.log"


@contextlib.contextmanager
def prefect_log(out: Output, transfer_id: str) -> Iterator[Path | None]:
    """Prefect's console lines into the transfer's log file for the rest of the command, unless ``verbose``."""
    if out.verbose:
        yield None
        return
    path = log_path(transfer_id)
    # restore=False: the process ends after the command, and Prefect logs from its exit hooks too
    with PrefectLogFile(path, restore=False):
        yield path


def _why(error: BaseException) -> str:
    if isinstance(error, AcrTransferError):
        return error.message
    return redact(f"{type(error).__name__}: {error}")


def _checks(request: TransferRequest) -> PreflightReport:
    """Run the ``transfer-preflight`` flow; every check, passed or not, and a ``select:`` route's plan.

    Raises:
        AcrTransferError: the checks could not run (bad input, Azure unreachable after retries).
    """
    from flows.transfer import transfer_preflight

    state = transfer_preflight(request, return_state=True)
    outcome = state.result(raise_on_failure=False)
    if isinstance(outcome, AcrTransferError):
        raise outcome
    if isinstance(outcome, BaseException):
        raise AcrTransferError(f"preflight could not run: {_why(outcome)}")
    return cast("PreflightReport", outcome)


def _log_line(out: Output, log: Path | None) -> None:
    if log is not None:
        out.show(Text(f"log: {log}", style="dim"))


def preflight_command(routes_file: Path, route: str, artifacts: list[str], transfer_id: str, *, out: Output) -> int:
    """Print every preflight check once with ✓ or ✗ and the fix; exit 0 only when all pass, else 2."""
    request = build_request(routes_file, route, artifacts, transfer_id)
    with prefect_log(out, transfer_id) as log, out.status("preflight checks…"):
        report = _checks(request)
    checks = report.checks
    code = EXIT_OK if all(c.ok for c in checks) else EXIT_BAD_INPUT
    if out.json:
        out.document(
            {"command": "preflight", "route": route, "transfer_id": transfer_id, "ok": code == EXIT_OK,
             "exit_code": code, "checks": check_documents(checks), "sync": sync_document(report.plan),
             "log": str(log) if log else None}
        )  # fmt: skip
    if report.plan is not None:
        out.show(sync_report(report.plan))
    out.show(checks_report(checks))
    _log_line(out, log)
    return code


def run_command(
    routes_file: Path,
    route: str,
    artifacts: list[str],
    transfer_id: str,
    *,
    dry_run: bool,
    out: Output,
    route_lock: bool = True,
    full: bool = False,
) -> int:
    """Run ``registry_transfer`` (or, with ``dry_run``, only plan and check); exit 0 only when every
    requested artifact was verified, 1 when the transfer failed, 2 when preflight failed.

    The transfer holds the route's lock like every other entry point; ``route_lock=False`` (``--no-route-lock``)
    skips it, and says so."""
    request = build_request(routes_file, route, artifacts, transfer_id, dry_run, full)
    ctx = resolve_configured(request, transfer_id)
    with prefect_log(out, transfer_id) as log:
        if ctx.route.select is None or request.artifacts:  # a sync's plan is known once it has listed
            out.show(plan_lines(ctx))
        if dry_run:
            with out.status("listing and preflight checks…" if ctx.route.select else "preflight checks…"):
                report = _checks(request)
            checks = report.checks
            code = EXIT_OK if all(c.ok for c in checks) else EXIT_BAD_INPUT
            if out.json:
                out.document(
                    {"command": "run", "dry_run": True, "route": route, "transfer_id": transfer_id,
                     "ok": code == EXIT_OK, "exit_code": code, "plan": plan_document(ctx),
                     "sync": sync_document(report.plan), "checks": check_documents(checks),
                     "log": str(log) if log else None}
                )  # fmt: skip
            if report.plan is not None:
                out.show(sync_report(report.plan))
            out.show(checks_report(checks))
            _log_line(out, log)
            return code
        board = ProgressBoard(transfer_id)
        if not route_lock:
            out.show(Text(f"without the route lock of {route}: another transfer of it may run at once", style="yellow"))
        try:
            state = _transfer(request, board, out, route_lock)
        except KeyboardInterrupt:
            out.show(Text(f"interrupted: {_next_step(route, transfer_id, board.created_runs)}", style="yellow"))
            return 130
        return _report(state, board, route, transfer_id, out, log)


def _transfer(request: TransferRequest, board: ProgressBoard, out: Output, route_lock: bool = True) -> Any:
    """The flow's final state; the live board follows its progress notices meanwhile."""
    from flows.transfer import registry_transfer

    unsubscribe = subscribe(board)
    try:
        if out.json or out.verbose:
            return registry_transfer(request, take_route_lock=route_lock, return_state=True)
        with Live(console=out.console, get_renderable=board.render, refresh_per_second=4, transient=True):
            return registry_transfer(request, take_route_lock=route_lock, return_state=True)
    finally:
        unsubscribe()


def _next_step(route: str, transfer_id: str, created: bool) -> str:
    if created:
        command = f"acr-transfer run --route {route} --transfer-id {transfer_id}"
        return f"re-run with the same --transfer-id to continue: {command}"
    return "nothing was created in Azure"


def _report(state: Any, board: ProgressBoard, route: str, transfer_id: str, out: Output, log: Path | None) -> int:
    """The final table and verdict of a transfer's flow state; returns the exit code."""
    outcome = state.result(raise_on_failure=False)
    error = outcome if isinstance(outcome, BaseException) else None
    result = outcome if isinstance(outcome, TransferResult) else _published_result(state, route, transfer_id)
    created = board.created_runs or bool(result and any(r.export_run or r.import_run for r in result.rows))
    if isinstance(error, PreflightError | ConfigError):
        code, created = EXIT_BAD_INPUT, False  # raised before anything was created
    elif error is not None or result is None or not result.succeeded:
        code = EXIT_FAILED
    else:
        code = EXIT_OK
    if out.json:
        out.document(
            {"command": "run", "dry_run": False, "route": route, "transfer_id": transfer_id, "ok": code == EXIT_OK,
             "exit_code": code, "result": result_document(result) if result else None,
             "error": _why(error) if error else None,
             "preflight_failures": list(error.failures) if isinstance(error, PreflightError) else [],
             "can_continue": created, "log": str(log) if log else None}
        )  # fmt: skip
        return code
    if isinstance(error, PreflightError):
        out.show(preflight_failure(error.message, [str(f) for f in error.failures]))
    else:
        if result is not None and result.rows:
            out.show(result_table(result, show_runs=out.show_runs))
        if result is not None and result.plan is not None:
            out.show(Text(f"plan: {result.plan.summary()}"))
        if code == EXIT_OK and result is not None and result.plan is not None and not result.rows:
            out.show(Text("✓ nothing changed: no run created", style="green"))
        elif code == EXIT_OK:
            out.show(Text("✓ every artifact verified in the target", style="green"))
        else:
            out.show(Text(f"✗ {_why(error) if error else f'transfer {transfer_id} did not complete'}", style="red"))
            if code == EXIT_FAILED:
                out.show(Text(_next_step(route, transfer_id, created), style="yellow"))
    _log_line(out, log)
    return code


def _published_result(state: Any, route: str, transfer_id: str) -> TransferResult | None:
    """The rows a failed flow run published in its artifact table (the one whose rows are artifacts), or None
    (it failed before publishing)."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId, ArtifactFilterType

    only = ArtifactFilter(
        type=ArtifactFilterType(any_=["table"]),
        flow_run_id=ArtifactFilterFlowRunId(any_=[state.state_details.flow_run_id]),
    )
    with contextlib.suppress(Exception):  # only a display: an unreadable artifact shows no table
        with get_client(sync_client=True) as client:
            tables = client.read_artifacts(artifact_filter=only, limit=10)
        for table in tables:
            data = json.loads(table.data) if isinstance(table.data, str) else table.data
            if isinstance(data, list) and data and all(isinstance(r, dict) and "artifact" in r for r in data):
                rows = [ArtifactRow.model_validate(r) for r in data]
                return TransferResult(route=route, transfer_id=transfer_id, succeeded=False, rows=rows)
    return None


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
    """Apply a route's cleanup policy: run records (``cleanup.delete_runs_after_days``) on its source and target
    registries, and the blobs of its abandoned transfers (``cleanup.delete_abandoned_blobs_after_days``)."""
    from flows.cleanup import cleanup_route

    result = cleanup_route(route, str(routes_file), dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    if not result.registries:
        console.print(f"route {route} keeps its run records (cleanup.delete_runs_after_days is empty)")
    for registry in result.registries:
        console.print(f"{registry.registry}: {verb} {len(registry.deleted)} run record(s) by the route's policy")
    if not result.abandoned:
        console.print(f"route {route}: no abandoned transfer left blobs behind")
    for a in result.abandoned:
        console.print(f"abandoned transfer {a['transfer_id']} ({a['why']}; last run {a['last_activity']}):")
        for blob in a["blobs"]:  # type: ignore[attr-defined]
            console.print(f"  {blob}", soft_wrap=True)
        console.print(
            f"  {a['note']}; continue it with `acr-transfer run --route {route} --transfer-id {a['transfer_id']}`"
        )
    return 0
