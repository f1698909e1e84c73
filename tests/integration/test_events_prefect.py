"""The event receiver against a real Prefect server: keyed deliveries become stored Prefect events with the
documented names, resource ids and payloads (and no SAS); unkeyed ones become nothing; a repeated event id is
stored and acted on once; a delivery its sender dates in the future is stored at its receive time;
``python -m deployments.events`` serves over HTTP without logging its key."""

from __future__ import annotations

import asyncio
import json
import signal
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from deployments.deliveries import EVENT_ID_NAMESPACE
from deployments.events import create_app, emit_to_prefect
from tests.support.receiver import start_receiver

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]

ROOT = Path(__file__).resolve().parents[2]
SECRET = "integration-events-key-4d2b9e61"
SIG = "c2lnbmF0dXJlLW5vdC1mb3ItcHJlZmVjdA%3D%3D"
DIGEST = "sha256:" + "ab" * 32
RUN = uuid.uuid4().hex[:8]  # the server lives for the whole session: names unique to this run


def now() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def blob_created(account: str, container: str, blob: str, delivery_id: str) -> dict[str, Any]:
    url = f"https://127.0.0.1:10000/{account}/{container}/{blob}?sv=2024-08-04&sp=rl&sig={SIG}"
    return {
        "id": delivery_id,
        "topic": f"/subscriptions/0/providers/Microsoft.Storage/storageAccounts/{account}",
        "subject": f"/blobServices/default/containers/{container}/blobs/{blob}",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": now(),
        "dataVersion": "",
        "data": {
            "api": "PutBlockList",
            "contentType": "application/x-tar",
            "contentLength": 2048,
            "blobType": "BlockBlob",
            "url": url,
        },
    }


def acr_push(delivery_id: str, repository: str, tag: str) -> dict[str, Any]:
    return {
        "id": delivery_id,
        "timestamp": now(),
        "action": "push",
        "target": {
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "size": 500,
            "digest": DIGEST,
            "length": 500,
            "repository": repository,
            "tag": tag,
        },
        "request": {"id": "r1", "host": "127.0.0.1:5000", "method": "PUT", "useragent": "oras"},
    }


def deliver(app: Any, path: str, body: Any, key: str | None = SECRET) -> httpx.Response:
    async def send() -> httpx.Response:
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            return await client.post(path, json=body, params={"code": key} if key else {})

    return asyncio.run(send())


def stored(**filter_fields: Any) -> list[Any]:
    from prefect.client.orchestration import get_client
    from prefect.events.filters import EventFilter

    with get_client(sync_client=True) as client:
        return list(client.read_events(filter=EventFilter(**filter_fields), limit=50).events)


def wait_for(read: Callable[[], list[Any]], count: int = 1, timeout: float = 15.0) -> list[Any]:
    """Events are persisted asynchronously: flush this process's events client, then poll the server."""
    from prefect.events.worker import EventsWorker

    EventsWorker.drain_all(timeout=10)
    deadline = time.monotonic() + timeout
    while True:
        found = read()
        if len(found) >= count or time.monotonic() > deadline:
            return found
        time.sleep(0.3)


def by_resource(resource_id: str) -> Callable[[], list[Any]]:
    from prefect.events.filters import EventResourceFilter

    return lambda: stored(resource=EventResourceFilter(id=[resource_id]))


def test_keyed_deliveries_become_prefect_events() -> None:
    app = create_app(SECRET, emit=emit_to_prefect)
    account, registry = f"acct{RUN}", f"registry{RUN}"
    blob_delivery, push_delivery = f"blob-{RUN}", f"push-{RUN}"
    assert deliver(app, "/eventgrid", [blob_created(account, "transfer", "demo/x1b1.tar", blob_delivery)]).json() == {
        "emitted": 1,
        "duplicates": 0,
        "ignored": 0,
    }
    assert deliver(app, f"/acr/{registry}", acr_push(push_delivery, "demo/hello", "v1")).json()["emitted"] == 1

    [blob] = wait_for(by_resource(f"acr.transfer.container.{account}.transfer"))
    assert blob.event == "acr.transfer.blob.created"
    assert blob.id == uuid.uuid5(EVENT_ID_NAMESPACE, blob_delivery)
    assert dict(blob.resource.root) == {
        "prefect.resource.id": f"acr.transfer.container.{account}.transfer",
        "prefect.resource.name": f"{account}/transfer",
        "acr.transfer.account": account,
        "acr.transfer.container": "transfer",
    }
    # ours only: Prefect's events worker may attach flow-run resources of this test process's earlier flows
    assert [dict(r.root) for r in blob.related if not r.id.startswith("prefect.")] == [
        {"prefect.resource.id": f"acr.transfer.blob.{account}.transfer.demo/x1b1.tar", "prefect.resource.role": "blob"}
    ]
    assert blob.payload == {
        "blob": "demo/x1b1.tar",
        "url": f"https://127.0.0.1:10000/{account}/transfer/demo/x1b1.tar",
        "content_length": 2048,
        "content_type": "application/x-tar",
        "delivery_id": blob_delivery,
    }

    [push] = wait_for(by_resource(f"acr.transfer.registry.{registry}"))
    assert push.event == "acr.transfer.image.pushed"
    assert push.id == uuid.uuid5(EVENT_ID_NAMESPACE, push_delivery)
    assert push.resource.name == registry
    assert push.related[0].id == f"acr.transfer.repository.{registry}.demo/hello"
    assert push.payload == {
        "registry": registry,
        "repository": "demo/hello",
        "tag": "v1",
        "digest": DIGEST,
        "artifact": "demo/hello:v1",
        "delivery_id": push_delivery,
    }

    dump = json.dumps([blob.model_dump(mode="json"), push.model_dump(mode="json")])
    assert SIG not in dump and "sig=" not in dump and SECRET not in dump


def test_a_delivery_dated_an_hour_ahead_is_stored_at_its_receive_time() -> None:
    """A sender's clock an hour fast: the stored event is dated now (so the feed shows it and no trigger window
    opens an hour ahead), with the sender's time in the payload."""
    app = create_app(SECRET, emit=emit_to_prefect)
    registry, ahead = f"ahead{RUN}", datetime.now(UTC) + timedelta(hours=1)
    body = acr_push(f"ahead-{RUN}", "demo/ahead", "v1")
    body["timestamp"] = ahead.isoformat()
    assert deliver(app, f"/acr/{registry}", body).json()["emitted"] == 1
    [event] = wait_for(by_resource(f"acr.transfer.registry.{registry}"))  # Prefect reads up to now by default
    assert event.event == "acr.transfer.image.pushed"
    assert abs(event.occurred - datetime.now(UTC)) < timedelta(minutes=1)
    assert event.payload["sender_time"] == ahead.isoformat()


def test_an_unkeyed_delivery_produces_no_event() -> None:
    app = create_app(SECRET, emit=emit_to_prefect)
    unkeyed, control = f"nokey{RUN}", f"control{RUN}"
    for key in (None, "not-the-key"):
        response = deliver(app, "/eventgrid", [blob_created(unkeyed, "transfer", "a.tar", f"nokey-{key}-{RUN}")], key)
        assert response.status_code == 401
    assert deliver(app, "/acr/x", acr_push(f"nokey-push-{RUN}", "nokey", "v1"), None).status_code == 401
    # the control is emitted after them through the same client: once it is stored, theirs would be too
    assert deliver(app, "/eventgrid", [blob_created(control, "transfer", "a.tar", f"control-{RUN}")]).status_code == 200
    assert len(wait_for(by_resource(f"acr.transfer.container.{control}.transfer"))) == 1
    assert by_resource(f"acr.transfer.container.{unkeyed}.transfer")() == []
    assert stored_with_delivery(f"nokey-push-{RUN}") == []


def stored_with_delivery(delivery_id: str) -> list[Any]:
    from prefect.events.filters import EventIDFilter

    return stored(id=EventIDFilter(id=[uuid.uuid5(EVENT_ID_NAMESPACE, delivery_id)]))


def test_the_server_keeps_and_acts_on_a_repeated_event_id_once() -> None:
    """Two receivers (separate memories, as after a restart) pass on the same delivery: Prefect stores one
    event and fires a matching trigger once, because the event id is derived from the delivery id."""
    from prefect.client.orchestration import get_client
    from prefect.events.actions import DoNothing
    from prefect.events.filters import EventNameFilter, EventRelatedFilter
    from prefect.events.schemas.automations import AutomationCore, EventTrigger, Posture

    account = f"dup{RUN}"
    trigger = EventTrigger(
        match={"prefect.resource.id": f"acr.transfer.container.{account}.*"},
        expect={"acr.transfer.blob.created"},
        posture=Posture.Reactive,
        threshold=1,
    )
    with get_client(sync_client=True) as client:
        automation_id = client.create_automation(
            AutomationCore(name=f"on-blob-{RUN}", trigger=trigger, actions=[DoNothing()])
        )

    def firings(delivery_id: str) -> Callable[[], list[Any]]:
        return lambda: stored(
            event=EventNameFilter(name=["prefect.automation.action.executed"]),
            related=EventRelatedFilter(id=[f"prefect.event.{uuid.uuid5(EVENT_ID_NAMESPACE, delivery_id)}"]),
        )

    try:
        # the trigger service picks up new automations asynchronously: probe until one fires
        for attempt in range(10):
            probe = f"probe-{attempt}-{RUN}"
            deliver(create_app(SECRET), "/eventgrid", [blob_created(account, "probe", "p.tar", probe)])
            if wait_for(firings(probe), timeout=3):
                break
        else:
            pytest.fail("the automation never fired for a probe event")

        delivery = f"dup-{RUN}"
        for _ in range(2):  # a fresh app each time: its de-duplication memory does not help here
            assert (
                deliver(create_app(SECRET), "/eventgrid", [blob_created(account, "c1x", "d.tar", delivery)]).json()[
                    "emitted"
                ]
                == 1
            )
        assert len(wait_for(firings(delivery), count=2, timeout=6)) == 1
        assert len(stored_with_delivery(delivery)) == 1
    finally:
        with get_client(sync_client=True) as client:
            client.delete_automation(automation_id)


def test_served_over_http_without_logging_the_key(tmp_path: Path) -> None:
    log_file = tmp_path / "receiver.log"
    base, proc = start_receiver(SECRET, log_file)
    try:
        registry = f"served{RUN}"
        body = acr_push(f"served-{RUN}", "demo/served", "v2")
        assert httpx.post(f"{base}/acr/{registry}", params={"code": SECRET}, json=body).status_code == 200
        assert httpx.post(f"{base}/acr/{registry}", params={"code": "nope"}, json=body).status_code == 401
        assert httpx.post(f"{base}/eventgrid?code={SECRET}", content=b"{oops").status_code == 400
    finally:
        proc.send_signal(signal.SIGTERM)
        returncode = proc.wait(timeout=30)
    [event] = wait_for(by_resource(f"acr.transfer.registry.{registry}"))  # drained by the receiver as it stopped
    assert event.payload["artifact"] == "demo/served:v2"
    output = log_file.read_text()
    assert returncode == 0, output  # a clean stop on SIGTERM, after handing its queue to Prefect
    assert "/acr/" in output and "-> 401" in output and "-> 400" in output  # it does log requests, by path
    assert SECRET not in output and f"code={SECRET[:8]}" not in output
