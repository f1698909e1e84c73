"""The ``acr-transfer`` command: run a transfer, run only its preflight, set up Prefect, or start the
local Azure stand-in.

``acr-transfer emulator …`` hands over to the stand-in program (``python -m emulator``) by exec, so the
product never imports the stand-in. Everything else runs flows against the Prefect API in
``PREFECT_API_URL``, or a temporary local one when it is unset.

Exit codes: 0 done, 1 failed (a transfer, a cleanup), 2 bad input or a failed preflight (nothing was created),
130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import uuid
from pathlib import Path

from rich.console import Console
from rich.text import Text

from acr_transfer.errors import AcrTransferError, ConfigError, PreflightError

console = Console(highlight=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="acr-transfer", description="Drive Azure Container Registry transfers.")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("emulator", help="the local Azure stand-in: `acr-transfer emulator up --help`")
    for name, helptext in (("run", "run a transfer for one route"), ("preflight", "run only the preflight checks")):
        p = sub.add_parser(name, help=helptext)
        p.add_argument("--route", required=True, help="route name in the routes file")
        p.add_argument(
            "--routes", type=Path, default=None, help="routes file (default: $ACR_TRANSFER_ROUTES or routes.yaml)"
        )
        p.add_argument("--artifact", action="append", default=[], help="transfer this artifact instead (repeatable)")
        p.add_argument("--transfer-id", default=None, help="continue this transfer (default: a new id)")
        p.add_argument(
            "--output", choices=("text", "json"), default="text", help="json: one JSON document on stdout, for scripts"
        )
        p.add_argument("-v", "--verbose", action="store_true", help="print Prefect's log lines instead of a live table")
        if name == "run":
            p.add_argument("--dry-run", action="store_true", help="print the plan and the checks; create nothing")
            p.add_argument("--show-runs", action="store_true", help="add export and import run names to the table")
            p.add_argument(
                "--full",
                action="store_true",
                help="send everything a select: route selects, ignoring what the target or the export ledger holds",
            )
            p.add_argument(
                "--no-route-lock",
                action="store_true",
                help="do not take the route's lock (another transfer of the route may then run at once)",
            )
    clean = sub.add_parser("cleanup", help="delete old run records by policy (never a failed transfer's)")
    which = clean.add_mutually_exclusive_group(required=True)
    which.add_argument("--registry", help="registry name or ARM resource id")
    which.add_argument("--route", help="both registries of this route, with its cleanup.delete_runs_after_days")
    clean.add_argument("--routes", type=Path, default=None, help="routes file for --route")
    clean.add_argument("--resource-group", default=os.environ.get("AZURE_RESOURCE_GROUP"), help="its resource group")
    clean.add_argument("--older-than-days", type=float, default=30, help="age after which records may go (30)")
    clean.add_argument("--dry-run", action="store_true", help="list what would be deleted")
    events = sub.add_parser("events", help="the event receiver (Event Grid, ACR webhooks → Prefect events)")
    events_sub = events.add_subparsers(dest="events_command", required=True)
    serve = events_sub.add_parser("serve", help="serve it; needs ACR_TRANSFER_EVENTS_SECRET")
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    serve.add_argument("--port", type=int, default=8765, help="port (8765)")
    setup = sub.add_parser("setup", help="create the Prefect objects transfers use (idempotent)")
    setup.add_argument("--routes", type=Path, default=None, help="routes file whose subscriptions get a read budget")
    return parser


def existing_routes_file(given: Path | None) -> Path:
    """The routes file ``--routes`` names, else ``$ACR_TRANSFER_ROUTES``, else ``routes.yaml``.

    Raises:
        ConfigError: it does not exist; the message says how to name another.
    """
    from acr_transfer.routes import routes_path  # imported here: `acr-transfer emulator` needs no models

    path = routes_path(given)
    if not path.exists():
        raise ConfigError(f"routes file '{path}' not found; pass --routes FILE or set ACR_TRANSFER_ROUTES")
    return path


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``acr-transfer`` console script; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # without PREFECT_API_URL a temporary server is started; migrating its fresh database can outlast Prefect's
    # 20 s default on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "90")
    # heartbeats every 30 s, so `acr-transfer setup`'s automation can tell a killed run from a slow one
    os.environ.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    if argv and argv[0] == "emulator":
        os.execv(sys.executable, [sys.executable, "-m", "emulator", *argv[1:]])
    args = build_parser().parse_args(argv)
    try:
        if args.command == "setup":
            from acr_transfer.routes import DEFAULT_ROUTES_FILE, routes_path
            from deployments.setup import setup

            path = routes_path(args.routes)
            # setup needs no routes file: only one the user named must exist, the default one may be absent
            named = args.routes is not None or path != DEFAULT_ROUTES_FILE
            setup(existing_routes_file(path) if named or path.exists() else None, console)
            return 0
        if args.command == "events":
            from deployments.events import serve as serve_events

            serve_events(args.host, args.port)
            return 0
        if args.command == "cleanup":
            from deployments.runner import cleanup_command

            if args.route:
                from deployments.runner import cleanup_route_command

                return cleanup_route_command(existing_routes_file(args.routes), args.route, args.dry_run, console)
            return cleanup_command(args.registry, args.resource_group, args.older_than_days, args.dry_run, console)
        from deployments.runner import Output, preflight_command, run_command

        out = Output(
            console, json=args.output == "json", verbose=args.verbose, show_runs=getattr(args, "show_runs", False)
        )
        request_args = (
            existing_routes_file(args.routes),
            args.route,
            args.artifact,
            args.transfer_id or uuid.uuid4().hex[:12],
        )
        if args.command == "preflight":
            return preflight_command(*request_args, out=out)
        return run_command(
            *request_args, dry_run=args.dry_run, out=out, route_lock=not args.no_route_lock, full=args.full
        )
    except (PreflightError, ConfigError) as e:  # bad input or a failed check: nothing was created
        return _failed(args, e.message, 2)
    except AcrTransferError as e:
        return _failed(args, e.message, 1)
    except KeyboardInterrupt:
        console.print("[yellow]interrupted[/yellow]")
        return 130


def _failed(args: argparse.Namespace, message: str, code: int) -> int:
    """Say what went wrong, as a red line or, with ``--output json``, as the one JSON document."""
    if getattr(args, "output", "text") == "json":
        doc = {"command": args.command, "ok": False, "exit_code": code, "error": message}
        sys.stdout.write(json.dumps(doc, indent=2, ensure_ascii=False) + "\n")
    else:
        console.print(Text(f"✗ {message}", style="red"))
    return code
