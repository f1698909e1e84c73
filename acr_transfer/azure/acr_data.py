"""The registry data plane, read-only: which digest a tag points at, in the source and in the target.

ACR's token flow: a request without a token gets a ``401`` with a Bearer challenge naming the scope it needs;
the Microsoft Entra token of the running identity (ARM scope) → ``/oauth2/exchange`` → refresh token →
``/oauth2/token`` for that scope → access token. For a worker that stays up for days, access tokens are kept
per (login server, scope) and refresh tokens per login server until shortly before the ``exp`` in their JWT
(read, not verified), so a request with a known scope goes out with its token at once; a token the registry
still refuses is replaced once, and a refused refresh token is replaced by one fresh exchange before the
refusal is raised. ``counts`` tallies the HTTP requests sent ("request", "oauth2/exchange", "oauth2/token").
Nothing is pushed or deleted here.
"""

from __future__ import annotations

import base64
import json
import re
import ssl
import threading
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

import httpx

from acr_transfer.errors import (
    AuthError,
    RequestRejectedError,
    ServiceUnavailableError,
    TransientError,
    from_status,
    retry_after_from_headers,
)
from acr_transfer.retry import call_with_retries
from acr_transfer.settings import Settings, get_credential, get_settings

ACCEPT = ", ".join(
    [
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.docker.distribution.manifest.v2+json",
    ]
)
CHALLENGE = re.compile(r'(\w+)="([^"]*)"')
RENEW_MARGIN_SECONDS = 30.0  # renew a token this long before it expires …
RENEW_MARGIN_SHARE = 0.1  # … or a tenth of its lifetime, when that is shorter


class RegistryDataPlane:
    """HEAD manifests on registries by login server (``name.azurecr.io`` or ``127.0.0.1:PORT``)."""

    def __init__(self, settings: Settings | None = None, credential: Any | None = None) -> None:
        self.settings = settings or get_settings()
        self.credential = credential or get_credential()
        verify: Any = ssl.create_default_context(cafile=self.settings.ca_bundle) if self.settings.ca_bundle else True
        self.http = httpx.Client(verify=verify, timeout=30, trust_env=False)
        self._access: dict[tuple[str, str], _Token] = {}  # (login server, scope) → access token
        self._refresh: dict[str, _Token] = {}  # login server → refresh token
        self._challenges: dict[tuple[str, str, str, str], _Challenge] = {}  # kind of request → its last challenge
        self._server_locks: dict[str, threading.Lock] = {}  # one token request at a time per login server
        self._lock = threading.Lock()  # guards the dictionaries above
        self._counts_lock = threading.Lock()
        self.counts: Counter[str] = Counter()

    def manifest_digest(self, login_server: str, repo: str, reference: str) -> str | None:
        """The digest ``repo:reference`` resolves to; None when it does not exist.

        A 408, 429 or 5xx is retried (honouring ``Retry-After``); any other error answer is raised at once.

        Raises:
            AuthError: the registry refused this identity (401/403, or the token exchange failed).
            RequestRejectedError: the registry refused the request itself (400, 405, …).
            TransientError: still throttled or unavailable after every attempt.
        """
        url = f"https://{login_server}/v2/{repo}/manifests/{reference}"
        what = f"read {repo}:{reference} on registry {login_server}"
        return call_with_retries(
            lambda: self._digest_once(url, login_server, repo, reference),
            what,
            attempts=self.settings.storage_retry_total + 1,
            base_delay=self.settings.retry_base_seconds,
        )

    def _digest_once(self, url: str, login_server: str, repo: str, reference: str) -> str | None:
        response = self._head(url, login_server, repo)
        status = response.status_code
        if status == 404:
            return None
        if status < 400:
            return response.headers.get("Docker-Content-Digest")
        asked = f"registry {login_server} answered {status} to HEAD {repo}:{reference}"
        error = from_status(status, asked, retry_after=retry_after_from_headers(response.headers))
        if isinstance(error, AuthError):
            raise AuthError(
                f"{asked}: it refused this identity; grant it pull (AcrPull) on the registry", status=status
            )
        if isinstance(error, RequestRejectedError):
            raise RequestRejectedError(
                f"{asked}: it rejected the request; check the repository name and the reference (a tag or "
                "sha256:<64 hex digits>)",
                status=status,
            )
        raise error

    def _head(self, url: str, login_server: str, repo: str) -> httpx.Response:
        return self.send("HEAD", login_server, url.removeprefix(f"https://{login_server}"), repo=repo)

    def send(
        self,
        method: str,
        login_server: str,
        path: str,
        *,
        repo: str | None = None,
        params: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        """One data-plane request (``path`` starts with ``/``, e.g. ``/v2/_catalog``), authenticated as ACR
        asks: with the access token for the scope this kind of request was challenged for before (cached, or
        renewed when due); the first time anonymous, then on a ``401`` Bearer challenge a token for the
        challenge's scope, and the request again. A token the registry refuses (401) is replaced once.

        ``repo`` names the repository the request is about (None: registry-wide, such as the catalog); the
        answer is returned whatever its status (the caller maps errors), except that an unreachable registry
        raises.

        Raises:
            ServiceUnavailableError: the registry could not be reached.
            AuthError, TransientError: the token exchange failed.
        """
        url = f"https://{login_server}{path}"
        sent = {"Accept": ACCEPT, **(headers or {})}
        kind = _request_kind(login_server, method, path, repo)
        with self._lock:
            known = self._challenges.get(kind)
        token = None
        if known is not None:  # this kind of request was challenged before: its token, renewed when due
            token = self._cached_access(login_server, known.scope) or self._access_token(login_server, known)
        response = self._request(login_server, method, url, sent, params, token)
        header = response.headers.get("WWW-Authenticate", "")
        if response.status_code == 401 and header.lower().startswith("bearer"):
            challenge = _Challenge.parse(header, login_server, repo)
            with self._lock:
                self._challenges[kind] = challenge
            token = self._access_token(login_server, challenge, refused=token)
            response = self._request(login_server, method, url, sent, params, token)
        return response

    def _request(
        self,
        login_server: str,
        method: str,
        url: str,
        headers: dict[str, str],
        params: dict[str, str] | None,
        token: str | None,
    ) -> httpx.Response:
        sent = {**headers, "Authorization": f"Bearer {token}"} if token else headers
        self._count("request")
        try:
            return self.http.request(method, url, headers=sent, params=params)
        except httpx.HTTPError as e:
            raise ServiceUnavailableError(f"registry {login_server} is not reachable: {type(e).__name__}") from None

    def _post(self, login_server: str, url: str, form: dict[str, str], counted: str) -> httpx.Response:
        self._count(counted)
        try:
            return self.http.post(url, data=form)
        except httpx.HTTPError as e:
            raise ServiceUnavailableError(f"registry {login_server} is not reachable: {type(e).__name__}") from None

    def _count(self, what: str) -> None:
        with self._counts_lock:
            self.counts[what] += 1

    def _server_lock(self, login_server: str) -> threading.Lock:
        with self._lock:
            return self._server_locks.setdefault(login_server, threading.Lock())

    def _cached_access(self, login_server: str, scope: str) -> str | None:
        with self._lock:
            cached = self._access.get((login_server, scope))
        return cached.value if cached is not None and cached.usable() else None

    def _access_token(self, login_server: str, challenge: _Challenge, *, refused: str | None = None) -> str:
        """An access token for the challenge's scope: the cached one if still good (another thread may have just
        renewed it), else one from ``/oauth2/token`` with the refresh token. ``refused`` is the token the
        registry just answered 401 to, never handed out again.

        Raises:
            AuthError: the registry refused the refresh token even after a fresh exchange, or refused the
                exchange itself.
            TransientError: a token request was throttled or the registry was unavailable.
        """
        realm, service, scope = challenge.realm, challenge.service, challenge.scope
        with self._server_lock(login_server):
            with self._lock:
                cached = self._access.get((login_server, scope))
                if cached is not None and cached.value != refused and cached.usable():
                    return cached.value
                self._access.pop((login_server, scope), None)
            form = {"grant_type": "refresh_token", "service": service, "scope": scope}
            refresh = self._refresh_token(login_server, service)
            r = self._post(login_server, realm, {**form, "refresh_token": refresh}, "oauth2/token")
            if r.status_code == 401:
                # the refresh token expired or was revoked before we expected: one fresh exchange, then give up
                with self._lock:
                    self._refresh.pop(login_server, None)
                refresh = self._refresh_token(login_server, service)
                r = self._post(login_server, realm, {**form, "refresh_token": refresh}, "oauth2/token")
            if r.status_code >= 400:
                raise _token_error(r, login_server, f"a token for {scope}")
            token = _Token.read(_field(r, "access_token", login_server, f"a token for {scope}"))
            with self._lock:
                self._access[(login_server, scope)] = token
            return token.value

    def _refresh_token(self, login_server: str, service: str) -> str:
        """The cached refresh token of ``login_server`` while it is good, else a new one from ``/oauth2/exchange``
        with a Microsoft Entra token of the running identity. Called with the login server's lock held."""
        with self._lock:
            cached = self._refresh.get(login_server)
        if cached is not None and cached.usable():
            return cached.value
        aad = self.credential.get_token(self.settings.arm_token_scope).token
        form = {"grant_type": "access_token", "service": service, "access_token": aad}
        r = self._post(login_server, f"https://{login_server}/oauth2/exchange", form, "oauth2/exchange")
        if r.status_code >= 400:
            raise _token_error(r, login_server, "the token exchange")
        token = _Token.read(_field(r, "refresh_token", login_server, "the token exchange"))
        with self._lock:
            self._refresh[login_server] = token
        return token.value


@dataclass(frozen=True)
class _Token:
    """A registry token and when to stop using it: ``renew_at`` is a little before its ``exp`` (30 s, or a tenth
    of its lifetime when that is shorter); None when its expiry could not be read (used until refused)."""

    value: str
    renew_at: float | None

    @classmethod
    def read(cls, value: str) -> _Token:
        expires = _jwt_expiry(value)
        if expires is None:
            return cls(value, None)
        now = time.time()
        return cls(value, expires - min(RENEW_MARGIN_SECONDS, max(expires - now, 0) * RENEW_MARGIN_SHARE))

    def usable(self) -> bool:
        return self.renew_at is None or time.time() < self.renew_at


def _jwt_expiry(token: str) -> float | None:
    """The ``exp`` claim of a JWT, read without verifying it (only the registry can); None if unreadable."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (ValueError, UnicodeDecodeError):
        return None
    exp = claims.get("exp") if isinstance(claims, dict) else None
    return float(exp) if isinstance(exp, int | float) and not isinstance(exp, bool) else None


@dataclass(frozen=True)
class _Challenge:
    """What a registry's Bearer challenge asks for: where to get a token (``realm``, ``service``) and its scope."""

    realm: str
    service: str
    scope: str

    @classmethod
    def parse(cls, header: str, login_server: str, repo: str | None) -> _Challenge:
        found = dict(CHALLENGE.findall(header))
        return cls(
            found.get("realm") or f"https://{login_server}/oauth2/token",
            found.get("service") or login_server,
            found.get("scope") or (f"repository:{repo}:pull" if repo else "registry:catalog:*"),
        )


def _request_kind(login_server: str, method: str, path: str, repo: str | None) -> tuple[str, str, str, str]:
    """What decides the scope a request needs, so that the scope a challenge named once is sent for at once the
    next time: the registry, the API family (``/v2`` or ``/acr``) with reads or the write method, and the
    repository (or, registry-wide, the path)."""
    family = "acr" if path.startswith("/acr/") else "v2"
    verb = "read" if method.upper() in ("GET", "HEAD") else method.upper()
    return (login_server, f"{family} {verb}", repo or "", "" if repo else path.split("?")[0])


def _field(response: httpx.Response, name: str, login_server: str, step: str) -> str:
    try:
        value = response.json()[name]
    except (ValueError, KeyError, TypeError):
        value = None
    if not isinstance(value, str) or not value:
        raise AuthError(f"registry {login_server} answered {step} without a {name}", status=response.status_code)
    return value


def _token_error(response: httpx.Response, login_server: str, step: str) -> Exception:
    """A failed token request: transient when its status says so, else this identity was refused."""
    status = response.status_code
    error = from_status(
        status,
        f"registry {login_server} answered {status} to {step}",
        retry_after=retry_after_from_headers(response.headers),
    )
    if isinstance(error, TransientError):
        return error
    return AuthError(
        f"registry {login_server} refused {step} ({status}); check the identity this flow runs with and its "
        "pull (AcrPull) role on the registry",
        status=status,
    )
