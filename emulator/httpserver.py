"""Serve ASGI apps over TLS on 127.0.0.1 with uvicorn, one port per endpoint.

The stand-in needs one thing uvicorn does not give an ASGI app: the connection's transport, so that an
injected fault can drop the connection the way a broken load balancer does. ``TransportH11Protocol``
puts it into ``scope["extensions"]["transport"]``.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from emulator.tls import TlsFiles

ASGIApp = Any


class TransportH11Protocol(H11Protocol):
    """h11 protocol that exposes the connection's transport to the app as a scope extension."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        inner = self.app

        async def app_with_transport(scope: dict[str, Any], receive: Any, send: Any) -> None:
            scope.setdefault("extensions", {})["transport"] = transport
            await inner(scope, receive, send)

        self.app = app_with_transport


def drop_connection(scope: dict[str, Any]) -> None:
    """Reset the client's TCP connection at once (RST, no response), as a dropped connection does."""
    transport = scope.get("extensions", {}).get("transport")
    if transport is None:
        raise RuntimeError("no transport in scope: serve the app with TransportH11Protocol")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def bind_socket(port: int = 0) -> socket.socket:
    """Bind a listening socket on 127.0.0.1 (port 0 picks a free one)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(512)
    sock.setblocking(False)
    return sock


def free_port() -> int:
    """A port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TlsEndpoint:
    """One HTTPS endpoint: an ASGI app, a port on 127.0.0.1, the stand-in's certificate."""

    def __init__(self, name: str, app: ASGIApp, tls: TlsFiles | None, port: int = 0) -> None:
        self.name = name
        self.socket = bind_socket(port)
        self.port: int = self.socket.getsockname()[1]
        config = uvicorn.Config(
            app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            access_log=False,
            http=TransportH11Protocol,
            ssl_certfile=str(tls.cert) if tls else None,
            ssl_keyfile=str(tls.key) if tls else None,
            lifespan="off",
            timeout_keep_alive=30,
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    async def serve(self) -> None:
        """Serve until ``stop`` is called. Signals are the stand-in's to handle, not each server's, so this
        enters uvicorn below its signal capture."""
        await self.server._serve(sockets=[self.socket])

    def stop(self) -> None:
        """Ask the server to finish; ``serve`` returns shortly after."""
        self.server.should_exit = True
