"""The stand-in as a program: clean SIGTERM, state that survives a restart, ARM paging and throttling,
Key Vault's challenge and errors."""

from __future__ import annotations

import os
import socket
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError, ResourceNotFoundError

from tests.support import azure
from tests.support.images import manifest_digest, push_file_artifact
from tests.support.standin import StandIn, start_standin

pytestmark = pytest.mark.integration


def processes_using(state_dir: Path) -> list[int]:
    """Pids whose command line mentions the state directory (the stand-in and its Azurite)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                cmdline = Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(state_dir) in cmdline:
                found.append(int(entry))
    return found


def port_open(url: str) -> bool:
    host, port = url.split("://")[1].split(":")
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, int(port))) == 0


def get(standin: StandIn, path: str, token: str) -> httpx.Response:
    with httpx.Client(verify=ssl.create_default_context(cafile=standin.ca)) as c:
        return c.get(standin.env["ACR_TRANSFER_ARM_ENDPOINT"] + path, headers={"Authorization": f"Bearer {token}"})


def put_run(standin: StandIn, name: str, body: dict[str, Any]) -> httpx.Response:
    """A raw run PUT: no SDK poller left polling a stand-in that is about to stop."""
    registry_id = standin.topology["registries"]["sourceregistry"]["id"]
    path = f"{registry_id}/pipelineRuns/{name}?api-version=2025-03-01-preview"
    with standin.http() as c:
        return c.put(
            standin.env["ACR_TRANSFER_ARM_ENDPOINT"] + path,
            json=body,
            headers={"Authorization": f"Bearer {azure.arm_token()}"},
        )


def wait_for(check: Callable[[], bool], what: str, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


@pytest.mark.faults
def test_sigterm_leaves_nothing_running_and_state_survives_restart(tmp_path: Path) -> None:
    """Everything a test or flow may have created survives SIGTERM + start on the same state directory:
    endpoints, pipelines, runs (terminal state and outputs, failures included), blobs, every secret version
    and registry content; a run in flight at SIGTERM finishes after the restart; new runs work."""
    from azure.mgmt.containerregistry.v2025_03_01_preview import models as m
    from azure.storage.blob import BlobClient

    state_dir = tmp_path / "lifecycle"
    first = start_standin(state_dir, "--run-seconds", "0.2", "--page-size", "2")
    saved_env = dict(os.environ)
    os.environ.update(first.env)
    try:
        assert len(processes_using(state_dir)) >= 2  # the stand-in and its Azurite
        login = first.topology["registries"]["sourceregistry"]["login_server"]
        pushed = push_file_artifact(login, "life/app", "v1", b"survives restarts")
        client = azure.arm()
        source_container = first.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
        export_secret = first.topology["vaults"]["sourcevault"]["secrets"]["acrexportsas"]
        created_pipeline = client.export_pipelines.begin_create(
            azure.RG,
            "sourceregistry",
            "lifeexport",
            m.ExportPipeline(
                identity=m.IdentityProperties(type="SystemAssigned"),
                options=["OverwriteBlobs"],
                target=m.ExportPipelineTargetProperties(
                    type="AzureStorageBlobContainer", uri=source_container, key_vault_uri=export_secret
                ),
            ),
        ).result()

        pid = first.topology["pipelines"]["exportpipeline"]["id"]
        names = [f"life{i}run" for i in range(5)]
        for n in names:
            req = m.PipelineRunRequest(
                pipeline_resource_id=pid,
                artifacts=[pushed.by_tag],
                target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=f"{n}.tar"),
            )
            client.pipeline_runs.begin_create(azure.RG, "sourceregistry", n, m.PipelineRun(request=req)).result()
        # a failed run keeps its failure across the restart too
        first.set_outcome("lifefailedrun", fail="injected before the restart")
        with pytest.raises(HttpResponseError):
            req = m.PipelineRunRequest(
                pipeline_resource_id=pid,
                artifacts=[pushed.by_tag],
                target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name="lifefailedrun.tar"),
            )
            client.pipeline_runs.begin_create(
                azure.RG, "sourceregistry", "lifefailedrun", m.PipelineRun(request=req)
            ).result()
        names.append("lifefailedrun")
        # paging: six runs in pages of two, followed through nextLink by the SDK
        path = f"{first.topology['registries']['sourceregistry']['id']}/pipelineRuns?api-version=2025-03-01-preview"
        page = get(first, path, azure.arm_token()).json()
        assert len(page["value"]) == 2 and "nextLink" in page
        assert sorted(r.name for r in client.pipeline_runs.list(azure.RG, "sourceregistry")) == sorted(names)
        runs_before = {n: client.pipeline_runs.get(azure.RG, "sourceregistry", n).as_dict() for n in names}
        assert runs_before["lifefailedrun"]["response"]["pipeline_run_error_message"] == "injected before the restart"
        assert {r["provisioning_state"] for n, r in runs_before.items() if n != "lifefailedrun"} == {"Succeeded"}

        # secrets: a second version, and the first one disabled
        kv = azure.secrets(first, "sourcevault")
        old = kv.set_secret("lifesecret", "first value")
        new = kv.set_secret("lifesecret", "second value", content_type="text/plain")
        kv.update_secret_properties("lifesecret", old.properties.version, enabled=False)
        sas = kv.get_secret("acrexportsas").value
        blob_uri = runs_before[names[0]]["response"]["target"]["uri"]
        blob = BlobClient.from_blob_url(blob_uri, credential=sas[1:])
        blob_before, blob_props_before = blob.download_blob().readall(), blob.get_blob_properties()

        # a run in flight at SIGTERM: its blob is written, it is still pacing towards its end
        first.set_speed(60)
        inflight_body = {
            "properties": {
                "request": {
                    "pipelineResourceId": pid,
                    "artifacts": [pushed.by_tag],
                    "target": {"type": "AzureStorageBlob", "name": "lifeinflight.tar"},
                }
            }
        }
        assert put_run(first, "lifeinflight", inflight_body).status_code == 201
        inflight_blob = BlobClient.from_blob_url(f"{source_container}/lifeinflight.tar", credential=sas[1:])
        wait_for(inflight_blob.exists, "the in-flight run's blob")
        time.sleep(0.5)  # the engine records the finished work a moment after the upload returns
        inflight = client.pipeline_runs.get(azure.RG, "sourceregistry", "lifeinflight")
        assert inflight.provisioning_state not in ("Succeeded", "Failed", "Canceled")

        started = time.monotonic()
        assert first.stop(timeout=10) == 0
        assert time.monotonic() - started < 5
        deadline = time.monotonic() + 5
        while processes_using(state_dir) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert processes_using(state_dir) == []
        assert not port_open(first.env["ACR_TRANSFER_ARM_ENDPOINT"])
        assert not port_open(first.topology["azurite"])

        second = start_standin(state_dir, "--run-seconds", "0.2", "--page-size", "2")
        try:
            # the same endpoints, CA, identity header and keys: clients configured before keep working
            assert second.env == first.env
            for key in ("arm_endpoint", "control_url", "identity_endpoint", "storage_proxy", "azurite", "ca"):
                assert second.topology[key] == first.topology[key], key
            for key in ("registries", "storage_accounts", "vaults"):
                assert second.topology[key] == first.topology[key], key
            assert second.topology["pipelines"]["lifeexport"]["options"] == ["OverwriteBlobs"]
            os.environ.update(second.env)
            client = azure.arm()
            got = client.export_pipelines.get(azure.RG, "sourceregistry", "lifeexport")
            assert got.as_dict() == created_pipeline.as_dict()
            listed = sorted(r.name for r in client.pipeline_runs.list(azure.RG, "sourceregistry"))
            assert listed == sorted([*names, "lifeinflight"])
            for n in names:  # terminal state, outputs, times and errors, exactly as before
                assert client.pipeline_runs.get(azure.RG, "sourceregistry", n).as_dict() == runs_before[n], n
            assert manifest_digest(login, "life/app", "v1", second.ca)[0] == pushed.digest

            kv = azure.secrets(second, "sourcevault")
            assert kv.get_secret("acrexportsas").value == sas
            versions = {p.version: p for p in kv.list_properties_of_secret_versions("lifesecret")}
            assert set(versions) == {old.properties.version, new.properties.version}
            assert versions[old.properties.version].enabled is False
            assert kv.get_secret("lifesecret").value == "second value"
            assert kv.get_secret("lifesecret").properties.content_type == "text/plain"
            with pytest.raises(HttpResponseError):  # still disabled
                kv.get_secret("lifesecret", old.properties.version)

            # the blob written before the restart is still there, unchanged, readable with the same SAS
            blob = BlobClient.from_blob_url(blob_uri, credential=sas[1:])
            props = blob.get_blob_properties()
            assert props.metadata == {"category": "acr-transfer-blob"}
            assert props.etag == blob_props_before.etag
            assert props.content_settings.content_md5 == blob_props_before.content_settings.content_md5
            assert blob.download_blob().readall() == blob_before

            # the run in flight at SIGTERM starts over and finishes (the real service would finish it)
            def resumed_run() -> m.PipelineRun:
                return client.pipeline_runs.get(azure.RG, "sourceregistry", "lifeinflight")

            wait_for(lambda: resumed_run().provisioning_state in ("Succeeded", "Failed", "Canceled"), "the resumed run")
            resumed = resumed_run()
            assert (resumed.provisioning_state, resumed.response.pipeline_run_error_message) == ("Succeeded", None)
            assert resumed.response.catalog_digest == runs_before[names[0]]["response"]["catalog_digest"]

            # new runs work: an export on the pipeline created before the restart, and an import of the
            # blob exported before it into the target registry
            after = client.pipeline_runs.begin_create(
                azure.RG,
                "sourceregistry",
                "lifeafterrun",
                m.PipelineRun(
                    request=m.PipelineRunRequest(
                        pipeline_resource_id=created_pipeline.id,
                        artifacts=[pushed.by_tag],
                        target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=f"{names[0]}.tar"),
                    )
                ),
            ).result()
            after = client.pipeline_runs.get(azure.RG, "sourceregistry", "lifeafterrun")
            assert after.provisioning_state == "Succeeded" and after.response.status == "Succeeded"
            assert after.response.catalog_digest == runs_before[names[0]]["response"]["catalog_digest"]
            imported = client.pipeline_runs.begin_create(
                azure.RG,
                "targetregistry",
                "lifeimportrun",
                m.PipelineRun(
                    request=m.PipelineRunRequest(
                        pipeline_resource_id=second.topology["pipelines"]["directimport"]["id"],
                        source=m.PipelineRunSourceProperties(type="AzureStorageBlob", name=f"{names[1]}.tar"),
                    )
                ),
            ).result()
            imported = client.pipeline_runs.get(azure.RG, "targetregistry", "lifeimportrun")
            assert imported.provisioning_state == "Succeeded", imported.response.pipeline_run_error_message
            assert pushed.by_tag in imported.response.imported_artifacts
            target_login = second.topology["registries"]["targetregistry"]["login_server"]
            assert manifest_digest(target_login, "life/app", "v1", second.ca)[0] == pushed.digest
        finally:
            second.stop()
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        if first.process.poll() is None:
            first.process.kill()


def test_arm_read_budget_throttles_with_retry_after(tmp_path: Path) -> None:
    standin = start_standin(tmp_path / "throttle", "--arm-read-burst", "5", "--arm-read-rate", "1")
    saved_env = dict(os.environ)
    os.environ.update(standin.env)
    try:
        token = azure.arm_token()
        path = f"{standin.topology['pipelines']['exportpipeline']['id']}?api-version=2025-03-01-preview"
        answers = [get(standin, path, token) for _ in range(7)]
        statuses = [r.status_code for r in answers]
        assert statuses[:5] == [200] * 5 and 429 in statuses[5:]
        remaining = [int(r.headers["x-ms-ratelimit-remaining-subscription-reads"]) for r in answers[:5]]
        assert remaining == sorted(remaining, reverse=True) and remaining[-1] <= 1
        throttled = next(r for r in answers if r.status_code == 429)
        assert throttled.json()["error"]["code"] == "SubscriptionRequestsThrottled"
        assert int(throttled.headers["Retry-After"]) >= 1
        # the SDK waits Retry-After and then gets through
        assert azure.arm().export_pipelines.get(azure.RG, "sourceregistry", "exportpipeline").name == "exportpipeline"
    finally:
        os.environ.clear()
        os.environ.update(saved_env)
        standin.stop()


def test_key_vault_challenge_versions_and_errors(standin: StandIn) -> None:
    url = standin.topology["vaults"]["targetvault"]["url"]
    with httpx.Client(verify=ssl.create_default_context(cafile=standin.ca)) as c:
        first = c.get(f"{url}/secrets/acrimportsas?api-version=7.5")
    assert first.status_code == 401
    assert 'resource="https://vault.azure.net"' in first.headers["WWW-Authenticate"]
    kv = azure.secrets(standin, "targetvault")
    one = kv.set_secret("versioned", "first")
    two = kv.set_secret("versioned", "second", expires_on=None)
    assert kv.get_secret("versioned").value == "second"
    assert kv.get_secret("versioned", one.properties.version).value == "first"
    assert {p.version for p in kv.list_properties_of_secret_versions("versioned")} == {
        one.properties.version,
        two.properties.version,
    }
    imported = kv.get_secret("acrimportsas")
    assert imported.properties.enabled and imported.properties.expires_on is None
    assert imported.properties.created_on is not None
    with pytest.raises(ResourceNotFoundError) as missing:
        kv.get_secret("nosuchsecret")
    assert missing.value.error.code == "SecretNotFound"
    kv.set_secret("turnedoff", "x")
    kv.update_secret_properties("turnedoff", enabled=False)
    with pytest.raises(HttpResponseError) as disabled:
        kv.get_secret("turnedoff")
    assert disabled.value.status_code == 403 and disabled.value.error.code == "Forbidden"
