"""What the runbook's decisions need from Azure, as small Protocols: pipeline runs, blobs, secrets and who
may read them.

``steps`` and ``preflight`` are written against these, not against the adapters, so their decisions are
unit-tested over in-memory fakes (``tests/unit/fakes.py``) in milliseconds; the adapters in
``acr_transfer/azure/`` satisfy them structurally.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import timedelta
from typing import Any, Protocol

from acr_transfer.azure.keyvault import SecretFacts
from acr_transfer.azure.registry import PipelineFacts, RegistryAddress, RunState
from acr_transfer.azure.storage import BlobFacts
from acr_transfer.azure.vault_access import VaultAccessFacts
from acr_transfer.sas import SasToken


class PipelineRuns(Protocol):
    """ARM's pipelines and pipeline runs (``RegistryArm``)."""

    def get_pipeline(self, registry: RegistryAddress, kind: str, name: str) -> PipelineFacts: ...

    def get_run(self, registry: RegistryAddress, name: str) -> RunState | None: ...

    def list_runs(self, registry: RegistryAddress) -> Iterable[RunState]: ...

    def create_run(self, registry: RegistryAddress, name: str, request: dict[str, Any]) -> RunState: ...


class Blobs(Protocol):
    """Blob containers reached with a SAS or the worker's identity (``BlobStorage``)."""

    def check_container(self, container_uri: str, sas: SasToken | None) -> None: ...

    def blob_facts(self, container_uri: str, blob: str, sas: SasToken | None) -> BlobFacts | None: ...

    def copy_blob(
        self,
        source_container_uri: str,
        blob: str,
        source_sas: SasToken,
        target_container_uri: str,
        target_sas: SasToken | None,
    ) -> BlobFacts: ...

    def delegated_read_sas(self, container_uri: str, blob: str, valid_for: timedelta) -> SasToken: ...


class Secrets(Protocol):
    """Key Vault secrets holding SAS tokens (``KeyVaultSecrets``)."""

    def sas(self, secret_uri: str) -> tuple[SecretFacts, SasToken]: ...


class VaultAccess(Protocol):
    """A vault's access model and the role grants of some principals, as ARM shows them (``VaultAccessReader``)."""

    def vault_access(self, subscription: str, secret_uri: str, principals: Sequence[str]) -> VaultAccessFacts: ...
