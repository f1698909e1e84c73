"""The run engine: what ACR does when a pipeline run is created.

An export run resolves its artifacts in the source registry, reads the SAS from the pipeline's Key Vault
secret (or uses the pipeline's managed identity), writes ONE tar blob (OCI image layout) into the
pipeline's container, stamps ``category=acr-transfer-blob`` and Content-MD5, and reports
``catalogDigest``. An import run reads that blob with its own SAS, checks the digest, and pushes every
manifest and blob into the target registry. Runs take ``max(min_seconds, bytes / bytes_per_second)`` so
tests stay fast and benchmarks realistic; ``progress.percentage`` climbs from "0" to "100" meanwhile.

Storage is reached directly at Azurite (not through the fault proxy): injected storage faults are for the
product's own calls, while a run's failures are steered through the control API's run outcomes.
"""

from __future__ import annotations

import asyncio
import hashlib
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import quote

from azure.core.exceptions import HttpResponseError, ResourceNotFoundError, ServiceRequestError
from azure.storage.blob import BlobClient, ContainerClient, ContentSettings, LinearRetry

from emulator.access import pipeline_principals, system_identity
from emulator.oci import (
    ArtifactNotFound,
    ArtifactRefError,
    ImportFailed,
    LayoutError,
    import_layout,
    parse_artifact_ref,
    resolve_artifact,
    write_layout_tar,
)
from emulator.world import World, utcnow_iso

TERMINAL = ("Succeeded", "Failed", "Canceled")
TRIGGER_MAX_AGE = timedelta(days=60)
# what a storage error code means for a pipeline's SAS token or identity (Azurite's codes; Azure's differ)
STORAGE_CAUSES = {
    "AuthorizationFailure": "the SAS token is expired, not yet valid, or signed with a key that was rotated",
    "AuthenticationFailed": "the SAS token is expired, not yet valid, or signed with a key that was rotated",
    "AuthorizationPermissionMismatch": "the SAS token lacks a permission this operation needs",
    "AuthorizationResourceTypeMismatch": "the SAS token does not cover this resource type",
    "AuthorizationProtocolMismatch": "the SAS token does not allow this protocol",
    "ContainerNotFound": "the pipeline's storage container does not exist",
}


class RunFailed(Exception):
    """The run ends Failed with this message as ``pipelineRunErrorMessage``."""


def validate_run_request(world: World, registry: str, req: dict[str, Any]) -> tuple[str, str] | None:
    """Server-side checks of a run request; returns (target, message) for the first problem, else None."""
    pid = req.get("pipelineResourceId")
    if not isinstance(pid, str) or not pid:
        return "properties.request.pipelineResourceId", "properties.request.pipelineResourceId is required."
    pipeline = world.pipelines.get(pid.lower())
    if world.registry_name_of(pid) != registry or "/pipelineruns/" in pid.lower():
        return (
            "properties.request.pipelineResourceId",
            f"pipelineResourceId '{pid}' must reference an export or import pipeline of registry '{registry}'.",
        )
    if pipeline is None:
        return (
            "properties.request.pipelineResourceId",
            f"The pipeline '{pid.rsplit('/', 1)[-1]}' referenced by pipelineResourceId was not found on registry "
            f"'{registry}'.",
        )
    if "/exportpipelines/" in pid.lower():
        artifacts = req.get("artifacts")
        if not isinstance(artifacts, list) or not 1 <= len(artifacts) <= 50:
            return "properties.request.artifacts", "An export run needs between 1 and 50 artifacts."
        for ref in artifacts:
            try:
                parse_artifact_ref(ref)
            except (ArtifactRefError, TypeError) as e:
                return "properties.request.artifacts", f"Invalid artifact {ref!r}: {e}"
        name = (req.get("target") or {}).get("name")
        if not isinstance(name, str) or not name.strip():
            return (
                "properties.request.target.name",
                "An export run needs properties.request.target.name (the blob).",
            )
        return _blob_name_problem(name, "target")
    name = (req.get("source") or {}).get("name")
    if not isinstance(name, str) or not name.strip():
        return (
            "properties.request.source.name",
            "An import run needs properties.request.source.name (the blob).",
        )
    return _blob_name_problem(name, "source")


def _blob_name_problem(name: str, side: str) -> tuple[str, str] | None:
    if len(name) > 1024 or name.endswith(("/", ".")) or any(seg in ("", ".", "..") for seg in name.split("/")):
        return (
            f"properties.request.{side}.name",
            f"Blob name '{name[:80]}' is invalid: 1-1024 characters, no empty, '.' or '..' path segments.",
        )
    return None


@dataclass
class Progress:
    """Pacing of one run: when it started and how long it should take."""

    started: float = field(default_factory=time.monotonic)
    expected: float = 1.0


class RunEngine:
    """Executes pipeline runs as asyncio tasks and scans source-trigger containers."""

    def __init__(self, world: World, ca: Path) -> None:
        self.world = world
        self.ca = str(ca)
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.workdir = world.state_dir / "work"
        self.workdir.mkdir(exist_ok=True)

    # --- lifecycle -------------------------------------------------------------------------------------
    def create(
        self,
        registry: str,
        rid: str,
        req: dict[str, Any],
        force_tag: Any,
        sysdata: dict[str, Any],
        fingerprint: str,
        trigger_time: str | None = None,
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        """Store a new run (or a re-run) with its async operation and start executing it."""
        op_name = f"pipelineruns-{uuid.uuid4()}"
        op = {
            "id": f"{rid}/operationStatuses/{op_name}",
            "name": op_name,
            "status": "Creating",
            "startTime": utcnow_iso(),
        }
        response: dict[str, Any] = {
            "status": "Running",
            "progress": {"percentage": "0"},
            "startTime": utcnow_iso(),
        }
        if trigger_time:
            response["trigger"] = {"sourceTrigger": {"timestamp": trigger_time}}
        resource = {
            "id": rid,
            "name": rid.rsplit("/", 1)[1],
            "type": "Microsoft.ContainerRegistry/registries/pipelineRuns",
            "systemData": sysdata,
            "properties": {
                "request": req,
                **({"forceUpdateTag": force_tag} if force_tag is not None else {}),
                "provisioningState": "Creating",
                "response": response,
            },
        }
        key = rid.lower()
        self.world.operations[op_name.lower()] = op
        self.world.runs[key] = {
            "resource": resource,
            "fingerprint": fingerprint,
            "operation": op_name.lower(),
            "registry": registry,
            "started_at": time.time(),
        }
        self.world.mark_dirty()
        self.start(key)
        return resource, op

    def start(self, key: str) -> None:
        self.cancel(key)
        self.tasks[key] = asyncio.get_running_loop().create_task(self._execute(key))

    def cancel(self, key: str) -> None:
        task = self.tasks.pop(key, None)
        if task is not None and not task.done():
            task.cancel()

    def resume_all(self) -> None:
        """After a restart, runs that were in flight finish, as the real service would finish them: a run
        whose work was done (only its pacing was left) keeps that result, any other starts over."""
        for key, rec in self.world.runs.items():
            if rec["resource"]["properties"]["provisioningState"] not in TERMINAL:
                self.start(key)

    async def stop(self) -> None:
        for task in list(self.tasks.values()):
            task.cancel()
        await asyncio.gather(*self.tasks.values(), return_exceptions=True)

    # --- execution -------------------------------------------------------------------------------------
    async def _execute(self, key: str) -> None:
        rec = self.world.runs[key]
        props = rec["resource"]["properties"]
        name = rec["resource"]["name"]
        outcome = self.world.outcomes.pop(name.lower(), None) or {}
        pacing = Progress(expected=self.world.speed.min_seconds)
        ticker = asyncio.get_running_loop().create_task(self._tick(props, pacing))
        self._set_op(rec, "InProgress")
        try:
            # work finished before a restart (the run was stopped while pacing): do not redo it, a second
            # export would find its own blob and fail, a second import would miss a deleted source blob
            result: dict[str, Any] | None = rec.get("result")
            if result is None:
                if outcome.get("hang"):
                    await asyncio.Event().wait()  # until the run is deleted or the stand-in stops
                pipeline = self.world.pipelines.get(props["request"]["pipelineResourceId"].lower())
                if pipeline is None:
                    raise RunFailed("The pipeline of this run no longer exists.")
                if outcome.get("fail"):
                    await asyncio.sleep(pacing.expected / 2)
                    raise RunFailed(str(outcome["fail"]))
                if "exportPipelines" in pipeline["resource"]["type"]:
                    result = await asyncio.to_thread(self._export, rec, pipeline["resource"], pacing)
                else:
                    result = await asyncio.to_thread(self._import, rec, pipeline["resource"], pacing)
                rec["result"] = result  # saved with the run, so a restart from here only finishes the pacing
                self.world.mark_dirty()
            remaining = pacing.expected - (time.monotonic() - pacing.started)
            if remaining > 0:
                await asyncio.sleep(remaining)
            self._finish(rec, "Succeeded", result)
        except RunFailed as e:
            self._finish(rec, "Failed", {"pipelineRunErrorMessage": str(e)})
        except asyncio.CancelledError:
            raise
        except Exception as e:  # a stand-in bug must still end the run, visibly
            self._finish(rec, "Failed", {"pipelineRunErrorMessage": f"Internal error in the stand-in: {e!r}"})
        finally:
            ticker.cancel()

    async def _tick(self, props: dict[str, Any], pacing: Progress) -> None:
        while True:
            await asyncio.sleep(0.2)
            elapsed = time.monotonic() - pacing.started
            pct = min(99, int(100 * elapsed / max(pacing.expected, 0.001)))
            if props["response"]["progress"]["percentage"] != str(pct):
                props["response"]["progress"]["percentage"] = str(pct)
                self.world.mark_dirty()

    def _set_op(self, rec: dict[str, Any], status: str, error: dict[str, str] | None = None) -> None:
        op = self.world.operations.get(rec["operation"])
        if op is None:
            return
        op["status"] = status
        if status in TERMINAL:
            op["endTime"] = utcnow_iso()
        if error:
            op["error"] = error
        self.world.mark_dirty()

    def _finish(self, rec: dict[str, Any], status: str, fields: dict[str, Any]) -> None:
        props = rec["resource"]["properties"]
        response = props["response"]
        response.update(fields)
        response["status"] = status
        response["finishTime"] = utcnow_iso()
        if status == "Succeeded":
            response["progress"]["percentage"] = "100"
        props["provisioningState"] = status
        rec["finished_at"] = time.time()
        rec.pop("result", None)
        error = None
        if status == "Failed":
            error = {"code": "PipelineRunFailed", "message": fields.get("pipelineRunErrorMessage", "")}
        self._set_op(rec, status, error)

    # --- storage access --------------------------------------------------------------------------------
    def _direct(self, uri: str) -> str:
        """The Azurite URL for a proxy URL (runs bypass the fault proxy)."""
        proxy, azurite = self.world.endpoints.storage, self.world.endpoints.azurite
        return azurite + uri[len(proxy) :] if proxy and uri.startswith(proxy) else uri

    def _credential(self, endpoint: dict[str, Any], pipeline: dict[str, Any]) -> Any:
        """The SAS from the pipeline's Key Vault secret, read as the pipeline's identity (any of its principals
        the vault allows), or the pipeline identity in ManagedIdentity mode."""
        if endpoint.get("storageAccessMode") == "ManagedIdentity":
            return self.world.authority.credential()
        uri = endpoint.get("keyVaultUri") or ""
        vault = self.world.vault_for_uri(uri)
        secret_name = uri.rstrip("/").split("/secrets/")[-1].split("/")[0] if "/secrets/" in uri else ""
        if vault is None or not secret_name:
            raise RunFailed(f"Failed to get the SAS token: Key Vault secret URI '{uri}' is not reachable.")
        self._check_secret_access(vault.name, secret_name, uri, pipeline)
        secret = vault.get(secret_name)
        if secret is None:
            raise RunFailed(f"Failed to get the SAS token from Key Vault secret '{uri}': SecretNotFound.")
        if not secret["attributes"].get("enabled", True):
            raise RunFailed(f"Failed to get the SAS token from Key Vault secret '{uri}': the secret is disabled.")
        return str(secret["value"]).lstrip("?")

    def _check_secret_access(self, vault: str, secret: str, uri: str, pipeline: dict[str, Any]) -> None:
        """Key Vault's answer to the pipeline's identity: a RunFailed carrying its 403 when no principal may get."""
        access = self.world.access
        principals = pipeline_principals(pipeline)
        if any(access.allowed(vault, oid, "get", secret) for oid in principals):
            return
        if not principals:
            raise RunFailed(
                f"Failed to get the SAS token from Key Vault secret '{uri}': the pipeline has no managed identity "
                "to read it with."
            )
        identity = pipeline.get("identity") or {}
        if identity.get("principalId"):
            app = system_identity(self.world.authority.tenant_id, pipeline["id"])[1]
        else:
            app = next((u.get("clientId", "") for u in (identity.get("userAssignedIdentities") or {}).values()), "")
        inner, message = access.denial(vault, principals[0], app, "get", secret)
        raise RunFailed(
            f"Failed to get the SAS token from Key Vault secret '{uri}' with the pipeline's managed identity "
            f"(principalId {principals[0]}). Key Vault returned 403 Forbidden ({inner}): {message}"
        )

    def _blob(self, container_uri: str, name: str, credential: Any) -> BlobClient:
        return BlobClient.from_blob_url(
            f"{self._direct(container_uri)}/{quote(name)}",
            credential=credential,
            connection_verify=self.ca,
            retry_policy=LinearRetry(backoff=1, random_jitter_range=0, retry_total=2),
        )

    @staticmethod
    def _storage_failure(e: HttpResponseError, what: str) -> RunFailed:
        raw = getattr(e, "error_code", None) or e.reason or ""
        code = str(getattr(raw, "value", raw))  # the storage SDK gives a StorageErrorCode enum
        cause = STORAGE_CAUSES.get(code, "")
        return RunFailed(
            f"Failed to access storage while {what}. Service request failed. Status: {e.status_code} ({code})"
            + (f": {cause}" if cause else "")
        )

    # --- export ----------------------------------------------------------------------------------------
    def _export(self, rec: dict[str, Any], pipeline: dict[str, Any], pacing: Progress) -> dict[str, Any]:
        req = rec["resource"]["properties"]["request"]
        target = pipeline["properties"]["target"]
        options = pipeline["properties"].get("options") or []
        store = self.world.registries[rec["registry"]]
        resolved, failures = [], []
        for ref in req["artifacts"]:
            try:
                resolved.append(resolve_artifact(store, ref))
            except (ArtifactNotFound, ArtifactRefError) as e:
                if "ContinueOnErrors" not in options:
                    raise RunFailed(f"Export failed: {e}") from e
                failures.append(str(e))
        if not resolved:
            raise RunFailed("Export failed: none of the artifacts could be read. " + "; ".join(failures))
        blob_name = req["target"]["name"]
        credential = self._credential(target, pipeline)
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            tar_path = Path(tmp) / "export.tar"
            with tar_path.open("wb") as out:
                write_layout_tar(store, resolved, out)
            sha, md5, size = _digests(tar_path)
            pacing.expected = max(self.world.speed.min_seconds, size / self.world.speed.bytes_per_second)
            blob = self._blob(target["uri"], blob_name, credential)
            try:
                if "OverwriteBlobs" not in options and blob.exists():
                    raise RunFailed(
                        f"Blob '{blob_name}' already exists in container '{target['uri']}' and the export pipeline "
                        "does not have the OverwriteBlobs option; use a new blob name or enable OverwriteBlobs."
                    )
                with tar_path.open("rb") as data:
                    blob.upload_blob(
                        data,
                        length=size,
                        overwrite=True,
                        metadata={"category": "acr-transfer-blob"},
                        content_settings=ContentSettings(content_type="application/x-tar", content_md5=md5),
                        max_concurrency=2,
                    )
            except HttpResponseError as e:
                raise self._storage_failure(e, f"writing blob '{blob_name}'") from e
            except ServiceRequestError as e:
                raise RunFailed(f"Failed to access storage while writing blob '{blob_name}': {e}") from e
        result: dict[str, Any] = {
            "catalogDigest": sha,
            "target": {
                "type": "AzureStorageBlob",
                "uri": f"{target['uri']}/{blob_name}",
                "keyVaultUri": target.get("keyVaultUri"),
                "storageAccessMode": target.get("storageAccessMode"),
            },
        }
        if failures:
            result["pipelineRunErrorMessage"] = "Completed with errors (ContinueOnErrors): " + "; ".join(failures)
        return result

    # --- import ----------------------------------------------------------------------------------------
    def _import(self, rec: dict[str, Any], pipeline: dict[str, Any], pacing: Progress) -> dict[str, Any]:
        req = rec["resource"]["properties"]["request"]
        source = pipeline["properties"]["source"]
        options = pipeline["properties"].get("options") or []
        blob_name = req["source"]["name"]
        blob = self._blob(source["uri"], blob_name, self._credential(source, pipeline))
        with tempfile.TemporaryDirectory(dir=self.workdir) as tmp:
            tar_path = Path(tmp) / "import.tar"
            try:
                with tar_path.open("wb") as sink:
                    blob.download_blob(max_concurrency=2).readinto(sink)
            except ResourceNotFoundError as e:
                raise RunFailed(f"Blob '{blob_name}' was not found in container '{source['uri']}'.") from e
            except HttpResponseError as e:
                raise self._storage_failure(e, f"reading blob '{blob_name}'") from e
            sha, _, size = _digests(tar_path)
            pacing.expected = max(self.world.speed.min_seconds, size / self.world.speed.bytes_per_second)
            expected = req.get("catalogDigest")
            if expected and expected != sha:
                raise RunFailed(f"Catalog digest mismatch for blob '{blob_name}': expected {expected}, blob has {sha}.")
            try:
                result = import_layout(
                    tar_path,
                    self.world.registries[rec["registry"]],
                    overwrite_tags="OverwriteTags" in options,
                    continue_on_errors="ContinueOnErrors" in options,
                )
            except (ImportFailed, LayoutError) as e:
                raise RunFailed(f"Import failed: {e}") from e
        if "DeleteSourceBlobOnSuccess" in options and not result.failed:
            try:
                blob.delete_blob()
            except HttpResponseError as e:
                raise self._storage_failure(e, f"deleting source blob '{blob_name}'") from e
        out: dict[str, Any] = {
            "catalogDigest": sha,
            "importedArtifacts": list(result.imported),
            "source": {
                "type": "AzureStorageBlob",
                "uri": f"{source['uri']}/{blob_name}",
                "keyVaultUri": source.get("keyVaultUri"),
                "storageAccessMode": source.get("storageAccessMode"),
            },
        }
        if result.failed:
            out["pipelineRunErrorMessage"] = "Completed with errors (ContinueOnErrors): " + "; ".join(
                f"{ref}: {why}" for ref, why in result.failed
            )
        return out

    # --- source trigger --------------------------------------------------------------------------------
    async def trigger_loop(self) -> None:
        """Every ``trigger_interval`` seconds, import each new qualifying blob of a triggered pipeline once."""
        while True:
            await asyncio.sleep(self.world.speed.trigger_interval)
            for key, pipeline in list(self.world.pipelines.items()):
                res = pipeline["resource"]
                props = res["properties"]
                if "importPipelines" not in res["type"] or props["trigger"]["sourceTrigger"]["status"] != "Enabled":
                    continue
                try:
                    blobs = await asyncio.to_thread(self._qualifying_blobs, props["source"], res)
                except (RunFailed, HttpResponseError, ServiceRequestError):
                    continue  # the real trigger retries on its next scan
                for blob_name, etag in blobs:
                    seen = f"{key}|{blob_name}|{etag}"
                    if seen in self.world.trigger_seen or key not in self.world.pipelines:
                        continue
                    self.world.trigger_seen[seen] = time.time()
                    self._trigger_run(res, blob_name)

    def _qualifying_blobs(self, source: dict[str, Any], pipeline: dict[str, Any]) -> list[tuple[str, str]]:
        container = ContainerClient.from_container_url(
            self._direct(source["uri"]),
            credential=self._credential(source, pipeline),
            connection_verify=self.ca,
            retry_policy=LinearRetry(backoff=1, random_jitter_range=0, retry_total=1),
        )
        now = datetime.now(UTC)
        found = []
        for b in container.list_blobs(include=["metadata"]):
            if (b.metadata or {}).get("category") != "acr-transfer-blob" or not b.content_settings.content_md5:
                continue
            if b.last_modified and now - b.last_modified > TRIGGER_MAX_AGE:
                continue
            found.append((b.name, str(b.etag)))
        return found

    def _trigger_run(self, pipeline: dict[str, Any], blob_name: str) -> None:
        registry = self.world.registry_name_of(pipeline["id"]) or ""
        name = f"{pipeline['name'][:30]}_{uuid.uuid4().hex[:16]}"
        rid = self.world.child_id(registry, "pipelineRuns", name)
        req = {
            "pipelineResourceId": pipeline["id"],
            "source": {"type": "AzureStorageBlob", "name": blob_name},
        }
        sysdata = {
            "createdBy": "SourceTrigger",
            "createdByType": "Application",
            "createdAt": utcnow_iso(),
            "lastModifiedBy": "SourceTrigger",
            "lastModifiedByType": "Application",
            "lastModifiedAt": utcnow_iso(),
        }
        self.create(registry, rid, req, None, sysdata, fingerprint=uuid.uuid4().hex, trigger_time=utcnow_iso())


def _digests(path: Path) -> tuple[str, bytearray, int]:
    """sha256 (as ``sha256:…``), MD5 bytes and size of a file, read once."""
    sha, md5, size = hashlib.sha256(), hashlib.md5(), 0
    with path.open("rb") as f:
        while chunk := f.read(1 << 20):
            sha.update(chunk)
            md5.update(chunk)
            size += len(chunk)
    return f"sha256:{sha.hexdigest()}", bytearray(md5.digest()), size
