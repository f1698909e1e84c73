"""The event receiver (deployments/events.py) driven in-process with an injected ``emit`` that records events:
handshakes, both Event Grid schemas and the ACR webhook, the key, size limits, malformed and fuzzed bodies,
de-duplication and emit failures. No network, no Prefect."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import threading
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette

from acr_transfer.errors import ConfigError
from deployments.deliveries import EVENT_ID_NAMESPACE, ReceivedEvent, parse_blob_url
from deployments.events import create_app, serve

SECRET = "test-events-key-9f3c1e7a5b"
DIGEST = "sha256:213bbc182920ab41e18edc2001e06abcca6735d87782d9cef68abd83941cf0e5"
SAS = "sv=2024-08-04&sp=rl&se=2030-01-01T00%3A00Z&spr=https&sig=c2VjcmV0c2lnbmF0dXJl%3D"
REGISTRY_ID = "/subscriptions/0000/resourceGroups/transfer-rg/providers/Microsoft.ContainerRegistry/registries/"
STORAGE_ID = "/subscriptions/0000/resourceGroups/transfer-rg/providers/Microsoft.Storage/storageAccounts/"


class Recorder:
    """An ``emit`` that keeps what it is given; ``fail`` makes the next calls raise."""

    def __init__(self) -> None:
        self.events: list[ReceivedEvent] = []
        self.fail: Exception | None = None

    def __call__(self, event: ReceivedEvent) -> None:
        if self.fail is not None:
            raise self.fail
        self.events.append(event)


class Client:
    """A synchronous face on ``httpx.AsyncClient`` over ``httpx.ASGITransport``: the app runs in this process."""

    def __init__(self, app: Starlette) -> None:
        self.app = app

    def request(self, method: str, path: str, **kw: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://receiver") as client:
                return await client.request(method, path, **kw)

        return asyncio.run(send())

    def get(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("GET", path, **kw)

    def post(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("POST", path, **kw)

    def options(self, path: str, **kw: Any) -> httpx.Response:
        return self.request("OPTIONS", path, **kw)


def receiver(**kwargs: Any) -> tuple[Client, Recorder, Starlette]:
    recorder = Recorder()
    app = create_app(SECRET, emit=recorder, **kwargs)
    return Client(app), recorder, app


def post(
    client: Client,
    path: str,
    body: Any,
    *,
    key: str | None = SECRET,
    via: str = "header",
    content_type: str = "application/json",
    **kw: Any,
) -> httpx.Response:
    headers = {"content-type": content_type, **kw.pop("headers", {})}
    params = {}
    if key is not None and via == "header":
        headers["x-events-key"] = key
    elif key is not None:
        params["code"] = key
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(path, content=content, headers=headers, params=params, **kw)


def eventgrid_blob(url: str, event_id: str = "831e1650-001e-001b-66ab-eeb76e069631") -> dict[str, Any]:
    """BlobCreated in the Event Grid schema, as Azure's documentation shows it."""
    return {
        "topic": STORAGE_ID + "mystorageaccount",
        "subject": "/blobServices/default/containers/testcontainer/blobs/new-file.txt",
        "eventType": "Microsoft.Storage.BlobCreated",
        "eventTime": "2017-06-26T18:41:00.9584103Z",
        "id": event_id,
        "data": {
            "api": "PutBlockList",
            "clientRequestId": "6d79dbfb-0e37-4fc4-981f-442c9ca65760",
            "requestId": "831e1650-001e-001b-66ab-eeb76e000000",
            "eTag": '"0x8D4BCC2E4835CD0"',
            "contentType": "application/x-tar",
            "contentLength": 524288,
            "blobType": "BlockBlob",
            "url": url,
            "sequencer": "00000000000004420000000000028963",
            "storageDiagnostics": {"batchId": "b68529f3-68cd-4744-baa4-3c0498ec19f0"},
        },
        "dataVersion": "",
        "metadataVersion": "1",
    }


def cloudevent(event: dict[str, Any]) -> dict[str, Any]:
    """The same event in the CloudEvents 1.0 schema."""
    return {
        "specversion": "1.0",
        "type": event["eventType"],
        "source": event["topic"],
        "id": event["id"],
        "subject": event["subject"],
        "time": event["eventTime"],
        "data": event["data"],
    }


def image_pushed_data(repository: str = "aci-helloworld", tag: str | None = "v1") -> dict[str, Any]:
    target: dict[str, Any] = {
        "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "size": 3023,
        "digest": DIGEST,
        "length": 3023,
        "repository": repository,
    }
    if tag is not None:
        target["tag"] = tag
    return {
        "id": "31c51664-e5bd-416a-a5df-e5206bc47ed0",
        "timestamp": "2018-04-25T21:39:47.276585742Z",
        "action": "push",
        "target": target,
        "request": {
            "id": "7c66f28b",
            "host": "demoregistry.azurecr.io",
            "method": "PUT",
            "useragent": "docker/18.03.0-ce",
        },
    }


def eventgrid_push(registry: str = "SourceRegistry", **kw: Any) -> dict[str, Any]:
    return {
        "id": "9b1a2c3d-push",
        "topic": REGISTRY_ID + registry,
        "subject": "aci-helloworld:v1",
        "eventType": "Microsoft.ContainerRegistry.ImagePushed",
        "eventTime": "2018-04-25T21:39:47.6549614Z",
        "data": image_pushed_data(**kw),
        "dataVersion": "1.0",
        "metadataVersion": "1",
    }


def webhook_push(action: str = "push") -> dict[str, Any]:
    """A native ACR webhook body, as Azure's documentation shows it."""
    body = image_pushed_data("hello-world", "v1")
    body.update(id="cb8c3971-9adc-488b-8a4b-43cbb4974ff5", timestamp="2017-11-17T16:52:01.343145347Z", action=action)
    body["request"]["host"] = "myregistry.azurecr.io"
    return body


def stable_id(delivery_id: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, delivery_id))


# --- handshakes -------------------------------------------------------------------------------------------


def test_healthz_answers_without_a_key() -> None:
    client, _, _ = receiver()
    assert client.get("/healthz").status_code == 200


def test_event_grid_validation_handshake_echoes_the_code() -> None:
    client, recorder, _ = receiver()
    validation = [
        {
            "id": "2d1781af",
            "topic": STORAGE_ID + "x",
            "subject": "",
            "eventTime": "2018-01-25T22:12:19Z",
            "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
            "dataVersion": "1",
            "data": {
                "validationCode": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6",
                "validationUrl": "https://rp-eastus2.eventgrid.azure.net/...",
            },
        }
    ]
    response = post(client, "/eventgrid", validation, via="query")
    assert response.status_code == 200
    assert response.json() == {"validationResponse": "512d38b6-c7b8-40c8-89fe-f46f9e9622b6"}
    assert recorder.events == []
    assert post(client, "/eventgrid", validation, key=None).status_code == 401


def test_cloudevents_abuse_protection_handshake() -> None:
    client, _, _ = receiver()
    response = client.options(
        "/eventgrid", params={"code": SECRET}, headers={"WebHook-Request-Origin": "eventgrid.azure.net"}
    )
    assert response.status_code == 200
    assert response.headers["WebHook-Allowed-Origin"] == "eventgrid.azure.net"
    assert response.headers["WebHook-Allowed-Rate"] == "*"
    assert client.options("/eventgrid", headers={"x-events-key": SECRET}).status_code == 400  # no origin
    unkeyed = client.options("/eventgrid", headers={"WebHook-Request-Origin": "eventgrid.azure.net"})
    assert unkeyed.status_code == 401 and "WebHook-Allowed-Origin" not in unkeyed.headers


# --- BlobCreated --------------------------------------------------------------------------------------------


def test_blob_created_in_the_event_grid_schema() -> None:
    client, recorder, _ = receiver()
    url = "https://MyStorageAccount.blob.core.windows.net/transfer/route/x1b1.tar"
    response = post(client, "/eventgrid", [eventgrid_blob(f"{url}?{SAS}")])
    assert response.status_code == 200 and response.json() == {"emitted": 1, "duplicates": 0, "ignored": 0}
    [event] = recorder.events
    assert event.event == "acr.transfer.blob.created"
    assert event.resource == {
        "prefect.resource.id": "acr.transfer.container.mystorageaccount.transfer",
        "prefect.resource.name": "mystorageaccount/transfer",
        "acr.transfer.account": "mystorageaccount",
        "acr.transfer.container": "transfer",
    }
    assert event.related == [
        {
            "prefect.resource.id": "acr.transfer.blob.mystorageaccount.transfer.route/x1b1.tar",
            "prefect.resource.role": "blob",
        }
    ]
    assert event.payload == {
        "blob": "route/x1b1.tar",
        "url": "https://mystorageaccount.blob.core.windows.net/transfer/route/x1b1.tar",
        "content_length": 524288,
        "content_type": "application/x-tar",
        "delivery_id": "831e1650-001e-001b-66ab-eeb76e069631",
    }
    assert event.id == stable_id("831e1650-001e-001b-66ab-eeb76e069631")
    assert event.occurred is not None and event.occurred.isoformat() == "2017-06-26T18:41:00.958410+00:00"
    assert "sig=" not in json.dumps(event.payload) and "sig=" not in json.dumps(event.related)


@pytest.mark.parametrize(
    "content_type", ["application/cloudevents+json; charset=utf-8", "application/cloudevents-batch+json"]
)
def test_blob_created_as_cloudevents_path_style(content_type: str) -> None:
    """The stand-in's Azurite URLs are path-style: the account is the first path segment."""
    client, recorder, _ = receiver()
    event = cloudevent(eventgrid_blob(f"https://127.0.0.1:10000/sourcestorage/transfer/demo/t1/batch1.tar?{SAS}"))
    body = [event] if "batch" in content_type else event
    assert post(client, "/eventgrid", body, content_type=content_type).status_code == 200
    [received] = recorder.events
    assert received.resource["prefect.resource.id"] == "acr.transfer.container.sourcestorage.transfer"
    assert received.payload["blob"] == "demo/t1/batch1.tar"
    assert received.payload["url"] == "https://127.0.0.1:10000/sourcestorage/transfer/demo/t1/batch1.tar"
    assert received.related[0]["prefect.resource.id"] == "acr.transfer.blob.sourcestorage.transfer.demo/t1/batch1.tar"


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        (
            "http://localhost:10000/Dev1/c1x/a%20b.tar?sig=x#frag",
            ("dev1", "c1x", "a b.tar", "http://localhost:10000/Dev1/c1x/a%20b.tar"),
        ),
        ("https://[::1]:443/acct/cont/b", ("acct", "cont", "b", "https://[::1]:443/acct/cont/b")),
        (
            "https://user:pw@acct.blob.core.windows.net/cont/d/e",
            ("acct", "cont", "d/e", "https://acct.blob.core.windows.net/cont/d/e"),
        ),
        (
            "https://acct.blob.core.usgovcloudapi.net/$root/b",
            ("acct", "$root", "b", "https://acct.blob.core.usgovcloudapi.net/$root/b"),
        ),
    ],
)
def test_blob_urls_of_both_styles(url: str, expected: tuple[str, str, str, str]) -> None:
    assert parse_blob_url(url) == expected


@pytest.mark.parametrize(
    "url",
    [
        "ftp://acct.blob.core.windows.net/cont/b",
        "https://acct.blob.core.windows.net/cont",  # no blob
        "https://acct.blob.core.windows.net/cont/",
        "https://127.0.0.1:10000/acct/cont",  # path-style without a blob
        "https://a.blob.core.windows.net/cont/b",  # account too short
        "https://acct.blob.core.windows.net/-bad-/b",
        "https://acct.blob.core.windows.net:99999/cont/b",  # port out of range
        "not a url",
    ],
)
def test_urls_that_are_not_blob_urls_are_refused(url: str) -> None:
    client, recorder, _ = receiver()
    response = post(client, "/eventgrid", [eventgrid_blob(url + "?sig=leak")])
    assert response.status_code == 400
    assert "data.url" in response.json()["error"] and "leak" not in response.text
    assert recorder.events == []


# --- ImagePushed and the ACR webhook -----------------------------------------------------------------------


def test_image_pushed_through_event_grid_names_the_registry_from_the_topic() -> None:
    client, recorder, _ = receiver()
    assert post(client, "/eventgrid", [eventgrid_push("SourceRegistry")]).status_code == 200
    [event] = recorder.events
    assert event.event == "acr.transfer.image.pushed"
    assert event.resource == {
        "prefect.resource.id": "acr.transfer.registry.sourceregistry",
        "prefect.resource.name": "sourceregistry",
    }
    assert event.related == [
        {
            "prefect.resource.id": "acr.transfer.repository.sourceregistry.aci-helloworld",
            "prefect.resource.role": "repository",
        }
    ]
    assert event.payload == {
        "registry": "sourceregistry",
        "repository": "aci-helloworld",
        "tag": "v1",
        "digest": DIGEST,
        "artifact": "aci-helloworld:v1",
        "delivery_id": "9b1a2c3d-push",
    }
    assert event.id == stable_id("9b1a2c3d-push")


def test_image_pushed_by_digest_as_a_cloudevent() -> None:
    client, recorder, _ = receiver()
    event = cloudevent(eventgrid_push("targetregistry", repository="team/app", tag=None))
    assert post(client, "/eventgrid", event, content_type="application/cloudevents+json").status_code == 200
    [received] = recorder.events
    assert received.payload["artifact"] == f"team/app@{DIGEST}" and received.payload["tag"] is None
    assert received.related[0]["prefect.resource.id"] == "acr.transfer.repository.targetregistry.team/app"


def test_image_pushed_falls_back_to_the_login_server_when_the_topic_has_no_name() -> None:
    client, recorder, _ = receiver()
    push = eventgrid_push()
    push["topic"] = "/not/a-registry-id/"
    assert post(client, "/eventgrid", [push]).status_code == 200
    assert recorder.events[0].resource["prefect.resource.id"] == "acr.transfer.registry.demoregistry"


def test_acr_webhook_push() -> None:
    client, recorder, _ = receiver()
    response = post(client, "/acr/SourceRegistry", webhook_push(), via="query")
    assert response.status_code == 200 and response.json()["emitted"] == 1
    [event] = recorder.events
    assert event.resource["prefect.resource.id"] == "acr.transfer.registry.sourceregistry"
    assert event.payload == {
        "registry": "sourceregistry",
        "repository": "hello-world",
        "tag": "v1",
        "digest": DIGEST,
        "artifact": "hello-world:v1",
        "delivery_id": "cb8c3971-9adc-488b-8a4b-43cbb4974ff5",
    }
    assert event.id == stable_id("cb8c3971-9adc-488b-8a4b-43cbb4974ff5")
    assert event.occurred is not None and event.occurred.year == 2017


@pytest.mark.parametrize("path_name", ["my-registry", "ab", "myregistry.azurecr.io"])
def test_acr_webhook_falls_back_to_the_request_host(path_name: str) -> None:
    client, recorder, _ = receiver()
    assert post(client, f"/acr/{path_name}", webhook_push()).status_code == 200
    assert recorder.events[0].payload["registry"] == "myregistry"


def test_acr_webhook_without_any_registry_name_is_refused() -> None:
    client, recorder, _ = receiver()
    body = webhook_push()
    body["request"]["host"] = "127.0.0.1:5000"
    response = post(client, "/acr/x", body)
    assert response.status_code == 400 and "registry" in response.json()["error"]
    assert recorder.events == []


@pytest.mark.parametrize("action", ["delete", "quarantine", "chart_push", "ping"])
def test_other_webhook_actions_are_acknowledged_and_ignored(action: str) -> None:
    client, recorder, app = receiver()
    response = post(client, "/acr/myregistry", webhook_push(action))
    assert response.status_code == 200 and response.json()["ignored"] == 1
    assert recorder.events == [] and app.state.counters["ignored"] == 1


def test_unknown_event_types_are_acknowledged_ignored_and_counted() -> None:
    client, recorder, app = receiver()
    deleted = eventgrid_blob("https://acct.blob.core.windows.net/c1x/b", "other-1")
    deleted["eventType"] = "Microsoft.Storage.BlobDeleted"
    chart = eventgrid_push()
    chart.update(eventType="Microsoft.ContainerRegistry.ChartPushed", id="other-2")
    response = post(client, "/eventgrid", [deleted, chart, eventgrid_push()])
    assert response.status_code == 200 and response.json() == {"emitted": 1, "duplicates": 0, "ignored": 2}
    assert [e.event for e in recorder.events] == ["acr.transfer.image.pushed"]
    assert app.state.counters["ignored"] == 2


# --- the receiver's clock ----------------------------------------------------------------------------------

RECEIVED = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def dated(kind: str, when: datetime) -> tuple[str, Any, str]:
    """(path, body, content type) of one delivery of ``kind`` whose sender dates it ``when``."""
    stamp = when.isoformat().replace("+00:00", "Z")
    if kind == "webhook":
        return "/acr/sourceregistry", {**webhook_push(), "timestamp": stamp}, "application/json"
    event = {**eventgrid_blob("https://acct.blob.core.windows.net/c1x/b"), "eventTime": stamp}
    if kind == "cloudevents":
        return "/eventgrid", cloudevent(event), "application/cloudevents+json"
    return "/eventgrid", [event], "application/json"


@pytest.mark.parametrize("kind", ["eventgrid", "cloudevents", "webhook"])
def test_a_delivery_dated_in_the_future_is_stored_at_its_receive_time(
    kind: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A sender's clock an hour ahead would hide the event from Prefect's feed for an hour and open a trigger
    window that swallows the next pushes: the receiver's clock dates it, the sender's time is kept."""
    client, recorder, _ = receiver(clock=lambda: RECEIVED)
    path, body, content_type = dated(kind, RECEIVED + timedelta(hours=1))
    assert post(client, path, body, content_type=content_type).status_code == 200
    [event] = recorder.events
    assert event.occurred == RECEIVED
    assert event.payload["sender_time"] == "2026-03-01T13:00:00+00:00"
    assert "ahead of this receiver's clock" in caplog.text and "2026-03-01T13:00:00+00:00" in caplog.text


@pytest.mark.parametrize("kind", ["eventgrid", "cloudevents", "webhook"])
@pytest.mark.parametrize("offset", [timedelta(hours=-1), timedelta(seconds=5)], ids=["an-hour-ago", "within-skew"])
def test_a_delivery_dated_in_the_past_keeps_its_own_time(kind: str, offset: timedelta) -> None:
    client, recorder, _ = receiver(clock=lambda: RECEIVED)
    path, body, content_type = dated(kind, RECEIVED + offset)
    assert post(client, path, body, content_type=content_type).status_code == 200
    [event] = recorder.events
    assert event.occurred == RECEIVED + offset and "sender_time" not in event.payload


def test_the_receive_time_is_taken_per_request() -> None:
    ticks = iter([RECEIVED, RECEIVED + timedelta(hours=2)])
    client, recorder, _ = receiver(clock=lambda: next(ticks))
    for _ in range(2):
        path, body, content_type = dated("webhook", RECEIVED + timedelta(hours=1))
        body["id"] = f"d-{len(recorder.events)}"
        assert post(client, path, body, content_type=content_type).status_code == 200
    assert [e.occurred for e in recorder.events] == [RECEIVED, RECEIVED + timedelta(hours=1)]
    assert ["sender_time" in e.payload for e in recorder.events] == [True, False]


# --- the key ------------------------------------------------------------------------------------------------

WRONG_KEYS = [
    pytest.param({}, {}, id="no-key"),
    pytest.param({"x-events-key": "wrong"}, {}, id="wrong-header"),
    pytest.param({}, {"code": "wrong"}, id="wrong-query"),
    pytest.param({}, {"code": ""}, id="empty-query"),
    pytest.param({"x-events-key": SECRET[:-1]}, {}, id="prefix-of-key"),
    pytest.param({"x-events-key": SECRET.upper()}, {}, id="other-case"),
    pytest.param({"x-events-key": b"cl\xe9"}, {}, id="non-ascii"),
]


@pytest.mark.parametrize(("headers", "params"), WRONG_KEYS)
@pytest.mark.parametrize("path", ["/eventgrid", "/acr/myregistry"])
def test_without_the_key_nothing_is_read_or_emitted(
    headers: dict[str, Any], params: dict[str, str], path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client, recorder, app = receiver(max_body_bytes=64)
    caplog.set_level(logging.DEBUG)
    valid = [eventgrid_push()] if path == "/eventgrid" else webhook_push()
    for body in (json.dumps(valid).encode(), b"{not json", b"x" * 1000):  # 401 first: not 400, not 413
        response = client.post(
            path, content=body, headers={"content-type": "application/json", **headers}, params=params
        )
        assert response.status_code == 401 and "key" in response.json()["error"]
    assert client.options(path, headers={**headers, "WebHook-Request-Origin": "x"}, params=params).status_code == 401
    assert recorder.events == [] and app.state.counters["unauthorized"] == 4
    assert SECRET not in caplog.text


@pytest.mark.parametrize("via", ["header", "query"])
def test_the_key_is_never_logged_or_echoed(via: str, caplog: pytest.LogCaptureFixture) -> None:
    client, recorder, _ = receiver()
    caplog.set_level(logging.DEBUG)
    responses = [
        post(client, "/eventgrid", [eventgrid_push()], via=via),
        post(client, "/eventgrid", b"[{", via=via),
        post(client, "/acr/myregistry", {"action": SECRET}, via=via),  # even when the body quotes it
    ]
    recorder.fail = RuntimeError(f"boom with {SECRET} and ?sig=abcdef")
    responses.append(post(client, "/eventgrid", [eventgrid_blob("https://acct.blob.core.windows.net/c1x/b")], via=via))
    assert [r.status_code for r in responses] == [200, 400, 200, 503]
    server_log = "\n".join(r.getMessage() for r in caplog.records if not r.name.startswith("httpx"))  # not the client's
    assert "/eventgrid" in server_log and "code=" not in server_log
    for text in (server_log, *(r.text for r in responses)):
        assert SECRET not in text and "abcdef" not in text


def test_the_app_needs_a_secret() -> None:
    with pytest.raises(ValueError, match="secret"):
        create_app("")


@pytest.mark.parametrize("value", [None, "", "   ", "short-key"])
def test_serve_refuses_to_start_without_a_proper_secret(value: str | None, monkeypatch: pytest.MonkeyPatch) -> None:
    if value is None:
        monkeypatch.delenv("ACR_TRANSFER_EVENTS_SECRET", raising=False)
    else:
        monkeypatch.setenv("ACR_TRANSFER_EVENTS_SECRET", value)
    with pytest.raises(ConfigError, match="ACR_TRANSFER_EVENTS_SECRET"):
        serve("127.0.0.1", 0)


# --- size, shape ------------------------------------------------------------------------------------------


def test_bodies_over_the_limit_are_refused() -> None:
    client, recorder, app = receiver(max_body_bytes=2048)
    big = [eventgrid_blob("https://acct.blob.core.windows.net/c1x/" + "b" * 900, f"id-{i}") for i in range(3)]
    body = json.dumps(big).encode()
    assert len(body) > 2048
    assert post(client, "/eventgrid", body).status_code == 413  # honest Content-Length
    lying = post(client, "/eventgrid", body, headers={"content-length": "100"})
    assert lying.status_code == 413  # the count while streaming, not the header

    async def chunks() -> AsyncIterator[bytes]:
        yield body[:1000]
        yield body[1000:]

    chunked = client.post("/eventgrid", content=chunks(), headers={"x-events-key": SECRET})
    assert chunked.status_code == 413  # no Content-Length at all
    assert post(client, "/acr/myregistry", b" " * 3000).status_code == 413
    assert recorder.events == [] and app.state.counters["too_large"] == 4
    assert post(client, "/eventgrid", [big[0]]).status_code == 200  # under the limit


@pytest.mark.parametrize(
    ("body", "says"),
    [
        (b"", "not JSON"),
        (b"not json", "not JSON"),
        (b"\xff\xfe\x00", "not JSON"),
        (b"[" * 200_000 + b"]" * 200_000, "not JSON"),  # nesting deeper than the parser's recursion limit
        (b"1" * 5000, "not JSON"),  # an integer longer than Python converts
        (b'"a string"', "JSON array"),
        (b"[1]", "event[0] must be a JSON object"),
        (b'[{"eventType": "Microsoft.Storage.BlobCreated"}]', "event[0].id"),
        (b'[{"id": 7, "eventType": "x"}]', "event[0].id"),
        (b'[{"id": "a", "eventType": "Microsoft.Storage.BlobCreated", "data": []}]', "event[0].data"),
        (b'[{"id": "a", "eventType": "Microsoft.Storage.BlobCreated", "data": {}}]', "data.url"),
        (
            b'[{"id": "a", "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent", "data": {}}]',
            "validationCode",
        ),
        (b'[{"specversion": "0.3", "id": "a", "type": "x"}]', "specversion"),
    ],
)
def test_malformed_event_grid_bodies_get_400_saying_what_was_wrong(body: bytes, says: str) -> None:
    client, recorder, _ = receiver(max_body_bytes=1_048_576)
    response = post(client, "/eventgrid", body)
    assert response.status_code == 400
    assert says in response.json()["error"]
    assert recorder.events == []
    assert client.get("/healthz").status_code == 200


@pytest.mark.parametrize(
    ("content_type", "body", "says"),
    [
        ("application/cloudevents+json", [{"specversion": "1.0"}], "one JSON object"),
        ("application/cloudevents-batch+json", {"specversion": "1.0"}, "JSON array"),
    ],
)
def test_cloudevents_bodies_must_match_their_content_type(content_type: str, body: Any, says: str) -> None:
    client, _, _ = receiver()
    response = post(client, "/eventgrid", body, content_type=content_type)
    assert response.status_code == 400 and says in response.json()["error"]


@pytest.mark.parametrize(
    ("mutate", "says"),
    [
        (lambda b: b.pop("target"), "data.target"),
        (lambda b: b["target"].update(repository="Upper/Case"), "target.repository"),
        (lambda b: b["target"].update(tag="-bad"), "target.tag"),
        (lambda b: b["target"].update(digest="md5:abc"), "target.digest"),
        (lambda b: (b["target"].pop("tag"), b["target"].pop("digest")), "neither a tag nor a digest"),
        (lambda b: b.update(id=""), "body.id"),
        (lambda b: b.update(action=["push"]), "body.action"),
    ],
)
def test_malformed_webhook_bodies_get_400(mutate: Any, says: str) -> None:
    client, recorder, _ = receiver()
    body = webhook_push()
    mutate(body)
    response = post(client, "/acr/myregistry", body)
    assert response.status_code == 400 and says in response.json()["error"]
    assert recorder.events == []


def test_a_batch_with_one_bad_event_emits_nothing() -> None:
    client, recorder, _ = receiver()
    bad = eventgrid_push()
    bad["data"]["target"]["repository"] = "Not Valid"
    assert post(client, "/eventgrid", [eventgrid_push(), bad]).status_code == 400
    assert recorder.events == []


# --- de-duplication and emitting --------------------------------------------------------------------------


def test_a_repeated_delivery_is_acknowledged_but_emitted_once() -> None:
    client, recorder, app = receiver()
    first = post(client, "/eventgrid", [eventgrid_push()])
    again = post(client, "/eventgrid", [eventgrid_push()])
    as_cloudevent = post(
        client, "/eventgrid", cloudevent(eventgrid_push()), content_type="application/cloudevents+json"
    )
    assert [r.status_code for r in (first, again, as_cloudevent)] == [200, 200, 200]
    assert again.json() == {"emitted": 0, "duplicates": 1, "ignored": 0}
    assert len(recorder.events) == 1 and app.state.counters["duplicate"] == 2
    webhook = post(client, "/acr/myregistry", webhook_push())
    assert post(client, "/acr/myregistry", webhook_push()).json()["duplicates"] == 1
    assert webhook.json()["emitted"] == 1 and len(recorder.events) == 2


def test_the_dedupe_memory_is_a_bounded_lru() -> None:
    client, recorder, _ = receiver(dedupe_size=2)
    url = "https://acct.blob.core.windows.net/c1x/b"
    for delivery in ("a", "b", "a", "c", "b", "a"):  # "a" is refreshed by its repeat; "b" falls out before its
        post(client, "/eventgrid", [eventgrid_blob(url, delivery)])
    assert [e.payload["delivery_id"] for e in recorder.events] == ["a", "b", "c", "b", "a"]


def test_an_emit_failure_answers_503_and_the_retry_gets_through(caplog: pytest.LogCaptureFixture) -> None:
    client, recorder, app = receiver()
    recorder.fail = ConnectionError("Prefect API unreachable")
    batch = [eventgrid_push(), eventgrid_blob("https://acct.blob.core.windows.net/c1x/b")]
    response = post(client, "/eventgrid", batch)
    assert response.status_code == 503 and "retry" in response.json()["error"]
    assert app.state.counters["emit_failed"] == 1 and "ConnectionError" in caplog.text
    recorder.fail = None
    retried = post(client, "/eventgrid", batch)  # Event Grid delivers the same batch again
    assert retried.status_code == 200 and retried.json()["emitted"] == 2 and len(recorder.events) == 2


def test_a_slow_emit_does_not_hold_up_other_requests() -> None:
    """emit runs in a worker thread: while one delivery waits on Prefect, the server answers others."""
    release = threading.Event()
    started = threading.Event()
    seen: list[ReceivedEvent] = []

    def slow_emit(event: ReceivedEvent) -> None:
        started.set()
        assert release.wait(5)
        seen.append(event)

    async def scenario() -> None:
        app = create_app(SECRET, emit=slow_emit)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://receiver") as client:
            delivery = asyncio.create_task(
                client.post("/eventgrid", json=[eventgrid_push()], headers={"x-events-key": SECRET})
            )
            assert await asyncio.to_thread(started.wait, 5)
            health = await asyncio.wait_for(client.get("/healthz"), timeout=2)
            assert health.status_code == 200 and not delivery.done()
            release.set()
            assert (await asyncio.wait_for(delivery, timeout=5)).status_code == 200

    asyncio.run(scenario())
    assert len(seen) == 1


# --- fuzzing: any body with a valid key gets 200, 400 or 413, never a 500 ----------------------------------


@contextmanager
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """ERROR records of the receiver's logger (an 'unexpected' exception is a gap in its validation)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.ERROR)
    handler.emit = records.append  # type: ignore[assignment,method-assign]
    logger = logging.getLogger("acr_transfer.events")
    logger.addHandler(handler)
    try:
        yield records
    finally:
        logger.removeHandler(handler)


@pytest.fixture(scope="module")
def fuzz_target() -> Iterator[tuple[Client, Recorder]]:
    recorder = Recorder()
    yield Client(create_app(SECRET, emit=recorder, max_body_bytes=4096, dedupe_size=50)), recorder


def check_answer(client: Client, recorder: Recorder, response: httpx.Response) -> None:
    assert response.status_code in (200, 400, 413), response.text
    assert client.get("/healthz").status_code == 200
    for event in recorder.events:  # what Prefect's Event model requires, and JSON-safe payloads
        labels = [event.resource, *event.related]
        assert all(isinstance(k, str) and isinstance(v, str) and v for label in labels for k, v in label.items())
        json.dumps(event.payload, allow_nan=False)
    recorder.events.clear()


CONTENT_TYPES = st.sampled_from(
    ["application/json", "application/cloudevents+json", "application/cloudevents-batch+json", "text/plain", ""]
)
PATHS = st.sampled_from(["/eventgrid", "/acr/myregistry", "/acr/a-b", "/acr/%00"])
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4),
    max_leaves=20,
)
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@FUZZ
@given(body=st.binary(max_size=5000), path=PATHS, content_type=CONTENT_TYPES)
def test_arbitrary_bytes_never_break_the_server(
    fuzz_target: tuple[Client, Recorder], body: bytes, path: str, content_type: str
) -> None:
    client, recorder = fuzz_target
    with errors_logged() as errors:
        check_answer(client, recorder, post(client, path, body, content_type=content_type))
    assert errors == []


@FUZZ
@given(doc=JSON_VALUES, path=PATHS, content_type=CONTENT_TYPES)
def test_arbitrary_json_never_breaks_the_server(
    fuzz_target: tuple[Client, Recorder], doc: Any, path: str, content_type: str
) -> None:
    client, recorder = fuzz_target
    with errors_logged() as errors:
        check_answer(client, recorder, post(client, path, doc, content_type=content_type))
    assert errors == []


MUTABLE_FIELDS = [
    "id",
    "eventType",
    "type",
    "topic",
    "source",
    "eventTime",
    "time",
    "data",
    "data.url",
    "data.contentLength",
    "data.target",
    "target.repository",
    "target.tag",
    "target.digest",
    "request.host",
    "action",
    "specversion",
]
ODD_TEXT = st.text(alphabet="aZ09-_./:@?%#[] \x00é", max_size=40)


def _mutations(draw: st.DrawFn) -> Any:
    """A real delivery with fields replaced by odd values: reaches the validation deep inside."""
    bases = [
        [eventgrid_blob("https://acct.blob.core.windows.net/c1x/b")],
        [eventgrid_push()],
        cloudevent(eventgrid_blob("https://127.0.0.1:1/acct/c1x/b")),
        webhook_push(),
    ]
    doc = copy.deepcopy(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        node: Any = doc[0] if isinstance(doc, list) else doc
        path = draw(st.sampled_from(MUTABLE_FIELDS)).split(".")
        if path[0] in ("target", "request") and "data" in node:
            node = node["data"]  # in Event Grid deliveries the webhook body sits under data
        for key in path[:-1]:
            node = node.get(key) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node[path[-1]] = draw(JSON_VALUES | ODD_TEXT)
    return doc


@FUZZ
@given(doc=st.composite(_mutations)(), path=PATHS)
def test_mutated_deliveries_never_break_the_server(fuzz_target: tuple[Client, Recorder], doc: Any, path: str) -> None:
    client, recorder = fuzz_target
    content_type = (
        "application/cloudevents+json" if isinstance(doc, dict) and "specversion" in doc else "application/json"
    )
    with errors_logged() as errors:
        check_answer(
            client, recorder, post(client, path if "action" in doc else "/eventgrid", doc, content_type=content_type)
        )
    assert errors == []
