"""ACR's token flow in front of each stand-in registry: every ``/v2/…`` and ``/acr/v1/…`` request needs a token.

``RegistryAuth`` is an ASGI middleware around ``registry_app(store)``; ``emulator/main.py`` puts it inside
``ServiceMiddleware``, so fault rules and the request log see every request, ``/oauth2/*`` included. The
login server is the ``Host`` the client used (``127.0.0.1:PORT``), as ACR's is its DNS name.

A request without a token it accepts answers ``401`` with the OCI error body
``{"errors":[{"code":"UNAUTHORIZED","message","detail":[{"Type","Name","Action"}]}]}`` and::

    WWW-Authenticate: Bearer realm="https://<login>/oauth2/token",service="<login>",scope="<scope>"

(plus ``error="invalid_token"`` for an expired, forged or foreign token, ``error="insufficient_scope"`` for one
that lacks the access). Missing access is a 401, never a 403, as in ACR. The scope a request needs:

    =================================================  =====================================================
    GET /v2/, /v2                                      any valid token (challenge without scope)
    /v2/_catalog, /acr/v1/_catalog                     registry:catalog:*
    GET/HEAD /v2/<name>/manifests|blobs|tags/list|…    repository:<name>:pull
    POST/PUT/PATCH /v2/<name>/…, any /blobs/uploads/   repository:<name>:push (challenged as ``pull,push``,
                                                       as ACR tokens usually carry both; push does not pull)
    DELETE /v2/<name>/manifests|blobs/…                repository:<name>:delete
    GET/HEAD /acr/v1/<name>[/_tags|/_manifests[/…]]    repository:<name>:metadata_read (pull is accepted)
    PATCH/PUT/POST /acr/v1/<name>…, DELETE             repository:<name>:metadata_write, …:delete
    =================================================  =====================================================

``<name>`` may contain ``/``; it ends where a component starts with ``_`` (``_tags``, ``_manifests``) or at
the operation suffix of ``/v2``.

Tokens (JWTs signed with this stand-in's ``registry-token-key``, ``aud`` = the login server and ``registry`` =
the registry's name, so one registry never takes another's):

- ``POST /oauth2/exchange``, form ``grant_type=access_token&service=&access_token=<Entra token>[&tenant=]``: the
  Entra token must come from the stand-in's identity endpoint for ``https://management.azure.com`` or
  ``https://containerregistry.azure.net`` → ``{"refresh_token"}`` (lifetime ``refresh_seconds``, default 3 h).
- ``POST /oauth2/token``, form ``grant_type=refresh_token&service=&scope=…&refresh_token=`` (``scope`` may
  repeat and may hold several space-separated scopes) → ``{"access_token"}`` with the scopes granted
  (``access_seconds``, default 75 min). ``grant_type=password`` with a ``username``/``password`` of the admin
  user works likewise.
- Anonymous: ``grant_type=password`` without credentials, or ``GET /oauth2/token?service=&scope=`` without an
  ``Authorization`` header, gives a token with the ``pull`` actions only (``anonymous_seconds``, 20 min), and
  only on a registry with anonymous pull on (topology ``"anonymous_pull": [names]``, or the control API);
  otherwise 401.
- Admin user: user name = the registry's name, password generated at first start and kept in
  ``registry-admin.json`` in the state directory (``topology.json`` lists it for tests and the demo; it is
  never logged). ``GET /oauth2/token?service=&scope=`` with ``Authorization: Basic`` of it gives an access
  token, and ``Authorization: Basic`` of it is also taken directly on ``/v2`` and ``/acr/v1`` requests.

The identity behind an Entra token and the admin user may do anything (the stand-in has no RBAC); an
expired, forged or foreign token answers 401. Lifetimes come from ``--registry-token-seconds`` /
``--registry-refresh-seconds`` and change at run time through ``POST /_emulator/registry-tokens``; anonymous
pull through ``POST /_emulator/registries/{name}/anonymous-pull`` (both in memory: a restart goes back to the
flags and the topology).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import re
import secrets
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from emulator.auth import ARM_AUDIENCE, REGISTRY_AUDIENCE, TokenAuthority, TokenError, read_jwt, sign_jwt

ISSUER = "Azure Container Registry"
ANONYMOUS = "acr_anon_pull"
REPOSITORY_ACTIONS = frozenset(
    {"pull", "push", "delete", "metadata_read", "metadata_write", "deleted_read", "deleted_restore"}
)
EXCHANGE_AUDIENCES = (ARM_AUDIENCE, REGISTRY_AUDIENCE)
MAX_FORM_BYTES = 64 * 1024

_V2_OPERATIONS = [
    (True, re.compile(r"^/v2/(?P<name>.+)/blobs/uploads/[^/]*$")),
    (False, re.compile(r"^/v2/(?P<name>.+)/blobs/[^/]+$")),
    (False, re.compile(r"^/v2/(?P<name>.+)/manifests/[^/]+$")),
    (False, re.compile(r"^/v2/(?P<name>.+)/tags/list$")),
    (False, re.compile(r"^/v2/(?P<name>.+)/referrers/[^/]+$")),
]
_READS = ("GET", "HEAD")


@dataclass
class TokenLifetimes:
    """Seconds each kind of registry token lives (ACR: access 75 min, refresh 3 h, anonymous 20 min)."""

    access_seconds: float = 75 * 60
    refresh_seconds: float = 3 * 3600
    anonymous_seconds: float = 20 * 60


@dataclass(frozen=True)
class Need:
    """The access a request needs: one of ``accepted`` actions on ``kind:name``; ``offered`` is the
    challenge's action list. ``kind`` empty: any valid token of this registry will do."""

    kind: str
    name: str
    accepted: frozenset[str]
    offered: str

    @property
    def scope(self) -> str | None:
        return f"{self.kind}:{self.name}:{self.offered}" if self.kind else None


ANY_TOKEN = Need("", "", frozenset(), "")


def _repository(name: str, method: str, *, metadata: bool = False, upload: bool = False) -> Need:
    if upload or (method not in _READS and method != "DELETE" and not metadata):
        return Need("repository", name, frozenset({"push"}), "pull,push")
    if method == "DELETE":
        return Need("repository", name, frozenset({"delete"}), "delete")
    if metadata and method in _READS:
        return Need("repository", name, frozenset({"metadata_read", "pull"}), "metadata_read")
    if metadata:
        return Need("repository", name, frozenset({"metadata_write"}), "metadata_write")
    return Need("repository", name, frozenset({"pull"}), "pull")


def required_access(method: str, path: str) -> Need | None:
    """What ``method path`` needs; None for a path the registry does not protect (``/oauth2``, unknown)."""
    method = method.upper()
    if path in ("/v2", "/v2/"):
        return ANY_TOKEN
    if path in ("/v2/_catalog", "/acr/v1/_catalog"):
        return Need("registry", "catalog", frozenset({"*"}), "*")
    if path.startswith("/v2/"):
        for upload, pattern in _V2_OPERATIONS:
            match = pattern.match(path)
            if match:
                return _repository(match["name"], method, upload=upload)
        return ANY_TOKEN  # not an endpoint: the registry answers 404, to an authenticated caller
    if path.startswith("/acr/v1/"):
        parts = path.removeprefix("/acr/v1/").split("/")
        end = next((i for i, part in enumerate(parts) if part.startswith("_")), len(parts))
        name = "/".join(parts[:end]).strip("/")
        return _repository(name, method, metadata=True) if name else ANY_TOKEN
    return None


def parse_scopes(values: list[str]) -> dict[tuple[str, str], set[str]]:
    """``repository:a/b:pull,push registry:catalog:*`` (values may repeat) → {(kind, name): actions}."""
    wanted: dict[tuple[str, str], set[str]] = {}
    for value in values:
        for scope in value.split():
            kind, _, rest = scope.partition(":")
            name, _, actions = rest.rpartition(":")
            if kind and name and actions:
                wanted.setdefault((kind, name), set()).update(a for a in actions.split(",") if a)
    return wanted


def _basic(value: str) -> tuple[str, str] | None:
    try:
        user, sep, password = base64.b64decode(value, validate=True).decode().partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class RegistryAccess:
    """Who may do what on the stand-in's registries: token lifetimes, anonymous pull, admin users, and the
    key registry tokens are signed with. One per stand-in, shared by every registry's middleware."""

    def __init__(
        self,
        state_dir: Path,
        registries: list[str],
        *,
        anonymous_pull: list[str] | None = None,
        lifetimes: TokenLifetimes | None = None,
    ) -> None:
        self.registries = list(registries)
        self.lifetimes = lifetimes or TokenLifetimes()
        self.anonymous_pull = set(anonymous_pull or [])
        key_file = state_dir / "registry-token-key"
        if not key_file.exists():
            key_file.write_text(secrets.token_hex(32))
            key_file.chmod(0o600)
        self._key = bytes.fromhex(key_file.read_text().strip())
        admin_file = state_dir / "registry-admin.json"
        admin: dict[str, str] = json.loads(admin_file.read_text()) if admin_file.exists() else {}
        if any(r not in admin for r in self.registries):
            admin.update({r: secrets.token_urlsafe(32) for r in self.registries if r not in admin})
            admin_file.write_text(json.dumps(admin))
            admin_file.chmod(0o600)
        self._admin = admin

    def admin_password(self, registry: str) -> str:
        """The admin user's password of ``registry`` (its user name is the registry's name)."""
        return self._admin[registry]

    def is_admin(self, registry: str, user: str, password: str) -> bool:
        return user == registry and hmac.compare_digest(password.encode(), self._admin[registry].encode())

    def set_lifetimes(self, body: dict[str, Any]) -> TokenLifetimes:
        """Apply ``{"access_seconds", "refresh_seconds", "anonymous_seconds"}`` (any of them).

        Raises:
            ValueError: an unknown key, or a value that is not a positive number.
        """
        known = set(vars(self.lifetimes))
        unknown = set(body) - known
        if unknown:
            raise ValueError(f"unknown keys {sorted(unknown)}; expected some of {sorted(known)}")
        values = {k: float(v) for k, v in body.items()}
        if any(not v > 0 for v in values.values()):
            raise ValueError("token lifetimes must be positive numbers of seconds")
        for key, value in values.items():
            setattr(self.lifetimes, key, value)
        return self.lifetimes

    # -- tokens ------------------------------------------------------------------------------------------

    def _sign(self, login: str, registry: str, subject: str, use: str, seconds: float, **extra: Any) -> str:
        now = time.time()
        claims = {
            "jti": uuid.uuid4().hex,
            "iss": ISSUER,
            "aud": login,
            "registry": registry,
            "sub": subject,
            "token_use": use,
            "iat": round(now, 3),
            "nbf": round(now, 3),
            "exp": round(now + seconds, 3),
            **extra,
        }
        return sign_jwt(self._key, claims)

    def refresh_token(self, login: str, registry: str, subject: str) -> str:
        return self._sign(login, registry, subject, "refresh", self.lifetimes.refresh_seconds)

    def access_token(self, login: str, registry: str, subject: str, wanted: dict[tuple[str, str], set[str]]) -> str:
        """An access token granting ``subject`` what it asked for and may have (anonymous: pull only)."""
        anonymous = subject == ANONYMOUS
        access = []
        for (kind, name), actions in wanted.items():
            if kind == "repository":
                granted = REPOSITORY_ACTIONS if "*" in actions else actions & REPOSITORY_ACTIONS
                granted = granted & {"pull"} if anonymous else granted
            elif kind == "registry" and name == "catalog" and not anonymous:
                granted = {"*"} & actions
            else:
                granted = set()
            if granted:
                access.append({"type": kind, "name": name, "actions": sorted(granted)})
        seconds = self.lifetimes.anonymous_seconds if anonymous else self.lifetimes.access_seconds
        return self._sign(login, registry, subject, "access", seconds, access=access)

    def read(self, token: str, login: str, registry: str, use: str) -> dict[str, Any]:
        """The claims of a registry token of kind ``use`` issued by ``registry`` at ``login``.

        Raises:
            TokenError: forged, malformed, another kind, another registry's, or expired.
        """
        claims = read_jwt(self._key, token)
        if claims.get("token_use") != use:
            raise TokenError(f"the token is not a registry {use} token")
        if claims.get("aud") != login or claims.get("registry") != registry:
            raise TokenError(f"the token was issued for {claims.get('aud')!r}, not for this registry ({login})")
        if not isinstance(claims.get("exp"), int | float) or claims["exp"] <= time.time():
            raise TokenError(f"the {use} token has expired")
        return claims


def _grants(claims: dict[str, Any], need: Need) -> bool:
    if need is ANY_TOKEN:
        return True
    return any(
        entry.get("type") == need.kind
        and entry.get("name") == need.name
        and need.accepted & set(entry.get("actions") or [])
        for entry in claims.get("access") or []
    )


def _errors(
    status: int, code: str, message: str, detail: Any = None, headers: dict[str, str] | None = None
) -> Response:
    return JSONResponse({"errors": [{"code": code, "message": message, "detail": detail}]}, status, headers=headers)


class RegistryAuth:
    """ASGI middleware: the ``/oauth2`` endpoints, and the token check in front of one registry's app."""

    def __init__(self, app: Any, registry: str, access: RegistryAccess, authority: TokenAuthority) -> None:
        self.app = app
        self.registry = registry
        self.access = access
        self.authority = authority

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, method = scope["path"], scope["method"]
        if path.startswith("/oauth2/"):
            response = await self._oauth(Request(scope, receive), path)
            await response(scope, receive, send)
            return
        need = required_access(method, path)
        if need is None:
            await self.app(scope, receive, send)
            return
        request = Request(scope, receive)
        denial = self._denial(request, need)
        if denial is None:
            await self.app(scope, receive, send)
            return
        async for _ in request.stream():  # drain, so a client sending a body reads the 401
            pass
        await denial(scope, receive, send)

    def _login(self, request: Request) -> str:
        host = request.headers.get("host") or (f"{request.url.hostname}:{request.url.port}")
        return host.lower()

    # -- the check on /v2 and /acr/v1 --------------------------------------------------------------------

    def _denial(self, request: Request, need: Need) -> Response | None:
        """None when the request may go on; else the 401 with the challenge for ``need``."""
        login = self._login(request)
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        error = None
        if scheme.lower() == "basic":
            pair = _basic(credential.strip())
            if pair and self.access.is_admin(self.registry, *pair):
                return None
            message, error = "the user name or password is wrong", "invalid_token"
        elif scheme.lower() == "bearer":
            try:
                claims = self.access.read(credential.strip(), login, self.registry, "access")
            except TokenError as e:
                message, error = str(e), "invalid_token"
            else:
                if _grants(claims, need):
                    return None
                message, error = f"the access token does not grant {need.scope}", "insufficient_scope"
        else:
            message = "authentication required, visit https://aka.ms/acr/authorization for more information."
        challenge = f'Bearer realm="https://{login}/oauth2/token",service="{login}"'
        if need.scope:
            challenge += f',scope="{need.scope}"'
        if error:
            challenge += f',error="{error}"'
        detail = [{"Type": need.kind, "Name": need.name, "Action": need.offered}] if need.kind else None
        return _errors(401, "UNAUTHORIZED", message, detail, {"WWW-Authenticate": challenge})

    # -- /oauth2 -----------------------------------------------------------------------------------------

    async def _oauth(self, request: Request, path: str) -> Response:
        form: list[tuple[str, str]] = list(request.query_params.multi_items())
        if request.method == "POST":
            body = b""
            async for chunk in request.stream():
                body += chunk
                if len(body) > MAX_FORM_BYTES:
                    return _errors(413, "SIZE_INVALID", f"the form is larger than {MAX_FORM_BYTES} bytes")
            form += parse_qsl(body.decode("utf-8", "replace"), keep_blank_values=True)
        fields = {k: v for k, v in form if k != "scope"}
        scopes = parse_scopes([v for k, v in form if k == "scope"])
        login = self._login(request)
        service = fields.get("service") or login
        if service.lower() != login:
            return _errors(400, "INVALID_REQUEST", f"service {service!r} is not this registry ({login})")
        if path == "/oauth2/exchange" and request.method == "POST":
            return self._exchange(fields, login)
        if path == "/oauth2/token" and request.method in ("GET", "POST"):
            return self._token(request, fields, scopes, login)
        return _errors(404, "NAME_UNKNOWN", f"no token endpoint {request.method} {path}")

    def _exchange(self, fields: dict[str, str], login: str) -> Response:
        if fields.get("grant_type") != "access_token":
            return _errors(400, "UNSUPPORTED", "grant_type must be 'access_token' (an Entra access token)")
        token = fields.get("access_token") or ""
        claims, reason = None, ""
        for audience in EXCHANGE_AUDIENCES:
            try:
                claims = self.authority.verify(f"Bearer {token}", audience)
                break
            except TokenError as e:
                reason = str(e)
        if claims is None:
            return _errors(401, "UNAUTHORIZED", f"the Entra access token was refused: {reason}")
        tenant = fields.get("tenant")
        if tenant and tenant != claims.get("tid"):
            return _errors(401, "UNAUTHORIZED", f"the Entra access token is not from tenant {tenant!r}")
        refresh = self.access.refresh_token(login, self.registry, str(claims.get("oid") or claims.get("sub")))
        return JSONResponse({"refresh_token": refresh})

    def _token(
        self, request: Request, fields: dict[str, str], scopes: dict[tuple[str, str], set[str]], login: str
    ) -> Response:
        grant = fields.get("grant_type") or ("password" if request.method == "GET" else "")
        scheme, _, credential = request.headers.get("authorization", "").partition(" ")
        if grant == "refresh_token":
            try:
                claims = self.access.read(fields.get("refresh_token") or "", login, self.registry, "refresh")
            except TokenError as e:
                return _errors(401, "UNAUTHORIZED", f"the refresh token was refused: {e}")
            subject = str(claims.get("sub"))
        elif grant == "password":
            pair = _basic(credential.strip()) if scheme.lower() == "basic" else None
            if pair is None and fields.get("username"):
                pair = (fields["username"], fields.get("password") or "")
            if pair is not None:
                if not self.access.is_admin(self.registry, *pair):
                    return _errors(401, "UNAUTHORIZED", "the user name or password is wrong")
                subject = self.registry
            elif self.registry in self.access.anonymous_pull:
                subject = ANONYMOUS
            else:
                return _errors(401, "UNAUTHORIZED", f"anonymous pull is not enabled on registry {self.registry}")
        else:
            return _errors(400, "UNSUPPORTED", "grant_type must be 'refresh_token' or 'password'")
        return JSONResponse({"access_token": self.access.access_token(login, self.registry, subject, scopes)})
