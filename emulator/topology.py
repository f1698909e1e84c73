"""What the stand-in serves: subscription, resource group, registries, storage, vaults and pipelines.

The default topology is the one every test, demo and benchmark uses (see the README). ``--topology FILE``
takes a JSON document of the same shape as ``DEFAULT_TOPOLOGY``. Its ``"anonymous_pull"`` (optional) lists the
registries that hand out anonymous pull tokens (default none, as in ACR).

Vault access (``emulator.access``), all optional: ``"vault_access"`` gives a vault its model (``"rbac"``,
``"grant_pipelines"``, ``"access_policies": [{"object_id", "secrets"}]``; a vault not named there lets the
worker do anything and grants new pipelines), ``"role_assignments": [{"scope", "role", "principal"}]`` and
``"role_definitions": {"<guid>": {"roleName", "permissions": [{"dataActions": [...]}]}}`` (custom roles).
``"worker"`` names the stand-in's own managed identity. The default: sourcevault uses access policies,
targetvault Azure RBAC, and both grant new pipelines secret get.
"""

from __future__ import annotations

import copy
import json
import re
from pathlib import Path
from typing import Any

NAME_RE = re.compile(r"^[A-Za-z0-9]{5,50}$")

DEFAULT_TOPOLOGY: dict[str, Any] = {
    "subscription_id": "00000000-0000-4000-8000-000000000001",
    "tenant_id": "00000000-0000-4000-8000-0000000000aa",
    "resource_group": "transfer-rg",
    "location": "westeurope",
    "registries": ["sourceregistry", "targetregistry"],
    "anonymous_pull": [],
    "storage_accounts": {
        "sourcestorage": ["transfer"],
        "targetstorage": ["transfer", "triggered"],
    },
    "vaults": {
        "sourcevault": {
            "acrexportsas": {
                "kind": "container",
                "account": "sourcestorage",
                "container": "transfer",
                "permission": "rawl",
                "days": 30,
            },
        },
        "targetvault": {
            "acrimportsas": {
                "kind": "container",
                "account": "targetstorage",
                "container": "transfer",
                "permission": "rdl",
                "days": 30,
            },
            "acrdirectsas": {
                "kind": "container",
                "account": "sourcestorage",
                "container": "transfer",
                "permission": "rdl",
                "days": 30,
            },
            "acrtriggersas": {
                "kind": "container",
                "account": "targetstorage",
                "container": "triggered",
                "permission": "rdl",
                "days": 30,
            },
            "acrbridgesas": {
                "kind": "account",
                "account": "targetstorage",
                "resource_types": "co",
                "permission": "racwl",
                "days": 30,
            },
        },
    },
    "vault_access": {
        "sourcevault": {
            "rbac": False,
            "grant_pipelines": True,
            "access_policies": [{"object_id": "worker", "secrets": ["get", "list", "set", "delete"]}],
        },
        "targetvault": {"rbac": True, "grant_pipelines": True},
    },
    "role_assignments": [
        {"scope": "vault:targetvault", "role": "Key Vault Secrets Officer", "principal": "worker"},
    ],
    "pipelines": [
        {
            "kind": "export",
            "registry": "sourceregistry",
            "name": "exportpipeline",
            "account": "sourcestorage",
            "container": "transfer",
            "vault": "sourcevault",
            "secret": "acrexportsas",
            "options": [],
        },
        {
            "kind": "import",
            "registry": "targetregistry",
            "name": "importpipeline",
            "account": "targetstorage",
            "container": "transfer",
            "vault": "targetvault",
            "secret": "acrimportsas",
            "options": [],
            "source_trigger": "Disabled",
        },
        {
            "kind": "import",
            "registry": "targetregistry",
            "name": "directimport",
            "account": "sourcestorage",
            "container": "transfer",
            "vault": "targetvault",
            "secret": "acrdirectsas",
            "options": [],
            "source_trigger": "Disabled",
        },
        {
            "kind": "import",
            "registry": "targetregistry",
            "name": "triggeredimport",
            "account": "targetstorage",
            "container": "triggered",
            "vault": "targetvault",
            "secret": "acrtriggersas",
            "options": [],
            "source_trigger": "Enabled",
        },
    ],
}


class TopologyError(ValueError):
    """The topology document is inconsistent; the message names the offending entry."""


def load_topology(path: Path | None) -> dict[str, Any]:
    """Read a topology file (JSON) or return a copy of the default one, validated either way.

    Raises:
        TopologyError: a name breaks ACR's naming rules or a reference points nowhere.
    """
    topo = copy.deepcopy(DEFAULT_TOPOLOGY) if path is None else json.loads(Path(path).read_text())
    validate_topology(topo)
    return topo


def validate_topology(topo: dict[str, Any]) -> None:
    """Check names and cross-references so the stand-in never serves a half-broken world."""
    for key in ("subscription_id", "tenant_id", "resource_group", "registries", "storage_accounts", "vaults"):
        if key not in topo:
            raise TopologyError(f"topology lacks '{key}'")
    for reg in topo["registries"]:
        if not NAME_RE.match(reg):
            raise TopologyError(f"registry name '{reg}' must be 5-50 letters or digits")
    accounts = topo["storage_accounts"]
    for account in accounts:
        if not re.fullmatch(r"[a-z0-9]{3,24}", account):
            raise TopologyError(f"storage account name '{account}' must be 3-24 lowercase letters or digits")
    for vault, secrets in topo["vaults"].items():
        for secret, spec in secrets.items():
            if spec.get("account") not in accounts:
                raise TopologyError(
                    f"secret '{secret}' in vault '{vault}' names unknown account {spec.get('account')!r}"
                )
            if spec.get("kind") == "container" and spec.get("container") not in accounts[spec["account"]]:
                raise TopologyError(f"secret '{secret}' in vault '{vault}' names unknown container")
    anonymous = topo.get("anonymous_pull", [])
    if not isinstance(anonymous, list) or any(r not in topo["registries"] for r in anonymous):
        raise TopologyError(f"'anonymous_pull' must list registries of the topology, not {anonymous!r}")
    _validate_access(topo)
    for p in topo.get("pipelines", []):
        where = f"pipeline '{p.get('name')}'"
        if p.get("kind") not in ("export", "import"):
            raise TopologyError(f"{where}: kind must be 'export' or 'import'")
        if not NAME_RE.match(p.get("name", "")):
            raise TopologyError(f"{where}: name must be 5-50 letters or digits")
        if p.get("registry") not in topo["registries"]:
            raise TopologyError(f"{where}: unknown registry {p.get('registry')!r}")
        if p.get("container") not in accounts.get(p.get("account"), []):
            raise TopologyError(f"{where}: unknown container {p.get('account')}/{p.get('container')}")
        if p.get("secret") and p["secret"] not in topo["vaults"].get(p.get("vault"), {}):
            raise TopologyError(f"{where}: unknown secret {p.get('vault')}/{p.get('secret')}")


def _validate_access(topo: dict[str, Any]) -> None:
    """``vault_access`` names known vaults; role assignments have a scope, a role and a principal."""
    for vault, spec in (topo.get("vault_access") or {}).items():
        if vault not in topo["vaults"]:
            raise TopologyError(f"vault_access names unknown vault {vault!r}")
        for p in spec.get("access_policies") or []:
            if not isinstance(p, dict) or not isinstance(p.get("object_id"), str):
                raise TopologyError(f"vault_access.{vault}: each access policy needs an 'object_id'")
    for a in topo.get("role_assignments") or []:
        if not isinstance(a, dict) or not all(isinstance(a.get(k), str) for k in ("scope", "role", "principal")):
            raise TopologyError(f"role assignment {a!r} needs 'scope', 'role' and 'principal'")
