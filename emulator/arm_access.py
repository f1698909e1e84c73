"""The access model's HTTP faces: ARM for Microsoft.KeyVault vaults and Microsoft.Authorization, and the
control API's grant and revoke.

ARM (dispatched from ``emulator.arm.ArmApi``; shapes from ../shared/reference/oci-sync-and-identity.md §5.2,
§5.4, and the REST reference "Role Assignments - List For Scope"):

- ``GET /subscriptions/{s}[/resourceGroups/{rg}]/providers/Microsoft.KeyVault/vaults`` and ``…/vaults/{name}``;
  ``PUT …/vaults/{name}`` (``az keyvault set-policy`` reads the vault and puts it back: only
  ``accessPolicies`` and ``enableRbacAuthorization`` are taken) and ``PUT …/vaults/{name}/accessPolicies/
  {add|replace|remove}``. Only the topology's vaults exist: a PUT of another answers 400.
- ``GET {scope}/providers/Microsoft.Authorization/roleAssignments`` with ``$filter`` ``atScope()`` (at or
  above the scope), ``principalId eq '{id}'`` (at, above or below, that principal) or ``assignedTo('{id}')``
  (no groups here: the same as principalId), joined by ``and``; ``GET/PUT/DELETE …/roleAssignments/{name}``.
- ``GET {scope}/providers/Microsoft.Authorization/roleDefinitions[/{guid}]`` (``$filter=roleName eq '…'``).

Any api-version of the form ``YYYY-MM-DD[-preview]`` is accepted on these routes (the stand-in serves one
shape). Control API (``/_emulator``):

- ``GET /_emulator/vaults/{vault}/access``: the model (rbac, grant_pipelines, access_policies) and the role
  assignments that apply to the vault; ``POST`` ``{"rbac": bool, "grant_pipelines": bool}`` changes it.
- ``POST /_emulator/vaults/{vault}/access-policies`` ``{"object_id", "secrets": ["get", …]}`` grants (merged);
  ``DELETE /_emulator/vaults/{vault}/access-policies/{object_id}`` revokes.
- ``POST /_emulator/role-assignments`` ``{"scope", "role", "principal"}`` (scope ``subscription``,
  ``resource_group``, ``vault:<name>`` or an id; role by name or GUID; principal a GUID or ``worker``);
  ``DELETE /_emulator/role-assignments?principal=…[&scope=…&role=…]`` revokes.
"""

from __future__ import annotations

import json
import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.access import AccessError, AccessModel

VAULTS_RE = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)(?:/resourceGroups/(?P<rg>[^/]+))?/providers/Microsoft\.KeyVault/vaults"
    r"(?:/(?P<vault>[^/]+)(?:/accessPolicies/(?P<kind>[^/]+))?)?/?$",
    re.IGNORECASE,
)
AUTH_RE = re.compile(
    r"^(?P<scope>/subscriptions/[^/]+(?:/.+?)?)/providers/Microsoft\.Authorization/"
    r"(?P<what>roleAssignments|roleDefinitions)(?:/(?P<name>[^/]+))?/?$",
    re.IGNORECASE,
)
API_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview)?$")
FILTER_TERM = re.compile(
    r"^(atScope\(\)|principalId eq '([^']+)'|assignedTo\('([^']+)'\)|roleName eq '([^']+)')$", re.IGNORECASE
)


class AccessArmError(Exception):
    """An ARM error response from these routes."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def response(self) -> JSONResponse:
        return JSONResponse({"error": {"code": self.code, "message": self.message}}, self.status)


class AccessArm:
    """ARM's Microsoft.KeyVault/vaults and Microsoft.Authorization over the world's ``AccessModel``."""

    def __init__(self, world: Any) -> None:
        self.world = world

    @property
    def model(self) -> AccessModel:
        return self.world.access

    @staticmethod
    def serves(path: str) -> bool:
        return bool(VAULTS_RE.match(path) or AUTH_RE.match(path))

    async def route(self, request: Request, principal: str) -> Response:
        try:
            version = request.query_params.get("api-version")
            if not version or not API_RE.match(version):
                raise AccessArmError(
                    400,
                    "MissingApiVersionParameter" if not version else "InvalidApiVersionParameter",
                    "The api-version query parameter (?api-version=) is required for all requests."
                    if not version
                    else f"The api-version '{version}' is invalid.",
                )
            m = VAULTS_RE.match(request.url.path)
            if m:
                return await self._vaults(request, m.groupdict(), principal)
            m = AUTH_RE.match(request.url.path)
            assert m is not None
            self._in_subscription(m["scope"].split("/")[2])
            if m["what"].lower() == "roledefinitions":
                return self._role_definitions(request, m["name"])
            return await self._role_assignments(request, m["scope"], m["name"], principal)
        except AccessError as e:
            return AccessArmError(400, "InvalidParameter", str(e)).response()
        except AccessArmError as e:
            return e.response()

    def _in_subscription(self, sub: str) -> None:
        if sub.lower() != self.model.sub.lower():
            raise AccessArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")

    # --- vaults ----------------------------------------------------------------------------------------
    def vault_body(self, name: str) -> dict[str, Any]:
        access, model = self.model.vault(name), self.model
        return {
            "id": model.vault_id(name),
            "name": name,
            "type": "Microsoft.KeyVault/vaults",
            "location": model.location,
            "tags": {},
            "systemData": {
                "createdBy": "emulator",
                "createdByType": "Application",
                "createdAt": "2026-01-01T00:00:00Z",
                "lastModifiedBy": "emulator",
                "lastModifiedByType": "Application",
                "lastModifiedAt": "2026-01-01T00:00:00Z",
            },
            "properties": {
                "sku": {"family": "A", "name": "standard"},
                "tenantId": model.tenant,
                "accessPolicies": access.policies,
                "enabledForDeployment": False,
                "enabledForDiskEncryption": False,
                "enabledForTemplateDeployment": False,
                "enableSoftDelete": True,
                "softDeleteRetentionInDays": 90,
                "enableRbacAuthorization": access.rbac,
                "vaultUri": self.world.endpoints.vaults[name] + "/",
                "provisioningState": "Succeeded",
                "publicNetworkAccess": "Enabled",
                "networkAcls": {
                    "bypass": "AzureServices",
                    "defaultAction": "Allow",
                    "ipRules": [],
                    "virtualNetworkRules": [],
                },
                "privateEndpointConnections": [],
            },
        }

    async def _vaults(self, request: Request, g: dict[str, Any], principal: str) -> Response:
        self._in_subscription(g["sub"])
        if g["rg"] is not None and g["rg"].lower() != self.model.rg.lower():
            raise AccessArmError(404, "ResourceGroupNotFound", f"Resource group '{g['rg']}' could not be found.")
        if g["vault"] is None:
            if request.method != "GET":
                raise AccessArmError(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection.")
            return JSONResponse({"value": [self.vault_body(v) for v in self.model.vaults]})
        name = next((v for v in self.model.vaults if v.lower() == g["vault"].lower()), None)
        if name is None:
            if request.method == "PUT":
                raise AccessArmError(
                    400, "InvalidParameter", "This stand-in serves only the topology's vaults; add it there."
                )
            raise AccessArmError(
                404,
                "ResourceNotFound",
                f"The Resource 'Microsoft.KeyVault/vaults/{g['vault']}' under resource group '{self.model.rg}' "
                "was not found.",
            )
        if request.method == "GET" and g["kind"] is None:
            return JSONResponse(self.vault_body(name))
        if request.method not in ("PUT", "PATCH"):
            raise AccessArmError(405, "MethodNotAllowed", f"{request.method} is not supported on vaults here.")
        props = (await _json(request)).get("properties") or {}
        policies = props.get("accessPolicies")
        if g["kind"] is None:
            if "enableRbacAuthorization" in props:
                self.model.vault(name).rbac = bool(props["enableRbacAuthorization"])
            if isinstance(policies, list):
                self._replace_policies(name, policies)
            return JSONResponse(self.vault_body(name))
        kind = g["kind"].lower()
        if kind not in ("add", "replace", "remove") or not isinstance(policies, list):
            raise AccessArmError(
                400, "InvalidParameter", "PUT accessPolicies/{add|replace|remove} with accessPolicies."
            )
        if kind == "replace":
            self._replace_policies(name, policies)
        for p in policies if kind != "replace" else []:
            secrets = (p.get("permissions") or {}).get("secrets") or []
            if kind == "add":
                self.model.set_policy(name, p["objectId"], secrets)
            else:
                self._remove_permissions(name, p["objectId"], secrets)
        return JSONResponse(
            {
                "id": f"{self.model.vault_id(name)}/accessPolicies/{kind}",
                "type": "Microsoft.KeyVault/vaults/accessPolicies",
                "properties": {"accessPolicies": self.model.vault(name).policies},
            }
        )

    def _replace_policies(self, vault: str, policies: list[dict[str, Any]]) -> None:
        self.model.vault(vault).policies = []
        for p in policies:
            self.model.set_policy(vault, p["objectId"], (p.get("permissions") or {}).get("secrets") or [])

    def _remove_permissions(self, vault: str, object_id: str, secrets: list[str]) -> None:
        for p in self.model.vault(vault).policies:
            if p["objectId"] == object_id:
                drop = {s.lower() for s in secrets}
                p["permissions"]["secrets"] = [s for s in p["permissions"]["secrets"] if s not in drop]
        self.model._on_change()

    # --- roles -----------------------------------------------------------------------------------------
    def role_body(self, guid: str) -> dict[str, Any]:
        return {
            "id": self.model.role_definition_id(guid),
            "name": guid,
            "type": "Microsoft.Authorization/roleDefinitions",
            "properties": self.model.roles[guid],
        }

    def _role_definitions(self, request: Request, name: str | None) -> Response:
        if request.method != "GET":
            raise AccessArmError(405, "MethodNotAllowed", "Only GET is served for role definitions.")
        if name is not None:
            if name.lower() not in self.model.roles:
                raise AccessArmError(404, "RoleDefinitionDoesNotExist", "The specified role definition does not exist.")
            return JSONResponse(self.role_body(name.lower()))
        wanted = None
        for term in _terms(request.query_params.get("$filter")):
            if term[4]:
                wanted = term[4].lower()
        return JSONResponse(
            {
                "value": [
                    self.role_body(g) for g, r in self.model.roles.items() if wanted in (None, r["roleName"].lower())
                ]
            }
        )

    def assignment_body(self, a: dict[str, Any]) -> dict[str, Any]:
        return {
            "id": f"{a['scope']}/providers/Microsoft.Authorization/roleAssignments/{a['name']}",
            "type": "Microsoft.Authorization/roleAssignments",
            "name": a["name"],
            "properties": {
                "roleDefinitionId": self.model.role_definition_id(a["role"]),
                "principalId": a["principalId"],
                "principalType": a["principalType"],
                "scope": a["scope"],
                "condition": None,
                "conditionVersion": None,
                "createdOn": a["createdOn"],
                "updatedOn": a["createdOn"],
                "createdBy": None,
                "updatedBy": None,
                "delegatedManagedIdentityResourceId": None,
                "description": None,
            },
        }

    async def _role_assignments(self, request: Request, scope: str, name: str | None, principal: str) -> Response:
        model = self.model
        if name is None:
            if request.method != "GET":
                raise AccessArmError(405, "MethodNotAllowed", f"{request.method} is not allowed on a collection.")
            at_scope, who = False, None
            for term in _terms(request.query_params.get("$filter")):
                at_scope = at_scope or bool(term[1])
                who = (term[2] or term[3]).lower() or who
            found = []
            for a in model.assignments.values():
                above = model.applies(a["scope"], scope)
                below = model.applies(scope, a["scope"])
                if (above or (below and not at_scope)) and who in (None, a["principalId"]):
                    found.append(self.assignment_body(a))
            return JSONResponse({"value": found})
        key = name.lower()
        if request.method == "GET":
            if key not in model.assignments:
                raise AccessArmError(404, "RoleAssignmentNotFound", "The role assignment '" + name + "' is not found.")
            return JSONResponse(self.assignment_body(model.assignments[key]))
        if request.method == "DELETE":
            gone = model.unassign(key)
            return JSONResponse(self.assignment_body(gone)) if gone else Response(status_code=204)
        if request.method != "PUT":
            raise AccessArmError(405, "MethodNotAllowed", f"{request.method} is not supported on role assignments.")
        props = (await _json(request)).get("properties") or {}
        if not props.get("roleDefinitionId") or not props.get("principalId"):
            raise AccessArmError(400, "InvalidParameter", "properties.roleDefinitionId and principalId are required.")
        try:
            created, new = model.assign(
                scope, props["roleDefinitionId"], props["principalId"], props.get("principalType") or "User", key
            )
        except AccessError as e:
            raise AccessArmError(400, "InvalidRoleAssignment", str(e)) from e
        if not new:
            raise AccessArmError(409, "RoleAssignmentExists", "The role assignment already exists.")
        return JSONResponse(self.assignment_body(created), 201)


def _terms(text: str | None) -> list[tuple[str, ...]]:
    """The terms of a ``$filter`` joined by ``and``: (term, atScope, principalId, assignedTo, roleName)."""
    out: list[tuple[str, ...]] = []
    for raw in re.split(r"\s+and\s+", (text or "").strip(), flags=re.IGNORECASE) if text else []:
        m = FILTER_TERM.match(raw.strip())
        if not m:
            raise AccessArmError(400, "InvalidFilterInQueryString", f"The filter '{text}' is not supported.")
        out.append((m[0], m[1] if m[1] and m[1].lower() == "atscope()" else "", m[2] or "", m[3] or "", m[4] or ""))
    return out


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = json.loads(await request.body() or b"{}")
    except ValueError as e:
        raise AccessArmError(400, "InvalidRequestContent", f"The request content is not valid JSON: {e}") from e
    if not isinstance(body, dict):
        raise AccessArmError(400, "InvalidRequestContent", "The request content must be a JSON object.")
    return body


def access_control_routes(world: Any) -> list[Route]:
    """The control API's routes for grant and revoke (see the module doc)."""

    def model() -> AccessModel:
        return world.access

    async def vault_access(request: Request) -> Response:
        vault = request.path_params["vault"]
        try:
            access = model().vault(vault)
            if request.method == "POST":
                body = await request.json()
                if not isinstance(body, dict):
                    raise AccessError('expected {"rbac": true|false, "grant_pipelines": true|false}')
                for key in ("rbac", "grant_pipelines"):
                    if key in body:
                        setattr(access, key, bool(body[key]))
                model()._on_change()
        except (AccessError, ValueError) as e:
            return JSONResponse({"error": str(e)}, 400 if not str(e).startswith("no vault") else 404)
        vault_id = model().vault_id(next(v for v in model().vaults if v.lower() == vault.lower()))
        assignments = [
            AccessArm(world).assignment_body(a)
            for a in model().assignments.values()
            if model().applies(a["scope"], vault_id) or model().applies(vault_id, a["scope"])
        ]
        return JSONResponse({**access.to_json(), "vault_id": vault_id, "role_assignments": assignments})

    async def policies(request: Request) -> Response:
        vault = request.path_params["vault"]
        try:
            if request.method == "DELETE":
                gone = model().remove_policy(vault, request.path_params["object_id"])
                return Response(status_code=204 if gone else 404)
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("object_id"), str):
                raise AccessError('expected {"object_id": "<guid>|worker", "secrets": ["get", ...]}')
            policy = model().set_policy(vault, body["object_id"], list(body.get("secrets") or ["get"]))
        except (AccessError, ValueError) as e:
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(policy, 201)

    async def assignments(request: Request) -> Response:
        try:
            if request.method == "DELETE":
                q = request.query_params
                if not q.get("principal"):
                    raise AccessError("DELETE needs ?principal=<guid>|worker (and optionally scope, role)")
                removed = model().unassign_matching(q["principal"], q.get("scope"), q.get("role"))
                return JSONResponse({"removed": removed})
            body = await request.json()
            if not isinstance(body, dict) or not all(
                isinstance(body.get(k), str) for k in ("scope", "role", "principal")
            ):
                raise AccessError('expected {"scope": …, "role": …, "principal": …}')
            made, _ = model().assign(
                body["scope"], body["role"], body["principal"], body.get("principal_type", "ServicePrincipal")
            )
        except (AccessError, ValueError) as e:
            return JSONResponse({"error": str(e)}, 400)
        return JSONResponse(AccessArm(world).assignment_body(made), 201)

    return [
        Route("/_emulator/vaults/{vault}/access", vault_access, methods=["GET", "POST"]),
        Route("/_emulator/vaults/{vault}/access-policies", policies, methods=["POST"]),
        Route("/_emulator/vaults/{vault}/access-policies/{object_id}", policies, methods=["DELETE"]),
        Route("/_emulator/role-assignments", assignments, methods=["POST", "DELETE"]),
    ]
