"""Who may read which vault's secrets: pipeline identities, vault access policies and Azure RBAC.

Facts from ../shared/reference/oci-sync-and-identity.md §5:

- every pipeline has its own identity: a system-assigned principal (here derived from the pipeline's resource
  id, so it is stable for that id) and/or user-assigned identities named by resource id (``principalId`` and
  ``clientId`` derived from that id);
- a vault uses access policies (``objectId`` + ``permissions.secrets``) or Azure RBAC
  (``enableRbacAuthorization``), never both: with RBAC the policies are ignored, without it the data-plane
  roles are;
- a role assignment (role definition, principal, scope) applies to its scope and everything below it, so one
  at the subscription, the resource group, the vault or the secret grants what its role's ``dataActions``
  carry (Owner and Contributor carry none).

``grant_pipelines`` (per vault, on in the default topology) grants a new pipeline's identity secret get on the
vault its keyVaultUri names, as Microsoft's ARM template does for SasToken pipelines (an access policy, or
"Key Vault Secrets User" at the vault on an RBAC vault). Turn it off, or revoke through the control API, to
see a pipeline whose identity lacks the grant.
"""

from __future__ import annotations

import fnmatch
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

SECRET_PERMISSIONS = ("all", "get", "list", "set", "delete", "backup", "restore", "recover", "purge")
# what each Key Vault secret operation needs: (access-policy permission, RBAC data action)
OPERATIONS = {
    "get": ("get", "Microsoft.KeyVault/vaults/secrets/getSecret/action"),
    "list": ("list", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"),
    "set": ("set", "Microsoft.KeyVault/vaults/secrets/setSecret/action"),
    "update": ("set", "Microsoft.KeyVault/vaults/secrets/update/action"),
    "delete": ("delete", "Microsoft.KeyVault/vaults/secrets/delete"),
}
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
KEY_VAULT_ADMIN = "00482a5a-887f-4fb3-b363-3b7fe8e74483"


def _role(name: str, description: str, actions: list[str], data_actions: list[str]) -> dict[str, Any]:
    return {
        "roleName": name,
        "type": "BuiltInRole",
        "description": description,
        "assignableScopes": ["/"],
        "permissions": [{"actions": actions, "notActions": [], "dataActions": data_actions, "notDataActions": []}],
    }


BUILTIN_ROLES: dict[str, dict[str, Any]] = {
    "8e3af657-a8ff-443c-a75c-2fe8c4bcb635": _role("Owner", "Grants full access to manage all resources.", ["*"], []),
    "b24988ac-6180-42a0-ab88-20f7382dd24c": _role(
        "Contributor", "Grants full access to manage all resources, but not to assign roles.", ["*"], []
    ),
    "acdd72a7-3385-48ef-bd42-f606fba81ae7": _role("Reader", "View all resources.", ["*/read"], []),
    KEY_VAULT_ADMIN: _role(
        "Key Vault Administrator",
        "Perform all data plane operations on a key vault and all objects in it.",
        ["Microsoft.Authorization/*/read", "Microsoft.KeyVault/vaults/*/read"],
        ["Microsoft.KeyVault/vaults/*"],
    ),
    SECRETS_OFFICER: _role(
        "Key Vault Secrets Officer",
        "Perform any action on the secrets of a key vault, except manage permissions.",
        ["Microsoft.Authorization/*/read", "Microsoft.KeyVault/vaults/*/read"],
        ["Microsoft.KeyVault/vaults/secrets/*"],
    ),
    SECRETS_USER: _role(
        "Key Vault Secrets User",
        "Read secret contents. Only works for key vaults that use the 'Azure role-based access control' "
        "permission model.",
        [],
        ["Microsoft.KeyVault/vaults/secrets/getSecret/action", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
    ),
    "21090545-7ca7-4776-b22c-e363652d74d2": _role(
        "Key Vault Reader",
        "Read metadata of key vaults and its certificates, keys, and secrets.",
        ["Microsoft.Authorization/*/read", "Microsoft.KeyVault/vaults/*/read"],
        ["Microsoft.KeyVault/vaults/*/read", "Microsoft.KeyVault/vaults/secrets/readMetadata/action"],
    ),
}


class AccessError(ValueError):
    """A grant or revoke names an unknown vault, role, scope or permission (the message says which)."""


def _guid(*parts: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, "acr-transfer-emulator/" + "/".join(p.lower() for p in parts)))


def system_identity(tenant_id: str, resource_id: str) -> tuple[str, str]:
    """The (principalId, appId) of the system-assigned identity of ``resource_id``: stable for that id."""
    return _guid(tenant_id, "system", resource_id, "principal"), _guid(tenant_id, "system", resource_id, "app")


def user_identity(tenant_id: str, identity_id: str) -> tuple[str, str]:
    """The (principalId, clientId) of the user-assigned identity ``identity_id`` (its resource id)."""
    return _guid(tenant_id, "uami", identity_id, "principal"), _guid(tenant_id, "uami", identity_id, "client")


def pipeline_principals(resource: dict[str, Any]) -> list[str]:
    """Every principal a pipeline's run may read its secret as: the system identity, then user-assigned ones."""
    identity = resource.get("identity") or {}
    found = [identity["principalId"]] if identity.get("principalId") else []
    for entry in (identity.get("userAssignedIdentities") or {}).values():
        if isinstance(entry, dict) and entry.get("principalId"):
            found.append(entry["principalId"])
    return found


@dataclass
class VaultAccess:
    """One vault's permission model: RBAC or access policies, and whether new pipelines are granted."""

    rbac: bool = False
    grant_pipelines: bool = True
    policies: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {"rbac": self.rbac, "grant_pipelines": self.grant_pipelines, "access_policies": self.policies}


def _matches(action: str, patterns: list[str]) -> bool:
    return any(fnmatch.fnmatchcase(action.lower(), p.lower()) for p in patterns)


def role_grants(role: dict[str, Any], data_action: str) -> bool:
    """Whether a role definition's permissions carry ``data_action`` (wildcards as ARM reads them)."""
    return any(
        _matches(data_action, p.get("dataActions") or []) and not _matches(data_action, p.get("notDataActions") or [])
        for p in role.get("permissions") or []
    )


class AccessModel:
    """Every vault's access model and the subscription's role assignments, persisted with the world.

    Args:
        topo: the topology (``vault_access``, ``role_assignments``, ``role_definitions``; see the module doc).
        worker: the stand-in's own managed identity (``"worker"`` in the topology and the control API).
        saved: what ``to_json`` wrote before a restart (wins over the topology).
        on_change: called after every change (the world marks itself dirty).
    """

    def __init__(
        self,
        topo: dict[str, Any],
        worker: tuple[str, str],
        saved: dict[str, Any] | None = None,
        on_change: Callable[[], None] | None = None,
    ) -> None:
        self.sub, self.rg, self.tenant = topo["subscription_id"], topo["resource_group"], topo["tenant_id"]
        self.location = topo.get("location", "westeurope")
        self.worker, self.worker_app = worker
        self._on_change = on_change or (lambda: None)
        self.roles: dict[str, dict[str, Any]] = dict(BUILTIN_ROLES)
        for guid, role in (topo.get("role_definitions") or {}).items():
            self.roles[guid.lower()] = {"type": "CustomRole", "assignableScopes": [self.subscription_scope], **role}
        self.vaults: dict[str, VaultAccess] = {}
        self.assignments: dict[str, dict[str, Any]] = {}
        if saved:
            for name, v in saved.get("vaults", {}).items():
                self.vaults[name] = VaultAccess(v["rbac"], v["grant_pipelines"], v["access_policies"])
            self.assignments = saved.get("assignments", {})
        for name in topo["vaults"]:
            if name not in self.vaults:
                self._seed_vault(name, (topo.get("vault_access") or {}).get(name))
        if not saved:
            for a in topo.get("role_assignments") or []:
                self.assign(a["scope"], a["role"], a["principal"], a.get("principal_type", "ServicePrincipal"))

    def _seed_vault(self, name: str, spec: dict[str, Any] | None) -> None:
        if spec is None:  # a topology that says nothing: the worker may do anything, pipelines are granted
            spec = {"access_policies": [{"object_id": "worker", "secrets": ["all"]}]}
        self.vaults[name] = VaultAccess(bool(spec.get("rbac", False)), bool(spec.get("grant_pipelines", True)))
        for p in spec.get("access_policies") or []:
            self.set_policy(name, p["object_id"], p.get("secrets", ["get"]))

    def to_json(self) -> dict[str, Any]:
        return {"vaults": {n: v.to_json() for n, v in self.vaults.items()}, "assignments": self.assignments}

    # --- names -----------------------------------------------------------------------------------------
    @property
    def subscription_scope(self) -> str:
        return f"/subscriptions/{self.sub}"

    @property
    def group_scope(self) -> str:
        return f"{self.subscription_scope}/resourceGroups/{self.rg}"

    def vault_id(self, vault: str) -> str:
        return f"{self.group_scope}/providers/Microsoft.KeyVault/vaults/{vault}"

    def vault(self, name: str) -> VaultAccess:
        for known, access in self.vaults.items():
            if known.lower() == name.lower():
                return access
        raise AccessError(f"no vault {name!r}; known: {sorted(self.vaults)}")

    def principal(self, who: str) -> str:
        """``"worker"`` → the stand-in's managed identity; anything else must be a GUID."""
        if who == "worker":
            return self.worker
        try:
            return str(uuid.UUID(who))
        except (ValueError, TypeError, AttributeError) as e:
            raise AccessError(f"principal must be an object id (GUID) or 'worker', not {who!r}") from e

    def scope(self, scope: str) -> str:
        """``subscription``, ``resource_group``, ``vault:<name>`` or a resource id under the subscription."""
        if scope == "subscription":
            return self.subscription_scope
        if scope == "resource_group":
            return self.group_scope
        if scope.startswith("vault:"):
            name = scope.split(":", 1)[1]
            self.vault(name)
            return self.vault_id(next(v for v in self.vaults if v.lower() == name.lower()))
        if not scope.lower().startswith(self.subscription_scope.lower()):
            raise AccessError(f"scope {scope!r} is not in subscription {self.sub}")
        return scope.rstrip("/")

    def role_id(self, role: str) -> str:
        """A role's GUID from its name ("Key Vault Secrets User"), its GUID or its roleDefinitionId."""
        guid = role.rsplit("/", 1)[-1].lower()
        if guid in self.roles:
            return guid
        for known, definition in self.roles.items():
            if definition["roleName"].lower() == role.lower():
                return known
        raise AccessError(f"no role {role!r}; known: {sorted(r['roleName'] for r in self.roles.values())}")

    def role_definition_id(self, guid: str) -> str:
        return f"{self.subscription_scope}/providers/Microsoft.Authorization/roleDefinitions/{guid}"

    # --- grants ----------------------------------------------------------------------------------------
    def set_policy(self, vault: str, object_id: str, secrets: list[str]) -> dict[str, Any]:
        """Add (merge) secret permissions to ``object_id``'s access policy on ``vault``; returns the policy."""
        bad = [p for p in secrets if p.lower() not in SECRET_PERMISSIONS]
        if bad:
            raise AccessError(f"unknown secret permissions {bad}; allowed: {list(SECRET_PERMISSIONS)}")
        access, oid = self.vault(vault), self.principal(object_id)
        policy = next((p for p in access.policies if p["objectId"] == oid), None)
        if policy is None:
            policy = {
                "tenantId": self.tenant,
                "objectId": oid,
                "permissions": {"keys": [], "secrets": [], "certificates": [], "storage": []},
            }
            access.policies.append(policy)
        have = policy["permissions"]["secrets"]
        have += [p.lower() for p in secrets if p.lower() not in have]
        self._on_change()
        return policy

    def remove_policy(self, vault: str, object_id: str) -> bool:
        """Drop ``object_id``'s access policy on ``vault``; False when it had none."""
        access, oid = self.vault(vault), self.principal(object_id)
        before = len(access.policies)
        access.policies = [p for p in access.policies if p["objectId"] != oid]
        self._on_change()
        return len(access.policies) != before

    def assign(
        self, scope: str, role: str, principal: str, principal_type: str = "ServicePrincipal", name: str | None = None
    ) -> tuple[dict[str, Any], bool]:
        """Assign ``role`` to ``principal`` at ``scope``; returns (assignment, created). An identical assignment
        (same role, principal and scope) is returned as it is, with created False."""
        where, guid, oid = self.scope(scope), self.role_id(role), self.principal(principal)
        for existing in self.assignments.values():
            if (existing["scope"].lower(), existing["role"], existing["principalId"]) == (where.lower(), guid, oid):
                return existing, False
        key = (name or str(uuid.uuid4())).lower()
        now = time.strftime("%Y-%m-%dT%H:%M:%S.0000000Z", time.gmtime())
        self.assignments[key] = {
            "name": key,
            "scope": where,
            "role": guid,
            "principalId": oid,
            "principalType": principal_type,
            "createdOn": now,
        }
        self._on_change()
        return self.assignments[key], True

    def unassign(self, name: str) -> dict[str, Any] | None:
        gone = self.assignments.pop(name.lower(), None)
        self._on_change()
        return gone

    def unassign_matching(self, principal: str, scope: str | None = None, role: str | None = None) -> int:
        """Remove every assignment of ``principal`` (at ``scope``, of ``role`` when given); returns how many."""
        oid = self.principal(principal)
        where = self.scope(scope).lower() if scope else None
        guid = self.role_id(role) if role else None
        doomed = [
            k
            for k, a in self.assignments.items()
            if a["principalId"] == oid and (where is None or a["scope"].lower() == where) and guid in (None, a["role"])
        ]
        for k in doomed:
            del self.assignments[k]
        self._on_change()
        return len(doomed)

    def grant_pipeline(self, vault: str, resource: dict[str, Any]) -> None:
        """What Microsoft's template does for a new SasToken pipeline, when the vault has ``grant_pipelines``."""
        access = self.vault(vault)
        if not access.grant_pipelines:
            return
        for oid in pipeline_principals(resource):
            if access.rbac:
                self.assign(f"vault:{vault}", SECRETS_USER, oid)
            else:
                self.set_policy(vault, oid, ["get"])

    # --- decisions -------------------------------------------------------------------------------------
    def applies(self, assignment_scope: str, target: str) -> bool:
        s, t = assignment_scope.rstrip("/").lower(), target.rstrip("/").lower()
        return s in ("", t) or t.startswith(s + "/")

    def allowed(self, vault: str, principal: str, operation: str, secret: str | None = None) -> bool:
        """Whether ``principal`` may do ``operation`` (see ``OPERATIONS``) on ``vault``'s secret ``secret``."""
        access = self.vault(vault)
        permission, data_action = OPERATIONS[operation]
        if not access.rbac:
            return any(
                p["objectId"] == principal
                and ({permission, "all"} & {s.lower() for s in p["permissions"].get("secrets") or []})
                for p in access.policies
            )
        target = self.vault_id(vault) + (f"/secrets/{secret}" if secret else "")
        return any(
            a["principalId"] == principal
            and self.applies(a["scope"], target)
            and role_grants(self.roles.get(a["role"], {}), data_action)
            for a in self.assignments.values()
        )

    def caller_denied(
        self, vault: str, claims: dict[str, Any], operation: str, secret: str | None = None
    ) -> tuple[str, str] | None:
        """For a Key Vault request with these token claims: None when allowed, else ``denial``'s answer."""
        oid, app = str(claims.get("oid", "")), str(claims.get("appid", ""))
        if self.allowed(vault, oid, operation, secret):
            return None
        return self.denial(vault, oid, app, operation, secret)

    def denial(
        self, vault: str, principal: str, app_id: str, operation: str, secret: str | None = None
    ) -> tuple[str, str]:
        """Key Vault's 403 for a caller without access: (innererror code, message), as §5.3 records them."""
        access = self.vault(vault)
        caller = f"appid={app_id};oid={principal};iss=https://sts.windows.net/{self.tenant}/"
        where = f"{vault};location={self.location}"
        permission, data_action = OPERATIONS[operation]
        if not access.rbac:
            return "AccessDenied", (
                f"The user, group or application '{caller}' does not have secrets {permission} permission on key "
                f"vault '{where}'. For help resolving this issue, please see https://go.microsoft.com/fwlink/?linkid=2125287"
            )
        resource = (self.vault_id(vault) + (f"/secrets/{secret}" if secret else "")).lower()
        return "ForbiddenByRbac", (
            "Caller is not authorized to perform action on resource.\r\nIf role assignments, deny assignments or "
            "role definitions were changed recently, please observe propagation time.\r\n"
            f"Caller: {caller}\r\nAction: '{data_action}'\r\nResource: '{resource}'\r\nAssignment: (not found)\r\n"
            f"DenyAssignmentId: null\r\nDecisionReason: 'DeniedWithNoValidRBAC' \r\nVault: {where}\r\n"
        )
