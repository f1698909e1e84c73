"""Delivery parsing (deployments/deliveries.py) on its own: bodies in, ``Batch`` out, no app, no Prefect.
The HTTP side and most shapes are in test_events_receiver.py; these are the paths it does not reach."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from acr_transfer import events
from acr_transfer.events import EventName
from deployments.deliveries import MAX_CLOCK_SKEW, AzureEventType, DeliveryError, read_acr_webhook, read_eventgrid

SHA512 = "sha512:" + "c" * 128


def push(target: dict[str, Any], **body: Any) -> bytes:
    return json.dumps({"id": "d1", "action": "push", "target": target, **body}).encode()


def blob(data: dict[str, Any], **event: Any) -> bytes:
    base = {"id": "b1", "eventType": "Microsoft.Storage.BlobCreated", "data": data}
    return json.dumps([{**base, **event}]).encode()


URL = "https://acct.blob.core.windows.net/c1x/b"


NOW = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_names_are_the_strings_triggers_match() -> None:
    assert [str(name) for name in EventName] == [
        "acr.transfer.blob.created",
        "acr.transfer.image.pushed",
        "acr.transfer.exported",
        "acr.transfer.imported",
        "acr.transfer.failed",
    ]
    assert str(AzureEventType.IMAGE_PUSHED) == "Microsoft.ContainerRegistry.ImagePushed"


def test_every_resource_id_we_name_has_the_one_prefix() -> None:
    assert [
        events.container_resource_id("acct", "c1x"),
        events.blob_resource_id("acct", "c1x", "demo/b.tar"),
        events.registry_resource_id("sourceregistry"),
        events.repository_resource_id("sourceregistry", "demo/app"),
        events.transfer_resource_id("t1"),
    ] == [
        "acr.transfer.container.acct.c1x",
        "acr.transfer.blob.acct.c1x.demo/b.tar",
        "acr.transfer.registry.sourceregistry",
        "acr.transfer.repository.sourceregistry.demo/app",
        "acr.transfer.transfer.t1",
    ]
    assert [str(label) for label in events.Label] == [
        "acr.transfer.account",
        "acr.transfer.container",
        "acr.transfer.route",
    ]


def test_a_webhook_push_by_sha512_digest_names_the_artifact_by_digest() -> None:
    batch = read_acr_webhook(push({"repository": "team/app", "digest": SHA512}), "myregistry", received=NOW)
    [event] = batch.events
    assert event.payload["artifact"] == f"team/app@{SHA512}" and event.payload["tag"] is None
    assert event.occurred is None  # no timestamp: Prefect stamps it


def test_a_webhook_action_other_than_push_is_only_counted() -> None:
    assert read_acr_webhook(json.dumps({"action": "delete"}).encode(), "myregistry", received=NOW).ignored == 1


@pytest.mark.parametrize(
    ("body", "hint", "says"),
    [
        (b"[]", "myregistry", "must be a JSON object"),
        (push({"repository": "a" * 257, "tag": "v1"}), "myregistry", "target.repository is longer than 256"),
        (push({"repository": "app", "tag": "v1"}, request={"host": "127.0.0.1"}), "x", "no registry name"),
    ],
)
def test_webhook_bodies_that_are_refused(body: bytes, hint: str, says: str) -> None:
    with pytest.raises(DeliveryError, match=says):
        read_acr_webhook(body, hint, received=NOW)


@pytest.mark.parametrize(
    ("time", "expected"),
    [
        ("2024-05-01T10:00:00", "2024-05-01T10:00:00+00:00"),  # no zone: taken as UTC
        ("2024-05-01T12:00:00+02:00", "2024-05-01T10:00:00+00:00"),
        ("yesterday", None),  # unreadable: left to Prefect, not refused
        ("2" * 100, None),
    ],
)
def test_event_times(time: str, expected: str | None) -> None:
    """Times in the past are the sender's, whatever their notation."""
    [event] = read_eventgrid(blob({"url": URL}, eventTime=time), "application/json", received=NOW).events
    assert (event.occurred.isoformat() if event.occurred else None) == expected
    assert event.occurred is None or event.occurred.tzinfo is UTC


@pytest.mark.parametrize(
    ("ahead", "occurred"),
    [
        (MAX_CLOCK_SKEW, "2026-03-01T12:00:05+00:00"),  # within the skew: the sender's time
        (MAX_CLOCK_SKEW + timedelta(microseconds=1), "2026-03-01T12:00:00+00:00"),  # beyond it: the receive time
    ],
)
def test_a_sender_ahead_of_the_receiver_by_more_than_the_skew_is_not_believed(ahead: timedelta, occurred: str) -> None:
    sent = NOW + ahead
    [event] = read_eventgrid(blob({"url": URL}, eventTime=sent.isoformat()), "application/json", received=NOW).events
    assert event.occurred is not None and event.occurred.isoformat() == occurred
    assert event.payload.get("sender_time") == (sent.isoformat() if ahead > MAX_CLOCK_SKEW else None)


@pytest.mark.parametrize(
    ("data", "says"),
    [
        ({"url": URL, "contentLength": -1}, "data.contentLength"),
        ({"url": URL, "contentLength": True}, "data.contentLength"),
        ({"url": URL, "contentType": "x" * 257}, "data.contentType"),
        ({"url": URL + "%0A"}, "blob name in data.url"),
    ],
)
def test_blob_fields_that_are_refused(data: dict[str, Any], says: str) -> None:
    with pytest.raises(DeliveryError, match=says):
        read_eventgrid(blob(data), "application/json", received=NOW)


def test_a_cloudevent_needs_its_own_id() -> None:
    """Unlike azure.core's CloudEvent.from_dict, no id is invented: a retry must keep its id to be deduped."""
    body = json.dumps({"specversion": "1.0", "type": "Microsoft.Storage.BlobCreated", "data": {"url": URL}})
    with pytest.raises(DeliveryError, match=r"event\[0\]\.id must be a non-empty string"):
        read_eventgrid(body.encode(), "application/cloudevents+json", received=NOW)


def test_a_validation_event_as_a_cloudevent_is_no_handshake() -> None:
    """CloudEvents subscriptions validate with the OPTIONS handshake; a validation event in the body is ignored."""
    body = {"specversion": "1.0", "type": "Microsoft.EventGrid.SubscriptionValidationEvent", "id": "v1", "data": {}}
    batch = read_eventgrid(json.dumps(body).encode(), "application/cloudevents+json", received=NOW)
    assert batch.validation_code is None and batch.ignored == 1


def test_the_validation_event_ends_the_batch() -> None:
    validation = {
        "id": "v",
        "eventType": "Microsoft.EventGrid.SubscriptionValidationEvent",
        "data": {"validationCode": "code-1"},
    }
    body = json.dumps([validation, {"id": "late", "eventType": "x", "data": []}]).encode()
    batch = read_eventgrid(body, "application/json", received=NOW)
    assert batch.validation_code == "code-1" and batch.ignored == 0
