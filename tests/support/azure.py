"""Azure SDK clients for tests, built the way the product builds them: from the stand-in's env only."""

from __future__ import annotations

import os
from datetime import UTC, datetime, timedelta

from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.storage.blob import generate_container_sas

from tests.support.standin import StandIn

RG = "transfer-rg"


def credential() -> DefaultAzureCredential:
    return DefaultAzureCredential()


def arm(api_version: str | None = None, **kwargs: object) -> ContainerRegistryManagementClient:
    extra = {"api_version": api_version} if api_version else {}
    return ContainerRegistryManagementClient(
        credential(),
        os.environ["AZURE_SUBSCRIPTION_ID"],
        base_url=os.environ["ACR_TRANSFER_ARM_ENDPOINT"],
        credential_scopes=[os.environ["ACR_TRANSFER_ARM_SCOPE"]],
        polling_interval=0.1,
        **extra,
        **kwargs,
    )


def arm_token() -> str:
    return credential().get_token(os.environ["ACR_TRANSFER_ARM_SCOPE"]).token


def secrets(standin: StandIn, vault: str) -> SecretClient:
    return SecretClient(standin.topology["vaults"][vault]["url"], credential(), verify_challenge_resource=False)


def container_sas(standin: StandIn, account: str, container: str, permission: str, *, hours: float = 24) -> str:
    """A SAS as ACR's docs store it ('?' + token, https only); negative hours give an expired one."""
    start = datetime.now(UTC) - timedelta(hours=2)
    token = generate_container_sas(
        account,
        container,
        account_key=standin.storage_key(account),
        permission=permission,
        expiry=datetime.now(UTC) + timedelta(hours=hours),
        start=start,
        protocol="https",
    )
    return "?" + token


def export_pipeline_with_secret(standin: StandIn, name: str, secret: str, sas: str, *, enabled: bool = True) -> None:
    """An export pipeline on sourceregistry → sourcestorage/transfer whose Key Vault secret ``secret`` (in
    sourcevault) holds ``sas``; ``enabled=False`` disables the secret."""
    from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

    kv = secrets(standin, "sourcevault")
    kv.set_secret(secret, sas)
    if not enabled:
        kv.update_secret_properties(secret, enabled=False)
    uri = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    vault = standin.topology["vaults"]["sourcevault"]["url"]
    arm().export_pipelines.begin_create(
        RG,
        "sourceregistry",
        name,
        m.ExportPipeline(
            identity=m.IdentityProperties(type="SystemAssigned"),
            target=m.ExportPipelineTargetProperties(
                type="AzureStorageBlobContainer", uri=uri, key_vault_uri=f"{vault}/secrets/{secret}"
            ),
        ),
    ).result()


def import_pipeline(standin: StandIn, name: str, options: list[str]) -> None:
    """An import pipeline on targetregistry reading sourcestorage/transfer (the export container itself, with
    targetvault's acrdirectsas), its source trigger off, with ``options`` (e.g. OverwriteTags)."""
    from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

    uri = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    vault = standin.topology["vaults"]["targetvault"]["url"]
    arm().import_pipelines.begin_create(
        RG,
        "targetregistry",
        name,
        m.ImportPipeline(
            identity=m.IdentityProperties(type="SystemAssigned"),
            options=options,
            source=m.ImportPipelineSourceProperties(
                type="AzureStorageBlobContainer", uri=uri, key_vault_uri=f"{vault}/secrets/acrdirectsas"
            ),
            trigger=m.PipelineTriggerProperties(source_trigger=m.PipelineSourceTriggerProperties(status="Disabled")),
        ),
    ).result()


def exported_artifacts(run_name: str) -> list[str]:
    """The artifacts an export run on sourceregistry was asked for, as ARM shows the run."""
    run = arm().pipeline_runs.get(RG, "sourceregistry", run_name)
    return list(run.request.artifacts or [])
