"""What the stand-in's runs do with storage and Key Vault: SAS enforcement, import options, source trigger."""

from __future__ import annotations

import contextlib
import time
import uuid

import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry.v2025_03_01_preview import models as m
from azure.storage.blob import BlobClient, BlobServiceClient

from tests.support import azure
from tests.support.images import manifest_digest, push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration
RG = azure.RG


def unique(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:10]


def new_pipeline(
    standin: StandIn,
    kind: str,
    name: str,
    account: str,
    container: str,
    vault: str,
    secret: str,
    options: list[str] | None = None,
) -> str:
    client = azure.arm()
    uri = standin.topology["storage_accounts"][account]["containers"][container]
    secret_uri = f"{standin.topology['vaults'][vault]['url']}/secrets/{secret}"
    if kind == "export":
        p = client.export_pipelines.begin_create(
            RG,
            "sourceregistry",
            name,
            m.ExportPipeline(
                identity=m.IdentityProperties(type="SystemAssigned"),
                options=options or [],
                target=m.ExportPipelineTargetProperties(
                    type="AzureStorageBlobContainer", uri=uri, key_vault_uri=secret_uri
                ),
            ),
        ).result()
    else:
        p = client.import_pipelines.begin_create(
            RG,
            "targetregistry",
            name,
            m.ImportPipeline(
                identity=m.IdentityProperties(type="SystemAssigned"),
                options=options or [],
                source=m.ImportPipelineSourceProperties(
                    type="AzureStorageBlobContainer", uri=uri, key_vault_uri=secret_uri
                ),
                trigger=m.PipelineTriggerProperties(
                    source_trigger=m.PipelineSourceTriggerProperties(status="Disabled")
                ),
            ),
        ).result()
    return str(p.id)


def run(registry: str, request: m.PipelineRunRequest) -> m.PipelineRun:
    """Create a run, wait for it, and return it as a GET shows it (never the LRO's word alone)."""
    client = azure.arm()
    name = unique("run")
    # a Failed run raises from the poller; the GET below is what counts
    with contextlib.suppress(HttpResponseError):
        client.pipeline_runs.begin_create(RG, registry, name, m.PipelineRun(request=request)).result()
    return client.pipeline_runs.get(RG, registry, name)


def export(pipeline_id: str, artifacts: list[str], blob: str) -> m.PipelineRun:
    return run(
        "sourceregistry",
        m.PipelineRunRequest(
            pipeline_resource_id=pipeline_id,
            artifacts=artifacts,
            target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=blob),
        ),
    )


def import_(pipeline_id: str, blob: str, digest: str | None = None) -> m.PipelineRun:
    return run(
        "targetregistry",
        m.PipelineRunRequest(
            pipeline_resource_id=pipeline_id,
            catalog_digest=digest,
            source=m.PipelineRunSourceProperties(type="AzureStorageBlob", name=blob),
        ),
    )


@pytest.fixture(scope="module")
def image(standin: StandIn) -> str:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    return push_file_artifact(login, "runs/app", "v1", b"runs payload").by_tag


def test_expired_sas_fails_the_export_naming_the_cause(standin: StandIn, image: str) -> None:
    azure.secrets(standin, "sourcevault").set_secret(
        "expiredsas", azure.container_sas(standin, "sourcestorage", "transfer", "rawl", hours=-1)
    )
    pid = new_pipeline(standin, "export", "expiredexport", "sourcestorage", "transfer", "sourcevault", "expiredsas")
    result = export(pid, [image], unique("expired") + ".tar")
    assert result.provisioning_state == "Failed" and result.response.status == "Failed"
    message = result.response.pipeline_run_error_message
    assert "403" in message and "AuthorizationFailure" in message and "expired" in message


def test_sas_without_write_fails_the_export_naming_the_cause(standin: StandIn, image: str) -> None:
    azure.secrets(standin, "sourcevault").set_secret(
        "readonlysas", azure.container_sas(standin, "sourcestorage", "transfer", "rl")
    )
    pid = new_pipeline(standin, "export", "readonlyexport", "sourcestorage", "transfer", "sourcevault", "readonlysas")
    result = export(pid, [image], unique("readonly") + ".tar")
    assert result.provisioning_state == "Failed"
    message = result.response.pipeline_run_error_message
    assert "AuthorizationPermissionMismatch" in message and "lacks a permission" in message


def test_import_sas_without_read_and_missing_secret_fail(standin: StandIn, image: str) -> None:
    blob = unique("noread") + ".tar"
    exported = export(standin.topology["pipelines"]["exportpipeline"]["id"], [image], blob)
    assert exported.response.status == "Succeeded"
    azure.secrets(standin, "targetvault").set_secret(
        "listonlysas", azure.container_sas(standin, "sourcestorage", "transfer", "l")
    )
    pid = new_pipeline(standin, "import", "listonlyimport", "sourcestorage", "transfer", "targetvault", "listonlysas")
    result = import_(pid, blob)
    assert result.provisioning_state == "Failed"
    assert "AuthorizationPermissionMismatch" in result.response.pipeline_run_error_message
    pid = new_pipeline(standin, "import", "nosecretimport", "sourcestorage", "transfer", "targetvault", "nosuchsecret")
    result = import_(pid, blob)
    assert "SecretNotFound" in result.response.pipeline_run_error_message


def test_disabled_secret_fails_the_run(standin: StandIn, image: str) -> None:
    kv = azure.secrets(standin, "sourcevault")
    kv.set_secret("disabledsas", azure.container_sas(standin, "sourcestorage", "transfer", "rawl"))
    kv.update_secret_properties("disabledsas", enabled=False)
    pid = new_pipeline(standin, "export", "disabledexport", "sourcestorage", "transfer", "sourcevault", "disabledsas")
    result = export(pid, [image], unique("disabled") + ".tar")
    assert "disabled" in result.response.pipeline_run_error_message


def test_import_tag_conflict_digest_check_and_overwrite(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    dst = standin.topology["registries"]["targetregistry"]["login_server"]
    repo = unique("conflict/app")
    pushed = push_file_artifact(src, repo, "v1", b"the source version")
    push_file_artifact(dst, repo, "v1", b"a different version already in the target")
    blob = unique("conflict") + ".tar"
    exported = export(standin.topology["pipelines"]["exportpipeline"]["id"], [pushed.by_tag], blob)
    direct = standin.topology["pipelines"]["directimport"]["id"]
    wrong = import_(direct, blob, digest="sha256:" + "0" * 64)
    assert wrong.provisioning_state == "Failed" and "digest mismatch" in wrong.response.pipeline_run_error_message
    refused = import_(direct, blob, exported.response.catalog_digest)
    assert refused.provisioning_state == "Failed"
    assert f"{repo}:v1" in refused.response.pipeline_run_error_message
    assert "OverwriteTags" in refused.response.pipeline_run_error_message
    overwriting = new_pipeline(
        standin,
        "import",
        "overwriteimport",
        "sourcestorage",
        "transfer",
        "targetvault",
        "acrdirectsas",
        options=["OverwriteTags", "DeleteSourceBlobOnSuccess"],
    )
    done = import_(overwriting, blob, exported.response.catalog_digest)
    assert done.response.status == "Succeeded" and done.response.imported_artifacts == [f"{repo}:v1"]
    assert manifest_digest(dst, repo, "v1", standin.ca)[0] == pushed.digest
    # DeleteSourceBlobOnSuccess removed the blob
    container = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    sas = azure.container_sas(standin, "sourcestorage", "transfer", "r").lstrip("?")
    with pytest.raises(ResourceNotFoundError):
        BlobClient.from_blob_url(f"{container}/{blob}", credential=sas).get_blob_properties()


def test_source_trigger_imports_a_qualifying_blob_exactly_once(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    dst = standin.topology["registries"]["targetregistry"]["login_server"]
    pushed = push_file_artifact(src, unique("trigger/app"), "v1", b"triggered payload")
    blob = unique("trig") + ".tar"
    exported = export(standin.topology["pipelines"]["exportpipeline"]["id"], [pushed.by_tag], blob)
    assert exported.response.status == "Succeeded"
    target = BlobServiceClient(
        standin.topology["storage_accounts"]["targetstorage"]["blob_endpoint"],
        credential={"account_name": "targetstorage", "account_key": standin.storage_key("targetstorage")},
    )
    source_url = f"{exported.response.target.uri}?" + azure.container_sas(standin, "sourcestorage", "transfer", "r")[1:]
    copy = target.get_blob_client("triggered", blob).start_copy_from_url(source_url, requires_sync=True)
    assert copy["copy_status"] == "success"
    plain = unique("plain") + ".tar"
    target.get_blob_client("triggered", plain).upload_blob(b"not an export", overwrite=True)

    def trigger_runs() -> list[m.PipelineRun]:
        return [
            r
            for r in azure.arm().pipeline_runs.list(RG, "targetregistry")
            if r.request.source and r.request.source.name in (blob, plain)
        ]

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and not any(r.provisioning_state == "Succeeded" for r in trigger_runs()):
        time.sleep(0.3)
    time.sleep(2.0)  # several more scans: none may import the blob again
    runs = trigger_runs()
    assert len(runs) == 1, [r.name for r in runs]
    (only,) = runs
    assert only.request.source.name == blob
    assert "_" in only.name and only.response.trigger.source_trigger.timestamp is not None
    assert only.response.imported_artifacts == [pushed.by_tag]
    assert manifest_digest(dst, pushed.repo, "v1", standin.ca)[0] == pushed.digest
