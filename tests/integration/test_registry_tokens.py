"""The data plane as a worker that stays up for days sees it, on the stand-in with short-lived registry tokens:
tokens are kept until shortly before they expire and renewed (a new exchange once the refresh token runs out),
a token the registry refuses is replaced once, and a refresh token it refuses is replaced by one fresh exchange
before the refusal is raised. Requests are counted by the data plane and in the stand-in's request log."""

from __future__ import annotations

import ssl
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from urllib.parse import parse_qsl, urlencode

import httpx
import pytest

from acr_transfer.azure.acr_data import RegistryDataPlane
from acr_transfer.errors import AuthError
from acr_transfer.settings import get_credential, get_settings
from tests.support.images import Pushed, push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration


class SpoilingTransport(httpx.BaseTransport):
    """Sends requests on, spoiling the next ``bearer`` access tokens and ``refresh`` refresh tokens on the way, as
    a registry that no longer takes them would see them (an injected transport, not a patched client)."""

    def __init__(self, inner: httpx.BaseTransport) -> None:
        self.inner = inner
        self.bearer = 0
        self.refresh = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        auth = request.headers.get("Authorization", "")
        if self.bearer and auth.startswith("Bearer "):
            self.bearer -= 1
            request.headers["Authorization"] = auth + "x"
        if self.refresh and request.url.path == "/oauth2/token":
            form = dict(parse_qsl(request.read().decode()))
            if "refresh_token" in form:
                self.refresh -= 1
                form["refresh_token"] += "x"
                headers = {k: v for k, v in request.headers.items() if k.lower() != "content-length"}
                content = urlencode(form).encode()
                request = httpx.Request(
                    request.method, request.url, headers=headers, content=content, extensions=request.extensions
                )
        return self.inner.handle_request(request)

    def close(self) -> None:
        self.inner.close()


@pytest.fixture(scope="module")
def login_server(standin: StandIn) -> str:
    return str(standin.topology["registries"]["sourceregistry"]["login_server"])


@pytest.fixture(scope="module")
def image(login_server: str) -> Pushed:
    return push_file_artifact(login_server, f"tokens/app-{uuid.uuid4().hex[:8]}", "v1", b"registry tokens payload")


@pytest.fixture
def plane(standin: StandIn) -> Iterator[RegistryDataPlane]:
    data_plane = RegistryDataPlane(get_settings(), get_credential())
    try:
        yield data_plane
    finally:
        data_plane.http.close()


@pytest.fixture
def short_tokens(standin: StandIn) -> Iterator[None]:
    """Access tokens of 2 s and refresh tokens of 4 s, for every token issued during the test."""
    before = standin.set_token_lifetimes(access_seconds=2, refresh_seconds=4)
    try:
        yield
    finally:
        standin.set_token_lifetimes(**before)


def oauth(standin: StandIn, path: str) -> list[int]:
    return [r["status"] for r in standin.requests("registry") if r["path"] == path]


@pytest.mark.usefixtures("short_tokens")
def test_reads_keep_working_across_many_token_lifetimes(
    standin: StandIn, login_server: str, image: Pushed, plane: RegistryDataPlane
) -> None:
    standin.clear_requests()
    calls, deadline = 0, time.monotonic() + 12
    while time.monotonic() < deadline:
        assert plane.manifest_digest(login_server, image.repo, image.tag) == image.digest
        calls += 1
        time.sleep(0.25)

    counts = plane.counts
    exchanges, grants = oauth(standin, "/oauth2/exchange"), oauth(standin, "/oauth2/token")
    heads = [r["status"] for r in standin.requests("registry") if r["method"] == "HEAD"]
    assert counts["oauth2/exchange"] == len(exchanges) >= 3, counts  # 12 s of 4 s refresh tokens
    assert counts["oauth2/token"] == len(grants) >= 5, counts  # … and of 2 s access tokens
    assert counts["request"] == len(heads) and heads.count(200) == calls
    assert set(exchanges) == set(grants) == {200}  # renewed before they expired: none was refused
    # the first read is the only one sent without a token; renewals come before expiry, not after a 401
    assert heads[0] == 401 and heads.count(401) <= 3, heads
    assert counts["oauth2/exchange"] <= calls / 4 and counts["oauth2/token"] <= calls / 2, (calls, counts)


def test_valid_tokens_are_used_without_asking_again(
    standin: StandIn, login_server: str, image: Pushed, plane: RegistryDataPlane
) -> None:
    standin.clear_requests()
    for _ in range(10):
        assert plane.manifest_digest(login_server, image.repo, image.tag) == image.digest
    assert plane.manifest_digest(login_server, image.repo, "absent") is None

    # one anonymous read and its challenge, one exchange and one token; then every read goes with the token
    assert plane.counts == Counter({"request": 12, "oauth2/exchange": 1, "oauth2/token": 1})
    heads = [r["status"] for r in standin.requests("registry") if r["method"] == "HEAD"]
    assert heads == [401] + [200] * 10 + [404]


@pytest.fixture
def spoiler(standin: StandIn, plane: RegistryDataPlane) -> SpoilingTransport:
    transport = SpoilingTransport(httpx.HTTPTransport(verify=ssl.create_default_context(cafile=standin.ca)))
    plane.http.close()
    plane.http = httpx.Client(transport=transport, timeout=30, trust_env=False)
    return transport


def test_a_refused_access_token_is_replaced_once(
    standin: StandIn, login_server: str, image: Pushed, plane: RegistryDataPlane, spoiler: SpoilingTransport
) -> None:
    assert plane.manifest_digest(login_server, image.repo, image.tag) == image.digest
    before = Counter(plane.counts)
    spoiler.bearer = 1

    assert plane.manifest_digest(login_server, image.repo, image.tag) == image.digest

    assert plane.counts - before == Counter({"request": 2, "oauth2/token": 1})  # no new exchange was needed


def test_a_refused_refresh_token_is_replaced_by_one_fresh_exchange(
    standin: StandIn, login_server: str, image: Pushed, plane: RegistryDataPlane, spoiler: SpoilingTransport
) -> None:
    assert plane.manifest_digest(login_server, image.repo, image.tag) == image.digest
    other = push_file_artifact(login_server, f"tokens/other-{uuid.uuid4().hex[:8]}", "v1", b"another repository")
    before = Counter(plane.counts)
    spoiler.refresh = 1

    assert plane.manifest_digest(login_server, other.repo, other.tag) == other.digest  # a new scope: a new token

    assert plane.counts - before == Counter({"request": 2, "oauth2/token": 2, "oauth2/exchange": 1})


def test_a_refresh_token_refused_after_a_fresh_exchange_is_an_auth_error(
    standin: StandIn, login_server: str, image: Pushed, plane: RegistryDataPlane, spoiler: SpoilingTransport
) -> None:
    spoiler.refresh = 100

    with pytest.raises(AuthError) as raised:
        plane.manifest_digest(login_server, image.repo, image.tag)

    assert not raised.value.retryable and raised.value.status == 401
    assert login_server in raised.value.message and "refused a token for" in raised.value.message
    # the anonymous read, its exchange and grant, then one more exchange and grant; nothing retried after that
    assert plane.counts == Counter({"request": 1, "oauth2/exchange": 2, "oauth2/token": 2})
