"""ARM's core reads the official clients make before they touch a provider (see ``emulator.arm_meta``):
``/subscriptions``, ``/subscriptions/{id}``, ``/tenants`` and the generic resource lists
``/subscriptions/{id}[/resourceGroups/{rg}]/resources?$filter=…``."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.arm_meta import (
    ArmError,
    core_api_version,
    matches,
    resource_filter,
    subscription_body,
    tenant_body,
)

CORE_RE = re.compile(
    r"^/(?:tenants|subscriptions(?:/(?P<sub>[^/]+)(?:(?:/resourceGroups/(?P<rg>[^/]+))?/(?P<res>resources))?)?)/?$",
    re.IGNORECASE,
)


class CoreArm:
    """The core ARM reads over the world's one subscription, tenant and resource group."""

    def __init__(self, world: Any, registry_body: Callable[[str], dict[str, Any]]) -> None:
        self.world = world
        self.registry_body = registry_body

    def route(self, request: Request) -> Response:
        """Answer a path ``CORE_RE`` matched.

        Raises:
            ArmError: 405 for writes, 400 for a bad api-version or ``$filter``, 404 for another subscription.
        """
        if request.method != "GET":
            raise ArmError(405, "MethodNotAllowed", f"{request.method} is not supported on '{request.url.path}'.")
        core_api_version(request)
        path = request.url.path.rstrip("/")
        topo = self.world.topo
        if path.lower() == "/tenants":
            return JSONResponse({"value": [tenant_body(topo)]})
        m = CORE_RE.match(request.url.path)
        assert m is not None
        sub, rg, res = m.group("sub"), m.group("rg"), m.group("res")
        if sub is None:
            return JSONResponse({"value": [subscription_body(topo)]})
        if sub.lower() != self.world.sub.lower():
            raise ArmError(404, "SubscriptionNotFound", f"The subscription '{sub}' could not be found.")
        if res is None:
            return JSONResponse(subscription_body(topo))
        if rg is not None and rg.lower() != self.world.rg.lower():
            raise ArmError(404, "ResourceGroupNotFound", f"Resource group '{rg}' could not be found.")
        clauses = resource_filter(request.query_params.get("$filter"))
        items = [r for r in self._generic_resources() if matches(r, self.world.rg, clauses)]
        return JSONResponse({"value": items})

    def _generic_resources(self) -> list[dict[str, Any]]:
        """Every registry as the generic resources list shows it (no ``properties``, as ARM lists them)."""
        out = []
        for name in self.world.topo["registries"]:
            body = self.registry_body(name)
            out.append({k: body[k] for k in ("id", "name", "type", "sku", "location", "tags")})
        return out
