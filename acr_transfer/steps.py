"""The runbook's steps over the adapters: export, bridge, import, verify, clean up — each idempotent.

Runs are found by their derived names (``x<tid>b<NNN>a<K>``), so a repeated step continues what an
earlier attempt started: a Succeeded run is reused, a running one is watched, and only after a Failed
one is a new attempt created (the next K).
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass

from acr_transfer.azure.keyvault import KeyVaultSecrets
from acr_transfer.azure.registry import RegistryAddress, RegistryArm, RunState
from acr_transfer.azure.storage import BlobFacts, BlobStorage
from acr_transfer.context import TransferContext
from acr_transfer.errors import ConfigError, PermanentError, TransientError, VerificationError
from acr_transfer.naming import BatchPlan, normalise_artifact
from acr_transfer.sas import SasToken

MAX_ATTEMPTS = 20
OUR_RUN = re.compile(r"^(?P<kind>[xi])(?P<tid>[a-z0-9]{6,20})b(?P<batch>\d{3})a(?P<attempt>\d+)$")


def attempts(arm: RegistryArm, registry: RegistryAddress, namer: Callable[[int], str]) -> list[RunState]:
    """Every existing attempt of one step, in order (GET a1, a2, … until one is missing)."""
    found: list[RunState] = []
    for k in range(1, MAX_ATTEMPTS + 1):
        state = arm.get_run(registry, namer(k))
        if state is None:
            break
        found.append(state)
    return found


def current(found: list[RunState]) -> RunState | None:
    """The attempt to continue with: a Succeeded one, else a still-running last one; None → create."""
    done = next((r for r in found if r.succeeded), None)
    if done is not None:
        return done
    if found and not found[-1].terminal:
        return found[-1]
    return None


def start_export(
    arm: RegistryArm, storage: BlobStorage, vault: KeyVaultSecrets, ctx: TransferContext, batch: BatchPlan
) -> RunState:
    """The export run of a batch: reuse, continue, or create the next attempt."""
    export = ctx.export
    found = attempts(arm, ctx.src, functools.partial(batch.export_run, ctx.transfer_id))
    existing = current(found)
    if existing is not None:
        return existing
    attempt = len(found) + 1
    blob = batch.blob_name
    if attempt > 1 and "OverwriteBlobs" not in export.options:
        # a failed attempt may have left a partial blob under the batch's name; the export SAS cannot delete
        # (sp=rawl), so a retry writes beside it
        sas = _sas(vault, export.secret_uri) if export.storage_access_mode == "SasToken" else None
        if storage.blob_facts(export.container_uri, blob, sas) is not None:
            blob = _attempt_blob(blob, attempt)
    body = {
        "pipelineResourceId": export.id,
        "artifacts": list(batch.artifacts),
        "target": {"type": "AzureStorageBlob", "name": blob},
    }
    return arm.create_run(ctx.src, batch.export_run(ctx.transfer_id, attempt), body)


def _attempt_blob(blob: str, attempt: int) -> str:
    stem, dot, ext = blob.rpartition(".")
    return f"{stem}-a{attempt}.{ext}" if dot and "/" not in ext else f"{blob}-a{attempt}"


def _sas(vault: KeyVaultSecrets, secret_uri: str | None) -> SasToken:
    if not secret_uri:
        raise ConfigError("a SasToken-mode pipeline has no keyVaultUri")
    return vault.sas(secret_uri)[1]


def bridge(
    storage: BlobStorage, vault: KeyVaultSecrets, ctx: TransferContext, export_run: RunState
) -> BlobFacts | None:
    """Copy the exported blob into the import container, server-side; None when no copy is needed."""
    if not ctx.bridged:
        return None
    export, imp = ctx.export, ctx.imp
    if export.storage_access_mode != "SasToken":
        raise PermanentError(
            f"route '{ctx.route.name}': bridging needs the export pipeline '{export.name}' in SasToken mode, because "
            "the copy source is read through a SAS; use a SasToken export pipeline or a shared container"
        )
    blob = export_run.blob or ""
    source_sas = _sas(vault, export.secret_uri)
    target_sas = vault.sas(ctx.route.bridge.secret_uri)[1] if ctx.route.bridge.secret_uri else None
    return storage.copy_blob(export.container_uri, blob, source_sas, imp.container_uri, target_sas)


def start_import(arm: RegistryArm, ctx: TransferContext, batch: BatchPlan, export_run: RunState) -> RunState | None:
    """Our import run of a batch: reuse, continue, or create the next attempt.

    Returns None when the import pipeline's source trigger is on and no manual attempt exists yet: then
    the caller adopts the trigger's run (``find_trigger_run``) instead of importing the blob twice.
    """
    found = attempts(arm, ctx.dst, functools.partial(batch.import_run, ctx.transfer_id))
    existing = current(found)
    if existing is not None:
        return existing
    if ctx.imp.trigger_enabled and not found:
        return None
    return _create_import(arm, ctx, batch, export_run, len(found) + 1)


def create_manual_import(arm: RegistryArm, ctx: TransferContext, batch: BatchPlan, export_run: RunState) -> RunState:
    """A manual import after the trigger's run failed (the trigger will not try the same blob again)."""
    found = attempts(arm, ctx.dst, functools.partial(batch.import_run, ctx.transfer_id))
    return _create_import(arm, ctx, batch, export_run, len(found) + 1)


def _create_import(
    arm: RegistryArm, ctx: TransferContext, batch: BatchPlan, export_run: RunState, attempt: int
) -> RunState:
    body: dict[str, object] = {
        "pipelineResourceId": ctx.imp.id,
        "source": {"type": "AzureStorageBlob", "name": export_run.blob},
    }
    if export_run.catalog_digest:  # the import run checks the blob against it
        body["catalogDigest"] = export_run.catalog_digest
    return arm.create_run(ctx.dst, batch.import_run(ctx.transfer_id, attempt), body)


def find_trigger_run(arm: RegistryArm, ctx: TransferContext, blob: str) -> RunState | None:
    """The run the import pipeline's source trigger created for ``blob`` (newest first), if any."""
    imp = ctx.imp
    matches = [
        r
        for r in arm.list_runs(ctx.dst)
        if r.blob == blob and r.pipeline_id.lower() == imp.id.lower() and (r.trigger_timestamp or "_" in r.name)
    ]
    if not matches:
        return None
    return max(matches, key=lambda r: r.start_time or "")


@dataclass(frozen=True)
class ArtifactResult:
    """One requested artifact's outcome, as the final table shows it."""

    artifact: str
    batch: int
    export_run: str
    import_run: str
    status: str  # verified | missing
    digest: str


def verify(batch: BatchPlan, export_run: RunState, import_run: RunState) -> list[ArtifactResult]:
    """``importedArtifacts`` ⊇ requested (normalised); digest references are compared as digests.

    Raises:
        VerificationError: naming every artifact the target did not receive.
    """
    imported = set()
    for ref in import_run.imported_artifacts:
        try:
            imported.add(normalise_artifact(ref))
        except ConfigError:
            imported.add(ref)
    results = []
    for ref in batch.artifacts:
        digest = ref.split("@", 1)[1] if "@" in ref else ""
        status = "verified" if ref in imported else "missing"
        results.append(ArtifactResult(ref, batch.index, export_run.name, import_run.name, status, digest))
    missing = [r.artifact for r in results if r.status == "missing"]
    if missing:
        raise VerificationError(
            f"batch {batch.index}: import run '{import_run.name}' did not import {len(missing)} of "
            f"{len(batch.artifacts)} artifacts: {', '.join(missing[:10])}"
            + (f" (run message: {import_run.error_message})" if import_run.error_message else "")
        )
    return results


def compare_digests(
    results: list[ArtifactResult],
    digest_in_source: Callable[[str, str], str | None],
    digest_in_target: Callable[[str, str], str | None],
) -> tuple[list[ArtifactResult], list[str]]:
    """Fill each result's digest from the registries and compare them.

    Returns the results and notes about digests that could not be read (left unknown, not failed).

    Raises:
        VerificationError: an artifact is in the target with a different digest than in the source.
    """
    out, notes, mismatches = [], [], []
    for r in results:
        repo, _, ref = r.artifact.partition("@") if "@" in r.artifact else r.artifact.rpartition(":")
        try:
            source = r.digest or digest_in_source(repo, ref)
            target = digest_in_target(repo, ref)
        except TransientError:
            raise  # the registry may answer later: the step is retried, not passed unverified
        except PermanentError as e:
            notes.append(f"{r.artifact}: digest not compared ({e.message})")
            out.append(r)
            continue
        except Exception as e:
            notes.append(f"{r.artifact}: digest not compared ({type(e).__name__})")
            out.append(r)
            continue
        if source and target and source != target:
            mismatches.append(f"{r.artifact}: source {source}, target {target}")
        status = "missing" if target is None else r.status
        out.append(ArtifactResult(r.artifact, r.batch, r.export_run, r.import_run, status, target or source or ""))
    if mismatches:
        raise VerificationError("digests differ between source and target: " + "; ".join(mismatches))
    missing = [r.artifact for r in out if r.status == "missing"]
    if missing:
        raise VerificationError(f"reported imported but not found in the target registry: {', '.join(missing)}")
    return out, notes


def own_blobs(arm: RegistryArm, ctx: TransferContext) -> set[str]:
    """Blob names this transfer's own exports (Succeeded, or still running) write: a resume must not call
    them taken."""
    names = set()
    for batch in ctx.plan.batches:
        mine = current(attempts(arm, ctx.src, functools.partial(batch.export_run, ctx.transfer_id)))
        if mine is not None and mine.blob:
            names.add(mine.blob)
    return names
