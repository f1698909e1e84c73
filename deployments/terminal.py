"""What ``acr-transfer run`` and ``preflight`` show a person, and what they hand a script.

Pure rendering (the live progress board, the final table, check lines, the JSON documents) plus one piece
of process plumbing: while the live display owns the terminal, Prefect's console log lines are diverted
into a file (``PrefectLogFile``), because a log line written between two redraws leaves a torn table on
screen. No Prefect import here: the unit tests render with rich's recording console.
"""

from __future__ import annotations

import dataclasses
import logging
import sys
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from rich.console import Group, RenderableType
from rich.spinner import Spinner
from rich.table import Table
from rich.text import Text

from acr_transfer.context import TransferContext
from acr_transfer.preflight import Check
from acr_transfer.progress import Notice
from acr_transfer.results import TransferResult
from acr_transfer.steps import ArtifactStatus
from acr_transfer.sync import SyncPlan, human_bytes

STEP_ORDER = {"export": 0, "bridge": 1, "import": 2, "verify": 3}
# steps whose notices mean a pipeline run exists in Azure: a re-run with the same id continues from it
RUN_STEPS = frozenset({"export", "import"})


def short_digest(digest: str) -> str:
    """``sha256:`` and the first 12 hex digits: enough to tell two images apart, short enough for 80 columns."""
    algorithm, _, hexpart = digest.partition(":")
    return f"{algorithm}:{hexpart[:12]}" if hexpart else digest


class ProgressBoard:
    """What the live display shows: one line per batch and step, fed by progress notices from any thread."""

    def __init__(self, transfer_id: str) -> None:
        self.transfer_id = transfer_id
        self.rows: dict[tuple[int, str], Notice] = {}
        self.lock = threading.Lock()

    def __call__(self, notice: Notice) -> None:
        if notice.transfer_id == self.transfer_id:
            with self.lock:
                self.rows[(notice.batch, notice.step)] = notice

    @property
    def created_runs(self) -> bool:
        """Whether an export or import run of this transfer exists (was created, found or adopted)."""
        with self.lock:
            return any(step in RUN_STEPS for _, step in self.rows)

    def render(self) -> RenderableType:
        """A spinner until the first run reports (preflight, planning), then a table of the steps."""
        with self.lock:
            items = sorted(self.rows.items(), key=lambda kv: (kv[0][0], STEP_ORDER.get(kv[0][1], 9)))
        if not items:
            return Spinner("dots", Text(f"transfer {self.transfer_id}: preflight checks…"))
        table = Table(title=f"transfer {self.transfer_id}", title_justify="left", expand=False)
        table.add_column("batch", justify="right", no_wrap=True)
        table.add_column("step", no_wrap=True)
        table.add_column("state", no_wrap=True)
        table.add_column("progress", justify="right", no_wrap=True)
        table.add_column("detail", overflow="fold")
        for (batch, step), n in items:
            pct = "" if n.percentage is None else f"{n.percentage}%"
            colour = {"Succeeded": "green", "Failed": "red"}.get(n.state, "yellow")
            table.add_row(str(batch), step, Text(n.state, style=colour), pct, Text(n.detail))
        return table


def result_table(result: TransferResult, show_runs: bool = False) -> Table:
    """The final table: artifact (folded, never cut), batch, status, short digest; run names on request."""
    title = f"transfer {result.transfer_id} ({result.route})" + (" — dry run" if result.dry_run else "")
    # a name folded over several lines needs a rule under it, or it runs into the next one
    table = Table(title=title, title_justify="left", show_lines=any(len(r.artifact) > 30 for r in result.rows))
    table.add_column("artifact", overflow="fold", ratio=1, min_width=12)
    table.add_column("batch", justify="right", no_wrap=True)
    if show_runs:
        table.add_column("export run", overflow="fold")
        table.add_column("import run", overflow="fold")
    table.add_column("status", no_wrap=True)
    table.add_column("digest", no_wrap=True)
    for r in result.rows:
        colour = "green" if r.status is ArtifactStatus.VERIFIED else "red"
        runs = [Text(r.export_run), Text(r.import_run)] if show_runs else []
        status = Text(r.status.value, style=colour)
        table.add_row(Text(r.artifact), str(r.batch), *runs, status, short_digest(r.digest))
    return table


SYNC_ROWS = 40  # sent and skipped rows printed; --output json has every one


def sync_report(plan: SyncPlan) -> Group:
    """A sync's plan: what it sends and why, what it skips and why (the first rows of each), and the counts."""
    head = Text.assemble(("plan", "bold"), f" transfer {plan.transfer_id} on route {plan.route}: {plan.summary()}")
    table = Table(show_lines=False, title_justify="left")
    table.add_column("artifact", overflow="fold", ratio=1, min_width=12)
    table.add_column("", no_wrap=True)
    table.add_column("why", overflow="fold", ratio=1)
    table.add_column("size", justify="right", no_wrap=True)
    for e in plan.send[:SYNC_ROWS]:
        why = e.why.value + (f" of {short_digest(e.subject)}" if e.subject else "")
        table.add_row(Text(e.reference), Text("send", style="green"), Text(why), human_bytes(e.size))
    for skipped in plan.skipped[: max(0, SYNC_ROWS - len(plan.send))]:
        why = skipped.why.value + (f": {skipped.rule}" if skipped.rule else "")
        table.add_row(Text(skipped.reference), Text("skip", style="dim"), Text(why), "")
    shown = min(len(plan.send), SYNC_ROWS) + min(len(plan.skipped), max(0, SYNC_ROWS - len(plan.send)))
    rest = len(plan.send) + len(plan.skipped) - shown
    more = [Text(f"… {rest} more (--output json lists every one)", style="dim")] if rest else []
    batches = Text(f"{len(plan.batches)} batch(es) of at most 50 artifacts" if plan.batches else "no run to create")
    return Group(head, table, *more, batches)


def sync_document(plan: SyncPlan | None) -> dict[str, Any] | None:
    """A sync's plan as JSON: counts, every sent and skipped artifact with why, the batches."""
    if plan is None:
        return None
    return {
        "summary": plan.summary(),
        "changed": plan.changed,
        "identical": plan.identical,
        "referrers": plan.referrers,
        "excluded": plan.excluded,
        "total_bytes": plan.total_bytes,
        **plan.model_dump(mode="json", include={"send", "skipped", "batches", "full"}),
    }


def check_line(check: Check) -> Text:
    """One check as a green ✓ or red ✗ line (user text is never read as markup)."""
    return Text(check.line, style="green" if check.ok else "red")


def checks_report(checks: list[Check]) -> Group:
    """Every check once, then how many passed."""
    failed = sum(1 for c in checks if not c.ok)
    summary = f"{len(checks) - failed} of {len(checks)} checks passed" + ("; nothing was created" if failed else "")
    return Group(*(check_line(c) for c in checks), Text(summary, style="red" if failed else "green"))


def preflight_failure(message: str, failures: Iterable[str]) -> Group:
    """A failed preflight inside ``run``: each failed check once, then the flow's one-line verdict."""
    verdict = message.splitlines()[0].rstrip(":") if message else "preflight failed; nothing was created"
    return Group(*(Text(line, style="red") for line in failures), Text(verdict, style="red"))


def plan_lines(ctx: TransferContext) -> Group:
    """The plan: how many artifacts in how many batches, and each batch's run and blob names."""
    tid = ctx.transfer_id
    head = Text.assemble(
        ("plan", "bold"),
        f" transfer {tid} on route {ctx.route.name}: {len(ctx.plan.artifacts)} artifacts in "
        f"{len(ctx.plan.batches)} batch(es)",
    )
    lines = [
        Text(
            f"  batch {b.index}: {len(b.artifacts)} artifacts → export run {b.export_run(tid, 1)} → blob "
            f"{b.blob_name} → import run {b.import_run(tid, 1)}"
        )
        for b in ctx.plan.batches
    ]
    return Group(head, *lines)


def plan_document(ctx: TransferContext) -> dict[str, Any]:
    """The plan as JSON: the names a transfer would create, first attempt."""
    tid = ctx.transfer_id
    return {
        "artifacts": len(ctx.plan.artifacts),
        "batches": [
            {
                "batch": b.index,
                "artifacts": list(b.artifacts),
                "export_run": b.export_run(tid, 1),
                "blob": b.blob_name,
                "import_run": b.import_run(tid, 1),
            }
            for b in ctx.plan.batches
        ],
    }


def check_documents(checks: list[Check]) -> list[dict[str, Any]]:
    """Checks as JSON objects: name, ok, detail, fix."""
    return [dataclasses.asdict(c) for c in checks]


def result_document(result: TransferResult) -> dict[str, Any]:
    """A transfer result as JSON (the shape of ``TransferResult``, plus the verified count)."""
    return {**result.model_dump(mode="json"), "verified": result.verified}


def _is_console(handler: logging.Handler) -> bool:
    """A handler that writes to this process's terminal (Prefect's console and debug handlers)."""
    if not isinstance(handler, logging.StreamHandler) or isinstance(handler, logging.FileHandler):
        return False
    terminal = (sys.stderr, sys.stdout, sys.__stderr__, sys.__stdout__)
    return any(handler.stream is stream for stream in terminal)


class PrefectLogFile:
    """While inside, every log line bound for the terminal goes to ``path`` instead (appended).

    Prefect's console handler sits on the root logger (and on ``uvicorn``, ``fastapi``; its debug handler on
    ``prefect._internal``) and writes to stderr behind rich's back, tearing a live display. Each such handler
    is swapped for one file handler with the console's format; Python warnings follow them. ``restore=False``
    leaves the file in place after the block, for a command whose process ends next: a temporary Prefect
    server still logs "Stopping temporary server" from an exit hook.
    """

    def __init__(self, path: Path, restore: bool = True) -> None:
        self.path = path
        self.restore = restore
        self._swapped: list[tuple[logging.Logger, logging.Handler]] = []
        self._file: logging.FileHandler | None = None

    def __enter__(self) -> PrefectLogFile:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        loggers = [logging.getLogger()] + [
            lg for lg in list(logging.Logger.manager.loggerDict.values()) if isinstance(lg, logging.Logger)
        ]
        self._file = logging.FileHandler(self.path, encoding="utf-8", delay=True)
        for lg in loggers:
            for handler in [h for h in lg.handlers if _is_console(h)]:
                if self._file.formatter is None and handler.formatter is not None:
                    self._file.setFormatter(handler.formatter)
                lg.removeHandler(handler)
                self._swapped.append((lg, handler))
                if self._file not in lg.handlers:
                    lg.addHandler(self._file)
        logging.captureWarnings(True)
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.restore:
            return
        logging.captureWarnings(False)
        assert self._file is not None
        for lg, handler in self._swapped:
            lg.removeHandler(self._file)
            lg.addHandler(handler)
        self._swapped.clear()
        self._file.close()
