"""The stand-in's registries ask for ACR's tokens (emulator/registry_auth.py), over HTTPS on the session's stand-in.

The challenge names the scope each request needs; a Microsoft Entra token from the stand-in's identity endpoint
(through ``DefaultAzureCredential``) is exchanged for a refresh token and that for access tokens; scopes,
expiry, registries, anonymous pull and the admin user are enforced. Tokens are never printed: assertions
compare their claims, and failure messages show error bodies only.
"""

from __future__ import annotations

import base64
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.support import azure
from tests.support.images import Pushed, push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

ZERO_DIGEST = "sha256:" + "0" * 64
ACCEPT = {"Accept": "application/vnd.oci.image.manifest.v1+json"}


def login(standin: StandIn, registry: str = "sourceregistry") -> str:
    return str(standin.topology["registries"][registry]["login_server"])


def claims_of(token: str) -> dict[str, Any]:
    body = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))))


def challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers.get("WWW-Authenticate", "")
    assert header.startswith("Bearer "), header
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def entra_token(audience: str = "https://management.azure.com") -> str:
    return azure.credential().get_token(f"{audience}/.default").token


def refresh_token(c: httpx.Client, server: str, entra: str | None = None) -> str:
    form = {"grant_type": "access_token", "service": server, "access_token": entra or entra_token()}
    r = c.post(f"https://{server}/oauth2/exchange", data=form)
    assert r.status_code == 200, r.text
    return str(r.json()["refresh_token"])


def access_token(c: httpx.Client, server: str, *scopes: str, refresh: str | None = None) -> str:
    form = {"grant_type": "refresh_token", "service": server, "refresh_token": refresh or refresh_token(c, server)}
    r = c.post(f"https://{server}/oauth2/token", data={**form, "scope": list(scopes)})  # scope=…&scope=…
    assert r.status_code == 200, r.text
    return str(r.json()["access_token"])


def bearer(token: str) -> dict[str, str]:
    return {**ACCEPT, "Authorization": f"Bearer {token}"}


@pytest.fixture
def c(standin: StandIn) -> Iterator[httpx.Client]:
    """A plain HTTPS client, and the stand-in's registry settings put back afterwards (the session shares it)."""
    lifetimes = standin.token_lifetimes()
    anonymous = {r: standin.anonymous_pull(r) for r in standin.topology["registries"]}
    try:
        with standin.http() as client:
            yield client
    finally:
        standin.set_token_lifetimes(**lifetimes)
        for registry, enabled in anonymous.items():
            standin.anonymous_pull(registry, enabled)
        standin.clear_faults()


@pytest.fixture(scope="module")
def image(standin: StandIn) -> Pushed:
    return push_file_artifact(login(standin), f"auth/app{uuid.uuid4().hex[:6]}", "v1", b"token flow payload")


CHALLENGES = [
    ("GET", "/v2/", None),
    ("GET", "/v2/_catalog", "registry:catalog:*"),
    ("GET", "/acr/v1/_catalog", "registry:catalog:*"),
    ("HEAD", "/v2/team/app/manifests/v1", "repository:team/app:pull"),
    ("GET", f"/v2/team/app/blobs/{ZERO_DIGEST}", "repository:team/app:pull"),
    ("GET", "/v2/team/app/tags/list", "repository:team/app:pull"),
    ("GET", f"/v2/team/app/referrers/{ZERO_DIGEST}", "repository:team/app:pull"),
    ("POST", "/v2/team/app/blobs/uploads/", "repository:team/app:pull,push"),
    ("PATCH", f"/v2/team/app/blobs/uploads/{uuid.uuid4().hex}", "repository:team/app:pull,push"),
    ("PUT", "/v2/team/app/manifests/v1", "repository:team/app:pull,push"),
    ("DELETE", f"/v2/team/app/manifests/{ZERO_DIGEST}", "repository:team/app:delete"),
    ("GET", "/acr/v1/team/app/_tags", "repository:team/app:metadata_read"),
    ("GET", "/acr/v1/team/app/_manifests", "repository:team/app:metadata_read"),
    ("GET", "/acr/v1/team/app", "repository:team/app:metadata_read"),
    ("GET", "/acr/v1/team/app/_tags/v1", "repository:team/app:metadata_read"),
]


@pytest.mark.parametrize(("method", "path", "scope"), CHALLENGES, ids=[f"{m} {p}" for m, p, _ in CHALLENGES])
def test_an_unauthenticated_request_gets_the_challenge_for_its_scope(
    standin: StandIn, c: httpx.Client, method: str, path: str, scope: str | None
) -> None:
    server = login(standin)
    r = c.request(method, f"https://{server}{path}", content=b"{}" if method in ("PUT", "PATCH") else None)

    assert r.status_code == 401
    found = challenge(r)
    assert found["realm"] == f"https://{server}/oauth2/token" and found["service"] == server
    assert found.get("scope") == scope
    if method != "HEAD":
        error = r.json()["errors"][0]
        assert error["code"] == "UNAUTHORIZED" and "authentication required" in error["message"]


def test_entra_token_exchange_then_access_token_reads_the_repository(
    standin: StandIn, c: httpx.Client, image: Pushed
) -> None:
    server = login(standin)
    url = f"https://{server}/v2/{image.repo}/manifests/{image.tag}"
    scope = challenge(c.head(url, headers=ACCEPT))["scope"]
    for audience in ("https://management.azure.com", "https://containerregistry.azure.net"):
        refresh = refresh_token(c, server, entra_token(audience))
        token = access_token(c, server, scope, refresh=refresh)

        r = c.get(url, headers=bearer(token))
        assert r.status_code == 200 and r.headers["Docker-Content-Digest"] == image.digest

        granted, renewing = claims_of(token), claims_of(refresh)
        assert granted["aud"] == server and granted["registry"] == "sourceregistry"
        assert granted["access"] == [{"type": "repository", "name": image.repo, "actions": ["pull"]}]
        assert granted["exp"] - granted["iat"] == pytest.approx(75 * 60, abs=1)
        assert renewing["exp"] - renewing["iat"] == pytest.approx(3 * 3600, abs=1)
    # with a tenant: the stand-in's own is accepted, another is not
    form = {"grant_type": "access_token", "service": server, "access_token": entra_token()}
    assert (
        c.post(f"https://{server}/oauth2/exchange", data={**form, "tenant": os.environ["AZURE_TENANT_ID"]}).status_code
        == 200
    )
    assert c.post(f"https://{server}/oauth2/exchange", data={**form, "tenant": str(uuid.uuid4())}).status_code == 401


def test_scopes_may_repeat_and_be_space_separated(standin: StandIn, c: httpx.Client) -> None:
    server = login(standin)
    token = access_token(c, server, "repository:a/one:pull", "registry:catalog:* repository:b:pull,push")

    access = {(a["type"], a["name"]): a["actions"] for a in claims_of(token)["access"]}
    assert access == {
        ("repository", "a/one"): ["pull"],
        ("registry", "catalog"): ["*"],
        ("repository", "b"): ["pull", "push"],
    }


def test_tokens_grant_only_their_scopes(standin: StandIn, c: httpx.Client, image: Pushed) -> None:
    server = login(standin)
    refresh = refresh_token(c, server)
    manifest = f"https://{server}/v2/{image.repo}/manifests/{image.tag}"
    uploads = f"https://{server}/v2/{image.repo}/blobs/uploads/"

    pull = access_token(c, server, f"repository:{image.repo}:pull", refresh=refresh)
    refused = c.post(uploads, headers=bearer(pull))
    assert refused.status_code == 401 and challenge(refused)["error"] == "insufficient_scope"
    assert challenge(refused)["scope"] == f"repository:{image.repo}:pull,push"
    assert c.get(f"https://{server}/v2/_catalog", headers=bearer(pull)).status_code == 401
    assert (
        c.delete(f"https://{server}/v2/{image.repo}/manifests/{image.digest}", headers=bearer(pull)).status_code == 401
    )
    assert c.get(f"https://{server}/v2/", headers=bearer(pull)).status_code == 200  # any valid token

    push_only = access_token(c, server, f"repository:{image.repo}:push", refresh=refresh)
    assert c.get(manifest, headers=bearer(push_only)).status_code == 401
    started = c.post(uploads, headers=bearer(push_only))
    assert started.status_code == 202, started.text
    c.delete(f"https://{server}{started.headers['Location']}", headers=bearer(push_only))

    other = access_token(c, server, "repository:auth/other:pull", refresh=refresh)
    assert c.get(manifest, headers=bearer(other)).status_code == 401

    catalog = access_token(c, server, "registry:catalog:*", refresh=refresh)
    listed = c.get(f"https://{server}/v2/_catalog", headers=bearer(catalog))
    assert listed.status_code == 200 and image.repo in listed.json()["repositories"]

    metadata = access_token(c, server, f"repository:{image.repo}:metadata_read", refresh=refresh)
    assert c.get(manifest, headers=bearer(metadata)).status_code == 401  # metadata_read does not pull
    for token in (metadata, pull):  # the /acr/v1 listings take metadata_read, or pull
        assert c.get(f"https://{server}/acr/v1/{image.repo}/_tags", headers=bearer(token)).status_code != 401


def test_expired_tokens_are_refused(standin: StandIn, c: httpx.Client, image: Pushed) -> None:
    server = login(standin)
    manifest = f"https://{server}/v2/{image.repo}/manifests/{image.tag}"
    assert standin.set_token_lifetimes(access_seconds=2, refresh_seconds=2)["access_seconds"] == 75 * 60
    assert standin.token_lifetimes()["access_seconds"] == 2
    refresh = refresh_token(c, server)
    token = access_token(c, server, f"repository:{image.repo}:pull", refresh=refresh)
    assert c.get(manifest, headers=bearer(token)).status_code == 200

    time.sleep(2.5)

    expired = c.get(manifest, headers=bearer(token))
    assert expired.status_code == 401 and challenge(expired)["error"] == "invalid_token"
    assert "expired" in expired.json()["errors"][0]["message"]
    form = {"grant_type": "refresh_token", "service": server, "scope": "registry:catalog:*", "refresh_token": refresh}
    renewed = c.post(f"https://{server}/oauth2/token", data=form)
    assert renewed.status_code == 401 and "expired" in renewed.text


def test_forged_foreign_and_misused_tokens_are_refused(standin: StandIn, c: httpx.Client, image: Pushed) -> None:
    server, other = login(standin), login(standin, "targetregistry")
    manifest = f"https://{server}/v2/{image.repo}/manifests/{image.tag}"
    refresh = refresh_token(c, server)
    token = access_token(c, server, "repository:auth/other:pull", refresh=refresh)
    head, _, sig = token.split(".")
    widened = dict(claims_of(token), access=[{"type": "repository", "name": image.repo, "actions": ["pull"]}])
    forged_body = base64.urlsafe_b64encode(json.dumps(widened).encode()).rstrip(b"=").decode()

    forged = c.get(manifest, headers=bearer(f"{head}.{forged_body}.{sig}"))
    assert forged.status_code == 401 and "signature" in forged.json()["errors"][0]["message"]
    # a refresh token is no access token, and another registry's tokens are not this one's
    assert c.get(manifest, headers=bearer(refresh)).status_code == 401
    theirs = access_token(c, other, f"repository:{image.repo}:pull")
    assert c.get(manifest, headers=bearer(theirs)).status_code == 401
    form = {"grant_type": "refresh_token", "service": other, "scope": "registry:catalog:*", "refresh_token": refresh}
    assert c.post(f"https://{other}/oauth2/token", data=form).status_code == 401
    # the exchange takes only Entra tokens from the stand-in, for ARM or the registry audience
    exchange = f"https://{server}/oauth2/exchange"
    entra = entra_token()
    for bad in (entra[:-4] + "AAAA", entra_token("https://vault.azure.net"), refresh):
        refused = c.post(exchange, data={"grant_type": "access_token", "service": server, "access_token": bad})
        assert refused.status_code == 401 and refused.json()["errors"][0]["code"] == "UNAUTHORIZED"
    wrong_service = {"grant_type": "access_token", "service": other, "access_token": entra}
    assert c.post(exchange, data=wrong_service).status_code == 400


def test_anonymous_pull_only_where_enabled(standin: StandIn, c: httpx.Client) -> None:
    target = login(standin, "targetregistry")
    pushed = push_file_artifact(target, f"auth/anon{uuid.uuid4().hex[:6]}", "v1", b"anonymous pull payload")
    scope = f"repository:{pushed.repo}:pull,push"
    token_url = f"https://{target}/oauth2/token"
    anonymous_post = {"grant_type": "password", "service": target, "scope": scope}
    assert standin.anonymous_pull("targetregistry") is False
    assert c.get(token_url, params={"service": target, "scope": scope}).status_code == 401
    assert c.post(token_url, data=anonymous_post).status_code == 401

    assert standin.anonymous_pull("targetregistry", True) is True
    for answer in (
        c.get(token_url, params={"service": target, "scope": scope}),
        c.post(token_url, data=anonymous_post),
    ):
        assert answer.status_code == 200, answer.text
        token = answer.json()["access_token"]
        granted = claims_of(token)
        assert granted["sub"] == "acr_anon_pull"
        assert granted["access"] == [{"type": "repository", "name": pushed.repo, "actions": ["pull"]}]
        assert granted["exp"] - granted["iat"] == pytest.approx(20 * 60, abs=1)
        manifest = c.get(f"https://{target}/v2/{pushed.repo}/manifests/v1", headers=bearer(token))
        assert manifest.status_code == 200 and manifest.headers["Docker-Content-Digest"] == pushed.digest
        assert c.post(f"https://{target}/v2/{pushed.repo}/blobs/uploads/", headers=bearer(token)).status_code == 401
    catalog = c.get(token_url, params={"service": target, "scope": "registry:catalog:*"}).json()["access_token"]
    assert claims_of(catalog)["access"] == []
    source = login(standin)
    assert c.get(f"https://{source}/oauth2/token", params={"service": source, "scope": scope}).status_code == 401

    assert standin.anonymous_pull("targetregistry", False) is False
    assert c.get(token_url, params={"service": target, "scope": scope}).status_code == 401


def test_admin_user_works_directly_and_for_tokens(standin: StandIn, c: httpx.Client, image: Pushed) -> None:
    server = login(standin)
    user, password = standin.registry_admin("sourceregistry")
    manifest = f"https://{server}/v2/{image.repo}/manifests/{image.tag}"

    direct = c.get(manifest, headers=ACCEPT, auth=(user, password))
    assert direct.status_code == 200 and direct.headers["Docker-Content-Digest"] == image.digest
    assert c.get(f"https://{server}/acr/v1/_catalog", auth=(user, password)).status_code != 401
    scope = f"repository:{image.repo}:pull,push"
    answer = c.get(f"https://{server}/oauth2/token", params={"service": server, "scope": scope}, auth=(user, password))
    assert answer.status_code == 200, answer.text
    token = answer.json()["access_token"]
    assert claims_of(token)["sub"] == "sourceregistry"
    started = c.post(f"https://{server}/v2/{image.repo}/blobs/uploads/", headers=bearer(token))
    assert started.status_code == 202
    c.delete(f"https://{server}{started.headers['Location']}", headers=bearer(token))

    assert c.get(manifest, headers=ACCEPT, auth=(user, password + "x")).status_code == 401
    assert c.get(manifest, headers=ACCEPT, auth=("targetregistry", password)).status_code == 401
    wrong = c.get(f"https://{server}/oauth2/token", params={"service": server, "scope": scope}, auth=(user, "nope"))
    assert wrong.status_code == 401
    # one registry's admin is not another's
    other = login(standin, "targetregistry")
    assert c.get(f"https://{other}/v2/_catalog", auth=(user, password)).status_code == 401


def test_oauth_requests_pass_the_fault_rules_and_the_request_log(standin: StandIn, c: httpx.Client) -> None:
    server = login(standin)
    refresh = refresh_token(c, server)
    standin.clear_requests()
    standin.add_fault(service="registry", method="POST", path="^/oauth2/token$", status=503, count=1)
    form = {"grant_type": "refresh_token", "service": server, "scope": "registry:catalog:*", "refresh_token": refresh}

    assert c.post(f"https://{server}/oauth2/token", data=form).status_code == 503
    assert c.post(f"https://{server}/oauth2/token", data=form).status_code == 200
    logged = [(r["method"], r["path"], r["status"]) for r in standin.requests("registry")]
    assert logged == [("POST", "/oauth2/token", 503), ("POST", "/oauth2/token", 200)]


def test_control_api_checks_what_it_is_given(standin: StandIn, c: httpx.Client) -> None:
    assert standin.token_lifetimes() == {"access_seconds": 4500, "refresh_seconds": 10800, "anonymous_seconds": 1200}
    for bad in ({"access_seconds": 0}, {"access_seconds": "soon"}, {"lifetime": 5}, [1]):
        assert c.post(f"{standin.control}/registry-tokens", json=bad).status_code == 400, bad
    assert (
        c.post(f"{standin.control}/registries/nosuchregistry/anonymous-pull", json={"enabled": True}).status_code == 404
    )
    assert (
        c.post(f"{standin.control}/registries/sourceregistry/anonymous-pull", json={"enabled": "yes"}).status_code
        == 400
    )
    assert standin.token_lifetimes()["access_seconds"] == 4500
