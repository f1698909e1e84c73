"""The runbook's steps over the adapters: export, bridge, import, verify, clean up — each idempotent.

Runs are found by their derived names (``x<tid>b<NNN>a<K>``), so a repeated step continues what an
earlier attempt started: a Succeeded run is reused, a running one is watched, and only after a Failed
one is a new attempt created (the next K).
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

from acr_transfer.azure.keyvault import SecretFacts
from acr_transfer.azure.registry import RegistryAddress, RunState, StorageAccessMode
from acr_transfer.azure.storage import BlobFacts, CopyRefused
from acr_transfer.context import TransferContext
from acr_transfer.errors import (
    AuthError,
    ConfigError,
    PermanentError,
    RunTimeoutError,
    SasTokenError,
    TransientError,
    VerificationError,
    shown,
)
from acr_transfer.naming import BatchPlan
from acr_transfer.ports import Blobs, PipelineRuns, Secrets
from acr_transfer.preflight import PARALLEL_READS
from acr_transfer.refs import ArtifactRef
from acr_transfer.sas import SasToken

MAX_ATTEMPTS = 20


def attempts(arm: PipelineRuns, registry: RegistryAddress, namer: Callable[[int], str]) -> list[RunState]:
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


def start_export(arm: PipelineRuns, storage: Blobs, vault: Secrets, ctx: TransferContext, batch: BatchPlan) -> RunState:
    """The export run of a batch: reuse, continue, or create the next attempt."""
    export = ctx.export
    found = attempts(arm, ctx.source, functools.partial(batch.export_run, ctx.transfer_id))
    existing = current(found)
    if existing is not None:
        return existing
    attempt = len(found) + 1
    blob = batch.blob_name
    if attempt > 1 and "OverwriteBlobs" not in export.options:
        # a failed attempt may have left a partial blob under the batch's name; the export SAS cannot delete
        # (sp=rawl), so a retry writes beside it
        sas = _sas(vault, export.secret_uri) if export.storage_access_mode == StorageAccessMode.SAS_TOKEN else None
        if storage.blob_facts(export.container_uri, blob, sas) is not None:
            blob = _attempt_blob(blob, attempt)
    body = {
        "pipelineResourceId": export.id,
        "artifacts": list(batch.artifacts),
        "target": {"type": "AzureStorageBlob", "name": blob},
    }
    return arm.create_run(ctx.source, batch.export_run(ctx.transfer_id, attempt), body)


def _attempt_blob(blob: str, attempt: int) -> str:
    stem, dot, ext = blob.rpartition(".")
    return f"{stem}-a{attempt}.{ext}" if dot and "/" not in ext else f"{blob}-a{attempt}"


def _sas(vault: Secrets, secret_uri: str | None) -> SasToken:
    return _secret(vault, secret_uri)[1]


def _secret(vault: Secrets, secret_uri: str | None) -> tuple[SecretFacts, SasToken]:
    if not secret_uri:
        raise ConfigError("a SasToken-mode pipeline has no keyVaultUri")
    return vault.sas(secret_uri)


MAX_DELEGATION_SECONDS = 7 * 24 * 3600  # a user delegation key lives at most 7 days


def bridge(storage: Blobs, vault: Secrets, ctx: TransferContext, export_run: RunState) -> BlobFacts | None:
    """Copy the exported blob into the import container, server-side; None when no copy is needed.

    Raises:
        PermanentError: the export run names no blob.
        AuthError / SasTokenError: storage refused a SAS; the message names the Key Vault secret it came from
            (the export pipeline's for the source, the route's bridge secret for the target) and never the SAS;
            for a ManagedIdentity export pipeline, that this worker's identity could not sign the source's
            user-delegation SAS.
        and whatever :meth:`~acr_transfer.azure.storage.BlobStorage.copy_blob` and reading the secrets raise.
    """
    if not ctx.bridged:
        return None
    export, imp = ctx.export, ctx.imp
    blob = export_run.blob
    if not blob:
        raise PermanentError(f"export run '{export_run.name}' names no blob to bridge; its request has no target name")
    source: tuple[SecretFacts | None, SasToken]
    if export.storage_access_mode == StorageAccessMode.SAS_TOKEN:
        source = _secret(vault, export.secret_uri)
    else:
        # a ManagedIdentity export pipeline has no SAS: the copy source is read with a user-delegation SAS that
        # this worker's identity signs (it needs Storage Blob Data Reader there), so the copy stays server-side
        valid_for = timedelta(seconds=min(ctx.timeout_seconds + 3600, MAX_DELEGATION_SECONDS))
        try:
            source = (None, storage.delegated_read_sas(export.container_uri, blob, valid_for))
        except AuthError as e:
            raise AuthError(
                f"route '{ctx.route.name}': bridging blob '{blob}' from ManagedIdentity export pipeline "
                f"'{export.name}': this worker's identity could not get a user delegation key for "
                f"{export.container_uri} ({' '.join(str(p) for p in (e.status, e.code) if p) or 'refused'}); grant it "
                "Storage Blob Data Reader on the export storage account. Storage said: "
                f"{shown(e.message, 300)}",
                code=e.code,
                status=e.status,
            ) from None
    target = vault.sas(ctx.route.bridge.secret_uri) if ctx.route.bridge.secret_uri else None
    try:
        return storage.copy_blob(
            export.container_uri, blob, source[1], imp.container_uri, target[1] if target else None
        )
    except (AuthError, SasTokenError) as e:
        side = e.side if isinstance(e, CopyRefused) else None
        secrets = {"source": source[0], "target": target[0] if target else None}
        named: list[SecretFacts | None] = [secrets[side]] if side else [facts for facts in secrets.values() if facts]
        if not any(named):  # the worker's identity writes: storage's message already says what to grant
            raise
        kind = SasTokenError if isinstance(e, SasTokenError) else AuthError
        raise kind(_refused(ctx, blob, e, named, side), code=e.code, status=e.status) from None


_NEEDS = {"source": "r", "target": "rcw"}  # what each SAS of a bridge copy must allow


def _refused(
    ctx: TransferContext, blob: str, e: AuthError | SasTokenError, named: list[SecretFacts | None], side: str | None
) -> str:
    """A refused bridge copy, said the way preflight says it: which secret's SAS, and what to renew."""
    which = " or ".join(f"secret '{f.name}' (vault {f.vault})" for f in named if f)
    uris = ", ".join(f.uri for f in named if f)
    needs = f"sp ⊇ {_NEEDS[side]}" if side else "sp ⊇ r for the source, c+w+r for the target"
    refused = " ".join(str(part) for part in (e.status, e.code) if part) or "by storage"
    return (
        f"route '{ctx.route.name}': bridging blob '{blob}': the SAS in {which} was refused ({refused}); renew it "
        f"in Key Vault ({uris}: {needs}, unexpired, spr=https). Storage said: {shown(e.message, 300)}"
    )


def start_import(
    arm: PipelineRuns, ctx: TransferContext, batch: BatchPlan, blob: str, catalog_digest: str | None
) -> RunState | None:
    """Our import run of a batch's blob: reuse, continue, or create the next attempt.

    Args:
        blob: the blob to import, as the export run (or the event announcing it) named it.
        catalog_digest: the export's catalog digest, which the import run checks the blob against (None: unknown).

    Returns None when the import pipeline's source trigger is on and no manual attempt exists yet: then
    the caller adopts the trigger's run (:func:`await_trigger_run`) instead of importing the blob twice.
    """
    found = attempts(arm, ctx.target, functools.partial(batch.import_run, ctx.transfer_id))
    existing = current(found)
    if existing is not None:
        return existing
    if ctx.imp.trigger_enabled and not found:
        return None
    return _create_import(arm, ctx, batch, blob, catalog_digest, len(found) + 1)


def create_manual_import(
    arm: PipelineRuns, ctx: TransferContext, batch: BatchPlan, blob: str, catalog_digest: str | None
) -> RunState:
    """A manual import after the trigger's run failed (the trigger will not try the same blob again)."""
    found = attempts(arm, ctx.target, functools.partial(batch.import_run, ctx.transfer_id))
    return _create_import(arm, ctx, batch, blob, catalog_digest, len(found) + 1)


def _create_import(
    arm: PipelineRuns, ctx: TransferContext, batch: BatchPlan, blob: str, catalog_digest: str | None, attempt: int
) -> RunState:
    body: dict[str, object] = {"pipelineResourceId": ctx.imp.id, "source": {"type": "AzureStorageBlob", "name": blob}}
    if catalog_digest:  # the import run checks the blob against it
        body["catalogDigest"] = catalog_digest
    return arm.create_run(ctx.target, batch.import_run(ctx.transfer_id, attempt), body)


def find_trigger_run(arm: PipelineRuns, ctx: TransferContext, blob: str) -> RunState | None:
    """The run the import pipeline's source trigger created for ``blob`` (newest first), if any."""
    imp = ctx.imp
    matches = [
        r
        for r in arm.list_runs(ctx.target)
        if r.blob == blob and r.pipeline_id.lower() == imp.id.lower() and (r.trigger_timestamp or "_" in r.name)
    ]
    if not matches:
        return None
    return max(matches, key=lambda r: r.start_time or "")


@dataclass(frozen=True)
class TriggerWait:
    """How long to wait for a source trigger's run, and how often to look (grows ×1.5 up to ``max_delay``)."""

    seconds: float
    min_delay: float
    max_delay: float


def await_trigger_run(
    arm: PipelineRuns,
    ctx: TransferContext,
    batch: BatchPlan,
    blob: str,
    catalog_digest: str | None,
    wait: TriggerWait,
    *,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], object] = time.sleep,
) -> tuple[RunState, bool]:
    """Wait for the run the import pipeline's source trigger creates for ``blob``; after a failed one, import
    by hand. Returns the run and whether it is the trigger's (False: our manual import).

    Raises:
        RunTimeoutError: the trigger created no run within ``wait.seconds``, with what the trigger needs.
    """
    deadline = clock() + wait.seconds
    delay = wait.min_delay
    while clock() < deadline:
        run = find_trigger_run(arm, ctx, blob)
        if run is not None and not run.failed:
            return run, True
        if run is not None:
            return create_manual_import(arm, ctx, batch, blob, catalog_digest), False
        sleep(delay)
        delay = min(delay * 1.5, wait.max_delay)
    raise RunTimeoutError(
        f"the source trigger of import pipeline '{ctx.imp.name}' created no run for blob '{blob}' within "
        f"{wait.seconds / 60:g} min: the blob needs metadata category=acr-transfer-blob and Content-MD5, and the "
        "pipeline's SAS needs List"
    )


class ArtifactStatus(StrEnum):
    """Where one requested artifact stands, as the final table shows it."""

    PENDING = "pending"
    VERIFIED = "verified"
    IMPORTED = "imported"  # an import of a blob whose artifacts were not named: in the target, not compared
    MISSING = "missing"
    NOT_VERIFIED = "not verified"


@dataclass(frozen=True)
class ArtifactResult:
    """One requested artifact's outcome, as the final table shows it."""

    artifact: str
    batch: int
    export_run: str
    import_run: str
    status: ArtifactStatus
    digest: str


def verify(batch: BatchPlan, export_run: RunState | None, import_run: RunState) -> list[ArtifactResult]:
    """``importedArtifacts`` ⊇ requested (normalised); digest references are compared as digests.

    ``export_run`` is None for a blob that was exported elsewhere (an import-only route).

    Raises:
        VerificationError: naming every artifact the target did not receive.
    """
    imported = {str(ArtifactRef.lenient(ref) or ref) for ref in import_run.imported_artifacts}
    results = []
    for ref in batch.artifacts:
        digest = ArtifactRef.parse(ref).digest or ""
        status = ArtifactStatus.VERIFIED if ref in imported else ArtifactStatus.MISSING
        exported_by = export_run.name if export_run is not None else ""
        results.append(ArtifactResult(ref, batch.index, exported_by, import_run.name, status, digest))
    missing = [r.artifact for r in results if r.status is ArtifactStatus.MISSING]
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
    fresh_source: Callable[[str, str], str | None] | None = None,
) -> tuple[list[ArtifactResult], list[str]]:
    """Fill each result's digest from the registries and compare them.

    ``digest_in_source`` may read a snapshot (the transfer's source listings, read once for all its batches):
    a digest that differs from the target's is then read again with ``fresh_source`` before it is called a
    mismatch.

    Returns the results and notes about digests that could not be read (left unknown, not failed).

    Raises:
        VerificationError: an artifact is in the target with a different digest than in the source.
    """
    out, notes, mismatches = [], [], []
    for r in results:
        ref = ArtifactRef.parse(r.artifact)
        try:
            source = r.digest or digest_in_source(ref.repository, ref.reference)
            target = digest_in_target(ref.repository, ref.reference)
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
        if source and target and source != target and fresh_source is not None and not r.digest:
            source = fresh_source(ref.repository, ref.reference)  # a snapshot may predate a push: read it again
        if source and target and source != target:
            mismatches.append(f"{r.artifact}: source {source}, target {target}")
        status = ArtifactStatus.MISSING if target is None else r.status
        out.append(ArtifactResult(r.artifact, r.batch, r.export_run, r.import_run, status, target or source or ""))
    if mismatches:
        raise VerificationError("digests differ between source and target: " + "; ".join(mismatches))
    missing = [r.artifact for r in out if r.status is ArtifactStatus.MISSING]
    if missing:
        raise VerificationError(f"reported imported but not found in the target registry: {', '.join(missing)}")
    return out, notes


def own_blobs(arm: PipelineRuns, ctx: TransferContext) -> set[str]:
    """Blob names this transfer's own export attempts wrote or write: a resume must not call them taken.

    A batch with any attempt is ours under its base name too: a failed attempt may have left a partial blob
    there, and :func:`start_export` then writes the next attempt beside it.
    """

    def of(batch: BatchPlan) -> list[RunState]:
        return attempts(arm, ctx.source, functools.partial(batch.export_run, ctx.transfer_id))

    names = set()
    # a 50-batch transfer's 50 run reads, eight at a time (one after another, they were 2 s of its preflight)
    with ThreadPoolExecutor(max_workers=PARALLEL_READS, thread_name_prefix="own-blobs") as pool:
        for batch, found in zip(ctx.plan.batches, pool.map(of, ctx.plan.batches), strict=True):
            if found:
                names.add(batch.blob_name)
                names.update(r.blob for r in found if r.blob)
    return names
