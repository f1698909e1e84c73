"""The one owner of a process's Azure adapters: ARM, storage, Key Vault, the registry data plane and the watcher.

Built from one :class:`~acr_transfer.settings.Settings` and one credential (so tokens are shared), each
adapter is created on first use and kept for the life of the holder, like prefect-aws's clients cached by
their credentials. Nothing here is a module global: the task layer keeps the process's holder, and a test
builds its own.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from functools import cached_property
from typing import Any

from acr_transfer.azure.acr_data import RegistryDataPlane
from acr_transfer.azure.acr_listing import DigestLookup, RegistryListing
from acr_transfer.azure.keyvault import KeyVaultSecrets
from acr_transfer.azure.read_budget import Lease, ReadPacer
from acr_transfer.azure.registry import RegistryAddress, RegistryArm
from acr_transfer.azure.storage import BlobStorage
from acr_transfer.azure.vault_access import VaultAccessReader
from acr_transfer.polling import PollPlan
from acr_transfer.refs import ArtifactRef
from acr_transfer.settings import Settings
from acr_transfer.watcher import RunWatcher

SNAPSHOTS = 16  # transfers whose source listings a holder keeps (a sync runs up to max_concurrent at once)


class AzureClients:
    """Every adapter a worker process shares (see the module docstring).

    Args:
        settings: where Azure is and how to poll it.
        credential: the identity (default: the settings' ``DefaultAzureCredential``).
        read_lease: optional cross-worker share of ARM's read budget, called for a chunk of reads at a time
            (``ReadPacer``'s ``lease``); without it, workers share ARM's own remaining-reads counter.
    """

    def __init__(
        self,
        settings: Settings,
        credential: Any | None = None,
        *,
        read_lease: Lease | None = None,
    ) -> None:
        self.settings = settings
        self.credential = credential if credential is not None else settings.credential()
        self._read_lease = read_lease
        self._lock = threading.Lock()
        self._login_servers: dict[str, str] = {}
        self._snapshots: dict[str, DigestLookup] = {}  # snapshot_digests: key → lookup, oldest first

    @cached_property
    def read_pacer(self) -> ReadPacer:
        """ARM's read budget for this process: an azure-core policy on every ARM client of the holder."""
        return ReadPacer.from_settings(self.settings, self._read_lease)

    @cached_property
    def arm(self) -> RegistryArm:
        return RegistryArm(self.settings, self.credential, self.read_pacer)

    @cached_property
    def watcher(self) -> RunWatcher:
        """The one run watcher: every wait of this process shares its reads."""
        return RunWatcher(self.arm, PollPlan(self.settings.poll_min_seconds, self.settings.poll_max_seconds))

    @cached_property
    def data_plane(self) -> RegistryDataPlane:
        return RegistryDataPlane(self.settings, self.credential)

    @cached_property
    def listing(self) -> RegistryListing:
        """Repositories, tags, referrers and sizes, over the one data plane (its tokens shared)."""
        return RegistryListing(self.data_plane)

    @cached_property
    def vault(self) -> KeyVaultSecrets:
        return KeyVaultSecrets(self.settings, self.credential)

    @cached_property
    def vault_access(self) -> VaultAccessReader:
        """Vaults' access models and role assignments, read through the ARM adapter (its budget shared)."""
        return VaultAccessReader(self.arm)

    @cached_property
    def storage(self) -> BlobStorage:
        return BlobStorage(self.settings, self.credential)

    def digests(self, registry: RegistryAddress, refs: Iterable[ArtifactRef]) -> DigestLookup:
        """``(repo, reference) → digest | None`` on ``registry`` for these artifacts, in as few requests as it can
        (``DigestLookup``: tag listings for repositories asked for many tags)."""
        return DigestLookup(self.listing, self.login_server(registry), refs)

    def snapshot_digests(self, key: str, registry: RegistryAddress, refs: Iterable[ArtifactRef]) -> DigestLookup:
        """One :meth:`digests` lookup kept under ``key`` (a transfer id and side) for all of ``refs``: each
        repository of them is listed once, however many of the transfer's batches ask. ``refs`` is read only
        when the lookup is made (a generator costs the later callers nothing). The holder keeps the last
        ``SNAPSHOTS``."""
        with self._lock:
            lookup = self._snapshots.get(key)
        if lookup is None:
            lookup = self.digests(registry, refs)
            with self._lock:
                lookup = self._snapshots.setdefault(key, lookup)
                while len(self._snapshots) > SNAPSHOTS:
                    self._snapshots.pop(next(iter(self._snapshots)))
        return lookup

    def login_server(self, registry: RegistryAddress) -> str:
        """A registry's login server, read through ARM once per holder."""
        key = registry.id.lower()
        with self._lock:
            known = self._login_servers.get(key)
        if known is None:
            known = self.arm.login_server(registry)
            with self._lock:
                self._login_servers[key] = known
        return known

    def close(self) -> None:
        """Close what this holder opened (adapters created so far); idempotent."""
        vault = self.__dict__.pop("vault", None)
        if vault is not None:
            with contextlib.suppress(Exception):
                vault.close()
        plane = self.__dict__.pop("data_plane", None)
        if plane is not None:
            with contextlib.suppress(Exception):
                plane.http.close()
