"""Who may read a Key Vault secret, as ARM describes it: the vault's access model and the role assignments of
the principals asked about. The only module that reads Microsoft.KeyVault and Microsoft.Authorization.

ACR's run reads a SasToken pipeline's secret as the *pipeline's* identity, not the worker's, so preflight asks
ARM (through the registry client's pipeline: the same credential, retry policy and read budget):

- the vault whose ``vaultUri`` is the secret's vault: ``GET /subscriptions/{s}/providers/Microsoft.KeyVault/vaults``
  (a secret URI names a host, not a resource id; listing finds the vault in any resource group);
- on an RBAC vault (``enableRbacAuthorization``), each principal's role assignments
  (``GET {vault id}/providers/Microsoft.Authorization/roleAssignments?$filter=principalId eq '{id}'``: at,
  above and below the vault) and each assigned role's definition (its ``dataActions``), read once per
  adapter.

The facts are returned as values; deciding whether they grant secret get is ``acr_transfer.preflight``'s.

Errors: ``AuthError`` (403: this identity may not read the vault or its role assignments), ``NotFoundError``
(no vault with that URI is visible in the subscription), ``TransientError`` (429, 5xx, connection),
others through :func:`acr_transfer.errors.from_status`.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from azure.core.rest import HttpRequest, HttpResponse

from acr_transfer.azure.keyvault import SecretRef
from acr_transfer.azure.registry import RegistryArm
from acr_transfer.azure.single_flight import SingleFlight
from acr_transfer.errors import AcrTransferError, NotFoundError, classify, from_status, retry_after_from_headers

VAULT_API = "2023-07-01"
AUTHORIZATION_API = "2022-04-01"


@dataclass(frozen=True)
class AccessPolicy:
    """One access-policy entry of a vault: who, and which secret permissions."""

    object_id: str
    secrets: tuple[str, ...]


@dataclass(frozen=True)
class RoleGrant:
    """One role assignment of a principal, with what its role definition carries."""

    scope: str
    role_id: str
    role_name: str
    data_actions: tuple[str, ...]
    not_data_actions: tuple[str, ...] = ()


@dataclass(frozen=True)
class VaultAccessFacts:
    """A vault's access model as ARM shows it, and (RBAC vaults) the asked principals' role assignments."""

    id: str
    name: str
    uri: str
    rbac: bool
    policies: tuple[AccessPolicy, ...] = ()
    grants: dict[str, tuple[RoleGrant, ...]] = field(default_factory=dict, compare=False)

    @property
    def resource_group(self) -> str:
        parts = self.id.split("/")
        lowered = [p.lower() for p in parts]
        return parts[lowered.index("resourcegroups") + 1] if "resourcegroups" in lowered else ""


class VaultAccessReader:
    """Reads vaults and role assignments through ``arm``'s client pipeline (see the module docstring).

    Args:
        arm: the registry adapter whose credential, pipeline and read hook are shared.
    """

    def __init__(self, arm: RegistryArm) -> None:
        self.arm = arm
        self._roles: dict[str, RoleGrant] = {}
        self._lock = threading.Lock()
        self.flights = SingleFlight()  # concurrent preflights list the vaults, or read one's assignments, once

    def vault_access(self, subscription: str, secret_uri: str, principals: Sequence[str]) -> VaultAccessFacts:
        """The access model of the vault ``secret_uri`` lives in, and (RBAC) the role grants of ``principals``.

        Raises:
            ConfigError: ``secret_uri`` is not a Key Vault secret URI.
            NotFoundError: no vault with that URI is visible to this identity in ``subscription``.
            AuthError: this identity may not list vaults or read role assignments.
            TransientError: ARM stayed throttled or unavailable.
        """
        ref = SecretRef.parse(secret_uri)
        wanted = ref.vault_url.rstrip("/").lower()
        for body in self._pages(
            subscription,
            f"/subscriptions/{subscription}/providers/Microsoft.KeyVault/vaults",
            {"api-version": VAULT_API},
            f"list the key vaults of subscription {subscription}",
        ):
            props = body.get("properties") or {}
            if str(props.get("vaultUri") or "").rstrip("/").lower() == wanted:
                return self._facts(subscription, body, principals)
        raise NotFoundError(
            f"no key vault with URI {ref.vault_url} is visible to this identity in subscription {subscription}"
        )

    def _facts(self, subscription: str, body: dict[str, Any], principals: Sequence[str]) -> VaultAccessFacts:
        props = body.get("properties") or {}
        rbac = bool(props.get("enableRbacAuthorization"))
        policies = tuple(
            AccessPolicy(
                str(p.get("objectId", "")).lower(),
                tuple(s.lower() for s in (p.get("permissions") or {}).get("secrets") or ()),
            )
            for p in props.get("accessPolicies") or ()
        )
        grants: dict[str, tuple[RoleGrant, ...]] = {}
        if rbac:
            for principal in principals:
                grants[principal.lower()] = tuple(self._grants(subscription, body["id"], principal))
        return VaultAccessFacts(
            id=str(body.get("id", "")),
            name=str(body.get("name", "")),
            uri=str(props.get("vaultUri") or ""),
            rbac=rbac,
            policies=policies,
            grants=grants,
        )

    def _grants(self, subscription: str, vault_id: str, principal: str) -> Iterator[RoleGrant]:
        path = f"{vault_id}/providers/Microsoft.Authorization/roleAssignments"
        params = {"api-version": AUTHORIZATION_API, "$filter": f"principalId eq '{principal}'"}
        for item in self._pages(subscription, path, params, f"read the role assignments of principal {principal}"):
            props = item.get("properties") or {}
            role = self._role(subscription, str(props.get("roleDefinitionId") or ""))
            yield RoleGrant(
                str(props.get("scope") or ""), role.role_id, role.role_name, role.data_actions, role.not_data_actions
            )

    def _role(self, subscription: str, definition_id: str) -> RoleGrant:
        key = definition_id.lower()
        with self._lock:
            known = self._roles.get(key)
        if known is not None:
            return known
        body = self._get(subscription, definition_id, {"api-version": AUTHORIZATION_API}, f"read role {definition_id}")
        props = body.get("properties") or {}
        data: list[str] = []
        not_data: list[str] = []
        for p in props.get("permissions") or ():
            data += p.get("dataActions") or []
            not_data += p.get("notDataActions") or []
        role = RoleGrant(
            "", definition_id.rsplit("/", 1)[-1], str(props.get("roleName") or ""), tuple(data), tuple(not_data)
        )
        with self._lock:
            self._roles[key] = role
        return role

    # --- plumbing --------------------------------------------------------------------------------------
    def _pages(self, subscription: str, path: str, params: dict[str, str], what: str) -> Iterator[dict[str, Any]]:
        page = self._get(subscription, path, params, what)
        while True:
            yield from page.get("value") or []
            next_link = page.get("nextLink")
            if not next_link:
                return
            page = self._send(subscription, HttpRequest("GET", next_link), what)

    def _get(self, subscription: str, path: str, params: dict[str, str], what: str) -> dict[str, Any]:
        url = f"{self.arm.settings.arm_base_url}{path}"
        return self._send(subscription, HttpRequest("GET", url, params=params), what)

    def _send(self, subscription: str, request: HttpRequest, what: str) -> dict[str, Any]:
        return self.flights.do(request.url, lambda: self._read(subscription, request, what))

    def _read(self, subscription: str, request: HttpRequest, what: str) -> dict[str, Any]:
        try:
            response: HttpResponse = self.arm._client(subscription)._send_request(request)
        except AcrTransferError:
            raise
        except Exception as e:
            raise classify(e, what) from e
        if response.status_code >= 400:
            raise _error(response, what)
        body = response.json()
        return body if isinstance(body, dict) else {}


def _error(response: HttpResponse, what: str) -> AcrTransferError:
    try:
        err = (response.json() or {}).get("error") or {}
    except (ValueError, json.JSONDecodeError, AttributeError):
        err = {}
    code, message = err.get("code"), err.get("message")
    detail = f"{what}: {response.status_code} {code or response.reason}: {message or response.text()[:300]}"
    return from_status(response.status_code, detail, retry_after=retry_after_from_headers(response.headers), code=code)
