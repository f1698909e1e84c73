"""Fault injection and the request log: the stand-in's control plane.

Every service app is wrapped in ``ServiceMiddleware``, which records each request as
``{service, method, path, status, at}`` and applies the first matching fault rule:

    {"service": "arm", "method": "GET", "path": "pipelineRuns/", "status": 503, "retry_after": 1, "count": 2}
    {"service": "storage", "method": "*", "path": ".*", "reset": true}          # drop the connection
    {"service": "keyvault", "method": "GET", "path": "/secrets/", "delay": 2.0}  # then answer normally

``count`` is how many requests the rule hits (default 1; 0 or null means every request until cleared).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.httpserver import drop_connection

SERVICES = ("arm", "keyvault", "registry", "storage", "identity")
CONTROL_PREFIX = "/_emulator"


class FaultRuleError(ValueError):
    """A fault rule posted to the control API is malformed."""


@dataclass
class FaultRule:
    """One injected fault: which requests it matches and what it does to them."""

    service: str
    method: str = "*"
    path: str = ".*"
    status: int | None = None
    retry_after: float | None = None
    reset: bool = False
    delay: float | None = None
    count: int | None = 1
    code: str | None = None
    message: str | None = None
    hits: int = 0
    pattern: re.Pattern[str] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if self.service not in SERVICES:
            raise FaultRuleError(f"service must be one of {', '.join(SERVICES)}, not {self.service!r}")
        if not (self.status or self.reset or self.delay):
            raise FaultRuleError("a fault needs one of 'status', 'reset': true or 'delay'")
        if self.status is not None and not 400 <= int(self.status) <= 599:
            raise FaultRuleError(f"status must be an HTTP error status (400-599), not {self.status}")
        try:
            self.pattern = re.compile(self.path)
        except re.error as e:
            raise FaultRuleError(f"path is not a valid regular expression: {e}") from e
        self.method = self.method.upper()

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> FaultRule:
        """Build a rule from the control API's JSON, rejecting unknown keys."""
        allowed = {
            "service",
            "method",
            "path",
            "status",
            "retry_after",
            "reset",
            "delay",
            "count",
            "code",
            "message",
        }
        unknown = set(body) - allowed
        if unknown:
            raise FaultRuleError(f"unknown fault keys: {', '.join(sorted(unknown))}")
        if "service" not in body:
            raise FaultRuleError("a fault needs 'service'")
        return cls(**body)

    def matches(self, service: str, method: str, path: str) -> bool:
        if self.service != service or (self.method not in ("*", method)):
            return False
        if self.count and self.hits >= self.count:
            return False
        return self.pattern.search(path) is not None

    def to_json(self) -> dict[str, Any]:
        return {
            "service": self.service,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "retry_after": self.retry_after,
            "reset": self.reset,
            "delay": self.delay,
            "count": self.count,
            "hits": self.hits,
        }


class Controller:
    """Holds the fault rules and the request log shared by every endpoint of one stand-in."""

    def __init__(self, max_log: int = 200_000) -> None:
        self.rules: list[FaultRule] = []
        self.log: list[dict[str, Any]] = []
        self.max_log = max_log

    def add_rule(self, body: dict[str, Any]) -> FaultRule:
        rule = FaultRule.from_json(body)
        self.rules.append(rule)
        return rule

    def clear_rules(self) -> None:
        self.rules.clear()

    def take_fault(self, service: str, method: str, path: str) -> FaultRule | None:
        """The first rule that matches this request, counted as hit; None when no fault applies."""
        for rule in self.rules:
            if rule.matches(service, method, path):
                rule.hits += 1
                return rule
        return None

    def record(self, service: str, method: str, path: str, status: int, at: float, **extra: Any) -> None:
        if len(self.log) >= self.max_log:
            del self.log[: self.max_log // 10]
        self.log.append({"service": service, "method": method, "path": path, "status": status, "at": at, **extra})


def fault_response(service: str, rule: FaultRule) -> Response:
    """The error response a real service of that kind sends for the injected status."""
    status = int(rule.status or 500)
    headers: dict[str, str] = {}
    if rule.retry_after is not None:
        # ARM and storage send whole seconds; keep fractions for fast tests
        ra = rule.retry_after
        headers["Retry-After"] = str(int(ra)) if float(ra).is_integer() else str(ra)
    code = rule.code or {429: "TooManyRequests", 503: "ServiceUnavailable", 500: "InternalServerError"}.get(
        status, "InjectedFault"
    )
    message = rule.message or f"Injected fault: {status} {code}"
    if service == "storage":
        body = f'<?xml version="1.0" encoding="utf-8"?><Error><Code>{code}</Code><Message>{message}</Message></Error>'
        headers["x-ms-error-code"] = code
        return Response(body, status_code=status, headers=headers, media_type="application/xml")
    if service == "registry":
        return JSONResponse({"errors": [{"code": "UNAVAILABLE", "message": message}]}, status, headers=headers)
    return JSONResponse({"error": {"code": code, "message": message}}, status, headers=headers)


class ServiceMiddleware:
    """ASGI middleware: log every request of one service and apply injected faults to it."""

    def __init__(self, app: Any, service: str, controller: Controller) -> None:
        self.app = app
        self.service = service
        self.controller = controller

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http" or scope["path"].startswith(CONTROL_PREFIX):
            await self.app(scope, receive, send)
            return
        method, path = scope["method"], scope["path"]
        at = time.time()
        # rules match the path without its query string, so `$` anchors work as a reader expects
        rule = self.controller.take_fault(self.service, method, path)
        if rule is not None and rule.delay:
            await asyncio.sleep(rule.delay)
        if rule is not None and rule.reset:
            self.controller.record(self.service, method, path, 0, at, fault="reset")
            drop_connection(scope)
            return
        if rule is not None and rule.status:
            # drain the body so the client is not stuck writing it
            request = Request(scope, receive)
            async for _ in request.stream():
                pass
            self.controller.record(self.service, method, path, int(rule.status), at, fault="status")
            await fault_response(self.service, rule)(scope, receive, send)
            return
        status_box: list[int] = [0]

        async def send_and_record(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        extra = {"fault": "delay"} if rule is not None and rule.delay else {}
        try:
            await self.app(scope, receive, send_and_record)
        finally:
            self.controller.record(self.service, method, path, status_box[0] or 500, at, **extra)
