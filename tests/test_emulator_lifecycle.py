"""The stand-in as a program: clean SIGTERM, state that survives a restart, ARM paging and throttling,
Key Vault's challenge and errors."""

from __future__ import annotations

import os
import socket
import ssl
import time
from pathlib import Path

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


def test_sigterm_leaves_nothing_running_and_state_survives_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "lifecycle"
    first = start_standin(state_dir, "--run-seconds", "0.2", "--page-size", "2")
    saved_env = dict(os.environ)
    os.environ.update(first.env)
    try:
        assert len(processes_using(state_dir)) >= 2  # the stand-in and its Azurite
        login = first.topology["registries"]["sourceregistry"]["login_server"]
        pushed = push_file_artifact(login, "life/app", "v1", b"survives restarts")
        client = azure.arm()
        from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

        pid = first.topology["pipelines"]["exportpipeline"]["id"]
        names = [f"life{i}run" for i in range(5)]
        for n in names:
            req = m.PipelineRunRequest(
                pipeline_resource_id=pid,
                artifacts=[pushed.by_tag],
                target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=f"{n}.tar"),
            )
            client.pipeline_runs.begin_create(azure.RG, "sourceregistry", n, m.PipelineRun(request=req)).result()
        # paging: five runs in pages of two, followed through nextLink by the SDK
        path = f"{first.topology['registries']['sourceregistry']['id']}/pipelineRuns?api-version=2025-03-01-preview"
        page = get(first, path, azure.arm_token()).json()
        assert len(page["value"]) == 2 and "nextLink" in page
        assert sorted(r.name for r in client.pipeline_runs.list(azure.RG, "sourceregistry")) == sorted(names)
        time.sleep(0.8)  # let the autosave write state.json

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
            assert second.env["ACR_TRANSFER_ARM_ENDPOINT"] == first.env["ACR_TRANSFER_ARM_ENDPOINT"]
            os.environ.update(second.env)
            client = azure.arm()
            assert sorted(r.name for r in client.pipeline_runs.list(azure.RG, "sourceregistry")) == sorted(names)
            run = client.pipeline_runs.get(azure.RG, "sourceregistry", names[0])
            assert run.response.status == "Succeeded"
            assert manifest_digest(login, "life/app", "v1", second.ca)[0] == pushed.digest
            sas = azure.secrets(second, "sourcevault").get_secret("acrexportsas").value
            assert sas.startswith("?") and "sig=" in sas
            # the blob written before the restart is still there, readable with the same SAS
            from azure.storage.blob import BlobClient

            blob = BlobClient.from_blob_url(run.response.target.uri, credential=sas[1:])
            assert blob.get_blob_properties().metadata == {"category": "acr-transfer-blob"}
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
