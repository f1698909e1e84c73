"""Where Azure is: ARM endpoint and scope, CA bundle, Key Vault challenge checking, polling and budgets.

Public Azure, sovereign clouds and the local stand-in differ only here, never in code branches. Values
come from the environment (``ACR_TRANSFER_*``, plus the SDKs' own ``AZURE_SUBSCRIPTION_ID`` and
``REQUESTS_CA_BUNDLE``) or from a settings file named by ``ACR_TRANSFER_SETTINGS_FILE`` (``KEY=value``
lines, as written by the stand-in's ``env``). ``ACR_TRANSFER_CLOUD`` picks a preset:

| cloud               | ARM endpoint                              | ARM scope                                          |
|---------------------|-------------------------------------------|----------------------------------------------------|
| AzureCloud          | https://management.azure.com              | https://management.azure.com/.default              |
| AzureUSGovernment   | https://management.usgovcloudapi.net      | https://management.usgovcloudapi.net/.default      |
| AzureChinaCloud     | https://management.chinacloudapi.cn       | https://management.chinacloudapi.cn/.default       |

An explicit ``ACR_TRANSFER_ARM_ENDPOINT`` / ``ACR_TRANSFER_ARM_SCOPE`` wins over the preset.

``ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS`` (comma-separated or a JSON list) names the subscriptions whose
registries routes may reach; unset, only the default subscription (``AZURE_SUBSCRIPTION_ID``). A route
whose registry lies elsewhere is refused before any ARM call: a resource id pasted from another
subscription must be a decision, not an accident.
"""

from __future__ import annotations

import json
import os
import re
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from acr_transfer.errors import ConfigError, shown
from acr_transfer.models import SUBSCRIPTION_ID
from acr_transfer.naming import MAX_ARTIFACTS

CLOUDS = {
    "AzureCloud": ("https://management.azure.com", "https://management.azure.com/.default"),
    "AzureUSGovernment": ("https://management.usgovcloudapi.net", "https://management.usgovcloudapi.net/.default"),
    "AzureChinaCloud": ("https://management.chinacloudapi.cn", "https://management.chinacloudapi.cn/.default"),
}
DEFAULT_API_VERSION = "2025-03-01-preview"


class Settings(BaseSettings):
    """Everything environment-specific, validated once."""

    # the settings file is named when settings are built (``load_settings``), not when this module is imported
    model_config = SettingsConfigDict(env_prefix="ACR_TRANSFER_", extra="ignore")

    cloud: str = Field("AzureCloud", description="Cloud preset: " + ", ".join(CLOUDS))
    arm_endpoint: str | None = Field(None, description="ARM base URL; default from the cloud preset")
    arm_scope: str | None = Field(None, description="Token scope for ARM; default from the cloud preset")
    subscription_id: str | None = Field(
        None,
        validation_alias=AliasChoices("ACR_TRANSFER_SUBSCRIPTION_ID", "AZURE_SUBSCRIPTION_ID"),
        description="Default subscription for registries named without one",
    )
    allowed_subscriptions: Annotated[list[str], NoDecode] = Field(
        default_factory=list,
        description="Subscriptions whose registries routes may reach (comma-separated or a JSON list); "
        "empty: only subscription_id",
    )
    max_artifacts: int = Field(MAX_ARTIFACTS, ge=1, description="Most artifacts one transfer may name (50 runs of 50)")
    routes_max_file_bytes: int = Field(
        1024 * 1024, ge=1024, description="Largest routes file read, in bytes; a larger one is refused unread"
    )
    routes_max_routes: int = Field(1000, ge=1, description="Most routes one routes file may hold")
    ca_bundle: str | None = Field(
        None,
        validation_alias=AliasChoices("ACR_TRANSFER_CA_BUNDLE", "REQUESTS_CA_BUNDLE"),
        description="CA bundle every HTTPS client verifies with (None: the system's)",
    )
    keyvault_verify_challenge_resource: bool = Field(
        True, description="Check that Key Vault's auth challenge names the vault's domain (off only for local vaults)"
    )
    api_version: str = Field(DEFAULT_API_VERSION, description="api-version for pipelines and pipeline runs")
    read_budget: str = Field("arm-reads", description="Prefect rate limit name prefix for ARM reads")
    read_budget_burst: int = Field(200, ge=1, description="Reads that may go at once (ARM allows 250)")
    read_budget_per_second: float = Field(20.0, gt=0, description="Sustained reads per second (ARM refills 25/s)")
    read_budget_reserve: float = Field(
        25, ge=1, description="ARM reads left to others: a read waits while ARM's remaining count is no higher"
    )
    read_budget_shared: Literal["arm", "prefect"] = Field(
        "arm",
        description="How workers share ARM's read budget: 'arm' follows ARM's own remaining-reads counter; "
        "'prefect' also takes coarse leases of a Prefect rate limit",
    )
    read_budget_lease_chunk: int = Field(25, ge=1, description="Reads per Prefect lease call ('prefect' sharing)")
    poll_min_seconds: float = Field(0.5, gt=0, description="Shortest wait between two reads of one run")
    poll_max_seconds: float = Field(15.0, gt=0, description="Longest wait between two reads of one run")
    storage_retry_total: int = Field(3, ge=0, description="Retries of the storage SDK for one call")
    arm_retry_total: int = Field(3, ge=0, description="Status retries of the ARM SDK for one call")
    task_retries: int = Field(4, ge=0, description="Prefect retries of a step after a transient failure")
    retry_base_seconds: float = Field(2.0, ge=0, description="First retry delay; doubles each retry (with jitter)")
    crash_after_seconds: float = Field(
        90,
        ge=45,
        description="A flow run whose heartbeats stop this long is set Crashed (acr-transfer setup's automation); "
        "keep it at least three times PREFECT_FLOWS_HEARTBEAT_FREQUENCY",
    )
    retry_max_seconds: float = Field(
        30.0, gt=0, description="Longest pause between two attempts of a step while a service is down"
    )
    verify_digests: bool = Field(True, description="Compare manifest digests in source and target after an import")
    trigger_wait_minutes: float = Field(15, gt=0, description="How long to wait for a source trigger's run to appear")

    @field_validator("cloud")
    @classmethod
    def _known_cloud(cls, value: str) -> str:
        if value not in CLOUDS:
            raise ValueError(f"unknown cloud '{value}'; use one of {', '.join(CLOUDS)} or set ARM endpoint and scope")
        return value

    @field_validator("allowed_subscriptions", mode="before")
    @classmethod
    def _subscription_list(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except ValueError:
                    raise ValueError(f"'{shown(text)}' is not a JSON list of subscription ids") from None
            return [part for part in re.split(r"[,\s]+", text) if part]
        return value

    @field_validator("allowed_subscriptions")
    @classmethod
    def _guids(cls, value: list[str]) -> list[str]:
        wrong = [sub for sub in value if not SUBSCRIPTION_ID.match(sub)]
        if wrong:
            raise ValueError(
                f"not subscription ids (GUIDs): {', '.join(repr(shown(sub, 40)) for sub in wrong[:5])}; list "
                "subscription ids separated by commas, or as a JSON list"
            )
        return value

    def permitted_subscriptions(self) -> frozenset[str]:
        """Subscriptions (lower-case) registries may be in: ``allowed_subscriptions``, else the default one."""
        chosen = self.allowed_subscriptions or ([self.subscription_id] if self.subscription_id else [])
        return frozenset(sub.lower() for sub in chosen)

    @property
    def arm_base_url(self) -> str:
        return (self.arm_endpoint or CLOUDS[self.cloud][0]).rstrip("/")

    @property
    def arm_token_scope(self) -> str:
        return self.arm_scope or CLOUDS[self.cloud][1]

    def connection_kwargs(self) -> dict[str, Any]:
        """Keyword arguments every Azure SDK client takes (CA bundle)."""
        return {"connection_verify": self.ca_bundle} if self.ca_bundle else {}

    def credential(self) -> Any:
        """``DefaultAzureCredential``: managed identity, workload identity, environment, CLI — unchanged."""
        from azure.identity import DefaultAzureCredential

        return DefaultAzureCredential()


SETTINGS_FILE_ENV = "ACR_TRANSFER_SETTINGS_FILE"


def load_settings(settings_file: str | None = None) -> Settings:
    """Settings from the environment and a ``KEY=value`` settings file (default: ``$ACR_TRANSFER_SETTINGS_FILE``),
    read now; the environment wins over the file.

    Raises:
        ConfigError: a setting is invalid; every one is named.
    """
    env_file = settings_file or os.environ.get(SETTINGS_FILE_ENV) or None
    try:
        return Settings(_env_file=env_file)
    except ValidationError as e:
        problems = "; ".join(
            f"{_variable(err['loc'])}: {str(err['msg']).removeprefix('Value error, ')}"
            for err in e.errors(include_url=False)
        )
        raise ConfigError(f"invalid settings: {problems}") from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (:func:`load_settings`, read once).

    Raises:
        ConfigError: a setting in the environment (or the settings file) is invalid; every one is named.
    """
    return load_settings()


def _variable(loc: tuple[Any, ...]) -> str:
    name = str(loc[0]) if loc else "?"
    return f"ACR_TRANSFER_{name.upper()}" if name in Settings.model_fields else name


@lru_cache(maxsize=1)
def get_credential() -> Any:
    """One credential per process, so tokens are cached across clients."""
    return get_settings().credential()
