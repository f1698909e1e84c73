"""Tokens: the managed identity endpoint that issues them and the check ARM and Key Vault apply.

Tokens are JWTs signed with HS256 by a key kept in the state directory, issued to one managed identity
(the stand-in's "principal") for a resource (audience). ARM accepts only audience
``https://management.azure.com``, Key Vault only ``https://vault.azure.net``; Azurite (``--oauth basic``)
checks only issuer, audience and times, which these tokens satisfy for ``https://storage.azure.com``.
The registries take these tokens at ``/oauth2/exchange`` (``emulator.registry_auth``) and sign their own
with ``sign_jwt`` / ``read_jwt`` under a key of their own.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
import uuid
from pathlib import Path
from typing import Any

from azure.core.credentials import AccessToken, AccessTokenInfo
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

ARM_AUDIENCE = "https://management.azure.com"
VAULT_AUDIENCE = "https://vault.azure.net"
STORAGE_AUDIENCE = "https://storage.azure.com"
REGISTRY_AUDIENCE = "https://containerregistry.azure.net"
TOKEN_TTL = 3600


class TokenError(Exception):
    """A bearer token is missing, malformed, forged, expired or for another audience."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign_jwt(key: bytes, claims: dict[str, Any]) -> str:
    """An HS256 JWT of ``claims`` signed with ``key``."""
    head = _b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    sig = _b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    return f"{head}.{body}.{sig}"


def read_jwt(key: bytes, token: str) -> dict[str, Any]:
    """The claims of a JWT signed with ``key``; audience and times are the caller's to check.

    Raises:
        TokenError: not three parts, a signature ``key`` did not make, or claims that are not JSON.
    """
    if token.count(".") != 2:
        raise TokenError("The token is malformed: expected a JWT.")
    head, body, sig = token.split(".")
    expected = _b64(hmac.new(key, f"{head}.{body}".encode(), hashlib.sha256).digest())
    if not hmac.compare_digest(sig.encode(), expected.encode()):
        raise TokenError("The access token has an invalid signature.")
    try:
        claims = json.loads(_unb64(body))
    except ValueError as e:
        raise TokenError("The access token is malformed.") from e
    if not isinstance(claims, dict):
        raise TokenError("The access token is malformed.")
    return claims


def normalise_resource(resource: str) -> str:
    """``https://management.azure.com/.default`` and ``…/`` name the same audience as the bare URL."""
    resource = resource.removesuffix("/.default")
    return resource.rstrip("/")


class TokenAuthority:
    """Issues and verifies the stand-in's tokens (one tenant, one managed identity)."""

    def __init__(self, state_dir: Path, tenant_id: str) -> None:
        key_file = state_dir / "token-key"
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        self._key = bytes.fromhex(key_file.read_text().strip())
        self.tenant_id = tenant_id
        self.principal_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"acr-transfer-emulator/{tenant_id}/mi"))
        self.client_id = str(uuid.uuid5(uuid.NAMESPACE_URL, f"acr-transfer-emulator/{tenant_id}/client"))

    def issue(self, resource: str, ttl: int = TOKEN_TTL) -> tuple[str, int]:
        """A signed token for ``resource``; returns (token, expires_on epoch seconds)."""
        now = int(time.time())
        expires_on = now + ttl
        claims: dict[str, Any] = {
            "aud": normalise_resource(resource),
            "iss": f"https://sts.windows.net/{self.tenant_id}/",
            "iat": now - 60,
            "nbf": now - 60,
            "exp": expires_on,
            "oid": self.principal_id,
            "appid": self.client_id,
            "tid": self.tenant_id,
            "sub": self.principal_id,
        }
        return sign_jwt(self._key, claims), expires_on

    def verify(self, authorization: str | None, audience: str) -> dict[str, Any]:
        """Check an ``Authorization`` header value; returns the claims.

        Raises:
            TokenError: with a message in the words ARM uses.
        """
        if not authorization:
            raise TokenError("The 'Authorization' header is missing.")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or token.count(".") != 2:
            raise TokenError("The 'Authorization' header is invalid: expected 'Bearer <JWT>'.")
        claims = read_jwt(self._key, token)
        if claims.get("aud") != normalise_resource(audience):
            raise TokenError(f"The access token has an invalid audience '{claims.get('aud')}'; expected '{audience}'.")
        if claims.get("exp", 0) < time.time():
            raise TokenError("The access token has expired.")
        return claims

    def credential(self) -> EmulatorCredential:
        """A TokenCredential for the stand-in's own calls (the pipelines' managed identity)."""
        return EmulatorCredential(self)


class EmulatorCredential:
    """azure-core TokenCredential that mints tokens in-process (used by the run engine for storage)."""

    def __init__(self, authority: TokenAuthority) -> None:
        self._authority = authority

    def get_token(self, *scopes: str, **_: Any) -> AccessToken:
        token, exp = self._authority.issue(scopes[0])
        return AccessToken(token, exp)

    def get_token_info(self, *scopes: str, options: Any = None) -> AccessTokenInfo:
        token, exp = self._authority.issue(scopes[0])
        return AccessTokenInfo(token, exp)

    def close(self) -> None:
        pass


def identity_app(authority: TokenAuthority, identity_header: str) -> Starlette:
    """App Service-style managed identity endpoint (``IDENTITY_ENDPOINT`` + ``IDENTITY_HEADER``).

    ``GET /msi/token?api-version=2019-08-01&resource=…`` with header ``X-IDENTITY-HEADER`` answers
    ``{access_token, expires_on, resource, token_type}`` as App Service does.
    """

    async def token(request: Request) -> JSONResponse:
        if not hmac.compare_digest(request.headers.get("x-identity-header", ""), identity_header):
            return JSONResponse({"error": "invalid_request", "error_description": "X-IDENTITY-HEADER is wrong"}, 401)
        resource = request.query_params.get("resource")
        if not resource:
            return JSONResponse({"error": "invalid_request", "error_description": "'resource' is required"}, 400)
        access_token, expires_on = authority.issue(resource)
        return JSONResponse(
            {
                "access_token": access_token,
                "expires_on": str(expires_on),
                "resource": resource,
                "token_type": "Bearer",
                "client_id": authority.client_id,
            }
        )

    return Starlette(routes=[Route("/msi/token", token, methods=["GET"])])
