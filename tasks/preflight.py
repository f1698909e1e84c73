"""Preflight as Prefect tasks: the two pipelines read concurrently, then both sides checked concurrently."""

from __future__ import annotations

from prefect import get_run_logger, task

from acr_transfer import preflight, steps
from acr_transfer.azure.registry import PipelineFacts, RegistryAddress
from acr_transfer.context import TransferContext
from acr_transfer.preflight import Check
from acr_transfer.refs import ArtifactRef
from acr_transfer.settings import get_settings
from acr_transfer.sync import SendReason
from tasks import clients
from tasks.retry import outlasting, step_options


@task(name="check-pipeline", **step_options())
def check_pipeline(registry: RegistryAddress, kind: str, name: str) -> tuple[Check, PipelineFacts | None]:
    """The pipeline exists and is Succeeded; returns its facts for the next checks."""
    check, facts = preflight.check_pipeline(clients.shared().arm, registry, kind, name)
    get_run_logger().info("%s", check.line)
    return check, facts


@task(name="check-export-side", **step_options())
@outlasting("preflight of the export side")
def check_export_side(ctx: TransferContext) -> list[Check]:
    """Export pipeline identity, SAS secret, container, and free blob names (this transfer's own finished blobs
    excepted)."""
    azure = clients.shared()
    own = steps.own_blobs(azure.arm, ctx)
    checks = preflight.check_export_side(ctx, azure.vault, azure.storage, own, azure.vault_access)
    for c in checks:
        get_run_logger().info("%s", c.line)
    return checks


@task(name="check-import-side", **step_options())
@outlasting("preflight of the import side")
def check_import_side(ctx: TransferContext) -> list[Check]:
    """Import pipeline identity, SAS secret and container, and the bridge secret when the blob must be copied."""
    azure = clients.shared()
    checks = preflight.check_import_side(ctx, azure.vault, azure.storage, azure.vault_access)
    for c in checks:
        get_run_logger().info("%s", c.line)
    return checks


@task(name="check-artifacts", **step_options())
@outlasting("preflight of the artifacts")
def check_artifacts(ctx: TransferContext) -> list[Check]:
    """Every artifact exists in the source; no tag conflict in the target unless OverwriteTags."""
    if not get_settings().verify_digests:
        return [Check("artifacts", True, "not checked (ACR_TRANSFER_VERIFY_DIGESTS is off)")]
    if ctx.sync is not None and all(e.why is not SendReason.LISTED for e in ctx.sync.send):
        checks = preflight.check_planned(ctx)  # the listing read every digest already: no request per artifact
        for c in checks:
            get_run_logger().info("%s", c.line)
        return checks
    azure = clients.shared()
    refs = [ArtifactRef.parse(a) for a in ctx.plan.artifacts]
    # a repository asked for many tags is read from its tag listing (100 tags a request), not a HEAD per tag
    in_source = azure.digests(ctx.source, refs)
    in_target = azure.digests(ctx.target, refs) if ctx.has_target else None
    in_source.prefetch(*([in_target] if in_target is not None else []))  # every listing at once, both sides
    checks = preflight.check_artifacts(ctx, in_source, in_target)
    for c in checks:
        get_run_logger().info("%s", c.line)
    return checks
