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

from emulator.access import system_identity, user_identity
from emulator.arm_access import AccessArm
from emulator.arm_core import CORE_RE, CoreArm
from emulator.arm_meta import (
    PIPELINE_API_VERSIONS,
    REGISTRY_API_VERSIONS,
    ArmError,
    api_version_of,
    cloud_metadata,
    core_api_version,
    supported_versions_header,
)
from emulator.arm_shapes import full_registry, registry_view
from emulator.auth import ARM_AUDIENCE, TokenError
from emulator.runs import RunEngine, validate_run_request
from emulator.world import PROVIDER, World, utcnow_iso

STORAGE_MODE_SINCE = "2025-06-01-preview"
ARM_CLASSIC_AUDIENCE = "https://management.core.windows.net"
REGISTRY_CREATED = "2026-01-01T00:00:00+00:00"
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


def source_trigger_status(props: dict[str, Any]) -> Any:
    """An import pipeline's ``trigger.sourceTrigger.status``: Enabled when no trigger is given at all.

    Raises:
        ArmError: 400 when ``trigger`` or ``sourceTrigger`` is not an object, or ``sourceTrigger`` lacks the
            ``status`` the spec requires (``PipelineSourceTriggerProperties.required``).
    """
    trigger = props.get("trigger")
    if trigger is None:
        return "Enabled"
    if not isinstance(trigger, dict):
        raise ArmError(400, "InvalidParameter", "properties.trigger must be an object.", "properties.trigger")
    source = trigger.get("sourceTrigger")
    if source is None:
        return "Enabled"
    if not isinstance(source, dict) or "status" not in source:
        raise ArmError(
            400,
            "InvalidParameter",
            "The required property 'status' is missing from properties.trigger.sourceTrigger: "
            "give 'Enabled' or 'Disabled'.",
            "properties.trigger.sourceTrigger.status",
        )
    return source["status"]


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
        self.core = CoreArm(world, self._registry_body)  # subscriptions, tenants, generic resources
        self.access = AccessArm(world)  # Microsoft.KeyVault/vaults and Microsoft.Authorization (emulator/arm_access.py)
        self.read_buckets: dict[str, TokenBucket] = {}
        self.write_buckets: dict[str, TokenBucket] = {}
        self.read_limits, self.write_limits = reads, writes

    # --- entry ----------------------------------------------------------------------------------------
    async def handle(self, request: Request) -> Response:
        headers = {"x-ms-request-id": str(uuid.uuid4()), "x-ms-correlation-request-id": str(uuid.uuid4())}
        try:
            if request.method == "GET" and request.url.path.rstrip("/").lower() == "/metadata/endpoints":
                response = self._cloud_metadata(request)  # anonymous, as Azure serves it
            else:
                principal = self._authenticate(request)
                headers.update(self._throttle(request))
                response = await self._route(request, principal)
        except ArmError as e:
            response = e.response()
        response.headers.update(headers)
        return response

    def _authenticate(self, request: Request) -> str:
        header = request.headers.get("authorization")
        try:
            try:
                claims = self.world.authority.verify(header, ARM_AUDIENCE)
            except TokenError:
                # ARM's second audience: az takes the cloud metadata's audiences[0], Azure's classic one
                claims = self.world.authority.verify(header, ARM_CLASSIC_AUDIENCE)
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
        if self.access.serves(request.url.path):
            return await self.access.route(request, principal)
        if CORE_RE.match(request.url.path):
            return self.core.route(request)
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
        response = await self._provider(request, principal, g)
        kind = g["kind"] and KINDS[g["kind"].lower()]
        response.headers.update(supported_versions_header(PIPELINE_API_VERSIONS if kind else REGISTRY_API_VERSIONS))
        return response

    async def _provider(self, request: Request, principal: str, g: dict[str, Any]) -> Response:
        location = self.world.topo.get("location", "westeurope")
        if g["reg"] is None:
            return self._list_registries(request)
        registry = self._registry(g["reg"], g["rg"])
        if g["kind"] is None:
            api = api_version_of(request, REGISTRY_API_VERSIONS, "registries", location)
            if request.method != "GET":
                raise ArmError(405, "MethodNotAllowed", "Only GET is served for registries by this stand-in.")
            return JSONResponse(registry_view(self._registry_body(registry), api))
        kind = KINDS[g["kind"].lower()]
        api = api_version_of(request, PIPELINE_API_VERSIONS, f"registries/{kind}", location)
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
        """The registry at the newest api-version (``registry_view`` narrows it to the one asked)."""
        return full_registry(
            registry_id=self.world.registry_id(name),
            name=name,
            location=self.world.topo.get("location", "westeurope"),
            login_server=self.world.endpoints.registries[name].split("://", 1)[1],
            anonymous_pull=name in self.world.topo.get("anonymous_pull", []),
            created=REGISTRY_CREATED,
            system_data={
                "createdBy": "admin@acrtransfer.onmicrosoft.com",
                "createdByType": "User",
                "createdAt": REGISTRY_CREATED,
                "lastModifiedBy": "admin@acrtransfer.onmicrosoft.com",
                "lastModifiedByType": "User",
                "lastModifiedAt": REGISTRY_CREATED,
            },
        )

    def _list_registries(self, request: Request) -> Response:
        location = self.world.topo.get("location", "westeurope")
        api = api_version_of(request, REGISTRY_API_VERSIONS, "registries", location)
        return JSONResponse(
            {"value": [registry_view(self._registry_body(r), api) for r in self.world.topo["registries"]]}
        )

    def _cloud_metadata(self, request: Request) -> Response:
        core_api_version(request)
        return JSONResponse(cloud_metadata(self.world.endpoints.arm, self.world.endpoints.identity))

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
            status = source_trigger_status(props)
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
            "identity": self._identity(body.get("identity"), rid),
            "systemData": system_data(principal, existing["resource"]["systemData"]["createdAt"] if existing else None),
            "properties": resource_props,
        }
        if body.get("location"):  # the live service shows no location when the PUT sent none (recording)
            resource["location"] = body["location"]
        self.world.pipelines[rid.lower()] = {"resource": resource}
        if existing is None:
            self.world.grant_new_pipeline(resource)
        self.world.mark_dirty()
        return JSONResponse(render(resource, api), 200)

    def _identity(self, identity: dict[str, Any] | None, rid: str) -> dict[str, Any]:
        """Each pipeline's own identity: a system-assigned principal stable for its resource id, and/or
        user-assigned identities by resource id; ``type`` echoed in camel case as the live service does
        (acr-transfer.md §2.3)."""
        identity = identity or {"type": "SystemAssigned"}
        kind = str(identity.get("type") or "SystemAssigned")
        parts = [p.strip() for p in kind.split(",")]
        if not parts or any(p.lower() not in ("systemassigned", "userassigned", "none") for p in parts):
            raise ArmError(
                400,
                "InvalidIdentityType",
                f"identity.type '{kind}' is invalid; use SystemAssigned, UserAssigned, "
                "'SystemAssigned, UserAssigned' or None.",
                "identity.type",
            )
        out: dict[str, Any] = {"type": ", ".join(p[0].lower() + p[1:] for p in parts)}
        tenant = self.world.authority.tenant_id
        if "systemassigned" in kind.lower():
            out.update(principalId=system_identity(tenant, rid)[0], tenantId=tenant)
        if "userassigned" in kind.lower():
            named = identity.get("userAssignedIdentities") or {}
            bad = [u for u in named if "/providers/microsoft.managedidentity/userassignedidentities/" not in u.lower()]
            if not named or bad:
                raise ArmError(
                    400,
                    "InvalidIdentity",
                    "A UserAssigned identity needs userAssignedIdentities keyed by identity resource ids "
                    f"(.../providers/Microsoft.ManagedIdentity/userAssignedIdentities/<name>); got {list(named)}.",
                    "identity.userAssignedIdentities",
                )
            out["userAssignedIdentities"] = {
                uami: dict(zip(("principalId", "clientId"), user_identity(tenant, uami), strict=True)) for uami in named
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
            **supported_versions_header(PIPELINE_API_VERSIONS),
        }
        return JSONResponse(render(resource, api), 201, headers=headers)
