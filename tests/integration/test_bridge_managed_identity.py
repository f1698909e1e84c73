"""Bridging from a ManagedIdentity-mode export pipeline (Microsoft's recommended mode): no SAS in Key Vault for
the source, so the worker signs a read-only user-delegation SAS for the one blob with its own identity, and the
copy into the import container stays server-side (Azurite's Copy Blob From URL)."""

from __future__ import annotations

import ssl
import uuid

import httpx
import pytest
from azure.storage.blob import BlobClient

from flows.transfer import registry_transfer
from tests.support import azure
from tests.support.images import manifest_digest, push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import request, route

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
MI_EXPORT = "miexportpipeline"


@pytest.fixture(scope="module")
def managed_identity_export(standin: StandIn) -> str:
    """An export pipeline on sourceregistry writing to sourcestorage/transfer as its own identity (raw JSON at
    2025-06-01-preview: SDK 14's models have no storageAccessMode)."""
    registry_id = standin.topology["registries"]["sourceregistry"]["id"]
    container = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    body = {
        "location": "westus",
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "target": {"type": "AzureStorageBlobContainer", "uri": container, "storageAccessMode": "ManagedIdentity"},
            "options": ["OverwriteBlobs"],
        },
    }
    url = f"{standin.env['ACR_TRANSFER_ARM_ENDPOINT']}{registry_id}/exportPipelines/{MI_EXPORT}"
    with httpx.Client(verify=ssl.create_default_context(cafile=standin.ca)) as c:
        r = c.put(
            url,
            params={"api-version": "2025-06-01-preview"},
            json=body,
            headers={"Authorization": f"Bearer {azure.arm_token()}"},
        )
    assert r.status_code in (200, 201), r.text
    return MI_EXPORT


def test_a_managed_identity_export_is_bridged_server_side(standin: StandIn, managed_identity_export: str) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    dst = standin.topology["registries"]["targetregistry"]["login_server"]
    image = push_file_artifact(src, f"mibridge/app{uuid.uuid4().hex[:6]}", "v1", b"bridged without a source SAS")
    overrides = {
        "source": {
            "registry": {"resource_group": azure.RG, "name": "sourceregistry"},
            "export_pipeline": managed_identity_export,
        }
    }
    req = request(route(standin, "mibridge", **overrides), [image.by_tag])  # importpipeline: targetstorage
    result = registry_transfer(req)

    assert result.succeeded and [r.status for r in result.rows] == ["verified"]
    assert manifest_digest(dst, image.repo, "v1", standin.ca)[0] == image.digest
    # the copy in the import container came from the export container, server-side, with its MD5 kept
    [blob] = result.blobs
    target_container = standin.topology["storage_accounts"]["targetstorage"]["containers"]["transfer"]
    sas = azure.container_sas(standin, "targetstorage", "transfer", "rl")[1:]
    props = BlobClient.from_blob_url(f"{target_container}/{blob}", credential=sas).get_blob_properties()
    assert props.copy.status == "success" and "/sourcestorage/transfer/" in (props.copy.source or "")
    assert props.content_settings.content_md5
    # storage records the copy source with its SAS on the copy (x-ms-copy-source): the delegated one is scoped to
    # this one blob and read-only, so what a reader of the import container can see opens nothing else
    query = (props.copy.source or "").split("?", 1)[1]
    assert "sr=b" in query.split("&") and "sp=r" in query.split("&") and "skoid=" in query
