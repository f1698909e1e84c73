"""ARM's own endpoints that the official clients call before any Microsoft.ContainerRegistry request.

``az cloud register --endpoint-resource-manager`` reads ``GET /metadata/endpoints`` without a token;
``az login --identity`` lists ``GET /subscriptions`` (and ``/tenants`` without ``--tenant``);
``az acr show -n NAME`` without ``-g`` finds the registry through the generic
``GET /subscriptions/{id}/resources?$filter=resourceType eq 'Microsoft.ContainerRegistry/registries'``.
Shapes follow ../shared/reference/oci-sync-and-identity.md §6.

The api-versions Microsoft published for Microsoft.ContainerRegistry are the folder names under
azure-rest-api-specs ``specification/containerregistry/resource-manager/Microsoft.ContainerRegistry/`` (``stable/``,
``preview/`` and the TypeSpec tree ``Registry/{stable,preview}/``), read there, not guessed: registries in all of
them, pipelines only in the previews whose examples carry them (2019-12-01-preview on; 2026-01-01-preview has
registry examples only, so it serves registries only here). Core ARM endpoints (subscriptions, tenants, resources,
metadata) accept any api-version of ARM's date form: their version lists are ARM's, not this stand-in's concern.
"""

from __future__ import annotations

import re
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

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
    "2025-12-01-preview",
    "2026-03-01-preview",
    "2026-09-01-preview",
)
REGISTRY_API_VERSIONS = tuple(
    sorted(
        (
            "2016-06-27-preview",
            "2017-03-01",
            "2017-06-01-preview",
            "2017-10-01",
            "2019-05-01",
            "2019-05-01-preview",
            "2021-09-01",
            "2022-12-01",
            "2023-07-01",
            "2025-04-01",
            "2025-11-01",
            "2026-01-01-preview",
            *PIPELINE_API_VERSIONS,
        )
    )
)
NEWEST_PREVIEW = PIPELINE_API_VERSIONS[-1]
API_VERSION_RE = re.compile(r"^\d{4}-\d{2}-\d{2}(-preview|-beta|-alpha|-privatepreview)?$")
PROVIDER_TYPES = {"registries": REGISTRY_API_VERSIONS, "pipelines": PIPELINE_API_VERSIONS}


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


def api_version_of(
    request: Request, allowed: tuple[str, ...], resource_type: str = "registries", location: str = "westeurope"
) -> str:
    """The request's api-version, or the 400 ARM sends for a missing, malformed or unregistered one.

    Raises:
        ArmError: ``MissingApiVersionParameter``; ``InvalidApiVersionParameter`` for a value not of ARM's
            date form; ``NoRegisteredProviderFound`` for a well-formed version the resource type lacks.
    """
    version = request.query_params.get("api-version")
    supported = ", ".join(allowed)
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if not API_VERSION_RE.match(version):
        raise ArmError(
            400,
            "InvalidApiVersionParameter",
            f"The api-version '{version}' is invalid. The supported versions are '{supported}'.",
        )
    if version not in allowed:
        raise ArmError(
            400,
            "NoRegisteredProviderFound",
            f"No registered resource provider found for location '{location}' and API version '{version}' for "
            f"type '{resource_type}'. The supported api-versions are '{supported}'. The supported locations are "
            f"'{location}'.",
        )
    return version


def core_api_version(request: Request) -> str:
    """A core ARM endpoint's api-version: required, and of ARM's date form."""
    version = request.query_params.get("api-version")
    if not version:
        raise ArmError(
            400,
            "MissingApiVersionParameter",
            "The api-version query parameter (?api-version=) is required for all requests.",
        )
    if not API_VERSION_RE.match(version):
        raise ArmError(400, "InvalidApiVersionParameter", f"The api-version '{version}' is invalid.")
    return version


def supported_versions_header(allowed: tuple[str, ...]) -> dict[str, str]:
    """``api-supported-versions``, as ACR's resource provider sends it on every response."""
    return {"api-supported-versions": ", ".join(allowed)}


def cloud_metadata(arm: str, identity: str) -> dict[str, Any]:
    """``GET /metadata/endpoints``: the one cloud object ``az cloud register`` maps (``_arm_to_cli_mapper``).

    ``loginEndpoint`` is the stand-in's own identity endpoint, so nothing a client derives from it leaves
    127.0.0.1; the audiences are ARM's two, in the order Azure lists them (az takes the first).
    """
    return {
        "name": "AzureTransferStandIn",
        "portal": arm,
        "resourceManager": arm + "/",
        "authentication": {
            "loginEndpoint": identity + "/",
            "audiences": ["https://management.core.windows.net/", "https://management.azure.com/"],
            "tenant": "common",
            "identityProvider": "AAD",
        },
        "media": arm + "/",
        "graphAudience": "https://graph.windows.net/",
        "graph": "https://graph.windows.net/",
        "microsoftGraphResourceId": "https://graph.microsoft.com/",
        "batch": "https://batch.core.windows.net/",
        "gallery": arm + "/",
        "sqlManagement": "https://management.core.windows.net:8443/",
        "vmImageAliasDoc": arm + "/",
        "suffixes": {
            "acrLoginServer": "azurecr.io",
            "keyVaultDns": "vault.azure.net",
            "storage": "core.windows.net",
            "sqlServerHostname": "database.windows.net",
            "azureDataLakeStoreFileSystem": "azuredatalakestore.net",
            "azureDataLakeAnalyticsCatalogAndJob": "azuredatalakeanalytics.net",
        },
    }


def subscription_body(topo: dict[str, Any]) -> dict[str, Any]:
    """One subscription as ``GET /subscriptions/{id}`` (api 2022-12-01) shows it."""
    sub = topo["subscription_id"]
    return {
        "id": f"/subscriptions/{sub}",
        "authorizationSource": "RoleBased",
        "managedByTenants": [],
        "tags": {},
        "subscriptionId": sub,
        "tenantId": topo["tenant_id"],
        "displayName": topo.get("subscription_name", "acr-transfer stand-in"),
        "state": "Enabled",
        "subscriptionPolicies": {
            "locationPlacementId": "Public_2014-09-01",
            "quotaId": "PayAsYouGo_2014-09-01",
            "spendingLimit": "Off",
        },
    }


def tenant_body(topo: dict[str, Any]) -> dict[str, Any]:
    """One tenant as ``GET /tenants`` (api 2022-12-01) shows it."""
    tenant = topo["tenant_id"]
    return {
        "id": f"/tenants/{tenant}",
        "tenantId": tenant,
        "countryCode": "NL",
        "displayName": "acr-transfer stand-in",
        "domains": ["acrtransfer.onmicrosoft.com"],
        "defaultDomain": "acrtransfer.onmicrosoft.com",
        "tenantCategory": "Home",
        "tenantType": "AAD",
    }


_CLAUSE_EQ = re.compile(r"^(resourceType|name|resourceGroup|location)\s+eq\s+'([^']*)'$", re.IGNORECASE)
_CLAUSE_SUBSTRING = re.compile(r"^substringof\(\s*'([^']*)'\s*,\s*name\s*\)$", re.IGNORECASE)


def resource_filter(text: str | None) -> list[tuple[str, str]]:
    """The clauses of a generic resources ``$filter`` this stand-in understands, joined by ``and``.

    Raises:
        ArmError: 400 ``InvalidFilterInQueryString`` for anything else (tags, ``or``, other functions).
    """
    if not text:
        return []
    clauses: list[tuple[str, str]] = []
    for part in re.split(r"\s+and\s+", text.strip(), flags=re.IGNORECASE):
        part = part.strip()
        if m := _CLAUSE_EQ.match(part):
            clauses.append((m.group(1).lower(), m.group(2)))
        elif m := _CLAUSE_SUBSTRING.match(part):
            clauses.append(("substringof", m.group(1)))
        else:
            raise ArmError(
                400,
                "InvalidFilterInQueryString",
                f"Invalid $filter '{text}' specified in the query string. This stand-in understands "
                "resourceType eq, name eq, resourceGroup eq, location eq and substringof('…', name), joined by 'and'.",
            )
    return clauses


def matches(resource: dict[str, Any], rg: str, clauses: list[tuple[str, str]]) -> bool:
    """Whether a generic resource passes every clause (ARM compares names and types case-insensitively)."""
    for key, value in clauses:
        v = value.lower()
        if key == "resourcetype" and resource["type"].lower() != v:
            return False
        if key == "name" and resource["name"].lower() != v:
            return False
        if key == "resourcegroup" and rg.lower() != v:
            return False
        if key == "location" and resource.get("location", "").lower() != v:
            return False
        if key == "substringof" and v not in resource["name"].lower():
            return False
    return True
