"""Key Vault secrets, one HTTPS endpoint per vault, with the challenge authentication of the real service.

Served: ``GET /secrets`` (list), ``GET /secrets/{name}[/{version}]``, ``PUT /secrets/{name}``,
``PATCH /secrets/{name}/{version}`` (attributes, e.g. disable), ``GET /secrets/{name}/versions``,
``DELETE /secrets/{name}``. A request without a bearer token gets the 401 challenge the SDK expects; a
disabled secret answers 403 ``Forbidden`` (inner ``SecretDisabled``); a missing one 404 ``SecretNotFound``.
A caller the vault's access model (``emulator.access``) does not allow gets 403 ``Forbidden`` with inner
``AccessDenied`` (access policies) or ``ForbiddenByRbac`` (Azure RBAC), in Key Vault's words.
As in Azure, ``exp`` and ``nbf`` are attributes the caller must check: an expired secret is still returned.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.auth import VAULT_AUDIENCE, TokenAuthority, TokenError

ATTRIBUTE_KEYS = ("enabled", "nbf", "exp")
# (token claims, operation, secret name or None) → (innererror code, message) when denied, else None
AccessGuard = Callable[[dict[str, Any], str, "str | None"], "tuple[str, str] | None"]


class VaultStore:
    """The secrets of one vault: every version of every secret, with attributes as epoch seconds."""

    def __init__(self, name: str, data: dict[str, Any] | None = None, on_change: Callable[[], None] | None = None):
        self.name = name
        # {secret name: [version dicts, oldest first]}
        self.secrets: dict[str, list[dict[str, Any]]] = data or {}
        self._on_change = on_change or (lambda: None)

    def to_json(self) -> dict[str, Any]:
        return self.secrets

    def set_secret(
        self,
        name: str,
        value: str,
        *,
        content_type: str | None = None,
        tags: dict[str, str] | None = None,
        attributes: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Add a new version of ``name`` and return it."""
        now = int(time.time())
        attrs = {"enabled": True, "created": now, "updated": now}
        attrs.update({k: v for k, v in (attributes or {}).items() if k in ATTRIBUTE_KEYS and v is not None})
        version = {
            "version": uuid.uuid4().hex,
            "value": value,
            "contentType": content_type,
            "tags": tags or {},
            "attributes": attrs,
        }
        self.secrets.setdefault(name, []).append(version)
        self._on_change()
        return version

    def get(self, name: str, version: str | None = None) -> dict[str, Any] | None:
        """The named version, or the latest; None when missing."""
        versions = self.secrets.get(name) or []
        if not version:
            return versions[-1] if versions else None
        return next((v for v in versions if v["version"] == version), None)

    def update(
        self, name: str, version: str | None, attributes: dict[str, Any], **fields: Any
    ) -> dict[str, Any] | None:
        """Change attributes (enabled, nbf, exp), content type or tags of one version."""
        found = self.get(name, version)
        if found is None:
            return None
        for k in ATTRIBUTE_KEYS:
            if k in attributes:
                found["attributes"][k] = attributes[k]
        for k in ("contentType", "tags"):
            if fields.get(k) is not None:
                found[k] = fields[k]
        found["attributes"]["updated"] = int(time.time())
        self._on_change()
        return found

    def delete(self, name: str) -> bool:
        gone = self.secrets.pop(name, None) is not None
        self._on_change()
        return gone


def _bundle(base: str, name: str, v: dict[str, Any], with_value: bool = True) -> dict[str, Any]:
    attrs = {k: v["attributes"][k] for k in ("enabled", "nbf", "exp", "created", "updated") if k in v["attributes"]}
    attrs.update(recoveryLevel="Recoverable+Purgeable", recoverableDays=90)
    out: dict[str, Any] = {
        "id": f"{base}/secrets/{name}/{v['version']}",
        "attributes": attrs,
        "tags": v["tags"],
    }
    if v.get("contentType"):
        out["contentType"] = v["contentType"]
    if with_value:
        out["value"] = v["value"]
    return out


def _error(status: int, code: str, message: str, inner: str | None = None) -> JSONResponse:
    err: dict[str, Any] = {"code": code, "message": message}
    if inner:
        err["innererror"] = {"code": inner}
    return JSONResponse({"error": err}, status)


def keyvault_app(
    store: VaultStore, authority: TokenAuthority, base_url: Callable[[], str], guard: AccessGuard | None = None
) -> Starlette:
    """The vault's REST API over ``store``; ``base_url()`` is the vault URL used in secret ids; ``guard``
    decides whether the caller may do an operation (default: anyone with a token)."""
    challenge = (
        f'Bearer authorization="https://login.microsoftonline.com/{authority.tenant_id}", resource="{VAULT_AUDIENCE}"'
    )

    def authorise(request: Request, operation: str = "get", secret: str | None = None) -> Response | None:
        header = request.headers.get("authorization")
        if not header:
            return JSONResponse(
                {
                    "error": {
                        "code": "Unauthorized",
                        "message": "AKV10000: Request is missing a Bearer or PoP token.",
                    }
                },
                401,
                headers={"WWW-Authenticate": challenge},
            )
        try:
            claims = authority.verify(header, VAULT_AUDIENCE)
        except TokenError as e:
            return JSONResponse(
                {"error": {"code": "Unauthorized", "message": f"AKV10032: Invalid issuer or token. {e}"}},
                401,
                headers={"WWW-Authenticate": challenge},
            )
        denied = guard(claims, operation, secret) if guard else None
        return _error(403, "Forbidden", denied[1], denied[0]) if denied else None

    def not_found(name: str) -> JSONResponse:
        return _error(404, "SecretNotFound", f"A secret with (name/id) {name} was not found in this key vault.")

    async def secret(request: Request) -> Response:
        operation = {"PUT": "set", "DELETE": "delete", "PATCH": "update"}.get(request.method, "get")
        denied = authorise(request, operation, request.path_params["name"])
        if denied:
            # the SDK's first request has no body; drain any so the connection stays usable
            await request.body()
            return denied
        name = request.path_params["name"]
        version = request.path_params.get("version") or None
        if request.method == "PUT":
            body = await request.json()
            if not isinstance(body, dict) or not isinstance(body.get("value"), str):
                return _error(400, "BadParameter", "Property 'value' is required and must be a string.")
            v = store.set_secret(
                name,
                body["value"],
                content_type=body.get("contentType"),
                tags=body.get("tags"),
                attributes=body.get("attributes"),
            )
            return JSONResponse(_bundle(base_url(), name, v))
        if request.method == "DELETE":
            latest = store.get(name)
            if latest is None or not store.delete(name):
                return not_found(name)
            return JSONResponse(_bundle(base_url(), name, latest, with_value=False))
        if request.method == "PATCH":
            body = await request.json()
            updated = store.update(
                name,
                version,
                body.get("attributes") or {},
                contentType=body.get("contentType"),
                tags=body.get("tags"),
            )
            if updated is None:
                return not_found(name)
            return JSONResponse(_bundle(base_url(), name, updated, with_value=False))
        found = store.get(name, version)
        if found is None:
            return not_found(name)
        if not found["attributes"].get("enabled", True):
            return _error(403, "Forbidden", "Operation get is not allowed on a disabled secret.", "SecretDisabled")
        return JSONResponse(_bundle(base_url(), name, found))

    async def versions(request: Request) -> Response:
        denied = authorise(request, "list", request.path_params["name"])
        if denied:
            return denied
        name = request.path_params["name"]
        items = store.secrets.get(name)
        if not items:
            return not_found(name)
        return JSONResponse({"value": [_bundle(base_url(), name, v, False) for v in items], "nextLink": None})

    async def list_secrets(request: Request) -> Response:
        denied = authorise(request, "list")
        if denied:
            return denied
        value = []
        for name, items in store.secrets.items():
            b = _bundle(base_url(), name, items[-1], False)
            b["id"] = f"{base_url()}/secrets/{name}"
            value.append(b)
        return JSONResponse({"value": value, "nextLink": None})

    return Starlette(
        routes=[
            Route("/secrets", list_secrets, methods=["GET"]),
            Route("/secrets/{name}/versions", versions, methods=["GET"]),
            Route("/secrets/{name}", secret, methods=["GET", "PUT", "DELETE", "PATCH"]),
            # the SDK asks for /secrets/{name}/ (latest version): answer it directly, as Key Vault does
            Route("/secrets/{name}/", secret, methods=["GET", "PUT", "DELETE", "PATCH"]),
            Route("/secrets/{name}/{version}", secret, methods=["GET", "PATCH"]),
        ],
    )
