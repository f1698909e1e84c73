"""A reverse proxy in front of a Prefect server that counts every request and can refuse chosen ones with 503.

    proxy = PrefectProxy("http://127.0.0.1:4200")      # the server's root (no /api)
    proxy.start()                                      # serves on proxy.url, e.g. http://127.0.0.1:51234
    proxy.refuse(r"^/api/artifacts", r"^/api/events/in$")
    ...
    proxy.refuse()                                     # answer everything again
    proxy.refuse_next(r"^/api/variables/", 2)          # only the next two matching requests
    proxy.counts                                       # Counter of 'METHOD /api/path-pattern'

HTTP requests are forwarded with httpx; websockets (Prefect's events stream ``/api/events/in`` and its
subscriptions) are bridged with the ``websockets`` library. A refused HTTP request gets Prefect's 503; a refused
websocket is closed before it is accepted (the client sees the handshake fail).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import threading
import time
from collections import Counter
from typing import Any

import httpx
import uvicorn
import websockets
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

_ID = re.compile(r"/[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
HOP = {"host", "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade"}


class PrefectProxy:
    def __init__(self, upstream: str) -> None:
        self.upstream = upstream.rstrip("/")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.counts: Counter[str] = Counter()
        self.refused: Counter[str] = Counter()
        self._rules: list[re.Pattern[str]] = []
        self._next: list[list[Any]] = []  # [pattern, refusals left]
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._client: httpx.AsyncClient | None = None

    # --- control ---------------------------------------------------------------------------------------
    def refuse(self, *patterns: str) -> None:
        """Answer requests whose path matches any pattern with 503 from now on (none: answer everything)."""
        with self._lock:
            self._rules = [re.compile(p) for p in patterns]

    def refuse_next(self, pattern: str, times: int, method: str | None = None) -> None:
        """Answer the next ``times`` requests whose path matches (and method, when given) with 503, then pass
        them on: what a busy SQLite-backed server does to a write that met another writer's lock."""
        with self._lock:
            self._next.append([re.compile(pattern), times, method])

    def _refuses(self, path: str, method: str = "") -> bool:
        with self._lock:
            for rule in self._next:
                if rule[1] > 0 and rule[0].search(path) and rule[2] in (None, method):
                    rule[1] -= 1
                    return True
            return any(r.search(path) for r in self._rules)

    def _count(self, method: str, path: str, refused: bool) -> None:
        key = f"{method} {_ID.sub('/{id}', path)}"
        with self._lock:
            self.counts[key] += 1
            if refused:
                self.refused[key] += 1

    def start(self) -> None:
        app = Starlette(
            routes=[
                WebSocketRoute("/{path:path}", self._websocket),
                Route("/{path:path}", self._http, methods=["GET", "POST", "PUT", "PATCH", "DELETE", "HEAD"]),
            ]
        )
        config = uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning", ws="websockets-sansio")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="prefect-proxy", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            assert time.monotonic() < deadline, "the proxy did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=10)

    # --- forwarding ------------------------------------------------------------------------------------
    async def _http(self, request: Request) -> Response:
        path = request.url.path
        refused = self._refuses(path, request.method)
        self._count(request.method, path, refused)
        if refused:
            return JSONResponse({"detail": "Service Unavailable (injected by the test's proxy)"}, 503)
        if self._client is None:
            self._client = httpx.AsyncClient(timeout=60)
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP}
        url = f"{self.upstream}{path}" + (f"?{request.url.query}" if request.url.query else "")
        try:
            upstream = await self._client.request(request.method, url, headers=headers, content=await request.body())
        except httpx.HTTPError as e:
            return JSONResponse({"detail": f"upstream unreachable: {type(e).__name__}"}, 502)
        out = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP | {"content-encoding"}}
        return Response(upstream.content, upstream.status_code, headers=out)

    async def _websocket(self, ws: WebSocket) -> None:
        path = ws.url.path
        refused = self._refuses(path)
        self._count("WS", path, refused)
        if refused:
            await ws.close(code=1013)  # before accept: the handshake fails
            return
        target = self.upstream.replace("http", "ws", 1) + path + (f"?{ws.url.query}" if ws.url.query else "")
        headers = {k: v for k, v in ws.headers.items() if k.lower().startswith("authorization")}
        try:
            upstream = await websockets.connect(target, additional_headers=headers, max_size=None)
        except Exception:
            await ws.close(code=1011)
            return
        await ws.accept()

        async def client_to_upstream() -> None:
            try:
                while True:
                    message: Any = await ws.receive()
                    if message["type"] == "websocket.disconnect":
                        break
                    if message.get("text") is not None:
                        await upstream.send(message["text"])
                    elif message.get("bytes") is not None:
                        await upstream.send(message["bytes"])
            except (WebSocketDisconnect, websockets.ConnectionClosed):
                pass
            finally:
                await upstream.close()

        async def upstream_to_client() -> None:
            try:
                async for data in upstream:
                    if isinstance(data, bytes):
                        await ws.send_bytes(data)
                    else:
                        await ws.send_text(data)
            except (WebSocketDisconnect, websockets.ConnectionClosed, RuntimeError):
                pass
            finally:
                with contextlib.suppress(RuntimeError):
                    await ws.close()

        await asyncio.gather(client_to_upstream(), upstream_to_client())
