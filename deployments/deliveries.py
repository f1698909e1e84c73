"""Azure deliveries read into Prefect events: pure parsing of the bodies, no HTTP, no Prefect, no I/O.

Three wire formats arrive (``deployments/events.py`` says which endpoint takes which):

- **Event Grid schema**: a JSON array of ``{id, topic, subject, eventType, eventTime, data, dataVersion}``.
  A ``Microsoft.EventGrid.SubscriptionValidationEvent`` in it is the subscription handshake: its
  ``data.validationCode`` is what :func:`read_eventgrid` returns in :attr:`Batch.validation_code`.
- **CloudEvents 1.0** (``specversion: "1.0"``, ``type``, ``source``, ``id``, ``time``, ``data``):
  ``application/cloudevents+json`` carries one event object, ``application/cloudevents-batch+json`` an array.
- **A native ACR webhook** body (``{id, timestamp, action, target, request}``); only ``action: push`` makes
  an event, every other action is counted as ignored (:func:`read_acr_webhook`).

Handled Azure event types are ``Microsoft.Storage.BlobCreated`` and ``Microsoft.ContainerRegistry.ImagePushed``
(:class:`AzureEventType`); others are counted as ignored. Every event of a body is validated before any is
handed on, so one bad event refuses the whole body with a :class:`DeliveryError` saying what was wrong.

**Prefect events and resource ids** (names from :mod:`acr_transfer.events`, the one list of every event
and resource id acr-transfer names; triggers in prefect.yaml match these exactly; names lower-cased). Each
Prefect event id is ``uuid5(EVENT_ID_NAMESPACE, <delivery id>)``, so a re-sent delivery keeps its id:

- ``acr.transfer.blob.created`` (from ``data.url``: ``https://<account>.blob.core.windows.net/<container>/<blob>``,
  or path-style ``https://127.0.0.1:<port>/<account>/<container>/<blob>`` when the host is an IP or localhost)

  - resource ``acr.transfer.container.<account>.<container>`` (name ``<account>/<container>``, labels
    ``acr.transfer.account`` and ``acr.transfer.container``)
  - related ``acr.transfer.blob.<account>.<container>.<blob>``, role ``blob``
  - payload ``blob`` (path within the container), ``url`` (query string removed: a SAS never reaches
    Prefect), ``content_length``, ``content_type``, ``delivery_id``

- ``acr.transfer.image.pushed`` (Event Grid/CloudEvents ImagePushed: registry = last segment of the topic or
  source, an ARM id; or an ACR webhook ``push``, registry = the ``/acr/{registry}`` path; either falls back
  to the first label of ``request.host`` when that is not a plain 5-50 character name)

  - resource ``acr.transfer.registry.<registry>`` (name ``<registry>``)
  - related ``acr.transfer.repository.<registry>.<repository>``, role ``repository``
  - payload ``registry``, ``repository``, ``tag``, ``digest``, ``artifact`` (``repo:tag``, or ``repo@digest``
    when pushed by digest), ``delivery_id``

**When it happened.** An event's ``occurred`` is the sender's time (``eventTime``, CloudEvents ``time``, the
webhook's ``timestamp``), unless that lies more than :data:`MAX_CLOCK_SKEW` after ``received``, the time the
receiver took the body: then ``occurred`` is ``received`` and the payload keeps the sender's time as
``sender_time``. A sender whose clock runs ahead would otherwise date an event in the future, where Prefect's
event feed does not show it yet and a trigger's ``within`` window, opened by it, absorbs the next real
events. An unreadable or absent time leaves ``occurred`` to Prefect (when it takes the event).

A trigger on new blobs in one container, for example::

    match: {prefect.resource.id: "acr.transfer.container.targetstorage.transfer"}
    expect: [acr.transfer.blob.created]
    parameters: {blob: "{{ event.payload.blob }}"}
"""

from __future__ import annotations

import ipaddress
import json
import re
import uuid
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any
from urllib.parse import unquote, urlsplit

from acr_transfer.events import (
    EventName,
    Label,
    blob_resource_id,
    container_resource_id,
    registry_resource_id,
    repository_resource_id,
)
from acr_transfer.refs import ACR_NAME, ANY_DIGEST, ArtifactRef, is_repository, is_tag


class AzureEventType(StrEnum):
    """The Event Grid / CloudEvents ``eventType`` / ``type`` values this receiver acts on."""

    SUBSCRIPTION_VALIDATION = "Microsoft.EventGrid.SubscriptionValidationEvent"
    BLOB_CREATED = "Microsoft.Storage.BlobCreated"
    IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"


class WebhookAction(StrEnum):
    """A native ACR webhook's ``action``; only ``push`` makes an event, the others are acknowledged."""

    PUSH = "push"
    DELETE = "delete"
    QUARANTINE = "quarantine"
    CHART_PUSH = "chart_push"
    CHART_DELETE = "chart_delete"


EVENT_ID_NAMESPACE = uuid.UUID("17f4c49d-c58e-40c0-b6ac-1337bf88465b")
MAX_CLOCK_SKEW = timedelta(seconds=5)
"""How far a sender's time may lie after the receive time before the receive time dates the event instead."""

_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"\$root|\$web|\$logs|[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ReceivedEvent:
    """One Prefect event made from one Azure delivery; ``id`` is ``uuid5(EVENT_ID_NAMESPACE, delivery id)``."""

    event: str
    resource: dict[str, str]
    related: list[dict[str, str]]
    payload: dict[str, Any]
    id: str
    occurred: datetime | None


class DeliveryError(ValueError):
    """The body is not a delivery this receiver understands; the message says what was wrong (answered 400)."""


@dataclass
class Batch:
    """What one body holds: the handshake answer, or events to emit and a count of others."""

    validation_code: str | None = None
    events: list[ReceivedEvent] = field(default_factory=list)
    ignored: int = 0


# --- fields ------------------------------------------------------------------------------------------------


def _field(obj: dict[str, Any], key: str, where: str, *, required: bool = True, max_len: int = 1024) -> str | None:
    value = obj.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise DeliveryError(f"{where}.{key} must be a non-empty string")
    if len(value) > max_len or _CONTROL.search(value):
        raise DeliveryError(f"{where}.{key} is longer than {max_len} characters or holds control characters")
    return value


def _object(obj: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise DeliveryError(f"{where}.{key} must be a JSON object")
    return value


def _parse_time(value: Any) -> datetime | None:
    """Azure times carry up to 9 fractional digits; anything unreadable leaves ``occurred`` to Prefect (now)."""
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        return parsed.astimezone(UTC) if parsed.tzinfo else parsed.replace(tzinfo=UTC)
    except (ValueError, OverflowError):
        return None


def _dated(event: ReceivedEvent, received: datetime) -> ReceivedEvent:
    """``event`` dated on the receiver's clock when the sender's lies ahead of it (see "When it happened")."""
    if event.occurred is None or event.occurred <= received + MAX_CLOCK_SKEW:
        return event
    payload = {**event.payload, "sender_time": event.occurred.isoformat()}
    return replace(event, occurred=received, payload=payload)


def _event_id(delivery_id: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, delivery_id))


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DeliveryError(f"the body is not JSON: {type(exc).__name__}") from None


# --- BlobCreated -------------------------------------------------------------------------------------------


def parse_blob_url(url: str) -> tuple[str, str, str, str]:
    """``(account, container, blob, url without query)`` of a blob URL, host-style (Azure) or path-style
    (an IP or localhost host, as Azurite serves). Account and container are lower-cased.

    Raises:
        DeliveryError: the URL is not a blob URL.
    """
    wrong = DeliveryError(
        "data.url is not a blob URL: expected https://<account>.blob.core.windows.net/<container>/<blob>"
        " or path-style https://<ip or localhost>:<port>/<account>/<container>/<blob>"
    )
    try:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port
    except ValueError:
        raise wrong from None
    if parts.scheme not in ("http", "https") or not host:
        raise wrong
    try:
        ipaddress.ip_address(host)
        path_style = True
    except ValueError:
        path_style = host == "localhost"
    segments = parts.path.lstrip("/").split("/")
    if path_style:
        account, segments = unquote(segments[0]).lower(), segments[1:]
    else:
        account = host.split(".")[0]
    if len(segments) < 2:
        raise wrong
    container, blob = unquote(segments[0]).lower(), unquote("/".join(segments[1:]))
    if not _ACCOUNT.fullmatch(account) or not _CONTAINER.fullmatch(container) or not blob:
        raise wrong
    if len(blob) > 1024 or _CONTROL.search(blob):
        raise DeliveryError("the blob name in data.url is longer than 1024 characters or holds control characters")
    netloc = f"[{host}]" if ":" in host else host  # no user:password@ either: only host and port travel on
    clean = f"{parts.scheme}://{netloc}{f':{port}' if port is not None else ''}{parts.path}"
    return account, container, blob, clean


def blob_created(delivery_id: str, data: dict[str, Any], occurred: datetime | None) -> ReceivedEvent:
    """The ``acr.transfer.blob.created`` event for a BlobCreated delivery's ``data``.

    Raises:
        DeliveryError: ``data.url`` is not a blob URL, or ``contentLength`` / ``contentType`` are malformed.
    """
    account, container, blob, url = parse_blob_url(_field(data, "url", "data", max_len=4096) or "")
    length = data.get("contentLength")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or not 0 <= length < 2**63):
        raise DeliveryError("data.contentLength must be a non-negative integer")
    content_type = data.get("contentType")
    if content_type is not None:
        content_type = _field(data, "contentType", "data", max_len=256)
    return ReceivedEvent(
        event=EventName.BLOB_CREATED,
        resource={
            "prefect.resource.id": container_resource_id(account, container),
            "prefect.resource.name": f"{account}/{container}",
            Label.ACCOUNT: account,
            Label.CONTAINER: container,
        },
        related=[{"prefect.resource.id": blob_resource_id(account, container, blob), "prefect.resource.role": "blob"}],
        payload={
            "blob": blob,
            "url": url,
            "content_length": length,
            "content_type": content_type,
            "delivery_id": delivery_id,
        },
        id=_event_id(delivery_id),
        occurred=occurred,
    )


# --- ImagePushed -------------------------------------------------------------------------------------------


def _registry_name(candidate: str, data: dict[str, Any]) -> str:
    if ACR_NAME.fullmatch(candidate):
        return candidate.lower()
    request = data.get("request")
    host = request.get("host") if isinstance(request, dict) else None
    first_label = host.split(".")[0] if isinstance(host, str) else ""
    if ACR_NAME.fullmatch(first_label):
        return first_label.lower()
    raise DeliveryError(
        "no registry name: expected a 5-50 character alphanumeric name (the topic/source ARM id's last segment,"
        " the /acr/{registry} path) or request.host <registry>.azurecr.io"
    )


def _pushed_target(target: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """``(repository, tag, digest)`` of an ImagePushed ``target``, each checked against the reference grammar."""
    repository = _field(target, "repository", "target", max_len=256) or ""
    tag = _field(target, "tag", "target", required=False, max_len=128)
    digest = _field(target, "digest", "target", required=False, max_len=256)
    if not is_repository(repository):
        raise DeliveryError("target.repository is not a repository name (lowercase path components)")
    if tag is not None and not is_tag(tag):
        raise DeliveryError("target.tag is not a tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
    if digest is not None and not ANY_DIGEST.fullmatch(digest):
        raise DeliveryError("target.digest is not a sha256:/sha512: digest")
    if tag is None and digest is None:
        raise DeliveryError("target has neither a tag nor a digest")
    return repository, tag, digest


def image_pushed(
    delivery_id: str, registry_hint: str, data: dict[str, Any], occurred: datetime | None
) -> ReceivedEvent:
    """The ``acr.transfer.image.pushed`` event for an ImagePushed ``data`` or an ACR webhook ``push`` body.

    Raises:
        DeliveryError: no registry name, or ``target`` lacks a valid repository and tag or digest.
    """
    registry = _registry_name(registry_hint, data)
    repository, tag, digest = _pushed_target(_object(data, "target", "data"))
    # a reference holds a tag or a digest, never both: by tag when the push named one (what triggers filter
    # on), else by digest; the payload still carries both as Azure reported them
    artifact = ArtifactRef(repository, tag=tag) if tag is not None else ArtifactRef(repository, digest=digest)
    return ReceivedEvent(
        event=EventName.IMAGE_PUSHED,
        resource={"prefect.resource.id": registry_resource_id(registry), "prefect.resource.name": registry},
        related=[
            {"prefect.resource.id": repository_resource_id(registry, repository), "prefect.resource.role": "repository"}
        ],
        payload={
            "registry": registry,
            "repository": repository,
            "tag": tag,
            "digest": digest,
            "artifact": str(artifact),
            "delivery_id": delivery_id,
        },
        id=_event_id(delivery_id),
        occurred=occurred,
    )


# --- bodies ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Envelope:
    """The attributes of one event that both schemas carry, under either schema's names."""

    kind: str
    delivery_id: str
    source: Any
    occurred: datetime | None
    cloud: bool


def _envelope(item: Any, where: str) -> _Envelope:
    # Not azure.core.messaging.CloudEvent.from_dict: it invents a random id when ``id`` is missing (so a
    # retried delivery would be emitted again), accepts specversion 0.3, requires ``source`` (we fall back
    # to request.host), raises on an unreadable ``time`` (we leave it to Prefect), caps no lengths and lets
    # TypeErrors through for odd values; our messages name the field that was wrong.
    if not isinstance(item, dict):
        raise DeliveryError(f"{where} must be a JSON object")
    cloud = "specversion" in item
    if cloud and item.get("specversion") != "1.0":
        raise DeliveryError(f"{where}.specversion must be '1.0'")
    kind = _field(item, "type" if cloud else "eventType", where, max_len=256) or ""
    delivery_id = _field(item, "id", where, max_len=256) or ""
    source = item.get("source" if cloud else "topic")
    return _Envelope(kind, delivery_id, source, _parse_time(item.get("time" if cloud else "eventTime")), cloud)


def _event_items(doc: Any, content_type: str) -> list[Any]:
    media = content_type.split(";")[0].strip().lower()
    if media == "application/cloudevents+json" and not isinstance(doc, dict):
        raise DeliveryError("a application/cloudevents+json body must be one JSON object")
    if media == "application/cloudevents-batch+json" and not isinstance(doc, list):
        raise DeliveryError("a application/cloudevents-batch+json body must be a JSON array")
    items = [doc] if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise DeliveryError("the body must be a JSON array of events (or one CloudEvent object)")
    return items


def read_eventgrid(body: bytes, content_type: str, *, received: datetime) -> Batch:
    """Every event of an Event Grid or CloudEvents delivery, validated before any is emitted.

    Args:
        body: the request body.
        content_type: the request's ``Content-Type`` (the CloudEvents media types promise a shape).
        received: when the receiver took the body (timezone-aware); dates events the sender dated later.

    Raises:
        DeliveryError: the body is not JSON, or not the shape its content type promises.
    """
    batch = Batch()
    for index, item in enumerate(_event_items(_load_json(body), content_type)):
        where = f"event[{index}]"
        env = _envelope(item, where)
        if env.kind == AzureEventType.SUBSCRIPTION_VALIDATION and not env.cloud:
            batch.validation_code = _field(_object(item, "data", where), "validationCode", f"{where}.data")
            return batch
        if env.kind == AzureEventType.BLOB_CREATED:
            event = blob_created(env.delivery_id, _object(item, "data", where), env.occurred)
        elif env.kind == AzureEventType.IMAGE_PUSHED:
            hint = env.source.rstrip("/").rsplit("/", 1)[-1] if isinstance(env.source, str) else ""
            event = image_pushed(env.delivery_id, hint, _object(item, "data", where), env.occurred)
        else:
            batch.ignored += 1
            continue
        batch.events.append(_dated(event, received))
    return batch


def read_acr_webhook(body: bytes, registry_hint: str, *, received: datetime) -> Batch:
    """The event of a native ACR webhook body (``registry_hint``: the ``/acr/{registry}`` path segment).

    ``received`` is when the receiver took the body (timezone-aware), as for :func:`read_eventgrid`.

    Raises:
        DeliveryError: the body is not JSON, not an object, or a ``push`` without a valid target.
    """
    doc = _load_json(body)
    if not isinstance(doc, dict):
        raise DeliveryError("an ACR webhook body must be a JSON object")
    if _field(doc, "action", "body", max_len=64) != WebhookAction.PUSH:
        return Batch(ignored=1)
    delivery_id = _field(doc, "id", "body", max_len=256) or ""
    event = image_pushed(delivery_id, registry_hint, doc, _parse_time(doc.get("timestamp")))
    return Batch(events=[_dated(event, received)])
