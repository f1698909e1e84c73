"""The event receiver: Azure deliveries in, Prefect events out, for deployment triggers to match.

An ASGI app (starlette) with three endpoints:

==========================  ==========================================================================
``POST /eventgrid``         Azure Event Grid deliveries, in the Event Grid schema (a JSON array of
                            ``{id, topic, subject, eventType, eventTime, data, dataVersion}``) or as
                            CloudEvents 1.0 (``application/cloudevents+json``: one event;
                            ``application/cloudevents-batch+json``: an array). Answers the Event Grid
                            ``SubscriptionValidationEvent`` handshake with ``{"validationResponse": code}``.
``OPTIONS /eventgrid``      the CloudEvents abuse-protection handshake: echoes ``WebHook-Request-Origin``
                            as ``WebHook-Allowed-Origin`` with ``WebHook-Allowed-Rate: *``.
``POST /acr/{registry}``    a native ACR webhook; ``{registry}`` is the registry the webhook belongs to
                            (when it is not a plain 5-50 character name, the first label of
                            ``request.host`` is used). Only ``push`` is handled; other actions get 200.
``GET /healthz``            200, no key.
==========================  ==========================================================================

Handled event types are ``Microsoft.Storage.BlobCreated`` and ``Microsoft.ContainerRegistry.ImagePushed``;
other types are acknowledged (200), ignored and counted in ``app.state.counters``.

**The key.** Every request to ``/eventgrid`` and ``/acr/…`` carries the shared secret (``serve`` reads it
from ``ACR_TRANSFER_EVENTS_SECRET``) in the ``code`` query parameter or the ``x-events-key`` header.
Without it the answer is 401 before the body is read. The secret is never logged or echoed: request lines
are logged without their query string, and ``serve`` turns uvicorn's access log off (it prints the query).

**Answers.** 200: handled, duplicate or ignored · 400: not JSON or not a delivery this receiver
understands (the message says what; Event Grid does not retry it) · 401: no or wrong key · 413: body over
``max_body_bytes`` · 503: Prefect did not take the event (Event Grid retries). A delivery id seen among
the last ``dedupe_size`` ids is acknowledged and not emitted again; each Prefect event id is
``uuid5(EVENT_ID_NAMESPACE, <delivery id>)``, so re-sending a delivery also re-uses its Prefect event id.

**Prefect events and resource ids** (triggers in prefect.yaml match these exactly; names lower-cased):

- ``acr-transfer.blob.created`` (from ``data.url``: ``https://<account>.blob.core.windows.net/<container>/<blob>``,
  or path-style ``https://127.0.0.1:<port>/<account>/<container>/<blob>`` when the host is an IP or localhost)

  - resource ``acr-transfer.container.<account>.<container>`` (name ``<account>/<container>``, labels
    ``acr-transfer.account`` and ``acr-transfer.container``)
  - related ``acr-transfer.blob.<account>.<container>.<blob>``, role ``blob``
  - payload ``blob`` (path within the container), ``url`` (query string removed: a SAS never reaches
    Prefect), ``content_length``, ``content_type``, ``delivery_id``

- ``acr-transfer.image.pushed`` (Event Grid/CloudEvents ImagePushed: registry = last segment of the topic or
  source, an ARM id; or an ACR webhook ``push``)

  - resource ``acr-transfer.registry.<registry>`` (name ``<registry>``)
  - related ``acr-transfer.repository.<registry>.<repository>``, role ``repository``
  - payload ``registry``, ``repository``, ``tag``, ``digest``, ``artifact`` (``repo:tag``, or ``repo@digest``
    when pushed by digest), ``delivery_id``

A trigger on new blobs in one container, for example::

    match: {prefect.resource.id: "acr-transfer.container.targetstorage.transfer"}
    expect: [acr-transfer.blob.created]
    parameters: {blob: "{{ event.payload.blob }}"}

**Pointing Azure at it.** Event Grid delivers only to HTTPS: run ``serve`` behind a TLS-terminating proxy
or ingress, then::

    az eventgrid event-subscription create --name acr-transfer --source-resource-id <storage account id> \\
        --included-event-types Microsoft.Storage.BlobCreated \\
        --endpoint "https://events.example.com/eventgrid?code=$ACR_TRANSFER_EVENTS_SECRET"
    # add --event-delivery-schema cloudeventschemav1_0 for CloudEvents; for pushes use the registry's id as the
    # source and --included-event-types Microsoft.ContainerRegistry.ImagePushed
    az acr webhook create --registry myregistry --name acrtransfer --actions push \\
        --uri "https://events.example.com/acr/myregistry?code=$ACR_TRANSFER_EVENTS_SECRET"

The subscription validates itself against the receiver (the handshake needs the key too, which the URL
carries). An Event Grid static delivery attribute (marked secret) could send the key as the ``x-events-key``
header instead; whether Azure adds it to the validation request was not checked, ``?code=`` is the known way.
``python -m deployments.events --host 127.0.0.1 --port 8080`` runs the receiver directly.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import ipaddress
import json
import logging
import os
import re
import signal
import sys
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote, urlsplit

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from acr_transfer.errors import ConfigError, redact

log = logging.getLogger("acr_transfer.events")

SECRET_ENV = "ACR_TRANSFER_EVENTS_SECRET"
MIN_SECRET_CHARS = 16
BLOB_CREATED = "acr-transfer.blob.created"
IMAGE_PUSHED = "acr-transfer.image.pushed"
EVENT_ID_NAMESPACE = uuid.UUID("17f4c49d-c58e-40c0-b6ac-1337bf88465b")
VALIDATION_EVENT = "Microsoft.EventGrid.SubscriptionValidationEvent"
AZURE_BLOB_CREATED = "Microsoft.Storage.BlobCreated"
AZURE_IMAGE_PUSHED = "Microsoft.ContainerRegistry.ImagePushed"

_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_CONTAINER = re.compile(r"\$root|\$web|\$logs|[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")
_REGISTRY = re.compile(r"[A-Za-z0-9]{5,50}")
_REPO_PART = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
_REPOSITORY = re.compile(rf"{_REPO_PART}(?:/{_REPO_PART})*")
_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128}")
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


class EmitError(RuntimeError):
    """Prefect did not take an event (answered 503, so Event Grid delivers it again)."""


def emit_to_prefect(e: ReceivedEvent) -> None:
    """Hand ``e`` to Prefect's events client (``prefect.events.emit_event``) with its stable id.

    ``emit_event`` queues the event for a background worker and returns; it reports failure only by
    returning None (events off for this API, or the event could not be built).

    Raises:
        EmitError: Prefect did not queue the event.
    """
    from prefect.events import emit_event

    sent = emit_event(
        event=e.event,
        resource=e.resource,
        related=e.related,
        payload=e.payload,
        id=uuid.UUID(e.id),
        occurred=e.occurred,
    )
    if sent is None:
        raise EmitError(
            f"Prefect did not queue event {e.event} ({e.id}): events are off for this Prefect API or the event"
            " was refused; see the prefect.events log"
        )


# --- reading deliveries ------------------------------------------------------------------------------------


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


def _event_id(delivery_id: str) -> str:
    return str(uuid.uuid5(EVENT_ID_NAMESPACE, delivery_id))


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
    """The ``acr-transfer.blob.created`` event for a BlobCreated delivery's ``data``."""
    account, container, blob, url = parse_blob_url(_field(data, "url", "data", max_len=4096) or "")
    length = data.get("contentLength")
    if length is not None and (not isinstance(length, int) or isinstance(length, bool) or not 0 <= length < 2**63):
        raise DeliveryError("data.contentLength must be a non-negative integer")
    content_type = data.get("contentType")
    if content_type is not None:
        content_type = _field(data, "contentType", "data", max_len=256)
    return ReceivedEvent(
        event=BLOB_CREATED,
        resource={
            "prefect.resource.id": f"acr-transfer.container.{account}.{container}",
            "prefect.resource.name": f"{account}/{container}",
            "acr-transfer.account": account,
            "acr-transfer.container": container,
        },
        related=[
            {"prefect.resource.id": f"acr-transfer.blob.{account}.{container}.{blob}", "prefect.resource.role": "blob"}
        ],
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


def _registry_name(candidate: str, data: dict[str, Any]) -> str:
    if _REGISTRY.fullmatch(candidate):
        return candidate.lower()
    request = data.get("request")
    host = request.get("host") if isinstance(request, dict) else None
    first_label = host.split(".")[0] if isinstance(host, str) else ""
    if _REGISTRY.fullmatch(first_label):
        return first_label.lower()
    raise DeliveryError(
        "no registry name: expected a 5-50 character alphanumeric name (the topic/source ARM id's last segment,"
        " the /acr/{registry} path) or request.host <registry>.azurecr.io"
    )


def image_pushed(
    delivery_id: str, registry_hint: str, data: dict[str, Any], occurred: datetime | None
) -> ReceivedEvent:
    """The ``acr-transfer.image.pushed`` event for an ImagePushed ``data`` or an ACR webhook ``push`` body."""
    registry = _registry_name(registry_hint, data)
    target = _object(data, "target", "data")
    repository = _field(target, "repository", "target", max_len=256) or ""
    tag = _field(target, "tag", "target", required=False, max_len=128)
    digest = _field(target, "digest", "target", required=False, max_len=256)
    if not _REPOSITORY.fullmatch(repository):
        raise DeliveryError("target.repository is not a repository name (lowercase path components)")
    if tag is not None and not _TAG.fullmatch(tag):
        raise DeliveryError("target.tag is not a tag ([A-Za-z0-9_][A-Za-z0-9._-]{0,127})")
    if digest is not None and not _DIGEST.fullmatch(digest):
        raise DeliveryError("target.digest is not a sha256:/sha512: digest")
    if tag is None and digest is None:
        raise DeliveryError("target has neither a tag nor a digest")
    return ReceivedEvent(
        event=IMAGE_PUSHED,
        resource={"prefect.resource.id": f"acr-transfer.registry.{registry}", "prefect.resource.name": registry},
        related=[
            {
                "prefect.resource.id": f"acr-transfer.repository.{registry}.{repository}",
                "prefect.resource.role": "repository",
            }
        ],
        payload={
            "registry": registry,
            "repository": repository,
            "tag": tag,
            "digest": digest,
            "artifact": f"{repository}:{tag}" if tag is not None else f"{repository}@{digest}",
            "delivery_id": delivery_id,
        },
        id=_event_id(delivery_id),
        occurred=occurred,
    )


def _load_json(body: bytes) -> Any:
    try:
        return json.loads(body)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise DeliveryError(f"the body is not JSON: {type(exc).__name__}") from None


@dataclass
class Batch:
    """What one ``/eventgrid`` body holds: the handshake answer, or events to emit and a count of others."""

    validation_code: str | None = None
    events: list[ReceivedEvent] = field(default_factory=list)
    ignored: int = 0


def read_eventgrid(body: bytes, content_type: str) -> Batch:
    """Every event of an Event Grid or CloudEvents delivery, validated before any is emitted.

    Raises:
        DeliveryError: the body is not JSON, or not the shape its content type promises.
    """
    doc = _load_json(body)
    media = content_type.split(";")[0].strip().lower()
    if media == "application/cloudevents+json" and not isinstance(doc, dict):
        raise DeliveryError("a application/cloudevents+json body must be one JSON object")
    if media == "application/cloudevents-batch+json" and not isinstance(doc, list):
        raise DeliveryError("a application/cloudevents-batch+json body must be a JSON array")
    items = [doc] if isinstance(doc, dict) else doc
    if not isinstance(items, list):
        raise DeliveryError("the body must be a JSON array of events (or one CloudEvent object)")
    batch = Batch()
    for index, item in enumerate(items):
        where = f"event[{index}]"
        if not isinstance(item, dict):
            raise DeliveryError(f"{where} must be a JSON object")
        cloud = "specversion" in item
        if cloud and item.get("specversion") != "1.0":
            raise DeliveryError(f"{where}.specversion must be '1.0'")
        kind = _field(item, "type" if cloud else "eventType", where, max_len=256)
        delivery_id = _field(item, "id", where, max_len=256) or ""
        source = item.get("source" if cloud else "topic")
        occurred = _parse_time(item.get("time" if cloud else "eventTime"))
        if kind == VALIDATION_EVENT and not cloud:
            batch.validation_code = _field(_object(item, "data", where), "validationCode", f"{where}.data")
            return batch
        if kind == AZURE_BLOB_CREATED:
            batch.events.append(blob_created(delivery_id, _object(item, "data", where), occurred))
        elif kind == AZURE_IMAGE_PUSHED:
            hint = source.rstrip("/").rsplit("/", 1)[-1] if isinstance(source, str) else ""
            batch.events.append(image_pushed(delivery_id, hint, _object(item, "data", where), occurred))
        else:
            batch.ignored += 1
    return batch


# --- the app -----------------------------------------------------------------------------------------------


class _Receiver:
    """State and endpoints of one app: the key, the body limit, the de-duplication LRU, counters."""

    def __init__(self, secret: str, max_body_bytes: int, dedupe_size: int, emit: Callable[[ReceivedEvent], None]):
        self._secret = secret
        self._key_digest = hashlib.sha256(secret.encode()).digest()
        self.max_body_bytes = max_body_bytes
        self.dedupe_size = dedupe_size
        self.emit = emit
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.counters: Counter[str] = Counter()

    def _scrub(self, text: str) -> str:
        return redact(text.replace(self._secret, "***"))

    def _answer(self, request: Request, status: int, body: dict[str, Any], why: str = "", **headers: str) -> Response:
        # the path only: the query string holds the key
        level = logging.INFO if status < 400 else logging.WARNING
        log.log(level, "%s %r -> %d %s", request.method, request.url.path, status, self._scrub(why))
        return JSONResponse(body, status_code=status, headers=headers or None)

    def _refuse(self, request: Request, status: int, message: str, counter: str) -> Response:
        self.counters[counter] += 1
        message = self._scrub(message)
        return self._answer(request, status, {"error": message}, message)

    def _authorized(self, request: Request) -> bool:
        offered = [v for v in (request.query_params.get("code"), request.headers.get("x-events-key")) if v]
        # digests of equal length, so the comparison takes the same time whatever was offered
        return any(hmac.compare_digest(hashlib.sha256(v.encode()).digest(), self._key_digest) for v in offered)

    async def _body(self, request: Request) -> bytes | Response:
        declared = request.headers.get("content-length")
        too_large = f"the body is larger than {self.max_body_bytes} bytes"
        if declared is not None:
            if not re.fullmatch(r"[0-9]{1,18}", declared):
                return self._refuse(request, 400, "Content-Length is not a number", "rejected")
            if int(declared) > self.max_body_bytes:
                return self._refuse(request, 413, too_large, "too_large")
        chunks, size = [], 0
        try:
            async for chunk in request.stream():  # counted: the header may be absent or wrong
                size += len(chunk)
                if size > self.max_body_bytes:
                    return self._refuse(request, 413, too_large, "too_large")
                chunks.append(chunk)
        except ClientDisconnect:
            return self._refuse(request, 400, "the client went away before the body was complete", "rejected")
        return b"".join(chunks)

    async def eventgrid(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request, 401, "missing or wrong key (?code= or x-events-key)", "unauthorized")
        if request.method == "OPTIONS":
            origin = request.headers.get("webhook-request-origin", "")
            if not origin or len(origin) > 256:
                return self._refuse(request, 400, "OPTIONS needs a WebHook-Request-Origin header", "rejected")
            self.counters["handshake"] += 1
            headers = {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
            return self._answer(request, 200, {}, "CloudEvents handshake", **headers)
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            batch = read_eventgrid(body, request.headers.get("content-type", ""))
        except DeliveryError as exc:
            return self._refuse(request, 400, str(exc), "rejected")
        except Exception as exc:  # a gap in the validation above: still the sender's body, never a 500
            log.error("unexpected %s reading an Event Grid delivery", type(exc).__name__)
            return self._refuse(request, 400, "the delivery could not be read", "rejected")
        if batch.validation_code is not None:
            self.counters["handshake"] += 1
            return self._answer(request, 200, {"validationResponse": batch.validation_code}, "validation handshake")
        return await self._deliver(request, batch.events, batch.ignored)

    async def acr(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request, 401, "missing or wrong key (?code= or x-events-key)", "unauthorized")
        if request.method != "POST":
            return self._refuse(request, 405, "only POST is accepted here", "rejected")
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            doc = _load_json(body)
            if not isinstance(doc, dict):
                raise DeliveryError("an ACR webhook body must be a JSON object")
            if _field(doc, "action", "body", max_len=64) != "push":
                return await self._deliver(request, [], ignored=1)
            delivery_id = _field(doc, "id", "body", max_len=256) or ""
            events = [
                image_pushed(delivery_id, request.path_params["registry"], doc, _parse_time(doc.get("timestamp")))
            ]
        except DeliveryError as exc:
            return self._refuse(request, 400, str(exc), "rejected")
        except Exception as exc:  # see eventgrid()
            log.error("unexpected %s reading an ACR webhook", type(exc).__name__)
            return self._refuse(request, 400, "the webhook body could not be read", "rejected")
        return await self._deliver(request, events, 0)

    async def _deliver(self, request: Request, events: list[ReceivedEvent], ignored: int) -> Response:
        emitted = duplicates = 0
        self.counters["ignored"] += ignored
        for event in events:
            if self._seen_before(event.id):
                duplicates += 1
                self.counters["duplicate"] += 1
                continue
            try:  # in a thread: a slow Prefect API must not stall the other deliveries
                await asyncio.to_thread(self.emit, event)
            except Exception as exc:
                self.seen.pop(event.id, None)  # not emitted, so the retry must get through
                self.counters["emit_failed"] += 1
                log.error("emitting %s (delivery %s) failed: %s: %s", event.event, event.payload.get("delivery_id"),
                          type(exc).__name__, self._scrub(str(exc)))  # fmt: skip
                return self._answer(
                    request, 503, {"error": "Prefect did not take the event; retry later"}, "emit failed"
                )
            emitted += 1
            self.counters["emitted"] += 1
        summary = {"emitted": emitted, "duplicates": duplicates, "ignored": ignored}
        return self._answer(request, 200, summary, " ".join(f"{k}={v}" for k, v in summary.items()))

    def _seen_before(self, event_id: str) -> bool:
        """Check and record in one step (no await in between), so concurrent duplicates emit once."""
        if event_id in self.seen:
            self.seen.move_to_end(event_id)
            return True
        if self.dedupe_size > 0:
            self.seen[event_id] = None
            while len(self.seen) > self.dedupe_size:
                self.seen.popitem(last=False)
        return False


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(
    secret: str,
    *,
    max_body_bytes: int = 1_048_576,
    dedupe_size: int = 10_000,
    emit: Callable[[ReceivedEvent], None] | None = None,
) -> Starlette:
    """The receiver as an ASGI app (see the module docstring); ``app.state.counters`` counts what it did.

    Args:
        secret: the shared key every delivery must carry (``?code=`` or ``x-events-key``).
        max_body_bytes: larger bodies are refused with 413.
        dedupe_size: how many recent delivery ids are remembered to drop repeats (0: none).
        emit: called in a worker thread with each event to hand on; default ``emit_to_prefect``.

    Raises:
        ValueError: ``secret`` is empty.
    """
    if not secret:
        raise ValueError("the event receiver needs a non-empty shared secret")
    receiver = _Receiver(secret, max_body_bytes, dedupe_size, emit or emit_to_prefect)
    app = Starlette(
        routes=[
            Route("/healthz", _healthz, methods=["GET"]),
            Route("/eventgrid", receiver.eventgrid, methods=["POST", "OPTIONS"]),
            Route("/acr/{registry}", receiver.acr, methods=["POST", "OPTIONS"]),
        ]
    )
    app.state.counters = receiver.counters
    return app


def serve(host: str, port: int) -> None:
    """Run the receiver with uvicorn on ``host:port`` (what it is given) until stopped, emitting to Prefect.

    Raises:
        ConfigError: ``ACR_TRANSFER_EVENTS_SECRET`` is unset or shorter than 16 characters.
    """
    secret = os.environ.get(SECRET_ENV, "").strip()
    if len(secret) < MIN_SECRET_CHARS:
        raise ConfigError(
            f"{SECRET_ENV} is {'too short' if secret else 'not set'}: the event receiver refuses to start without a"
            f" shared key of at least {MIN_SECRET_CHARS} characters; create one with"
            " `python -c 'import secrets; print(secrets.token_urlsafe(32))'` and put it in the subscription URL"
            " as ?code=..."
        )
    import uvicorn
    from prefect.events.worker import EventsWorker

    if not logging.getLogger().handlers:
        logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    log.info("event receiver on http://%s:%d (POST /eventgrid, POST /acr/{registry}, GET /healthz)", host, port)
    app = create_app(secret)
    # uvicorn re-raises SIGTERM/SIGINT once it has shut down, which would end the process before Prefect's
    # queue is drained: a no-op handler for that moment makes the stop clean (exit 0, queue handed over)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {sig: signal.signal(sig, lambda *_: None) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:  # no access log: uvicorn's prints the query string, and with it the key
        uvicorn.run(app, host=host, port=port, access_log=False, server_header=False)
    finally:
        EventsWorker.drain_all(timeout=30)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def main(argv: list[str] | None = None) -> int:
    """``python -m deployments.events [--host H] [--port P]``; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m deployments.events", description="Run the Azure event receiver.")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (127.0.0.1)")
    parser.add_argument("--port", type=int, default=8080, help="port (8080)")
    args = parser.parse_args(argv)
    try:
        serve(args.host, args.port)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
