"""ARM behaviour of the stand-in as the SDK and a raw HTTP client see it: validation, LRO, re-PUT,
paging, throttling headers, fault injection and run outcomes."""

from __future__ import annotations

import ssl
import time
import uuid

import httpx
import pytest
from azure.core.exceptions import ClientAuthenticationError, HttpResponseError, ResourceNotFoundError
from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

from tests.support import azure
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration
RG = azure.RG


def run_name(prefix: str = "run") -> str:
    return prefix + uuid.uuid4().hex[:12]


def export_request(
    standin: StandIn, artifacts: list[str], blob: str, pipeline: str = "exportpipeline"
) -> m.PipelineRun:
    pid = f"{standin.topology['registries']['sourceregistry']['id']}/exportPipelines/{pipeline}"
    return m.PipelineRun(
        request=m.PipelineRunRequest(
            pipeline_resource_id=pid,
            artifacts=artifacts,
            target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=blob),
        )
    )


@pytest.fixture(scope="module")
def artifact(standin: StandIn) -> str:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    return push_file_artifact(login, "armtests/app", "v1", b"arm tests payload").by_tag


def raw(standin: StandIn, method: str, path: str, token: str | None = "auto", **kw: object) -> httpx.Response:
    headers = {}
    if token == "auto":
        token = azure.arm_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    url = standin.env["ACR_TRANSFER_ARM_ENDPOINT"] + path
    with httpx.Client(verify=ssl.create_default_context(cafile=standin.ca)) as c:
        return c.request(method, url, headers=headers, **kw)  # type: ignore[arg-type]


def runs_path(standin: StandIn, registry: str = "sourceregistry", name: str = "") -> str:
    base = f"{standin.topology['registries'][registry]['id']}/pipelineRuns"
    return f"{base}/{name}" if name else base


@pytest.mark.parametrize(
    ("name", "mutate", "code", "target"),
    [
        ("bad-name", None, "InvalidResourceName", None),
        ("abc", None, "InvalidResourceName", None),
        (None, lambda r: r.request.artifacts.clear(), "InvalidParameter", "properties.request.artifacts"),
        (
            None,
            lambda r: r.request.artifacts.extend(f"a/b:{i}" for i in range(51)),
            "InvalidParameter",
            "properties.request.artifacts",
        ),
        (
            None,
            lambda r: setattr(r.request, "target", None),
            "InvalidParameter",
            "properties.request.target.name",
        ),
        (
            None,
            lambda r: setattr(r.request, "pipeline_resource_id", r.request.pipeline_resource_id + "x"),
            "InvalidParameter",
            "properties.request.pipelineResourceId",
        ),
        (
            None,
            lambda r: setattr(
                r.request,
                "pipeline_resource_id",
                r.request.pipeline_resource_id.replace("sourceregistry", "targetregistry"),
            ),
            "InvalidParameter",
            "properties.request.pipelineResourceId",
        ),
        (
            None,
            lambda r: r.request.artifacts.append("UPPER/case"),
            "InvalidParameter",
            "properties.request.artifacts",
        ),
    ],
)
def test_run_validation_answers_arm_error_codes(standin, artifact, name, mutate, code, target) -> None:
    req = export_request(standin, [artifact], "validation.tar")
    if mutate:
        mutate(req)
    standin.clear_requests()
    with pytest.raises(HttpResponseError) as exc:
        azure.arm().pipeline_runs.begin_create(RG, "sourceregistry", name or run_name(), req)
    assert exc.value.status_code == 400
    assert exc.value.error.code == code
    if target:
        assert exc.value.error.target == target
    # nothing was created
    assert next(r for r in standin.requests("arm") if r["method"] == "PUT")["status"] == 400


def test_import_run_needs_a_source_blob(standin: StandIn) -> None:
    pid = standin.topology["pipelines"]["importpipeline"]["id"]
    req = m.PipelineRun(request=m.PipelineRunRequest(pipeline_resource_id=pid))
    with pytest.raises(HttpResponseError) as exc:
        azure.arm().pipeline_runs.begin_create(RG, "targetregistry", run_name(), req)
    assert exc.value.error.code == "InvalidParameter"
    assert exc.value.error.target == "properties.request.source.name"


def test_unknown_api_version_and_missing_or_bad_tokens(standin: StandIn) -> None:
    path = runs_path(standin)
    r = raw(standin, "GET", f"{path}?api-version=2018-01-01")
    assert r.status_code == 400 and r.json()["error"]["code"] == "NoRegisteredProviderFound"
    r = raw(standin, "GET", f"{path}?api-version=latest")
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidApiVersionParameter"
    r = raw(standin, "GET", f"{path}?api-version=2025-03-01-preview", token=None)
    assert r.status_code == 401 and r.json()["error"]["code"] == "AuthenticationFailed"
    forged = azure.arm_token()[:-4] + "AAAA"
    r = raw(standin, "GET", f"{path}?api-version=2025-03-01-preview", token=forged)
    assert r.status_code == 401 and r.json()["error"]["code"] == "InvalidAuthenticationToken"
    # a Key Vault token is not an ARM token
    kv_token = azure.credential().get_token("https://vault.azure.net/.default").token
    r = raw(standin, "GET", f"{path}?api-version=2025-03-01-preview", token=kv_token)
    assert r.status_code == 401

    class BadCredential:
        def get_token(self, *scopes, **kw):  # type: ignore[no-untyped-def]
            from azure.core.credentials import AccessToken

            return AccessToken("not-a-jwt", int(time.time()) + 600)

    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    client = ContainerRegistryManagementClient(
        BadCredential(),
        standin.env["AZURE_SUBSCRIPTION_ID"],
        base_url=standin.env["ACR_TRANSFER_ARM_ENDPOINT"],
        credential_scopes=[standin.env["ACR_TRANSFER_ARM_SCOPE"]],
    )
    with pytest.raises(ClientAuthenticationError):
        client.pipeline_runs.get(RG, "sourceregistry", "doesnotmatter")


def test_missing_resources_raise_resource_not_found(standin: StandIn) -> None:
    client = azure.arm()
    with pytest.raises(ResourceNotFoundError):
        client.pipeline_runs.get(RG, "sourceregistry", "nosuchrun1")
    with pytest.raises(ResourceNotFoundError):
        client.export_pipelines.get(RG, "sourceregistry", "nosuchpipeline")
    with pytest.raises(ResourceNotFoundError):
        client.registries.get(RG, "nosuchregistry")
    assert (
        client.registries.get(RG, "sourceregistry").login_server
        == (standin.topology["registries"]["sourceregistry"]["login_server"])
    )


def test_run_lro_progress_and_identical_reput(standin: StandIn, artifact: str) -> None:
    client = azure.arm()
    name = run_name("lro")
    req = export_request(standin, [artifact], f"lro/{name}.tar")
    standin.clear_requests()
    poller = client.pipeline_runs.begin_create(RG, "sourceregistry", name, req)
    first = poller.polling_method()._initial_response.http_response  # type: ignore[attr-defined]
    assert first.status_code == 201
    assert "/operationStatuses/pipelineruns-" in first.headers["Azure-AsyncOperation"]
    assert first.json()["properties"]["provisioningState"] == "Creating"
    done = poller.result()
    run = client.pipeline_runs.get(RG, "sourceregistry", name)
    assert done.provisioning_state == run.provisioning_state == "Succeeded"
    assert run.response.status == "Succeeded" and run.response.progress.percentage == "100"
    assert run.response.target.uri.endswith(f"/lro/{name}.tar")
    puts = [r for r in standin.requests("arm") if r["method"] == "PUT"]
    assert len(puts) == 1
    # identical re-PUT: a no-op returning the stored run (200, nothing re-run)
    again = client.pipeline_runs.begin_create(RG, "sourceregistry", name, req).result()
    assert again.response.finish_time == run.response.finish_time
    # a changed forceUpdateTag runs it again: the blob exists now, and the pipeline lacks OverwriteBlobs
    req.force_update_tag = str(time.time())
    rerun = client.pipeline_runs.begin_create(RG, "sourceregistry", name, req)
    with pytest.raises(HttpResponseError) as exc:
        rerun.result()
    assert exc.value.error.code == "PipelineRunFailed"
    failed = client.pipeline_runs.get(RG, "sourceregistry", name)
    assert failed.provisioning_state == "Failed" and failed.response.status == "Failed"
    assert "already exists" in failed.response.pipeline_run_error_message
    assert "OverwriteBlobs" in failed.response.pipeline_run_error_message


def test_missing_artifact_fails_the_run(standin: StandIn) -> None:
    client = azure.arm()
    name = run_name("missing")
    with pytest.raises(HttpResponseError):
        client.pipeline_runs.begin_create(
            RG, "sourceregistry", name, export_request(standin, ["armtests/nothere:v9"], f"{name}.tar")
        ).result()
    run = client.pipeline_runs.get(RG, "sourceregistry", name)
    assert run.provisioning_state == "Failed"
    assert "armtests/nothere:v9" in run.response.pipeline_run_error_message


def test_delete_and_paging(standin: StandIn, artifact: str) -> None:
    client = azure.arm()
    names = [run_name("page") for _ in range(3)]
    for n in names:
        standin.set_outcome(n, fail="stopped by the test")
        client.pipeline_runs.begin_create(RG, "sourceregistry", n, export_request(standin, [artifact], f"{n}.tar"))
    listed = {r.name for r in client.pipeline_runs.list(RG, "sourceregistry")}
    assert set(names) <= listed
    r = raw(standin, "GET", runs_path(standin) + "?api-version=2025-03-01-preview")
    body = r.json()
    if len(listed) > 20:
        assert "nextLink" in body
    assert int(r.headers["x-ms-ratelimit-remaining-subscription-reads"]) >= 0
    for n in names:
        client.pipeline_runs.begin_delete(RG, "sourceregistry", n).result()
        with pytest.raises(ResourceNotFoundError):
            client.pipeline_runs.get(RG, "sourceregistry", n)
    r = raw(standin, "DELETE", runs_path(standin, name=names[0]) + "?api-version=2025-03-01-preview")
    assert r.status_code == 204


def test_forced_failure_and_hang_outcomes(standin: StandIn, artifact: str) -> None:
    client = azure.arm()
    failing, hanging = run_name("fail"), run_name("hang")
    standin.set_outcome(failing, fail="Transient storage error: 503 ServerBusy")
    standin.set_outcome(hanging, hang=True)
    with pytest.raises(HttpResponseError) as exc:
        client.pipeline_runs.begin_create(
            RG, "sourceregistry", failing, export_request(standin, [artifact], f"{failing}.tar")
        ).result()
    assert "ServerBusy" in str(exc.value)
    assert client.pipeline_runs.get(RG, "sourceregistry", failing).response.pipeline_run_error_message == (
        "Transient storage error: 503 ServerBusy"
    )
    client.pipeline_runs.begin_create(
        RG, "sourceregistry", hanging, export_request(standin, [artifact], f"{hanging}.tar")
    )
    time.sleep(1.0)
    run = client.pipeline_runs.get(RG, "sourceregistry", hanging)
    assert run.provisioning_state == "Creating" and run.response.status == "Running"
    client.pipeline_runs.begin_delete(RG, "sourceregistry", hanging).result()


def test_injected_429_retry_after_is_honoured_by_the_sdk(standin: StandIn, artifact: str) -> None:
    client = azure.arm()
    name = run_name("throttle")
    standin.set_outcome(name, fail="not needed")
    client.pipeline_runs.begin_create(RG, "sourceregistry", name, export_request(standin, [artifact], f"{name}.tar"))
    standin.clear_requests()
    standin.add_fault(service="arm", method="GET", path=f"pipelineRuns/{name}$", status=429, retry_after=1, count=1)
    client.pipeline_runs.get(RG, "sourceregistry", name)
    log = [r for r in standin.requests("arm") if r["path"].endswith(name)]
    assert [r["status"] for r in log] == [429, 200]
    assert log[1]["at"] - log[0]["at"] >= 1.0


def test_injected_reset_and_503_are_retried(standin: StandIn) -> None:
    client = azure.arm(retry_backoff_factor=0.05)
    standin.clear_requests()
    standin.add_fault(service="arm", method="GET", path="exportPipelines/exportpipeline", reset=True, count=1)
    standin.add_fault(service="arm", method="GET", path="exportPipelines/exportpipeline", status=503, count=1)
    pipeline = client.export_pipelines.get(RG, "sourceregistry", "exportpipeline")
    assert pipeline.provisioning_state == "Succeeded"
    statuses = [r["status"] for r in standin.requests("arm") if r["path"].endswith("exportpipeline")]
    assert statuses == [0, 503, 200]


def test_pipelines_crud_and_storage_access_mode(standin: StandIn) -> None:
    """ManagedIdentity mode exists only from 2025-06-01-preview, sent as raw JSON as the SDK 14 models lack it."""
    registry_id = standin.topology["registries"]["targetregistry"]["id"]
    path = f"{registry_id}/importPipelines/miimport"
    container = standin.topology["storage_accounts"]["targetstorage"]["containers"]["transfer"]
    body = {
        "identity": {"type": "SystemAssigned"},
        "properties": {
            "source": {
                "type": "AzureStorageBlobContainer",
                "uri": container,
                "storageAccessMode": "ManagedIdentity",
            },
            "trigger": {"sourceTrigger": {"status": "Disabled"}},
            "options": ["OverwriteTags"],
        },
    }
    r = raw(standin, "PUT", path + "?api-version=2025-06-01-preview", json=body)
    assert r.status_code == 200, r.text
    got = r.json()
    assert got["identity"]["type"] == "systemAssigned" and got["identity"]["principalId"]
    assert got["properties"]["source"]["storageAccessMode"] == "ManagedIdentity"
    assert got["systemData"]["createdAt"]
    older = raw(standin, "GET", path + "?api-version=2025-03-01-preview").json()
    assert "storageAccessMode" not in older["properties"]["source"]
    # SasToken mode without a secret is refused
    body["properties"]["source"] = {"uri": container, "storageAccessMode": "SasToken"}
    r = raw(standin, "PUT", f"{registry_id}/importPipelines/sasimport?api-version=2025-06-01-preview", json=body)
    assert r.status_code == 400 and r.json()["error"]["target"] == "properties.source.keyVaultUri"
    assert raw(standin, "DELETE", path + "?api-version=2025-06-01-preview").status_code == 200
    assert raw(standin, "DELETE", path + "?api-version=2025-06-01-preview").status_code == 204
