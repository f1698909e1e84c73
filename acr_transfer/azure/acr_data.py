"""The registry data plane, read-only: which digest a tag points at, in the source and in the target.

Anonymous first; on a ``401`` with a Bearer challenge it does ACR's token exchange: the Microsoft Entra
token of the running identity (ARM scope) → ``/oauth2/exchange`` → refresh token → ``/oauth2/token`` for
``repository:<repo>:pull``. Nothing is pushed or deleted here.
"""

from __future__ import annotations

import re
import ssl
import threading
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


class RegistryDataPlane:
    """HEAD manifests on registries by login server (``name.azurecr.io`` or ``127.0.0.1:PORT``)."""

    def __init__(self, settings: Settings | None = None, credential: Any | None = None) -> None:
        self.settings = settings or get_settings()
        self.credential = credential or get_credential()
        verify: Any = ssl.create_default_context(cafile=self.settings.ca_bundle) if self.settings.ca_bundle else True
        self.http = httpx.Client(verify=verify, timeout=30, trust_env=False)
        self._tokens: dict[tuple[str, str], str] = {}
        self._refresh: dict[str, str] = {}
        self._lock = threading.Lock()

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
        asks: anonymous first, then on a ``401`` Bearer challenge the token exchange, and the request again.

        ``repo`` names the repository the request is about (None: registry-wide, such as the catalog); the
        answer is returned whatever its status (the caller maps errors), except that an unreachable registry
        raises.

        Raises:
            ServiceUnavailableError: the registry could not be reached.
            AuthError, TransientError: the token exchange failed.
        """
        url = f"https://{login_server}{path}"
        sent = {"Accept": ACCEPT, **(headers or {})}
        key = (login_server, repo or "")
        token = self._tokens.get(key)
        if token:
            sent["Authorization"] = f"Bearer {token}"
        try:
            response = self.http.request(method, url, headers=sent, params=params)
            if response.status_code == 401 and "bearer" in response.headers.get("WWW-Authenticate", "").lower():
                token = self._token(login_server, repo or "", response.headers["WWW-Authenticate"])
                response = self.http.request(
                    method, url, headers={**sent, "Authorization": f"Bearer {token}"}, params=params
                )
        except httpx.HTTPError as e:
            raise ServiceUnavailableError(f"registry {login_server} is not reachable: {type(e).__name__}") from None
        return response

    def _token(self, login_server: str, repo: str, challenge: str) -> str:
        params = dict(CHALLENGE.findall(challenge))
        realm = params.get("realm") or f"https://{login_server}/oauth2/token"
        service = params.get("service") or login_server
        with self._lock:
            refresh = self._refresh.get(login_server)
            if refresh is None:
                aad = self.credential.get_token(self.settings.arm_token_scope).token
                r = self.http.post(
                    f"https://{login_server}/oauth2/exchange",
                    data={"grant_type": "access_token", "service": service, "access_token": aad},
                )
                if r.status_code >= 400:
                    raise _token_error(r, login_server, "the token exchange")
                refresh = str(r.json()["refresh_token"])
                self._refresh[login_server] = refresh
            r = self.http.post(
                realm,
                data={
                    "grant_type": "refresh_token",
                    "service": service,
                    "scope": params.get("scope") or (f"repository:{repo}:pull" if repo else "registry:catalog:*"),
                    "refresh_token": refresh,
                },
            )
            if r.status_code >= 400:
                raise _token_error(r, login_server, f"a pull token for {repo}")
            token = str(r.json()["access_token"])
            self._tokens[(login_server, repo)] = token
            return token


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
