"""The event receiver: Azure deliveries in, Prefect events out, for deployment triggers to match.

An ASGI app (starlette) with these endpoints; what the bodies look like and which Prefect events they
become is :mod:`deployments.deliveries`' docstring:

==========================  ==========================================================================
``POST /eventgrid``         Azure Event Grid deliveries, in the Event Grid schema or as CloudEvents 1.0
                            (``application/cloudevents+json``: one event;
                            ``application/cloudevents-batch+json``: an array). Answers the Event Grid
                            ``SubscriptionValidationEvent`` handshake with ``{"validationResponse": code}``.
``OPTIONS /eventgrid``      the CloudEvents abuse-protection handshake: echoes ``WebHook-Request-Origin``
                            as ``WebHook-Allowed-Origin`` with ``WebHook-Allowed-Rate: *``.
``POST /acr/{registry}``    a native ACR webhook; ``{registry}`` is the registry the webhook belongs to
                            (when it is not a plain 5-50 character name, the first label of
                            ``request.host`` is used). Only ``push`` is handled; other actions get 200.
``GET /healthz``            200, no key.
==========================  ==========================================================================

Event types other than BlobCreated and ImagePushed are acknowledged (200), ignored and counted in
``app.state.counters`` (keyed by :class:`Outcome`).

**The clock.** The receiver notes when it takes each request (``create_app(clock=...)``, UTC now by
default); an event its sender dates more than a few seconds after that is dated at receipt instead, with the
sender's time in ``payload["sender_time"]`` and a warning in the log (the deliveries docstring says why).

**The key.** Every request to ``/eventgrid`` and ``/acr/…`` carries the shared secret (``serve`` reads it
from ``ACR_TRANSFER_EVENTS_SECRET``) in the ``code`` query parameter or the ``x-events-key`` header.
Without it the answer is 401 before the body is read. The secret is never logged or echoed: request lines
are logged without their query string, and ``serve`` turns uvicorn's access log off (it prints the query).

**Answers.** 200: handled, duplicate or ignored · 400: not JSON or not a delivery this receiver
understands (the message says what; Event Grid does not retry it) · 401: no or wrong key · 413: body over
``max_body_bytes`` · 503: Prefect did not take the event (Event Grid retries). A delivery id seen among
the last ``dedupe_size`` ids is acknowledged and not emitted again; since each Prefect event id is derived
from the delivery id, re-sending a delivery also re-uses its Prefect event id.

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
import logging
import os
import re
import signal
import sys
import threading
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from starlette.applications import Starlette
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from acr_transfer.errors import ConfigError, redact
from deployments.deliveries import Batch, DeliveryError, ReceivedEvent, read_acr_webhook, read_eventgrid

log = logging.getLogger("acr_transfer.events")

SECRET_ENV = "ACR_TRANSFER_EVENTS_SECRET"
MIN_SECRET_CHARS = 16


class Outcome(StrEnum):
    """What became of a request or an event: the keys of ``app.state.counters``."""

    UNAUTHORIZED = "unauthorized"
    REJECTED = "rejected"
    TOO_LARGE = "too_large"
    HANDSHAKE = "handshake"
    IGNORED = "ignored"
    DUPLICATE = "duplicate"
    EMITTED = "emitted"
    EMIT_FAILED = "emit_failed"


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


# --- the app -----------------------------------------------------------------------------------------------

_NO_KEY = "missing or wrong key (?code= or x-events-key)"


class _Receiver:
    """State and endpoints of one app: the key, the body limit, the de-duplication LRU, counters."""

    def __init__(
        self,
        secret: str,
        max_body_bytes: int,
        dedupe_size: int,
        emit: Callable[[ReceivedEvent], None],
        clock: Callable[[], datetime],
    ):
        self._secret = secret
        self._key_digest = hashlib.sha256(secret.encode()).digest()
        self.max_body_bytes = max_body_bytes
        self.dedupe_size = dedupe_size
        self.emit = emit
        self.clock = clock
        self.seen: OrderedDict[str, None] = OrderedDict()
        self.counters: Counter[Outcome] = Counter()

    def _scrub(self, text: str) -> str:
        return redact(text.replace(self._secret, "***"))

    def _answer(self, request: Request, status: int, body: dict[str, Any], why: str = "", **headers: str) -> Response:
        # the path only: the query string holds the key
        level = logging.INFO if status < 400 else logging.WARNING
        log.log(level, "%s %r -> %d %s", request.method, request.url.path, status, self._scrub(why))
        return JSONResponse(body, status_code=status, headers=headers or None)

    def _refuse(self, request: Request, status: int, message: str, counter: Outcome) -> Response:
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
                return self._refuse(request, 400, "Content-Length is not a number", Outcome.REJECTED)
            if int(declared) > self.max_body_bytes:
                return self._refuse(request, 413, too_large, Outcome.TOO_LARGE)
        chunks, size = [], 0
        try:
            async for chunk in request.stream():  # counted: the header may be absent or wrong
                size += len(chunk)
                if size > self.max_body_bytes:
                    return self._refuse(request, 413, too_large, Outcome.TOO_LARGE)
                chunks.append(chunk)
        except ClientDisconnect:
            return self._refuse(request, 400, "the client went away before the body was complete", Outcome.REJECTED)
        return b"".join(chunks)

    async def _read(
        self, request: Request, read: Callable[[bytes], Batch], what: str, unreadable: str
    ) -> Batch | Response:
        """The body as ``read`` reads it, or the refusal to answer (too large, malformed)."""
        body = await self._body(request)
        if isinstance(body, Response):
            return body
        try:
            return read(body)
        except DeliveryError as exc:
            return self._refuse(request, 400, str(exc), Outcome.REJECTED)
        except Exception as exc:  # a gap in the validation: still the sender's body, never a 500
            log.error("unexpected %s reading %s", type(exc).__name__, what)
            return self._refuse(request, 400, unreadable, Outcome.REJECTED)

    def _handshake(self, request: Request) -> Response:
        origin = request.headers.get("webhook-request-origin", "")
        if not origin or len(origin) > 256:
            return self._refuse(request, 400, "OPTIONS needs a WebHook-Request-Origin header", Outcome.REJECTED)
        self.counters[Outcome.HANDSHAKE] += 1
        headers = {"WebHook-Allowed-Origin": origin, "WebHook-Allowed-Rate": "*"}
        return self._answer(request, 200, {}, "CloudEvents handshake", **headers)

    async def eventgrid(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request, 401, _NO_KEY, Outcome.UNAUTHORIZED)
        if request.method == "OPTIONS":
            return self._handshake(request)
        received, content_type = self.clock(), request.headers.get("content-type", "")
        batch = await self._read(
            request,
            lambda body: read_eventgrid(body, content_type, received=received),
            "an Event Grid delivery",
            "the delivery could not be read",
        )
        if isinstance(batch, Response):
            return batch
        if batch.validation_code is not None:
            self.counters[Outcome.HANDSHAKE] += 1
            return self._answer(request, 200, {"validationResponse": batch.validation_code}, "validation handshake")
        return await self._deliver(request, batch.events, batch.ignored)

    async def acr(self, request: Request) -> Response:
        if not self._authorized(request):
            return self._refuse(request, 401, _NO_KEY, Outcome.UNAUTHORIZED)
        if request.method != "POST":
            return self._refuse(request, 405, "only POST is accepted here", Outcome.REJECTED)
        received, registry = self.clock(), request.path_params["registry"]
        batch = await self._read(
            request,
            lambda body: read_acr_webhook(body, registry, received=received),
            "an ACR webhook",
            "the webhook body could not be read",
        )
        if isinstance(batch, Response):
            return batch
        return await self._deliver(request, batch.events, batch.ignored)

    async def _deliver(self, request: Request, events: list[ReceivedEvent], ignored: int) -> Response:
        emitted = duplicates = 0
        self.counters[Outcome.IGNORED] += ignored
        for event in events:
            if self._seen_before(event.id):
                duplicates += 1
                self.counters[Outcome.DUPLICATE] += 1
                continue
            if "sender_time" in event.payload:
                log.warning("%s (delivery %s) is dated %s by its sender, ahead of this receiver's clock: stored as"
                            " received, %s; check the sender's clock", event.event, event.payload.get("delivery_id"),
                            event.payload["sender_time"], event.occurred)  # fmt: skip
            try:  # in a thread: a slow Prefect API must not stall the other deliveries
                await asyncio.to_thread(self.emit, event)
            except Exception as exc:
                self.seen.pop(event.id, None)  # not emitted, so the retry must get through
                self.counters[Outcome.EMIT_FAILED] += 1
                log.error("emitting %s (delivery %s) failed: %s: %s", event.event, event.payload.get("delivery_id"),
                          type(exc).__name__, self._scrub(str(exc)))  # fmt: skip
                return self._answer(
                    request, 503, {"error": "Prefect did not take the event; retry later"}, "emit failed"
                )
            emitted += 1
            self.counters[Outcome.EMITTED] += 1
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


def _utc_now() -> datetime:
    return datetime.now(UTC)


def create_app(
    secret: str,
    *,
    max_body_bytes: int = 1_048_576,
    dedupe_size: int = 10_000,
    emit: Callable[[ReceivedEvent], None] | None = None,
    clock: Callable[[], datetime] = _utc_now,
) -> Starlette:
    """The receiver as an ASGI app (see the module docstring); ``app.state.counters`` counts what it did.

    Args:
        secret: the shared key every delivery must carry (``?code=`` or ``x-events-key``).
        max_body_bytes: larger bodies are refused with 413.
        dedupe_size: how many recent delivery ids are remembered to drop repeats (0: none).
        emit: called in a worker thread with each event to hand on; default ``emit_to_prefect``.
        clock: the receive time of a request (timezone-aware); an event its sender dates more than
            ``deliveries.MAX_CLOCK_SKEW`` later is dated at that time instead.

    Raises:
        ValueError: ``secret`` is empty.
    """
    if not secret:
        raise ValueError("the event receiver needs a non-empty shared secret")
    receiver = _Receiver(secret, max_body_bytes, dedupe_size, emit or emit_to_prefect, clock)
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
    # the URL last: the UI's and terminals' auto-linking would take punctuation after it into the link
    log.info("event receiver (POST /eventgrid, POST /acr/{registry}, GET /healthz) on http://%s:%d", host, port)
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
