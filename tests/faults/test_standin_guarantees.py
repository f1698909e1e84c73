"""Guarantees of the stand-in that the fault tests lean on: concurrent PUTs of one run name are serialised
(one run, executed once per accepted body, never a mix of two bodies). That its state survives a restart
is checked by ``tests/emulator/test_lifecycle.py::test_sigterm_leaves_nothing_running_and_state_survives_restart``
(also marked ``faults``), which stops and restarts its own stand-in."""

from __future__ import annotations

import hashlib
import io
import itertools
import json
import ssl
import tarfile
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from azure.mgmt.containerregistry.v2025_03_01_preview import models as m
from azure.storage.blob import BlobClient, ContainerClient

from tests.support import azure
from tests.support.images import Pushed, push_file_artifact
from tests.support.standin import StandIn

pytestmark = [pytest.mark.faults, pytest.mark.integration]
API = "api-version=2025-03-01-preview"
CONCURRENCY = 16
TERMINAL = ("Succeeded", "Failed", "Canceled")


def unique(prefix: str) -> str:
    return prefix + uuid.uuid4().hex[:10]


def run_url(standin: StandIn, name: str) -> str:
    registry_id = standin.topology["registries"]["sourceregistry"]["id"]
    return f"{standin.env['ACR_TRANSFER_ARM_ENDPOINT']}{registry_id}/pipelineRuns/{name}?{API}"


def export_body(pipeline_id: str, artifacts: list[str], blob: str, tag: str | None = None) -> dict[str, Any]:
    props: dict[str, Any] = {
        "request": {
            "pipelineResourceId": pipeline_id,
            "artifacts": artifacts,
            "target": {"type": "AzureStorageBlob", "name": blob},
        }
    }
    if tag is not None:
        props["forceUpdateTag"] = tag
    return {"properties": props}


def concurrent_puts(standin: StandIn, puts: list[tuple[str, dict[str, Any]]]) -> list[httpx.Response]:
    """PUT every (url, body) at once: one thread and one fresh TLS connection each, released together
    by a barrier once all are connected, so the requests reach the stand-in as close together as possible."""
    token = azure.arm_token()
    tls = ssl.create_default_context(cafile=standin.ca)
    barrier = threading.Barrier(len(puts))

    def put(url: str, body: dict[str, Any]) -> httpx.Response:
        with httpx.Client(verify=tls, timeout=30) as c:
            c.get(f"{standin.control}/health").raise_for_status()  # connect (TLS handshake) before the barrier
            barrier.wait(timeout=30)
            return c.put(url, json=body, headers={"Authorization": f"Bearer {token}"})

    with ThreadPoolExecutor(max_workers=len(puts)) as pool:
        return list(pool.map(lambda p: put(*p), puts))


def wait_terminal(standin: StandIn, name: str, timeout: float = 20) -> dict[str, Any]:
    token = azure.arm_token()
    deadline = time.monotonic() + timeout
    with standin.http() as c:
        while True:
            r = c.get(run_url(standin, name), headers={"Authorization": f"Bearer {token}"})
            r.raise_for_status()
            run: dict[str, Any] = r.json()
            if run["properties"]["provisioningState"] in TERMINAL:
                return run
            assert time.monotonic() < deadline, f"run {name} still {run['properties']['provisioningState']}"
            time.sleep(0.1)


def operation(standin: StandIn, response: httpx.Response) -> dict[str, Any]:
    """The async operation a 201 points at (Azure-AsyncOperation), as the SDK poller reads it."""
    with standin.http() as c:
        r = c.get(response.headers["Azure-AsyncOperation"], headers={"Authorization": f"Bearer {azure.arm_token()}"})
        r.raise_for_status()
        return dict(r.json())


def runs_named(standin: StandIn, name: str) -> list[dict[str, Any]]:
    """The control API's view of every run with this name (ARM names are case-insensitive)."""
    return [r for r in standin.runs() if r["name"].lower() == name.lower()]


def export_blobs(standin: StandIn, prefix: str) -> list[str]:
    sas = azure.secrets(standin, "sourcevault").get_secret("acrexportsas").value
    container = ContainerClient.from_container_url(
        standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"], credential=sas.lstrip("?")
    )
    return [b.name for b in container.list_blobs(name_starts_with=prefix)]


def read_blob(standin: StandIn, uri: str) -> bytes:
    sas = azure.secrets(standin, "sourcevault").get_secret("acrexportsas").value
    return bytes(BlobClient.from_blob_url(uri, credential=sas.lstrip("?")).download_blob().readall())


def layout_references(tar_bytes: bytes) -> list[tuple[str, str]]:
    """(io.acr-transfer.reference, digest) of every artifact listed in an export blob's index.json."""
    with tarfile.open(fileobj=io.BytesIO(tar_bytes)) as tar:
        member = tar.extractfile("index.json")
        assert member is not None
        index = json.loads(member.read())
    return [(d["annotations"]["io.acr-transfer.reference"], d["digest"]) for d in index["manifests"]]


def arm_puts(standin: StandIn, name: str) -> list[dict[str, Any]]:
    return [
        r
        for r in standin.requests("arm")
        if r["method"] == "PUT" and r["path"].lower().endswith(f"/pipelineruns/{name.lower()}")
    ]


@pytest.fixture(scope="module")
def images(standin: StandIn) -> list[Pushed]:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    tag = uuid.uuid4().hex[:8]
    return [push_file_artifact(login, f"guarantee/app{i}", tag, f"payload {i} {tag}".encode()) for i in range(4)]


def test_concurrent_identical_puts_create_and_execute_one_run(standin: StandIn, images: list[Pushed]) -> None:
    name, blob = unique("serial"), unique("serial") + ".tar"
    body = export_body(standin.topology["pipelines"]["exportpipeline"]["id"], [images[0].by_tag], blob)
    # ARM names are case-insensitive: half the callers spell the run name in upper case
    urls = [run_url(standin, name if i % 2 else name.upper()) for i in range(CONCURRENCY)]
    answers = concurrent_puts(standin, [(u, body) for u in urls])

    statuses = sorted(r.status_code for r in answers)
    assert statuses == [200] * (CONCURRENCY - 1) + [201], [r.text for r in answers if r.status_code >= 300]
    created = next(r for r in answers if r.status_code == 201)
    assert "Azure-AsyncOperation" in created.headers
    # every no-op answer shows the one run the 201 created (same start), never a second one
    starts = {r.json()["properties"]["response"]["startTime"] for r in answers}
    assert starts == {created.json()["properties"]["response"]["startTime"]}
    assert all("Azure-AsyncOperation" not in r.headers for r in answers if r.status_code == 200)

    run = wait_terminal(standin, name)
    props = run["properties"]
    assert props["provisioningState"] == "Succeeded" and props["response"]["status"] == "Succeeded"
    assert props["request"] == body["properties"]["request"]
    assert props["response"]["startTime"] == created.json()["properties"]["response"]["startTime"]
    assert operation(standin, created)["status"] == "Succeeded"
    # exactly one run of that name, in ARM's list and in the engine's own records
    listed = [r for r in azure.arm().pipeline_runs.list(azure.RG, "sourceregistry") if r.name.lower() == name.lower()]
    assert len(listed) == 1
    engine_runs = runs_named(standin, name)
    assert [(r["provisioningState"], r["status"]) for r in engine_runs] == [("Succeeded", "Succeeded")]
    # executed once: one blob (a second execution on this pipeline, which lacks OverwriteBlobs, would have
    # failed on the existing blob), and it is the one the run reports
    assert export_blobs(standin, blob) == [blob]
    data = read_blob(standin, props["response"]["target"]["uri"])
    assert "sha256:" + hashlib.sha256(data).hexdigest() == props["response"]["catalogDigest"]
    assert layout_references(data) == [(images[0].by_tag, images[0].digest)]
    assert sorted(r["status"] for r in arm_puts(standin, name)) == statuses


def test_concurrent_puts_with_different_bodies_never_mix_them(standin: StandIn, images: list[Pushed]) -> None:
    """Each caller sends its own forceUpdateTag and artifact. While a run executes a changed body is
    refused (409 Conflict); once it is terminal the next changed body runs again. Two waves, so the second
    always meets a finished run: every accepted (201) body is executed exactly once, one after the other,
    and the run ends as the last accepted body, with the blob that body's execution wrote."""
    overwriting = m.ExportPipeline(
        identity=m.IdentityProperties(type="SystemAssigned"),
        options=["OverwriteBlobs"],  # every re-run rewrites the same blob
        target=m.ExportPipelineTargetProperties(
            type="AzureStorageBlobContainer",
            uri=standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"],
            key_vault_uri=standin.topology["vaults"]["sourcevault"]["secrets"]["acrexportsas"],
        ),
    )
    arm = azure.arm()
    pipeline = arm.export_pipelines.begin_create(azure.RG, "sourceregistry", unique("overwrite"), overwriting).result()
    name, blob = unique("mixed"), unique("mixed") + ".tar"
    url = run_url(standin, name)
    bodies: dict[str, dict[str, Any]] = {}
    accepted: list[httpx.Response] = []
    for wave in range(2):
        puts = []
        for i in range(CONCURRENCY):
            tag = f"wave{wave}caller{i}"
            bodies[tag] = export_body(str(pipeline.id), [images[i % len(images)].by_tag], blob, tag)
            puts.append((url, bodies[tag]))
        answers = concurrent_puts(standin, puts)
        assert {r.status_code for r in answers} <= {201, 409}, [r.text for r in answers]
        assert all(r.json()["error"]["code"] == "Conflict" for r in answers if r.status_code == 409)
        wave_accepted = [r for r in answers if r.status_code == 201]
        assert wave_accepted, f"wave {wave}: no body accepted"
        accepted += wave_accepted
        wait_terminal(standin, name)

    # every accepted body ran to completion, and no two executions overlapped
    ops = sorted((operation(standin, r) for r in accepted), key=lambda op: op["startTime"])
    assert len({op["name"] for op in ops}) == len(accepted)
    assert [op["status"] for op in ops] == ["Succeeded"] * len(ops)
    for earlier, later in itertools.pairwise(ops):
        assert earlier["endTime"] <= later["startTime"], (earlier, later)
    # the run is exactly the body of the last accepted PUT: its request and tag, nothing from another caller
    last = max(accepted, key=lambda r: r.json()["properties"]["response"]["startTime"])
    last_tag = last.json()["properties"]["forceUpdateTag"]
    run = wait_terminal(standin, name)
    props = run["properties"]
    assert props["forceUpdateTag"] == last_tag
    assert props["request"] == bodies[last_tag]["properties"]["request"]
    assert props["provisioningState"] == "Succeeded" and props["response"]["status"] == "Succeeded"
    assert len(runs_named(standin, name)) == 1
    # the blob is the last execution's: its digest and the artifact that body named
    assert export_blobs(standin, blob) == [blob]
    data = read_blob(standin, props["response"]["target"]["uri"])
    assert "sha256:" + hashlib.sha256(data).hexdigest() == props["response"]["catalogDigest"]
    artifact = next(i for i in images if i.by_tag == bodies[last_tag]["properties"]["request"]["artifacts"][0])
    assert layout_references(data) == [(artifact.by_tag, artifact.digest)]
    # the request log agrees with the answers: 32 PUTs, as many 201s as executions
    logged = [r["status"] for r in arm_puts(standin, name)]
    assert len(logged) == 2 * CONCURRENCY and logged.count(201) == len(accepted)
