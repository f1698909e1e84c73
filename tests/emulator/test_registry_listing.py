"""ACR's listings on the stand-in's registries (``/acr/v1/…``): shapes, paging with ``Link``, time order,
errors, timestamps that move with a push and survive a restart; and the run engine carrying referrers.

The HTTP tests talk to the session's stand-in as any client does (``tests/support/artifacts.RawRegistry``);
the page cap is shown in-process, where a thousand tags are pushed in a second.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.registry import RegistryStore, registry_app
from emulator.registry_listing import MAX_PAGE
from tests.emulator.test_runs import export, import_
from tests.support.artifacts import IMAGE_CONFIG, OCI_MANIFEST, SIGSTORE_BUNDLE, RawRegistry, descriptor
from tests.support.images import Pushed, push_multiarch_index
from tests.support.standin import StandIn, start_standin

pytestmark = pytest.mark.integration

ACR_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{7}Z$")
CHANGEABLE = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def when(value: str) -> datetime:
    """An ACR time, to microseconds (enough to compare pushes milliseconds apart)."""
    assert ACR_TIME.match(value), value
    return datetime.fromisoformat(value[:26] + "+00:00")


def follow(registry: RawRegistry, path: str, field: str, **params: Any) -> tuple[list[Any], list[str]]:
    """Every entry of a listing, following its Link; and the Link headers seen."""
    entries: list[Any] = []
    links: list[str] = []
    response = registry.get(path, **params)
    while True:
        assert response.status_code == 200, response.text
        entries += response.json()[field]
        link = response.headers.get("Link")
        if link is None:
            return entries, links
        links.append(link)
        target = re.fullmatch(r'<([^>]+)>; rel="next"', link)
        assert target, link
        response = registry.get(target[1])


def error_of(response: httpx.Response) -> tuple[int, str]:
    return response.status_code, str(response.json()["errors"][0]["code"])


@pytest.fixture(scope="module")
def source(standin: StandIn) -> RawRegistry:
    return RawRegistry.of(standin, "sourceregistry")


def test_tags_listing_has_acrs_shape_and_pages_with_link(source: RawRegistry) -> None:
    repo = unique("listing/shape")
    pushed = {tag: source.push_image(repo, tag, [f"{repo} {tag}".encode()]) for tag in ("c", "a", "e", "b", "d")}

    whole = source.get(f"/acr/v1/{repo}/_tags")
    assert whole.status_code == 200 and "Link" not in whole.headers
    body = whole.json()
    assert body["registry"] == source.login_server and body["imageName"] == repo
    assert [t["name"] for t in body["tags"]] == ["a", "b", "c", "d", "e"]  # name order without orderby
    for entry in body["tags"]:
        assert set(entry) == {"name", "digest", "createdTime", "lastUpdateTime", "signed", "changeableAttributes"}
        assert entry["digest"] == pushed[entry["name"]].digest
        assert entry["createdTime"] == entry["lastUpdateTime"]  # pushed once
        assert ACR_TIME.match(entry["createdTime"])
        assert entry["signed"] is False and entry["changeableAttributes"] == CHANGEABLE

    entries, links = follow(source, f"/acr/v1/{repo}/_tags", "tags", n=2)
    assert entries == body["tags"]
    assert links == [
        f'</acr/v1/{repo}/_tags?last=b&n=2&orderby=>; rel="next"',
        f'</acr/v1/{repo}/_tags?last=d&n=2&orderby=>; rel="next"',
    ]
    # the repository escaped as PYSDK sends it, and the digest filter
    escaped = source.get(f"/acr/v1/{repo.replace('/', '%2F')}/_tags", n=1, last="c")
    assert [t["name"] for t in escaped.json()["tags"]] == ["d"]
    only = source.get(f"/acr/v1/{repo}/_tags", digest=pushed["e"].digest).json()["tags"]
    assert [t["name"] for t in only] == ["e"]
    one = source.get(f"/acr/v1/{repo}/_tags/a").json()
    assert one["imageName"] == repo and one["tag"] == body["tags"][0]


def test_time_order_follows_the_pushes_and_a_push_moves_only_last_update(source: RawRegistry) -> None:
    repo = unique("listing/time")
    for tag in ("t3", "t1", "t4", "t0", "t2"):  # milliseconds apart, never in name order
        source.push_image(repo, tag, [f"{repo} {tag}".encode()])
    pushed_order = ["t3", "t1", "t4", "t0", "t2"]

    ascending, links = follow(source, f"/acr/v1/{repo}/_tags", "tags", n=2, orderby="timeasc")
    assert [t["name"] for t in ascending] == pushed_order
    assert links[0] == f'</acr/v1/{repo}/_tags?last=t1&n=2&orderby=timeasc>; rel="next"'
    descending, _ = follow(source, f"/acr/v1/{repo}/_tags", "tags", n=3, orderby="timedesc")
    assert [t["name"] for t in descending] == pushed_order[::-1]
    times = [when(t["lastUpdateTime"]) for t in ascending]
    assert times == sorted(times) and len(set(times)) == len(times)

    before = {t["name"]: t for t in ascending}
    moved = source.push_image(repo, "t1", [b"another digest for t1"])
    after = {t["name"]: t for t in source.get(f"/acr/v1/{repo}/_tags").json()["tags"]}
    assert after["t1"]["digest"] == moved.digest != before["t1"]["digest"]
    assert after["t1"]["createdTime"] == before["t1"]["createdTime"]
    assert when(after["t1"]["lastUpdateTime"]) > when(before["t2"]["lastUpdateTime"])
    assert {n: after[n] for n in after if n != "t1"} == {n: before[n] for n in before if n != "t1"}
    newest = source.get(f"/acr/v1/{repo}/_tags", n=1, orderby="timedesc").json()["tags"]
    assert [t["name"] for t in newest] == ["t1"]


def test_manifests_and_repository_listings(standin: StandIn, source: RawRegistry) -> None:
    repo = unique("listing/manifests")
    index = push_multiarch_index(source.login_server, repo, "multi", repo)
    source.push_image(repo, "extra", [b"extra layer"], arch="arm64")

    manifests, links = follow(source, f"/acr/v1/{repo}/_manifests", "manifests", n=2)
    assert len(manifests) == 4 and len(links) == 1
    assert links[0].startswith(f"</acr/v1/{repo}/_manifests?last=sha256%3A")
    assert [m["digest"] for m in manifests] == sorted(m["digest"] for m in manifests)  # digest order
    by_digest = {m["digest"]: m for m in manifests}
    top = by_digest[index.digest]
    assert top["mediaType"] == "application/vnd.oci.image.index.v1+json" and top["tags"] == ["multi"]
    assert "architecture" not in top and top["changeableAttributes"] == CHANGEABLE
    assert top["imageSize"] == len(source.manifest_bytes(repo, index.digest))  # the manifest's own bytes
    children = [m for m in manifests if m["digest"] != index.digest]
    assert sorted((m.get("architecture"), m.get("os"), "tags" in m) for m in children) == [
        ("amd64", "linux", False),
        ("arm64", "linux", False),
        ("arm64", "linux", True),
    ]
    for m in manifests:
        assert ACR_TIME.match(m["createdTime"]) and ACR_TIME.match(m["lastUpdateTime"])
    newest = source.get(f"/acr/v1/{repo}/_manifests", n=1, orderby="timedesc").json()["manifests"]
    assert newest[0]["tags"] == ["extra"]
    single = source.get(f"/acr/v1/{repo}/_manifests/{index.digest}").json()
    assert single["manifest"] == top

    summary = source.get(f"/acr/v1/{repo}").json()
    assert summary == {
        "registry": source.login_server,
        "imageName": repo,
        "createdTime": summary["createdTime"],
        "lastUpdateTime": newest[0]["lastUpdateTime"],
        "manifestCount": 4,
        "tagCount": 2,
        "changeableAttributes": {**CHANGEABLE, "teleportEnabled": False},
    }
    assert when(summary["createdTime"]) == min(when(m["createdTime"]) for m in manifests)

    catalog, catalog_links = follow(source, "/acr/v1/_catalog", "repositories", n=1)
    assert repo in catalog and catalog == sorted(catalog)
    assert catalog_links[0].endswith('&n=1&orderby=>; rel="next"') and len(catalog_links) == len(catalog) - 1


def test_listing_errors(source: RawRegistry) -> None:
    repo = unique("listing/errors")
    source.push_image(repo, "v1", [b"errors"])
    for path in ("/acr/v1/no/such/repo/_tags", "/acr/v1/no/such/repo/_manifests", "/acr/v1/no/such/repo"):
        assert error_of(source.get(path)) == (404, "NAME_UNKNOWN")
    assert error_of(source.get(f"/acr/v1/{repo}/_tags/nosuchtag")) == (404, "MANIFEST_UNKNOWN")
    for bad in ("x", "-1", "1.5"):
        assert error_of(source.get(f"/acr/v1/{repo}/_tags", n=bad)) == (400, "PAGINATION_NUMBER_INVALID")
    assert error_of(source.get(f"/acr/v1/{repo}/_manifests", n="x")) == (400, "PAGINATION_NUMBER_INVALID")
    assert error_of(source.get(f"/acr/v1/{repo}/_tags", orderby="newest")) == (400, "ORDERBY_INVALID")
    assert error_of(source.get("/acr/v1/Upper/_tags")) == (400, "NAME_INVALID")
    empty = source.get(f"/acr/v1/{repo}/_tags", n=0)
    assert empty.json()["tags"] == [] and "Link" not in empty.headers


def test_pages_are_capped_and_always_linked(tmp_path: Path) -> None:
    """In-process: a thousand and one tags; n above the cap gets the cap and a Link to the rest."""
    store = RegistryStore(tmp_path / "registry", "capped")
    config = b'{"architecture":"amd64","os":"linux"}'
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": {**descriptor(IMAGE_CONFIG, config), "digest": store.put_blob(config)},
        "layers": [],
    }
    for i in range(MAX_PAGE + 1):
        store.put_manifest("big/app", f"t{i:04d}", json.dumps(manifest).encode(), OCI_MANIFEST)

    async def pages() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=registry_app(store))
        async with httpx.AsyncClient(transport=transport, base_url="https://capped.test") as c:
            first = await c.get("/acr/v1/big/app/_tags", params={"n": 5000, "orderby": "timedesc"})
            link = re.fullmatch(r'<([^>]+)>; rel="next"', first.headers["Link"])
            assert link
            return [first, await c.get(link[1]), await c.get("/acr/v1/big/app/_tags")]

    first, rest, default = asyncio.run(pages())
    assert len(first.json()["tags"]) == MAX_PAGE
    assert first.json()["tags"][0]["name"] == f"t{MAX_PAGE:04d}"  # the newest first
    assert [t["name"] for t in rest.json()["tags"]] == ["t0000"] and "Link" not in rest.headers
    assert len(default.json()["tags"]) == 100 and 'n=100&orderby=>; rel="next"' in default.headers["Link"]


def test_referrers_paginate_with_link(source: RawRegistry) -> None:
    repo = unique("listing/referrers")
    subject = source.push_image(repo, "v1", [b"subject of many"])
    referrers = sorted(
        source.push_referrer(repo, subject.digest, SIGSTORE_BUNDLE, f"bundle {i}".encode()) for i in range(3)
    )
    listed, links = follow(source, f"/v2/{repo}/referrers/{subject.digest}", "manifests", n=2)
    assert [d["digest"] for d in listed] == referrers and len(links) == 1
    assert {d["artifactType"] for d in listed} == {SIGSTORE_BUNDLE}
    whole = source.get(f"/v2/{repo}/referrers/{subject.digest}")
    assert len(whole.json()["manifests"]) == 3 and "Link" not in whole.headers


def test_timestamps_survive_a_restart(tmp_path: Path) -> None:
    state_dir = tmp_path / "restart"
    first = start_standin(state_dir, "--run-seconds", "0.2")
    saved_env = dict(os.environ)
    os.environ.update(first.env)
    try:
        registry = RawRegistry.of(first)
        registry.push_image("restart/app", "v1", [b"first"])
        registry.push_image("restart/app", "v2", [b"second"])
        registry.push_image("restart/app", "v1", [b"v1 moved"])
        before = registry.get("/acr/v1/restart/app/_tags", orderby="timedesc").json()
        manifests_before = registry.get("/acr/v1/restart/app/_manifests").json()
        summary_before = registry.get("/acr/v1/restart/app").json()
        assert [t["name"] for t in before["tags"]] == ["v1", "v2"]
        v1 = before["tags"][0]
        assert when(v1["createdTime"]) < when(before["tags"][1]["createdTime"]) < when(v1["lastUpdateTime"])
        assert first.stop() == 0

        second = start_standin(state_dir, "--run-seconds", "0.2")
        try:
            registry = RawRegistry.of(second)
            assert registry.get("/acr/v1/restart/app/_tags", orderby="timedesc").json() == before
            assert registry.get("/acr/v1/restart/app/_manifests").json() == manifests_before
            assert registry.get("/acr/v1/restart/app").json() == summary_before
        finally:
            second.stop()
    finally:
        first.stop()
        os.environ.clear()
        os.environ.update(saved_env)


def test_export_and_import_carry_referrers_and_cosign_tags(standin: StandIn, source: RawRegistry) -> None:
    """One export run of a subject, its OCI referrer (by digest) and its cosign ``.sig`` tag; the import
    leaves the target's referrers API listing the referrer, and the ``.sig`` tag resolving."""
    target = RawRegistry.of(standin, "targetregistry")
    repo = unique("carry/referrers")
    subject = source.push_image(repo, "v1", [b"signed subject"])
    referrer = source.push_referrer(repo, subject.digest, SIGSTORE_BUNDLE, b"a sigstore bundle")
    signature: Pushed = source.push_cosign_signature(repo, subject.digest, b"a cosign simple signing payload")
    artifacts = [f"{repo}@{referrer}", signature.by_tag, subject.by_tag]

    blob = unique("carryreferrers").replace("-", "") + ".tar"
    exported = export(standin.topology["pipelines"]["exportpipeline"]["id"], artifacts, blob).response
    assert exported is not None and exported.status == "Succeeded", exported
    imported = import_(standin.topology["pipelines"]["directimport"]["id"], blob).response
    assert imported is not None and imported.status == "Succeeded", imported
    assert sorted(imported.imported_artifacts or []) == sorted(artifacts)

    listed = target.get(f"/v2/{repo}/referrers/{subject.digest}").json()["manifests"]
    assert [(d["digest"], d["artifactType"]) for d in listed] == [(referrer, SIGSTORE_BUNDLE)]
    assert target.manifest_bytes(repo, referrer) == source.manifest_bytes(repo, referrer)
    tags = {t["name"]: t["digest"] for t in target.get(f"/acr/v1/{repo}/_tags").json()["tags"]}
    assert tags == {"v1": subject.digest, signature.tag: signature.digest}
    # the import stamped the target's own times
    target_v1 = target.get(f"/acr/v1/{repo}/_tags/v1").json()["tag"]
    source_v1 = source.get(f"/acr/v1/{repo}/_tags/v1").json()["tag"]
    assert when(target_v1["createdTime"]) > when(source_v1["createdTime"])
