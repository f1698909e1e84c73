"""Preflight: everything that can be checked before a run is created, reported all at once.

Phase 1 reads both pipelines (exist, Succeeded, container, secret, storage access mode, options, source
trigger). Phase 2, from those facts, checks that each SasToken pipeline's own identity may get its secret
(the vault's access model read through ARM; "not checked" when this worker may not read it), each SAS secret
(exists, enabled, unexpired, ``se`` beyond
the transfer's deadline, permissions, https only), that each container answers a list, that no
export blob name is taken (unless OverwriteBlobs, or the blob is this transfer's own finished export), that
every artifact exists in the source, and that no tag conflicts in the target (unless OverwriteTags).
Nothing is created when any check fails; each failure names the resource and the fix.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from acr_transfer.azure.registry import PipelineFacts, ProvisioningState, RegistryAddress, StorageAccessMode
from acr_transfer.context import TransferContext
from acr_transfer.errors import AcrTransferError, NotFoundError, PermanentError, TransientError
from acr_transfer.ports import Blobs, PipelineRuns, Secrets, VaultAccess
from acr_transfer.refs import ArtifactRef
from acr_transfer.sas import SasToken, sas_problems
from acr_transfer.secret_access import fix_for, grant_for, why_not
from acr_transfer.sync import SendReason

PARALLEL_READS = 8  # reads preflight makes at once (blob names, artifacts, the transfer's own export runs)


@dataclass(frozen=True)
class Check:
    """One preflight check: what was checked, whether it passed, and what to do when it did not."""

    name: str
    ok: bool
    detail: str
    fix: str = ""

    @property
    def line(self) -> str:
        mark = "✓" if self.ok else "✗"
        # a name ending in a URL is not followed by ':', which the Prefect UI's auto-linking takes into the link
        joint = " —" if "://" in self.name.rsplit(" ", 1)[-1] else ":"
        return f"{mark} {self.name}{joint} {self.detail}" + (f" — fix: {self.fix}" if self.fix and not self.ok else "")


def _guard(name: str, fix: str, fn: Callable[[], str]) -> Check:
    """Run one check; a permanent error is a failed check, a transient one propagates (retry the task)."""
    try:
        return Check(name, True, fn())
    except PermanentError as e:
        return Check(name, False, e.message, fix)


def check_pipeline(
    arm: PipelineRuns, registry: RegistryAddress, kind: str, name: str
) -> tuple[Check, PipelineFacts | None]:
    """The pipeline exists and is Succeeded."""
    label = f"{kind} pipeline '{name}' on {registry.name}"
    try:
        facts = arm.get_pipeline(registry, kind, name)
    except NotFoundError:
        detail = f"does not exist in resource group {registry.resource_group}"
        return Check(label, False, detail, f"create the {kind} pipeline or fix the route"), None
    except PermanentError as e:
        return Check(label, False, e.message, f"let this identity read the {kind} pipeline, or fix the route"), None
    if facts.provisioning_state != ProvisioningState.SUCCEEDED:
        return (
            Check(label, False, f"provisioningState is {facts.provisioning_state}", "re-create the pipeline"),
            facts,
        )
    trigger = f", source trigger {facts.source_trigger}" if facts.kind == "import" else ""
    detail = f"Succeeded, {facts.storage_access_mode}, container {facts.container_uri}{trigger}"
    return Check(label, True, detail), facts


def check_pipeline_identity(pipeline: PipelineFacts, subscription: str, access: VaultAccess) -> Check:
    """The pipeline's own identity may get its SAS secret: ACR's run reads the secret as that identity.

    A vault this worker cannot see through ARM (403, 404, a malformed URI) is "not checked", not failed.
    """
    uri = pipeline.secret_uri or ""
    label = f"identity of {pipeline.kind} pipeline '{pipeline.name}'"
    if not pipeline.principals:
        return Check(
            label,
            False,
            f"has no managed identity, and ACR reads the SAS secret {uri} as the pipeline's identity",
            "re-create the pipeline with a system-assigned or user-assigned identity",
        )
    try:
        facts = access.vault_access(subscription, uri, pipeline.principals)
    except TransientError:
        raise
    except AcrTransferError as e:
        return Check(label, True, f"not checked: this identity cannot read the vault's access model ({e.message})")
    secret = uri.rstrip("/").split("/secrets/", 1)[-1].split("/")[0]
    for principal in pipeline.principals:
        grant = grant_for(facts, principal, secret)
        if grant:
            return Check(
                label, True, f"principal {principal} may get secret '{secret}' in vault {facts.name} ({grant})"
            )
    who = ", ".join(pipeline.principals)
    return Check(
        label,
        False,
        f"principal {who} may not get secret '{secret}' in vault {facts.name}: the vault {why_not(facts)}; "
        "the run would fail reading its SAS",
        fix_for(facts, pipeline.principals[0]),
    )


def _sas_check(vault: Secrets, secret_uri: str, required: str, deadline: datetime, https: bool, role: str):
    label = f"{role} SAS secret {secret_uri}"
    holder: dict[str, SasToken] = {}

    def run() -> str:
        facts, token = vault.sas(secret_uri)
        where = f"secret '{facts.name}' ({facts.vault})"
        problems = []
        if not facts.enabled:
            problems.append(f"{where} is disabled")
        if facts.expires_on and facts.expires_on <= datetime.now(UTC):
            problems.append(f"{where} expired {facts.expires_on:%Y-%m-%dT%H:%MZ} (Key Vault expiry)")
        problems += sas_problems(token, required=required, valid_until=deadline, https_only=https, where=where)
        if problems:
            raise PermanentError("; ".join(problems))
        holder["sas"] = token
        return f"{token} covers '{required}' until after the deadline"

    check = _guard(label, f"renew or fix the SAS in {secret_uri} (needs sp ⊇ {required}, spr=https)", run)
    return check, holder.get("sas")


def check_export_side(
    ctx: TransferContext, vault: Secrets, storage: Blobs, own_blobs: set[str], access: VaultAccess | None = None
) -> list[Check]:
    """Export pipeline's identity (when ``access`` is given), secret and container, and that every export blob
    name is free."""
    export = ctx.export
    deadline = datetime.now(UTC) + timedelta(seconds=ctx.timeout_seconds)
    checks: list[Check] = []
    sas: SasToken | None = None
    if export.storage_access_mode == StorageAccessMode.SAS_TOKEN:
        if not export.secret_uri:
            return [Check("export SAS secret", False, "the export pipeline has no keyVaultUri", "re-create it")]
        if access is not None:
            checks.append(check_pipeline_identity(export, ctx.source.subscription, access))
        check, sas = _sas_check(vault, export.secret_uri, "rawl", deadline, _https(export.container_uri), "export")
        checks.append(check)
        if not check.ok:
            return checks
    checks.append(
        _guard(
            f"export container {export.container_uri}",
            "check the container exists and the SAS (or identity) may list it",
            lambda: _list(storage, export.container_uri, sas),
        )
    )
    if "OverwriteBlobs" not in export.options:
        names = [b.blob_name for b in ctx.plan.batches if b.blob_name not in own_blobs]

        def free(name: str) -> Check:
            return _guard(
                f"export blob name '{name}'",
                "use another transfer id or blob_name_template, delete the blob, or enable OverwriteBlobs",
                functools.partial(_free, storage, export.container_uri, name, sas),
            )

        # up to 50 names, read PARALLEL_READS at a time; the checks stay in batch order
        with ThreadPoolExecutor(max_workers=PARALLEL_READS, thread_name_prefix="preflight-blobs") as pool:
            checks += pool.map(free, names)
    return checks


def check_import_side(
    ctx: TransferContext, vault: Secrets, storage: Blobs, access: VaultAccess | None = None
) -> list[Check]:
    """Import pipeline's identity (when ``access`` is given), secret and container; the bridge secret when the
    blob must be copied."""
    imp = ctx.imp
    deadline = datetime.now(UTC) + timedelta(seconds=ctx.timeout_seconds * 2)
    checks: list[Check] = []
    sas: SasToken | None = None
    if imp.storage_access_mode == StorageAccessMode.SAS_TOKEN:
        if not imp.secret_uri:
            return [Check("import SAS secret", False, "the import pipeline has no keyVaultUri", "re-create it")]
        if access is not None:
            checks.append(check_pipeline_identity(imp, ctx.target.subscription, access))
        needed = "rl" + ("d" if "DeleteSourceBlobOnSuccess" in imp.options else "")
        check, sas = _sas_check(vault, imp.secret_uri, needed, deadline, _https(imp.container_uri), "import")
        checks.append(check)
        if not check.ok:
            return checks
    checks.append(
        _guard(
            f"import container {imp.container_uri}",
            "check the container exists and the SAS (or identity) may list it",
            lambda: _list(storage, imp.container_uri, sas),
        )
    )
    if ctx.bridged and ctx.route.bridge.secret_uri:
        check, _ = _sas_check(vault, ctx.route.bridge.secret_uri, "cw", deadline, _https(imp.container_uri), "bridge")
        checks.append(check)
    return checks


def _https(uri: str) -> bool:
    return uri.lower().startswith("https://")


def _list(storage: Blobs, container_uri: str, sas: SasToken | None) -> str:
    storage.check_container(container_uri, sas)
    return "answers a list" + (" with its SAS" if sas else " with this identity")


def _free(storage: Blobs, container_uri: str, blob: str, sas: SasToken | None) -> str:
    facts = storage.blob_facts(container_uri, blob, sas)
    if facts is not None:
        raise PermanentError(
            f"blob '{blob}' already exists in {container_uri} and the export pipeline lacks OverwriteBlobs"
        )
    return "free"


DigestReader = Callable[[str, str], "str | None"]
MAX_NAMED = 20


def check_artifacts(
    ctx: TransferContext, in_source: DigestReader, in_target: DigestReader | None, workers: int = PARALLEL_READS
) -> list[Check]:
    """Every artifact exists in the source registry; and, unless the import pipeline has OverwriteTags, no
    tag already points at other content in the target (the import would fail on it after the export).

    ``in_source``/``in_target`` read ``(repo, reference) → digest | None``. A registry whose data plane this
    worker cannot read is reported as not checked, not as failed: ACR's runs read it with their own identity.
    """
    artifacts = ctx.plan.artifacts
    src = ctx.source.name
    guard_tags = in_target is not None and "OverwriteTags" not in ctx.imp.options
    problems: list[Check] = []
    unchecked: list[str] = []

    def one(ref: str) -> None:
        artifact = ArtifactRef.parse(ref)
        repo, reference = artifact.repository, artifact.reference
        try:
            source = in_source(repo, reference)
            if source is None:
                problems.append(
                    Check(
                        f"artifact '{ref}'",
                        False,
                        f"not found in source registry {src}",
                        "push it, or correct the reference (repo:tag or repo@sha256:…)",
                    )
                )
                return
            if guard_tags and not artifact.by_digest and in_target is not None:
                target = in_target(repo, reference)
                if target is not None and target != source:
                    problems.append(
                        Check(
                            f"artifact '{ref}'",
                            False,
                            f"tag already points at {target} in target registry {ctx.target.name} (source has "
                            f"{source}) and import pipeline '{ctx.imp.name}' lacks OverwriteTags",
                            "enable OverwriteTags on the import pipeline, or transfer under another tag",
                        )
                    )
        except TransientError:
            raise  # the registry may answer later: the check is retried, not reported as unreadable
        except AcrTransferError as e:
            unchecked.append(f"{ref} ({e.message})")

    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="preflight-artifacts") as pool:
        list(pool.map(one, artifacts))
    if problems:
        order = {ref: i for i, ref in enumerate(artifacts)}
        problems.sort(key=lambda c: order.get(c.name.split("'")[1], 0))
        if len(problems) > MAX_NAMED:
            rest = len(problems) - MAX_NAMED
            problems = [*problems[:MAX_NAMED], Check(f"{rest} more artifacts", False, "missing or in tag conflict")]
        return problems
    what = "exist in the source" + (", no tag conflicts in the target" if guard_tags else "")
    detail = f"{len(artifacts) - len(unchecked)} of {len(artifacts)} {what}"
    if unchecked:
        detail += f"; not checked (registry not readable from here): {', '.join(unchecked[:3])}"
    return [Check(f"artifacts in {src}", True, detail)]


def check_planned(ctx: TransferContext) -> list[Check]:
    """A sync's artifacts, from its plan alone: the listing proved they exist in the source (at the digests the
    plan records), and the target's tags were compared, so no registry is read again. A tag the target holds at
    other content (``changed``) needs OverwriteTags on the import pipeline, or the import would fail on it."""
    plan = ctx.sync
    assert plan is not None
    src = ctx.source.name
    if ctx.has_target and "OverwriteTags" not in ctx.imp.options:
        moved = [e for e in plan.send if e.why is SendReason.CHANGED]
        if moved:
            named = [
                Check(
                    f"artifact '{e.reference}'",
                    False,
                    f"tag already points at other content in target registry {ctx.target.name} (source has "
                    f"{e.digest}) and import pipeline '{ctx.imp.name}' lacks OverwriteTags",
                    "enable OverwriteTags on the import pipeline, or exclude the tag from the route's select:",
                )
                for e in moved[:MAX_NAMED]
            ]
            if len(moved) > MAX_NAMED:
                named.append(Check(f"{len(moved) - MAX_NAMED} more artifacts", False, "in tag conflict"))
            return named
    return [Check(f"artifacts in {src}", True, f"{len(plan.send)} planned from the listing: {plan.summary()}")]


def failures(checks: list[Check]) -> list[Check]:
    return [c for c in checks if not c.ok]


__all__ = [
    "AcrTransferError",
    "Check",
    "check_artifacts",
    "check_export_side",
    "check_import_side",
    "check_pipeline",
    "check_pipeline_identity",
    "check_planned",
    "failures",
]
