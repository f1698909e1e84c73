"""ARM for Microsoft.ContainerRegistry: registries, exportPipelines, importPipelines, pipelineRuns.

Status codes, headers and bodies follow ../shared/reference/acr-transfer.md §2: a run PUT answers 201 with
``Azure-AsyncOperation`` and the run in ``Creating``; pipelines answer 200 synchronously; DELETE answers 200
(204 when there is nothing to delete); lists page with ``nextLink``. Every request needs a token for
``https://management.azure.com``; reads and writes draw on per-subscription token buckets reported in
``x-ms-ratelimit-remaining-subscription-reads/-writes``, and an empty bucket answers 429 with Retry-After.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import time
import uuid
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.auth import ARM_AUDIENCE, TokenError
from emulator.runs import RunEngine, validate_run_request
from emulator.world import PROVIDER, World, utcnow_iso

PIPELINE_API_VERSIONS = (
    "2019-12-01-preview",
    "2020-11-01-preview",
    "2021-06-01-preview",
    "2021-08-01-preview",
    "2021-12-01-preview",
    "2022-02-01-preview",
    "2023-01-01-preview",
    "2023-06-01-preview",
    "2023-08-01-preview",
    "2023-11-01-preview",
    "2024-11-01-preview",
    "2025-03-01-preview",
    "2025-05-01-preview",
    "2025-06-01-preview",
)
REGISTRY_API_VERSIONS = (
    "2017-10-01",
    "2019-05-01",
    "2021-09-01",
    "2022-12-01",
    "2023-07-01",
    "2025-04-01",
    "2025-11-01",
    *PIPELINE_API_VERSIONS,
)
STORAGE_MODE_SINCE = "2025-06-01-preview"
PIPELINE_OPTIONS = ("OverwriteTags", "OverwriteBlobs", "DeleteSourceBlobOnSuccess", "ContinueOnErrors")
NAME_RE = re.compile(r"^[A-Za-z0-9]{5,50}$")
KINDS = {
    "exportpipelines": "exportPipelines",
    "importpipelines": "importPipelines",
    "pipelineruns": "pipelineRuns",
}

PATH_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)"
    r"(?:/resourceGroups/(?P<rg>[^/]+))?"
    r"/providers/Microsoft\.ContainerRegistry/registries"
    r"(?:/(?P<reg>[^/]+)"
    r"(?:/(?P<kind>exportPipelines|importPipelines|pipelineRuns)"
    r"(?:/(?P<name>[^/]+)(?:/operationStatuses/(?P<op>[^/]+))?)?)?)?/?$",
    re.IGNORECASE,
)


class ArmError(Exception):
    """An ARM error response: status, ``error.code``, ``error.message`` and optional ``error.target``."""

    def __init__(self, status: int, code: str, message: str, target: str | None = None, **headers: str):
        super().__init__(message)
        self.status, self.code, self.message, self.target, self.headers = (
            status,
            code,
            message,
            target,
            headers,
        )

    def response(self) -> JSONResponse:
        err: dict[str, Any] = {"code": self.code, "message": self.message}
        if self.target:
            err["target"] = self.target
        return JSONResponse({"error": err}, self.status, headers=self.headers)


class TokenBucket:
    """ARM's throttling: ``capacity`` requests at once, refilled at ``rate`` per second."""

    def __init__(self, capacity: float, rate: float) -> None:
        self.capacity, self.rate = capacity, rate
        self.tokens, self.stamp = capacity, time.monotonic()

    def take(self) -> tuple[bool, int, float]:
        """Take one token: (allowed, remaining, seconds until the next token)."""
        now = time.monotonic()
        self.tokens = min(self.capacity, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True, int(self.tokens), 0.0
        return False, 0, (1 - self.tokens) / self.rate


def api_version_of(request: Request, allowed: tuple[str, ...]) -> str:
    """The request's api-version, or the 400 ARM sends for a missing or unsupported one."""
    version = request.query_params.get("api-version")
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if version not in allowed:
        raise ArmError(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported versions are '{','.join(allowed)}'.",
        )
    return version


def system_data(principal: str, created: str | None = None) -> dict[str, Any]:
    now = utcnow_iso()
    return {
        "createdBy": principal,
        "createdByType": "Application",
        "createdAt": created or now,
        "lastModifiedBy": principal,
        "lastModifiedByType": "Application",
        "lastModifiedAt": now,
    }


def render(resource: dict[str, Any], api_version: str) -> dict[str, Any]:
    """A stored resource as an api-version shows it (no ``storageAccessMode`` before 2025-06-01-preview)."""
    body = json.loads(json.dumps(resource))
    if api_version >= STORAGE_MODE_SINCE:
        return body
    props = body.get("properties", {})
    for holder in (
        props.get("target"),
        props.get("source"),
        props.get("response", {}).get("target"),
        props.get("response", {}).get("source"),
    ):
        if isinstance(holder, dict):
            holder.pop("storageAccessMode", None)
    return body


class ArmApi:
    """The ARM endpoint's request handling over a ``World``."""

    def __init__(
        self,
        world: World,
        engine: RunEngine,
        *,
        reads: tuple[float, float],
        writes: tuple[float, float],
        page_size: int = 20,
    ) -> None:
        self.world = world
        self.engine = engine
        self.page_size = page_size
        self.read_buckets: dict[str, TokenBucket] = {}
        self.write_buckets: dict[str, TokenBucket] = {}
        self.read_limits, self.write_limits = reads, writes

    # --- entry ----------------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}
        try:
            principal = self._authenticate(request)
            headers.update(self._throttle(request))
            response = await self._route(request, principal)
        except ArmError as e:
            response = e.response()
        response.headers.update(headers)
        return response

    def _authenticate(self, request: Request) -> str:
        try:
            claims = self.world.authority.verify(request.headers.get("authorization"), ARM_AUDIENCE)
        except TokenError as e:
            code = "AuthenticationFailed" if not request.headers.get("authorization") else "InvalidAuthenticationToken"
            raise ArmError(401, code, f"Authentication failed. {e}") from e
        return str(claims.get("oid", "unknown"))

    def _throttle(self, request: Request) -> dict[str, str]:
        m = PATH_RE.match(request.url.path)
        sub = (m.group("sub") if m else "none").lower()
        is_read = request.method in ("GET", "HEAD")
        buckets, limits, kind = (
            (self.read_buckets, self.read_limits, "reads")
            if is_read
            else (self.write_buckets, self.write_limits, "writes")
        )
        bucket = buckets.setdefault(sub, TokenBucket(*limits))
        allowed, remaining, wait = bucket.take()
        header = f"x-ms-ratelimit-remaining-subscription-{kind}"
        if not allowed:
            seconds = max(1, math.ceil(wait))
            raise ArmError(
                429,
                "SubscriptionRequestsThrottled",
                f"Number of '{kind[:-1]}' requests for subscription '{sub}' exceeded. Please try again after "
                f"'{seconds}' seconds after additional tokens are available. Refer to https://aka.ms/arm-throttling",
                **{"Retry-After": str(seconds), header: "0"},
            )
        return {header: str(remaining)}

    async def _route(self, request: Request, principal: str) -> Response:
        m = PATH_RE.match(request.url.path)
        if not m:
            raise ArmError(
                404, "InvalidResourceType", f"The resource type could not be found for '{request.url.path}'."
            )
        g = m.groupdict()
        if g["sub"].lower() != self.world.sub.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{g['sub']}' could not be found.")
        if g["rg"] is not None and g["rg"].lower() != self.world.rg.lower():
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{g['rg']}' could not be found.")
        if g["reg"] is None:
            return self._list_registries(request)
        registry = self._registry(g["reg"], g["rg"])
        if g["kind"] is None:
            api_version_of(request, REGISTRY_API_VERSIONS)
            if request.method != "GET":
                raise ArmError(405, "MethodNotAllowed", "Only GET is served for registries by this stand-in.")
            return JSONResponse(self._registry_body(registry))
        api = api_version_of(request, PIPELINE_API_VERSIONS)
        kind = KINDS[g["kind"].lower()]
        if g["op"]:
            return self._operation(g["op"])
        if g["name"] is None:
            if request.method != "GET":
                raise ArmError(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection.")
            return self._list(request, registry, kind, api)
        return await self._resource(request, registry, kind, g["name"], api, principal)

    # --- registries -----------------------------------------------------------------------------------
    def _registry(self, name: str, rg: str | None) -> str:
        for reg in self.world.topo["registries"]:
            if reg.lower() == name.lower():
                return str(reg)
        raise ArmError(
            404,
            "ResourceNotFound",
            f"The Resource '{PROVIDER}/registries/{name}' under resource group '{rg or self.world.rg}' was not found.",
        )

    def _registry_body(self, name: str) -> dict[str, Any]:
        url = self.world.endpoints.registries[name]
        return {
            "id": self.world.registry_id(name),
            "name": name,
            "type": f"{PROVIDER}/registries",
            "location": self.world.topo.get("location", "westeurope"),
            "sku": {"name": "Premium", "tier": "Premium"},
            "properties": {
                "loginServer": url.split("://", 1)[1],
                "provisioningState": "Succeeded",
                "adminUserEnabled": False,
                "publicNetworkAccess": "Enabled",
                "policies": {"exportPolicy": {"status": "enabled"}},
                "creationDate": "2026-01-01T00:00:00+00:00",
            },
        }

    def _list_registries(self, request: Request) -> Response:
        api_version_of(request, REGISTRY_API_VERSIONS)
        return JSONResponse({"value": [self._registry_body(r) for r in self.world.topo["registries"]]})

    # --- collections and operations --------------------------------------------------------------------
    def _list(self, request: Request, registry: str, kind: str, api: str) -> Response:
        prefix = f"{self.world.registry_id(registry)}/{kind}/".lower()
        store = self.world.runs if kind == "pipelineRuns" else self.world.pipelines
        items = [render(v["resource"], api) for k, v in store.items() if k.startswith(prefix)]
        try:
            skip = int(request.query_params.get("$skipToken", "0"))
        except ValueError as e:
            raise ArmError(400, "InvalidSkipToken", "The $skipToken is not valid.") from e
        page = items[skip : skip + self.page_size]
        body: dict[str, Any] = {"value": page}
        if skip + self.page_size < len(items):
            body["nextLink"] = str(request.url.include_query_params(**{"$skipToken": str(skip + self.page_size)}))
        return JSONResponse(body)

    def _operation(self, op_name: str) -> Response:
        op = self.world.operations.get(op_name.lower())
        if op is None:
            raise ArmError(404, "OperationNotFound", f"The operation '{op_name}' was not found.")
        body = {k: v for k, v in op.items() if k in ("id", "name", "status", "startTime", "endTime", "error")}
        return JSONResponse(body)

    # --- single resources ------------------------------------------------------------------------------
    async def _resource(
        self, request: Request, registry: str, kind: str, name: str, api: str, principal: str
    ) -> Response:
        rid = self.world.child_id(registry, kind, name)
        key = rid.lower()
        store = self.world.runs if kind == "pipelineRuns" else self.world.pipelines
        if request.method == "GET":
            if key not in store:
                raise ArmError(
                    404,
                    "ResourceNotFound",
                    f"The Resource '{PROVIDER}/registries/{registry}/{kind}/{name}' under "
                    f"resource group '{self.world.rg}' was not found.",
                )
            return JSONResponse(render(store[key]["resource"], api))
        if request.method == "DELETE":
            if key not in store:
                return Response(status_code=204)
            if kind == "pipelineRuns":
                self.engine.cancel(key)
            del store[key]
            self.world.mark_dirty()
            return Response(status_code=200)
        if request.method != "PUT":
            raise ArmError(405, "MethodNotAllowed", f"{request.method} is not supported on {kind}.")
        if not NAME_RE.match(name):
            raise ArmError(
                400,
                "InvalidResourceName",
                f"Resource name '{name}' is invalid: {kind} names must be 5-50 "
                "characters long and contain only letters and numbers (no '-' or '_').",
            )
        try:
            body = json.loads(await request.body() or b"{}")
        except ValueError as e:
            raise ArmError(400, "InvalidRequestContent", f"The request content is not valid JSON: {e}") from e
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise ArmError(400, "InvalidRequestContent", "The request content must have a 'properties' object.")
        if kind == "pipelineRuns":
            return self._put_run(request, registry, rid, body, api, principal)
        return self._put_pipeline(registry, kind, rid, body, api, principal)

    def _put_pipeline(
        self, registry: str, kind: str, rid: str, body: dict[str, Any], api: str, principal: str
    ) -> Response:
        props = body["properties"]
        side = "target" if kind == "exportPipelines" else "source"
        endpoint = props.get(side)
        if not isinstance(endpoint, dict) or not endpoint.get("uri"):
            raise ArmError(400, "InvalidParameter", f"properties.{side}.uri is required.", f"properties.{side}.uri")
        mode = endpoint.get("storageAccessMode") or "SasToken" if api >= STORAGE_MODE_SINCE else "SasToken"
        if mode not in ("SasToken", "ManagedIdentity"):
            raise ArmError(
                400,
                "InvalidParameter",
                f"storageAccessMode must be SasToken or ManagedIdentity, not '{mode}'.",
                f"properties.{side}.storageAccessMode",
            )
        if mode == "SasToken" and not endpoint.get("keyVaultUri"):
            raise ArmError(
                400,
                "InvalidParameter",
                f"properties.{side}.keyVaultUri is required with SasToken storage access.",
                f"properties.{side}.keyVaultUri",
            )
        options = props.get("options") or []
        bad = [o for o in options if o not in PIPELINE_OPTIONS]
        if bad:
            raise ArmError(
                400,
                "InvalidParameter",
                f"Unknown pipeline options {bad}; allowed: {list(PIPELINE_OPTIONS)}.",
                "properties.options",
            )
        resource_props: dict[str, Any] = {
            side: {
                "type": endpoint.get("type") or "AzureStorageBlobContainer",
                "uri": endpoint["uri"],
                "keyVaultUri": endpoint.get("keyVaultUri") if mode == "SasToken" else None,
                "storageAccessMode": mode,
            },
            "options": options,
            "provisioningState": "Succeeded",
        }
        if kind == "importPipelines":
            status = ((props.get("trigger") or {}).get("sourceTrigger") or {}).get("status") or "Enabled"
            if status not in ("Enabled", "Disabled"):
                raise ArmError(
                    400,
                    "InvalidParameter",
                    "trigger.sourceTrigger.status must be Enabled or Disabled.",
                    "properties.trigger.sourceTrigger.status",
                )
            resource_props["trigger"] = {"sourceTrigger": {"status": status}}
        existing = self.world.pipelines.get(rid.lower())
        resource = {
            "id": rid,
            "name": rid.rsplit("/", 1)[1],
            "type": f"{PROVIDER}/registries/{kind}",
            "identity": self._identity(body.get("identity")),
            "systemData": system_data(principal, existing["resource"]["systemData"]["createdAt"] if existing else None),
            "properties": resource_props,
        }
        if body.get("location"):
            resource["location"] = body["location"]
        self.world.pipelines[rid.lower()] = {"resource": resource}
        self.world.mark_dirty()
        return JSONResponse(render(resource, api), 200)

    def _identity(self, identity: dict[str, Any] | None) -> dict[str, Any]:
        identity = identity or {"type": "SystemAssigned"}
        kind = str(identity.get("type") or "SystemAssigned")
        out: dict[str, Any] = {"type": kind[0].lower() + kind[1:]}
        auth = self.world.authority
        if "SystemAssigned" in kind:
            out.update(principalId=auth.principal_id, tenantId=auth.tenant_id)
        if "UserAssigned" in kind:
            out["userAssignedIdentities"] = {
                uami: {"principalId": auth.principal_id, "clientId": auth.client_id}
                for uami in (identity.get("userAssignedIdentities") or {})
            }
        return out

    def _put_run(
        self, request: Request, registry: str, rid: str, body: dict[str, Any], api: str, principal: str
    ) -> Response:
        props = body["properties"]
        req = props.get("request")
        if not isinstance(req, dict):
            raise ArmError(400, "InvalidParameter", "properties.request is required.", "properties.request")
        problem = validate_run_request(self.world, registry, req)
        if problem:
            raise ArmError(400, "InvalidParameter", problem[1], problem[0])
        fingerprint = hashlib.sha256(
            json.dumps({"request": req, "forceUpdateTag": props.get("forceUpdateTag")}, sort_keys=True).encode()
        ).hexdigest()
        key = rid.lower()
        existing = self.world.runs.get(key)
        if existing and existing["fingerprint"] == fingerprint:
            return JSONResponse(render(existing["resource"], api), 200)  # identical re-PUT: ARM no-op
        if existing and existing["resource"]["properties"]["provisioningState"] not in (
            "Succeeded",
            "Failed",
            "Canceled",
        ):
            raise ArmError(
                409,
                "Conflict",
                f"Pipeline run '{rid.rsplit('/', 1)[1]}' is still running; wait for it to finish before updating it.",
            )
        created = existing["resource"]["systemData"]["createdAt"] if existing else None
        resource, op = self.engine.create(
            registry, rid, req, props.get("forceUpdateTag"), system_data(principal, created), fingerprint
        )
        base = f"{request.url.scheme}://{request.url.netloc}"
        headers = {
            "Azure-AsyncOperation": f"{base}{op['id']}?api-version={api}",
            "api-supported-versions": ", ".join(PIPELINE_API_VERSIONS[-3:]),
        }
        return JSONResponse(render(resource, api), 201, headers=headers)
