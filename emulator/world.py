"""The stand-in's shared state: topology, endpoints, stores, ARM resources, and their persistence.

Everything lives on one asyncio loop, so handlers that do not await between reading and writing state
are atomic; that is what serialises concurrent PUTs of one run name. State is written to
``state.json`` at most twice a second (and on shutdown), so a restart continues where it stopped.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from emulator.access import AccessModel
from emulator.auth import TokenAuthority
from emulator.control import Controller
from emulator.keyvault import VaultStore
from emulator.registry import RegistryStore

PROVIDER = "Microsoft.ContainerRegistry"


@dataclass
class RunSpeed:
    """How long the run engine takes: ``max(min_seconds, bytes / bytes_per_second)`` per run."""

    min_seconds: float = 1.0
    bytes_per_second: float = 50 * 1024 * 1024
    trigger_interval: float = 2.0


@dataclass
class Endpoints:
    """Base URLs of every endpoint (``https://127.0.0.1:PORT``)."""

    arm: str = ""
    identity: str = ""
    storage: str = ""  # the fault-injecting proxy: what pipelines and clients use
    azurite: str = ""  # Azurite itself, for callers that must bypass faults
    vaults: dict[str, str] = field(default_factory=dict)
    registries: dict[str, str] = field(default_factory=dict)


def utcnow_iso() -> str:
    """ISO-8601 with offset, as ARM writes times."""
    return datetime.now(UTC).isoformat()


class World:
    """All state of one running stand-in."""

    def __init__(self, topo: dict[str, Any], state_dir: Path, speed: RunSpeed) -> None:
        self.topo = topo
        self.state_dir = state_dir
        self.speed = speed
        self.sub: str = topo["subscription_id"]
        self.rg: str = topo["resource_group"]
        self.controller = Controller()
        self.authority = TokenAuthority(state_dir, topo["tenant_id"])
        self.endpoints = Endpoints()
        self.account_keys: dict[str, str] = {}
        saved = self._load()
        self.vaults = {
            name: VaultStore(name, saved.get("vaults", {}).get(name), on_change=self.mark_dirty)
            for name in topo["vaults"]
        }
        # who may read which vault's secrets (emulator.access), kept with the rest of the state
        self.access = AccessModel(
            topo, (self.authority.principal_id, self.authority.client_id), saved.get("access"), self.mark_dirty
        )
        self.registries = {name: RegistryStore(state_dir / "registries" / name, name) for name in topo["registries"]}
        # ARM resources, keyed by lower-cased resource id (ARM ids are case-insensitive)
        self.pipelines: dict[str, dict[str, Any]] = saved.get("pipelines", {})
        self.runs: dict[str, dict[str, Any]] = saved.get("runs", {})
        self.operations: dict[str, dict[str, Any]] = saved.get("operations", {})
        self.trigger_seen: dict[str, float] = saved.get("trigger_seen", {})
        self.outcomes: dict[str, dict[str, Any]] = {}  # run name → forced outcome (control API)
        self.seeded: bool = saved.get("seeded", False)
        self._dirty = False

    # --- ids -------------------------------------------------------------------------------------------
    def registry_id(self, registry: str) -> str:
        return f"/subscriptions/{self.sub}/resourceGroups/{self.rg}/providers/{PROVIDER}/registries/{registry}"

    def child_id(self, registry: str, kind: str, name: str) -> str:
        return f"{self.registry_id(registry)}/{kind}/{name}"

    def container_uri(self, account: str, container: str) -> str:
        return f"{self.endpoints.storage}/{account}/{container}"

    def secret_uri(self, vault: str, secret: str) -> str:
        return f"{self.endpoints.vaults[vault]}/secrets/{secret}"

    def vault_name_for_uri(self, uri: str) -> str | None:
        """The name of the vault a secret URI points at (matched on scheme://host:port)."""
        base = "/".join(uri.split("/")[:3]).lower()
        return next((name for name, url in self.endpoints.vaults.items() if url.lower() == base), None)

    def vault_for_uri(self, uri: str) -> VaultStore | None:
        """The vault a secret URI points at (matched on scheme://host:port)."""
        base = "/".join(uri.split("/")[:3]).lower()
        for name, url in self.endpoints.vaults.items():
            if url.lower() == base:
                return self.vaults[name]
        return None

    def grant_new_pipeline(self, resource: dict[str, Any]) -> None:
        """A new SasToken pipeline's identities get secret get on the vault its keyVaultUri names, as
        Microsoft's template grants it, when that vault has ``grant_pipelines`` (``emulator.access``)."""
        props = resource["properties"]
        end = props.get("target") or props.get("source") or {}
        vault = self.vault_name_for_uri(end.get("keyVaultUri") or "")
        if end.get("storageAccessMode", "SasToken") == "SasToken" and vault:
            self.access.grant_pipeline(vault, resource)

    def registry_name_of(self, resource_id: str) -> str | None:
        parts = resource_id.strip("/").split("/")
        lowered = [p.lower() for p in parts]
        if "registries" in lowered:
            i = lowered.index("registries")
            if i + 1 < len(parts):
                return next((r for r in self.topo["registries"] if r.lower() == parts[i + 1].lower()), None)
        return None

    # --- persistence -----------------------------------------------------------------------------------
    @property
    def state_file(self) -> Path:
        return self.state_dir / "state.json"

    def _load(self) -> dict[str, Any]:
        if self.state_file.exists():
            loaded: dict[str, Any] = json.loads(self.state_file.read_text())
            return loaded
        return {}

    def mark_dirty(self) -> None:
        self._dirty = True

    def save(self) -> None:
        """Write state.json atomically."""
        self._dirty = False
        doc = {
            "saved_at": time.time(),
            "seeded": self.seeded,
            "vaults": {name: v.to_json() for name, v in self.vaults.items()},
            "access": self.access.to_json(),
            "pipelines": self.pipelines,
            "runs": self.runs,
            "operations": self.operations,
            "trigger_seen": self.trigger_seen,
        }
        tmp = self.state_file.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc))
        os.replace(tmp, self.state_file)

    async def autosave(self, interval: float = 0.5) -> None:
        """Persist changes at most every ``interval`` seconds until cancelled."""
        while True:
            await asyncio.sleep(interval)
            if self._dirty:
                self.save()
