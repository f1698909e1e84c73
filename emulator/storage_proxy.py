"""A fault-injecting HTTPS reverse proxy in front of Azurite.

The topology's blob endpoint is this proxy, not Azurite, so that injected faults (error statuses with
Retry-After, connection resets, delays) and the request log apply to storage traffic like to every other
service of the stand-in. The proxy is transparent otherwise:

- method, path (as sent, percent-encoding untouched), query string, headers and body are forwarded
  unchanged, both directions streamed, so a 1 GiB blob never sits in memory, and nothing is decoded;
- the client's ``Host`` header is kept. Azurite copies a blob between accounts only when the copy source
  URL's host:port equals the destination request's Host, and then checks access by sending a HEAD to the
  source URL itself. With Host kept, a copy whose source is a proxy URL works, and Azurite's HEAD comes
  back through the proxy;
- proxy → Azurite is https, so SAS tokens with ``spr=https`` are accepted.

An upstream connection failure becomes ``502`` with a storage-style XML error body.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape

import httpx

from emulator.control import Controller, ServiceMiddleware
from emulator.httpserver import drop_connection

ASGIApp = Any
Scope = dict[str, Any]
Message = dict[str, Any]

# RFC 9110 §7.6.1 connection-specific headers; each hop frames and manages its own connection.
# transfer-encoding is handled apart (the request's framing is kept, the response is re-framed).
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"upgrade",
        b"expect",  # uvicorn already answered any 100-continue; httpx cannot take part in it
    }
)
# uvicorn adds its own Date and Server; forwarding Azurite's too would send each twice, and requests joins
# duplicates with ", " into a Date the storage SDK cannot parse
ADDED_BY_SERVER = frozenset({b"date", b"server"})
TIMEOUT = httpx.Timeout(600.0, connect=10.0)
LIMITS = httpx.Limits(max_connections=200, max_keepalive_connections=50, keepalive_expiry=20.0)


class ClientDisconnected(Exception):
    """The client went away while the proxy was still reading its request body."""


def storage_proxy_app(upstream: str, ca: Path, controller: Controller) -> ASGIApp:
    """The storage endpoint's ASGI app: the proxy, wrapped so that faults and the request log apply.

    Args:
        upstream: Azurite's base URL, e.g. ``https://127.0.0.1:10000``.
        ca: the CA bundle that verifies Azurite's certificate.
        controller: the stand-in's fault rules and request log (service ``"storage"``).

    Returns:
        A ``ServiceMiddleware`` around a ``StorageProxy`` (reachable as ``.app``, e.g. to ``aclose`` it).
    """
    return ServiceMiddleware(StorageProxy(upstream, ca), "storage", controller)


class StorageProxy:
    """ASGI app that forwards every request to Azurite over https and streams the answer back.

    Args:
        upstream: Azurite's base URL (scheme, host and port; any path is ignored).
        ca: the CA bundle that verifies Azurite's certificate.
    """

    def __init__(self, upstream: str, ca: Path) -> None:
        self.upstream = httpx.URL(upstream)
        self.ca = ca
        self._client: httpx.AsyncClient | None = None

    def client(self) -> httpx.AsyncClient:
        """The upstream client, made on first use so that its connections belong to the serving loop."""
        if self._client is None:
            self._client = httpx.AsyncClient(
                verify=ssl.create_default_context(cafile=str(self.ca)),
                timeout=TIMEOUT,
                limits=LIMITS,
                trust_env=False,  # no HTTPS_PROXY detour, no .netrc credentials
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the upstream connections."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return  # lifespan and websockets are not storage traffic
        request = self.upstream_request(scope, receive)
        try:
            upstream = await self.client().send(request, stream=True)
        except ClientDisconnected:
            return
        except httpx.TransportError as e:
            await send_storage_error(send, 502, "UpstreamConnectionFailed", f"Azurite is unreachable: {e!r}")
            return
        try:
            await self.relay(scope, receive, send, upstream)
        finally:
            await upstream.aclose()

    def upstream_request(self, scope: Scope, receive: Any) -> httpx.Request:
        """The request to Azurite: same method, raw path, query and headers (Host included), streamed body."""
        raw_path: bytes = scope.get("raw_path") or scope["path"].encode()
        query: bytes = scope.get("query_string", b"")
        url = self.upstream.copy_with(raw_path=raw_path + (b"?" + query if query else b""))
        headers = forward_headers(scope["headers"], request=True)
        has_body = any(k in (b"content-length", b"transfer-encoding") for k, _ in headers)
        stream: httpx.AsyncByteStream = RequestBody(receive) if has_body else httpx.ByteStream(b"")
        # stream=... (not content=...) so httpx adds no header of its own: the client's are forwarded as-is
        return httpx.Request(scope["method"], url, headers=headers, stream=stream)

    async def relay(self, scope: Scope, receive: Any, send: Any, upstream: httpx.Response) -> None:
        """Stream Azurite's response to the client; stop reading Azurite as soon as the client leaves."""
        headers = forward_headers(upstream.headers.raw, request=False)
        await send({"type": "http.response.start", "status": upstream.status_code, "headers": headers})
        pump = asyncio.ensure_future(pump_body(upstream, send))
        watch = asyncio.ensure_future(wait_for_disconnect(receive))
        try:
            await asyncio.wait({pump, watch}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (pump, watch):
                task.cancel()
            await asyncio.gather(pump, watch, return_exceptions=True)
        if pump.cancelled():
            return  # the client disconnected; nobody is left to answer
        error = pump.exception()
        if isinstance(error, httpx.TransportError):
            # the status line is already sent: the only honest signal left is a broken connection
            drop_connection(scope)
        elif error is not None:
            raise error


class RequestBody(httpx.AsyncByteStream):
    """The client's request body, read from the ASGI ``receive`` channel as httpx sends it upstream."""

    def __init__(self, receive: Any) -> None:
        self.receive = receive

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                raise ClientDisconnected()
            body = message.get("body", b"")
            if body:
                yield body
            if not message.get("more_body", False):
                return


async def pump_body(upstream: httpx.Response, send: Any) -> None:
    """Copy the response body as raw bytes (no content decoding: gzip stays gzip)."""
    async for chunk in upstream.aiter_raw():
        await send({"type": "http.response.body", "body": chunk, "more_body": True})
    await send({"type": "http.response.body", "body": b"", "more_body": False})


async def wait_for_disconnect(receive: Any) -> None:
    """Return when the client disconnects (leftover request-body messages are ignored)."""
    while (await receive())["type"] != "http.disconnect":
        pass


def forward_headers(raw: list[tuple[bytes, bytes]], *, request: bool) -> list[tuple[bytes, bytes]]:
    """The headers to pass on: all but hop-by-hop ones (and those named by ``Connection``).

    Args:
        raw: the incoming header list, names in any case.
        request: True for client → Azurite. A request keeps ``Transfer-Encoding: chunked`` so that the
            upstream request is framed like the client's; a response drops it and its Date/Server, which
            uvicorn sets itself.
    """
    named = {
        token.strip().lower() for name, value in raw if name.lower() == b"connection" for token in value.split(b",")
    }
    dropped = HOP_BY_HOP | named | (frozenset() if request else ADDED_BY_SERVER | {b"transfer-encoding"})
    return [(name.lower(), value) for name, value in raw if name.lower() not in dropped]


async def send_storage_error(send: Any, status: int, code: str, message: str) -> None:
    """Answer with a Blob-service error: XML ``<Error><Code/><Message/></Error>`` and ``x-ms-error-code``."""
    body = (
        '<?xml version="1.0" encoding="utf-8"?>'
        f"<Error><Code>{escape(code)}</Code><Message>{escape(message)}</Message></Error>"
    ).encode()
    headers = [
        (b"content-type", b"application/xml"),
        (b"content-length", str(len(body)).encode()),
        (b"x-ms-error-code", code.encode()),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})
