"""The three ways users start transfers, on the local stack `make up` builds: a real `prefect server start`,
`prefect deploy --all`, a real process worker, the stand-in with Azurite, and the event receiver.

Talks to Prefect only over its REST API, as the UI does (the in-process test harness of other modules is not
involved)."""

from __future__ import annotations

import json
import ssl
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from azure.storage.blob import BlobServiceClient, generate_container_sas

from deployments.stack import Stack
from tests.support import prefect_rest
from tests.support.prefect_rest import RetryingTransport

pytestmark = pytest.mark.integration


def api(stack: Stack) -> httpx.Client:
    return prefect_rest.api(stack.env["PREFECT_API_URL"])


def deployment(stack: Stack, flow: str, name: str) -> dict[str, Any]:
    return prefect_rest.deployment(stack.env["PREFECT_API_URL"], flow, name)


def runs_of(stack: Stack, deployment_id: str) -> list[dict[str, Any]]:
    return prefect_rest.runs_of(stack.env["PREFECT_API_URL"], deployment_id)


def wait_for(stack: Stack, run_id: str, timeout: float = 180) -> dict[str, Any]:
    return prefect_rest.wait_for(stack.env["PREFECT_API_URL"], run_id, timeout)


def manifest_digest(stack: Stack, registry: str, repo: str, ref: str) -> str | None:
    topo = json.loads(Path(stack.env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
    host = topo["registries"][registry]["login_server"]
    admin = topo["registries"][registry]["admin"]  # the stand-in's registries ask for credentials
    ctx = ssl.create_default_context(cafile=stack.env["REQUESTS_CA_BUNDLE"])
    r = httpx.head(
        f"https://{host}/v2/{repo}/manifests/{ref}",
        verify=ctx,
        auth=(admin["username"], admin["password"]),
        headers={"Accept": "application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json"},
    )
    if r.status_code not in (200, 404):  # a refused read must not pass as "both absent"
        r.raise_for_status()
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def receiver(stack: Stack, path: str, body: Any, key: str | None = "right", **kw: Any) -> httpx.Response:
    params = {"code": stack.env["ACR_TRANSFER_EVENTS_SECRET"] if key == "right" else key} if key else {}
    # Event Grid retries a 503 (the receiver answers it when Prefect cannot take the event yet); so do we
    with httpx.Client(timeout=30, transport=RetryingTransport()) as c:
        return c.post(f"{stack.env['ACR_TRANSFER_EVENTS_URL']}{path}", params=params, json=body, **kw)


def test_deploy_all_and_a_typed_manual_run(stack: Stack) -> None:
    dep = deployment(stack, "transfer", "transfer")
    props = dep["parameter_openapi_schema"]["properties"]
    assert props["route"]["type"] == "string" and props["route"]["description"]
    assert props["artifacts"]["description"] and props["dry_run"]["type"] == "boolean"
    for name, flow in (
        ("sync-routes", "sync-routes"),
        ("import-on-blob", "import-route-blob"),
        ("export-on-push", "export-route"),
    ):
        assert deployment(stack, flow, name)["name"] == name
    with api(stack) as c:
        bad = c.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": {"route": ["not", "a", "name"]}})
        assert bad.status_code == 409
        good = c.post(
            f"/deployments/{dep['id']}/create_flow_run",
            json={"parameters": {"route": "direct", "artifacts": ["demo/hello:v1"]}},
        )
        good.raise_for_status()
    run = wait_for(stack, good.json()["id"])
    assert run["state_type"] == "COMPLETED", run["state"]
    assert manifest_digest(stack, "targetregistry", "demo/hello", "v1") == manifest_digest(
        stack, "sourceregistry", "demo/hello", "v1"
    )


def test_unkeyed_and_wrongly_keyed_deliveries_create_nothing(stack: Stack) -> None:
    dep = deployment(stack, "import-route-blob", "import-on-blob")
    before = len(runs_of(stack, dep["id"]))
    event = [
        {
            "id": str(uuid.uuid4()),
            "eventType": "Microsoft.Storage.BlobCreated",
            "subject": "x",
            "eventTime": datetime.now(UTC).isoformat(),
            "dataVersion": "1",
            "topic": "/subscriptions/s/resourceGroups/r/providers/Microsoft.Storage/storageAccounts/targetstorage",
            "data": {"url": "https://targetstorage.blob.core.windows.net/transfer/forged.tar"},
        }
    ]
    assert receiver(stack, "/eventgrid", event, key=None).status_code == 401
    assert receiver(stack, "/eventgrid", event, key="wrong-key").status_code == 401
    handshake = [
        {
            "id": str(uuid.uuid4()),
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "subject": "",
            "eventTime": datetime.now(UTC).isoformat(),
            "dataVersion": "1",
            "topic": "t",
            "data": {"validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"},
        }
    ]
    answer = receiver(stack, "/eventgrid", handshake)
    assert answer.status_code == 200 and answer.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    time.sleep(5)
    assert len(runs_of(stack, dep["id"])) == before


def test_push_burst_exports_once_then_blob_created_imports(stack: Stack) -> None:
    push_dep = deployment(stack, "export-route", "export-on-push")
    assert runs_of(stack, push_dep["id"]) == []
    for i in range(5):
        body = {
            "id": str(uuid.uuid4()),
            "timestamp": datetime.now(UTC).isoformat(),
            "action": "push",
            "target": {
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "size": 1,
                "digest": "sha256:" + "a" * 64,
                "length": 1,
                "repository": "demo/hello",
                "tag": f"v{i}",
            },
            "request": {
                "id": str(uuid.uuid4()),
                "host": "sourceregistry.azurecr.io",
                "method": "PUT",
                "useragent": "test",
            },
        }
        assert receiver(stack, "/acr/sourceregistry", body).status_code == 200
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not runs_of(stack, push_dep["id"]):
        time.sleep(1)
    runs = runs_of(stack, push_dep["id"])
    assert len(runs) == 1
    export = wait_for(stack, runs[0]["id"])
    assert export["state_type"] == "COMPLETED", export["state"]
    time.sleep(3)
    assert len(runs_of(stack, push_dep["id"])) == 1  # the burst made exactly one export

    # carry the exported blob to the import side (what a cross-domain transfer would do), then report it
    topo = json.loads(Path(stack.env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
    keys = json.loads((stack.home / "emulator" / "storage-keys.json").read_text())
    ca = stack.env["REQUESTS_CA_BUNDLE"]
    src_url = topo["storage_accounts"]["sourcestorage"]["blob_endpoint"]
    source = BlobServiceClient(
        src_url,
        credential={"account_name": "sourcestorage", "account_key": keys["sourcestorage"]},
        connection_verify=ca,
    )
    blob = next(
        b.name for b in source.get_container_client("transfer").list_blobs() if b.name.startswith("airgap-out/")
    )
    sas = generate_container_sas(
        "sourcestorage",
        "transfer",
        account_key=keys["sourcestorage"],
        permission="r",
        expiry=datetime.now(UTC) + timedelta(hours=1),
        protocol="https",
    )
    target = BlobServiceClient(
        topo["storage_accounts"]["targetstorage"]["blob_endpoint"],
        credential={"account_name": "targetstorage", "account_key": keys["targetstorage"]},
        connection_verify=ca,
    )
    copied = target.get_blob_client("transfer", blob)
    copied.start_copy_from_url(f"{src_url}/transfer/{blob}?{sas}", requires_sync=True)
    event = [
        {
            "id": str(uuid.uuid4()),
            "eventType": "Microsoft.Storage.BlobCreated",
            "subject": f"/blobServices/default/containers/transfer/blobs/{blob}",
            "eventTime": datetime.now(UTC).isoformat(),
            "dataVersion": "1",
            "topic": "/subscriptions/s/resourceGroups/transfer-rg/providers/Microsoft.Storage/"
            "storageAccounts/targetstorage",
            "data": {
                "api": "CopyBlob",
                "url": copied.url,
                "contentType": "application/x-tar",
                "contentLength": copied.get_blob_properties().size,
                "blobType": "BlockBlob",
            },
        }
    ]
    assert receiver(stack, "/eventgrid", event).status_code == 200
    blob_dep = deployment(stack, "import-route-blob", "import-on-blob")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not runs_of(stack, blob_dep["id"]):
        time.sleep(1)
    runs = runs_of(stack, blob_dep["id"])
    assert len(runs) == 1 and runs[0]["parameters"]["blob"] == blob
    imported = wait_for(stack, runs[0]["id"])
    assert imported["state_type"] == "COMPLETED", imported["state"]
    # the burst pushed demo/hello v0-v4: of the route's list (demo/hello:v1, demo/world:v1) only the pushed one
    # was exported, and it arrived
    with prefect_rest.api(stack.env["PREFECT_API_URL"]) as c:
        tables = c.post("/artifacts/filter", json={"artifacts": {"key": {"any_": ["export-airgap-out"]}}}).json()
    rows = [row for t in tables for row in (json.loads(t["data"]) if isinstance(t["data"], str) else t["data"])]
    assert [row["artifacts"] for row in rows] == ["demo/hello:v1"]
    assert manifest_digest(stack, "targetregistry", "demo/hello", "v1") == manifest_digest(
        stack, "sourceregistry", "demo/hello", "v1"
    )


def test_sync_routes_completes_the_good_routes_and_names_the_broken_one(stack: Stack, tmp_path: Path) -> None:
    routes = tmp_path / "routes.yaml"
    routes.write_text(
        "version: 1\n"
        "defaults:\n"
        "  source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        "  target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}\n"
        "routes:\n"
        "  - {name: good-one, artifacts: [demo/hello:v1]}\n"
        "  - {name: good-two, artifacts: [demo/multiarch:1.0]}\n"
        "  - {name: broken, target: {import_pipeline: nosuchimport}, artifacts: [demo/world:v1]}\n"
    )
    dep = deployment(stack, "sync-routes", "sync-routes")
    with api(stack) as c:
        r = c.post(f"/deployments/{dep['id']}/create_flow_run", json={"parameters": {"routes_file": str(routes)}})
        r.raise_for_status()
    run = wait_for(stack, r.json()["id"], timeout=240)
    assert run["state_type"] == "FAILED" and "broken" in run["state"]["message"]
    with api(stack) as c:
        arts = c.post(
            "/artifacts/filter",
            json={"artifacts": {"key": {"any_": ["sync-routes-summary"]}}, "sort": "CREATED_DESC", "limit": 1},
        ).json()
    table = json.loads(arts[0]["data"]) if isinstance(arts[0]["data"], str) else arts[0]["data"]
    status = {row["route"]: row["status"] for row in table}
    assert status == {"good-one": "succeeded", "good-two": "succeeded", "broken": "failed"}
    broken = next(row for row in table if row["route"] == "broken")
    assert "nosuchimport" in broken["message"]
