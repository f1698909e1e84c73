"""The outcome of a transfer, in the shapes users read: table rows, markdown, event payloads."""

from __future__ import annotations

from pydantic import BaseModel, Field

from acr_transfer.context import TransferContext
from acr_transfer.refs import ArtifactRef
from acr_transfer.steps import ArtifactResult, ArtifactStatus
from acr_transfer.sync import SyncPlan


class ArtifactRow(BaseModel):
    """One row of the final table."""

    artifact: str
    batch: int
    export_run: str = ""
    import_run: str = ""
    status: ArtifactStatus = ArtifactStatus.PENDING
    digest: str = ""


class TransferResult(BaseModel):
    """What a transfer achieved; ``succeeded`` only when every requested artifact was verified."""

    route: str
    transfer_id: str
    succeeded: bool
    dry_run: bool = False
    rows: list[ArtifactRow] = Field(default_factory=list)
    failures: list[str] = Field(default_factory=list)
    blobs: list[str] = Field(default_factory=list)
    plan: SyncPlan | None = Field(None, description="A select: route's plan: what was sent and skipped, and why")

    @property
    def verified(self) -> int:
        return sum(1 for r in self.rows if r.status is ArtifactStatus.VERIFIED)


def rows_for(
    ctx: TransferContext, verified: dict[int, list[ArtifactResult]], runs: dict[int, tuple[str, str]]
) -> list[ArtifactRow]:
    """A row per requested artifact: verified ones from the verify step, the rest as not verified."""
    rows = []
    for batch in ctx.plan.batches:
        done = {r.artifact: r for r in verified.get(batch.index, [])}
        export_run, import_run = runs.get(batch.index, ("", ""))
        for ref in batch.artifacts:
            r = done.get(ref)
            rows.append(
                ArtifactRow(
                    artifact=ref,
                    batch=batch.index,
                    export_run=r.export_run if r else export_run,
                    import_run=r.import_run if r else import_run,
                    status=r.status if r else ArtifactStatus.NOT_VERIFIED,
                    digest=r.digest if r else (ArtifactRef.parse(ref).digest or ""),
                )
            )
    return rows


def markdown(result: TransferResult) -> str:
    """A summary a person reads in the Prefect UI."""
    head = "✅ succeeded" if result.succeeded else ("📝 dry run" if result.dry_run else "❌ failed")
    lines = [
        f"# Transfer `{result.transfer_id}` on route `{result.route}`: {head}",
        "",
        f"{result.verified} of {len(result.rows)} artifacts verified in the target registry.",
        "",
    ]
    if result.plan is not None:
        lines += [f"Plan: {result.plan.summary()}.", ""]
    if result.failures:
        lines += ["## What went wrong", ""] + [f"- {f}" for f in result.failures] + [""]
    lines += ["| artifact | batch | export run | import run | status | digest |", "|---|---|---|---|---|---|"]
    lines += [
        f"| `{r.artifact}` | {r.batch} | {r.export_run} | {r.import_run} | {r.status.value} | {r.digest[:19]} |"
        for r in result.rows
    ]
    if result.plan is not None:
        lines += plan_markdown(result.plan)
    return "\n".join(lines)


PLAN_ROWS = 100  # rows of a plan shown in an artifact; the counts above cover the rest


def plan_markdown(plan: SyncPlan) -> list[str]:
    """The plan's sent and skipped artifacts, and why, as markdown lines (the first ``PLAN_ROWS`` of each)."""
    lines = ["", "## Sent", "", "| artifact | why | size | digest |", "|---|---|---|---|"]
    lines += [
        f"| `{e.reference}` | {e.why.value}{f' of {e.subject[:19]}' if e.subject else ''} | {e.size:,} | "
        f"{e.digest[:19]} |"
        for e in plan.send[:PLAN_ROWS]
    ]
    if len(plan.send) > PLAN_ROWS:
        lines.append(f"| … {len(plan.send) - PLAN_ROWS} more | | | |")
    lines += ["", "## Skipped", "", "| artifact | why |", "|---|---|"]
    lines += [f"| `{s.reference}` | {s.why.value}{f': {s.rule}' if s.rule else ''} |" for s in plan.skipped[:PLAN_ROWS]]
    if len(plan.skipped) > PLAN_ROWS:
        lines.append(f"| … {len(plan.skipped) - PLAN_ROWS} more | |")
    return lines


class ExportedBlob(BaseModel):
    """A blob an export run wrote: what to carry to the other side and how to check it there."""

    batch: int
    blob: str
    blob_uri: str
    run: str
    catalog_digest: str
    artifacts: list[str]
