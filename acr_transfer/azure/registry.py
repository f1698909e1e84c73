"""The only module that talks to ARM for Microsoft.ContainerRegistry: pipelines and pipeline runs.

It sends requests through the SDK client's pipeline (``azure-mgmt-containerregistry``: bearer-token
auth with ARM challenges, the ARM retry policy that honours ``Retry-After``, logging with SAS
redaction) but reads raw JSON, because the 14.x models drop what we need: ``storageAccessMode``
(2025-06-01-preview) and the rate-limit headers. Run creation never waits on the SDK's LRO poller: the
initial response is taken (``Azure-AsyncOperation`` is not followed) and the run is then read back with
GET, whose ``provisioningState``, ``response.status`` and ``pipelineRunErrorMessage`` decide the outcome.

Every GET is paced by the ARM read budget (:mod:`acr_transfer.azure.read_budget`), an azure-core policy on the
client's pipeline that ``AzureClients`` owns.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from azure.core.rest import HttpRequest, HttpResponse

from acr_transfer.azure.read_budget import ReadBudgetPolicy, ReadPacer
from acr_transfer.azure.single_flight import SingleFlight
from acr_transfer.errors import AcrTransferError, NotFoundError, classify, from_status, retry_after_from_headers
from acr_transfer.settings import Settings, get_credential, get_settings

PROVIDER = "Microsoft.ContainerRegistry"
STORAGE_MODE_API = "2025-06-01-preview"  # the first api-version that reports storageAccessMode


class ProvisioningState(StrEnum):
    """ARM's provisioningState of a pipeline or run (values as ARM spells them)."""

    CREATING = "Creating"
    UPDATING = "Updating"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELED = "Canceled"


class StorageAccessMode(StrEnum):
    """How a pipeline's run reaches its storage container."""

    SAS_TOKEN = "SasToken"
    MANAGED_IDENTITY = "ManagedIdentity"


TERMINAL_FAILED = (ProvisioningState.FAILED, ProvisioningState.CANCELED)


@dataclass(frozen=True)
class RegistryAddress:
    """Subscription, resource group and name of one registry."""

    subscription: str
    resource_group: str
    name: str

    @property
    def id(self) -> str:
        rg = f"/subscriptions/{self.subscription}/resourceGroups/{self.resource_group}"
        return f"{rg}/providers/{PROVIDER}/registries/{self.name}"

    def child(self, kind: str, name: str) -> str:
        return f"{self.id}/{kind}/{name}"


@dataclass(frozen=True)
class PipelineFacts:
    """An export or import pipeline as preflight needs it."""

    id: str
    name: str
    kind: str  # "export" | "import"
    provisioning_state: str
    container_uri: str
    secret_uri: str | None
    storage_access_mode: str
    options: tuple[str, ...]
    source_trigger: str | None  # import only: "Enabled" | "Disabled"
    # the pipeline's identities (system-assigned first, then user-assigned): who its runs read Key Vault as
    principals: tuple[str, ...] = ()

    @property
    def trigger_enabled(self) -> bool:
        return (self.source_trigger or "").lower() == "enabled"


@dataclass(frozen=True)
class RunState:
    """A pipeline run as a GET shows it."""

    name: str
    id: str
    pipeline_id: str
    provisioning_state: str
    status: str | None
    percentage: int | None
    error_message: str | None
    catalog_digest: str | None
    imported_artifacts: tuple[str, ...]
    artifacts: tuple[str, ...]
    blob: str | None  # request.target.name (export) or request.source.name (import)
    blob_uri: str | None
    trigger_timestamp: str | None
    start_time: str | None
    finish_time: str | None
    raw: dict[str, Any] = field(repr=False, compare=False, default_factory=dict)

    @property
    def failed(self) -> bool:
        return self.provisioning_state in TERMINAL_FAILED or (self.status or "").lower() in ("failed", "canceled")

    @property
    def succeeded(self) -> bool:
        # a 200 + Succeeded provisioningState can still carry status Running: only both count
        return self.provisioning_state == ProvisioningState.SUCCEEDED and (self.status or "").lower() == "succeeded"

    @property
    def terminal(self) -> bool:
        return self.failed or self.succeeded

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> RunState:
        props = body.get("properties") or {}
        req = props.get("request") or {}
        resp = props.get("response") or {}
        pct = (resp.get("progress") or {}).get("percentage")
        side = resp.get("target") or resp.get("source") or {}
        blob = (req.get("target") or {}).get("name") or (req.get("source") or {}).get("name")
        try:
            percentage = int(float(pct)) if pct not in (None, "") else None
        except (TypeError, ValueError):
            percentage = None
        return cls(
            name=body.get("name", ""),
            id=body.get("id", ""),
            pipeline_id=req.get("pipelineResourceId", ""),
            provisioning_state=props.get("provisioningState", ""),
            status=resp.get("status"),
            percentage=percentage,
            error_message=resp.get("pipelineRunErrorMessage"),
            catalog_digest=resp.get("catalogDigest") or req.get("catalogDigest"),
            imported_artifacts=tuple(resp.get("importedArtifacts") or ()),
            artifacts=tuple(req.get("artifacts") or ()),
            blob=blob,
            blob_uri=side.get("uri"),
            trigger_timestamp=((resp.get("trigger") or {}).get("sourceTrigger") or {}).get("timestamp"),
            start_time=resp.get("startTime"),
            finish_time=resp.get("finishTime"),
            raw=body,
        )


def _pipeline_facts(body: dict[str, Any]) -> PipelineFacts:
    props = body.get("properties") or {}
    kind = "export" if "/exportpipelines/" in body.get("id", "").lower() else "import"
    end = props.get("target" if kind == "export" else "source") or {}
    trigger = ((props.get("trigger") or {}).get("sourceTrigger") or {}).get("status") if kind == "import" else None
    return PipelineFacts(
        id=body.get("id", ""),
        name=body.get("name", ""),
        kind=kind,
        provisioning_state=props.get("provisioningState", ""),
        container_uri=(end.get("uri") or "").rstrip("/"),
        secret_uri=end.get("keyVaultUri") or None,
        storage_access_mode=end.get("storageAccessMode") or StorageAccessMode.SAS_TOKEN,
        options=tuple(props.get("options") or ()),
        source_trigger=trigger,
        principals=_principals(body.get("identity") or {}),
    )


def _principals(identity: dict[str, Any]) -> tuple[str, ...]:
    """``identity.principalId`` (system-assigned) and each ``userAssignedIdentities[*].principalId``."""
    found = [str(identity["principalId"])] if identity.get("principalId") else []
    for entry in (identity.get("userAssignedIdentities") or {}).values():
        if isinstance(entry, dict) and entry.get("principalId"):
            found.append(str(entry["principalId"]))
    return tuple(found)


ARM_CONNECTIONS = 64  # one transfer's 50 batches create and read their runs at once


def _pooled_transport() -> Any:
    """The SDK's requests transport with room for every batch's call at once (its default pool of 10 drops
    the others' connections, each with a warning on the console)."""
    import requests
    from azure.core.pipeline.transport import RequestsTransport
    from requests.adapters import HTTPAdapter

    session = requests.Session()
    adapter = HTTPAdapter(pool_connections=4, pool_maxsize=ARM_CONNECTIONS)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return RequestsTransport(session=session, session_owner=True)


class RegistryArm:
    """ARM calls for pipelines and runs, every GET paced by the read budget.

    Args:
        settings: where ARM is; default ``get_settings()``.
        credential: token credential; default ``get_credential()``.
        pacer: the process's ARM read budget (one per ``AzureClients``); default: one of its own.
    """

    def __init__(
        self,
        settings: Settings | None = None,
        credential: Any | None = None,
        pacer: ReadPacer | None = None,
    ) -> None:
        self.settings = settings or get_settings()
        self.credential = credential or get_credential()
        self.pacer = pacer or ReadPacer.from_settings(self.settings)
        self._clients: dict[str, Any] = {}
        self._lock = threading.Lock()
        self.remaining_reads: int | None = None
        self.flights = SingleFlight()  # concurrent reads of one pipeline share a request

    # --- plumbing --------------------------------------------------------------------------------------
    def _client(self, subscription: str) -> Any:
        with self._lock:
            if subscription not in self._clients:
                from azure.mgmt.containerregistry.v2025_03_01_preview import ContainerRegistryManagementClient

                self._clients[subscription] = ContainerRegistryManagementClient(
                    self.credential,
                    subscription,
                    base_url=self.settings.arm_base_url,
                    credential_scopes=[self.settings.arm_token_scope],
                    retry_total=self.settings.arm_retry_total,
                    per_call_policies=[ReadBudgetPolicy(self.pacer)],
                    transport=_pooled_transport(),
                    **self.settings.connection_kwargs(),
                )
            return self._clients[subscription]

    def _send(self, subscription: str, method: str, path: str, api: str, what: str, body: Any = None) -> HttpResponse:
        url = f"{self.settings.arm_base_url}{path}?api-version={api}"
        request = HttpRequest(method, url, json=body) if body is not None else HttpRequest(method, url)
        try:
            response: HttpResponse = self._client(subscription)._send_request(request)
        except AcrTransferError:
            raise
        except Exception as e:
            raise classify(e, what) from e
        remaining = response.headers.get("x-ms-ratelimit-remaining-subscription-reads")
        if remaining is not None and remaining.isdigit():
            self.remaining_reads = int(remaining)
        if response.status_code >= 400:
            raise _http_error(response, what)
        return response

    # --- pipelines -------------------------------------------------------------------------------------
    def get_pipeline(self, registry: RegistryAddress, kind: str, name: str) -> PipelineFacts:
        """GET an export or import pipeline (at 2025-06-01-preview, to see its storage access mode).

        Raises:
            NotFoundError: naming the pipeline and registry.
        """
        collection = "exportPipelines" if kind == "export" else "importPipelines"
        what = f"{kind} pipeline '{name}' on registry '{registry.name}'"
        path = registry.child(collection, name)
        try:
            body = self.flights.do(
                path.lower(), lambda: self._send(registry.subscription, "GET", path, STORAGE_MODE_API, what).json()
            )
        except NotFoundError as e:
            raise NotFoundError(
                f"{what} (resource group {registry.resource_group}) does not exist; create it or fix the route",
                code=e.code,
                status=e.status,
            ) from None
        return _pipeline_facts(body)

    def login_server(self, registry: RegistryAddress) -> str:
        """The registry's data-plane host (``properties.loginServer``)."""
        what = f"registry '{registry.name}'"
        response = self._send(registry.subscription, "GET", registry.id, self.settings.api_version, what)
        return str((response.json().get("properties") or {}).get("loginServer") or "")

    # --- runs ------------------------------------------------------------------------------------------
    def get_run(self, registry: RegistryAddress, name: str) -> RunState | None:
        """GET a run; None when it does not exist."""
        what = f"pipeline run '{name}' on registry '{registry.name}'"
        try:
            response = self._send(
                registry.subscription, "GET", registry.child("pipelineRuns", name), self.settings.api_version, what
            )
        except NotFoundError:
            return None
        return RunState.from_json(response.json())

    def list_runs(self, registry: RegistryAddress) -> Iterator[RunState]:
        """Every run of a registry, page by page (each page is one read)."""
        for page in self.list_run_pages(registry):
            yield from page

    def list_run_pages(self, registry: RegistryAddress) -> Iterator[list[RunState]]:
        """The runs of a registry one page at a time; each page costs one read, taken when it is fetched."""
        path = f"{registry.id}/pipelineRuns"
        what = f"pipeline runs of registry '{registry.name}'"
        response = self._send(registry.subscription, "GET", path, self.settings.api_version, what)
        while True:
            page = response.json()
            yield [RunState.from_json(item) for item in page.get("value") or []]
            next_link = page.get("nextLink")
            if not next_link:
                return
            try:
                response = self._client(registry.subscription)._send_request(HttpRequest("GET", next_link))
            except Exception as e:
                raise classify(e, what) from e
            if response.status_code >= 400:
                raise _http_error(response, what)

    def create_run(self, registry: RegistryAddress, name: str, request: dict[str, Any]) -> RunState:
        """PUT a run and return what the service answered (the run is then watched with GET).

        An identical re-PUT of an existing run is a no-op in ARM, so a retried create is harmless.
        """
        what = f"create pipeline run '{name}' on registry '{registry.name}'"
        body = {"properties": {"request": request}}
        response = self._send(
            registry.subscription, "PUT", registry.child("pipelineRuns", name), self.settings.api_version, what, body
        )
        return RunState.from_json(response.json())

    def delete_run(self, registry: RegistryAddress, name: str) -> bool:
        """DELETE a run record (not what it transferred); False when there was none."""
        what = f"delete pipeline run '{name}' on registry '{registry.name}'"
        response = self._send(
            registry.subscription, "DELETE", registry.child("pipelineRuns", name), self.settings.api_version, what
        )
        return response.status_code != 204


def _http_error(response: HttpResponse, what: str) -> AcrTransferError:
    """Turn an ARM error response into the project's hierarchy (the one status table, ``from_status``)."""
    try:
        err = (response.json() or {}).get("error") or {}
    except (ValueError, json.JSONDecodeError):
        err = {}
    code, message = err.get("code"), err.get("message")
    detail = f"{what}: {response.status_code} {code or response.reason}: {message or response.text()[:300]}"
    return from_status(response.status_code, detail, retry_after=retry_after_from_headers(response.headers), code=code)
