"""Export → import through the unmodified Azure SDKs, configured only by the stand-in's env file.

Usage: ``source DIR/env && python sdk_roundtrip.py ARTIFACT [ARTIFACT …]``. Prints one JSON document
describing what it saw; exits non-zero on failure. Nothing here knows it talks to a stand-in except the
ARM endpoint and scope, which come from the environment as they would for a sovereign cloud.
"""

from __future__ import annotations

import json
import os
import sys
import time
import uuid
from pathlib import Path

from azure.identity import DefaultAzureCredential
from azure.keyvault.secrets import SecretClient
from azure.mgmt.containerregistry import ContainerRegistryManagementClient
from azure.mgmt.containerregistry.v2025_03_01_preview import models as m
from azure.storage.blob import BlobClient


def main(artifacts: list[str]) -> dict:
    topo = json.loads(Path(os.environ["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
    rg = os.environ["AZURE_RESOURCE_GROUP"]
    credential = DefaultAzureCredential()
    arm = ContainerRegistryManagementClient(
        credential,
        os.environ["AZURE_SUBSCRIPTION_ID"],
        base_url=os.environ["ACR_TRANSFER_ARM_ENDPOINT"],
        credential_scopes=[os.environ["ACR_TRANSFER_ARM_SCOPE"]],
        polling_interval=0.2,
    )
    out: dict = {}
    container = topo["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    export_secret = topo["vaults"]["sourcevault"]["secrets"]["acrexportsas"]
    # a new export pipeline, created the way a user would
    pipeline = arm.export_pipelines.begin_create(
        rg,
        "sourceregistry",
        "sdkexport",
        m.ExportPipeline(
            identity=m.IdentityProperties(type="SystemAssigned"),
            target=m.ExportPipelineTargetProperties(
                type="AzureStorageBlobContainer", uri=container, key_vault_uri=export_secret
            ),
            options=["OverwriteBlobs"],
        ),
    ).result()
    out["pipeline_state"] = pipeline.provisioning_state
    blob_name = f"sdk/{uuid.uuid4().hex}.tar"
    export = arm.pipeline_runs.begin_create(
        rg,
        "sourceregistry",
        "sdkexport" + uuid.uuid4().hex[:8],
        m.PipelineRun(
            request=m.PipelineRunRequest(
                pipeline_resource_id=pipeline.id,
                artifacts=artifacts,
                target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=blob_name),
            )
        ),
    ).result()
    export = arm.pipeline_runs.get(rg, "sourceregistry", export.name)  # never trust the LRO alone
    out["export"] = {
        "state": export.provisioning_state,
        "status": export.response.status,
        "digest": export.response.catalog_digest,
        "error": export.response.pipeline_run_error_message,
    }
    # the blob, read with the SAS the pipeline uses, fetched from Key Vault
    vault = SecretClient(topo["vaults"]["sourcevault"]["url"], credential, verify_challenge_resource=False)
    sas = vault.get_secret("acrexportsas").value.lstrip("?")
    props = BlobClient.from_blob_url(f"{container}/{blob_name}", credential=sas).get_blob_properties()
    out["blob"] = {
        "metadata": props.metadata,
        "md5": bool(props.content_settings.content_md5),
        "size": props.size,
    }
    directimport = topo["pipelines"]["directimport"]["id"]
    started = time.monotonic()
    imported = arm.pipeline_runs.begin_create(
        rg,
        "targetregistry",
        "sdkimport" + uuid.uuid4().hex[:8],
        m.PipelineRun(
            request=m.PipelineRunRequest(
                pipeline_resource_id=directimport,
                catalog_digest=export.response.catalog_digest,
                source=m.PipelineRunSourceProperties(type="AzureStorageBlob", name=blob_name),
            )
        ),
    ).result()
    imported = arm.pipeline_runs.get(rg, "targetregistry", imported.name)
    out["import"] = {
        "state": imported.provisioning_state,
        "status": imported.response.status,
        "imported": imported.response.imported_artifacts,
        "seconds": time.monotonic() - started,
        "error": imported.response.pipeline_run_error_message,
    }
    return out


if __name__ == "__main__":
    result = main(sys.argv[1:])
    print(json.dumps(result))
    sys.exit(0 if result["import"]["status"] == "Succeeded" else 1)
