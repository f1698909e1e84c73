"""``RegistryListing`` against the stand-in: repositories and tags through every page, referrers found every
way a registry keeps them (OCI 1.1 API, the tag schema, cosign's tags), sizes of indexes, and errors."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from acr_transfer.azure.acr_data import RegistryDataPlane
from acr_transfer.azure.acr_listing import LIST_FROM, DigestLookup, RegistryListing
from acr_transfer.azure.registry_json import parse_acr_time
from acr_transfer.errors import NotFoundError, RequestRejectedError
from acr_transfer.refs import ArtifactRef
from acr_transfer.settings import get_credential, get_settings
from tests.support.artifacts import OCI_INDEX, SIGSTORE_BUNDLE, RawRegistry, descriptor, digest_of
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration

SBOM = "application/spdx+json"
STREAMING = "application/vnd.azure.artifact.streaming.v1"


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="module")
def login_server(standin: StandIn) -> str:
    return str(standin.topology["registries"]["sourceregistry"]["login_server"])


@pytest.fixture(scope="module")
def raw(standin: StandIn) -> RawRegistry:
    return RawRegistry.of(standin, "sourceregistry")


@pytest.fixture
def plane(standin: StandIn) -> Iterator[RegistryDataPlane]:
    data_plane = RegistryDataPlane(get_settings(), get_credential())
    try:
        yield data_plane
    finally:
        data_plane.http.close()
        standin.clear_faults()


def test_repositories_and_tags_through_every_page(login_server: str, plane: RegistryDataPlane) -> None:
    repos = [unique(f"listing/team{i}") for i in range(3)]
    pushed = {}
    started = datetime.now(UTC) - timedelta(seconds=5)
    for repo in repos:
        for i in range(10):
            p = push_file_artifact(login_server, repo, f"v{i}", f"{repo} v{i}".encode())
            pushed[(repo, p.tag)] = p.digest
    listing = RegistryListing(plane, page_size=7)

    assert set(repos) <= set(listing.repositories(login_server))
    for repo in repos:
        tags = listing.tags(login_server, repo)
        assert {(t.repo, t.tag): t.digest for t in tags} == {k: v for k, v in pushed.items() if k[0] == repo}
        for t in tags:
            assert started < t.created <= t.updated < datetime.now(UTC) + timedelta(seconds=5)
            assert t.created.tzinfo is not None
    assert listing.counts["tags"] == 3 * 2  # ten tags in pages of seven: two pages per repository
    assert listing.tags(login_server, unique("listing/absent")) == []


def test_referrers_by_api_and_cosign_tag_recursively(
    login_server: str, raw: RawRegistry, plane: RegistryDataPlane
) -> None:
    repo = unique("listing/signed")
    subject = raw.push_image(repo, "v1", [b"the signed image"])
    bundle = raw.push_referrer(repo, subject.digest, SIGSTORE_BUNDLE, b"a sigstore bundle")
    sbom = raw.push_referrer(repo, subject.digest, SBOM, b'{"spdxVersion":"SPDX-2.3"}')
    sbom_signature = raw.push_referrer(repo, sbom, SIGSTORE_BUNDLE, b"a bundle signing the sbom")
    raw.push_referrer(repo, subject.digest, STREAMING, b"streaming blob index")
    signature = raw.push_cosign_signature(repo, subject.digest, b"cosign simple signing")
    listing = RegistryListing(plane)
    tags = listing.tags(login_server, repo)

    found = listing.referrers(login_server, repo, subject.digest, tags)

    assert sorted((r.digest, r.subject, r.artifact_type, r.via, r.tag) for r in found) == sorted(
        [
            (bundle, subject.digest, SIGSTORE_BUNDLE, "referrers-api", None),
            (sbom, subject.digest, SBOM, "referrers-api", None),
            (sbom_signature, sbom, SIGSTORE_BUNDLE, "referrers-api", None),
            (signature.digest, subject.digest, "application/vnd.oci.image.config.v1+json", "cosign-tag", signature.tag),
        ]
    )
    by_digest = {r.digest: r for r in found}
    assert by_digest[signature.digest].reference == f"{repo}:{subject.digest.replace(':', '-')}.sig"
    assert by_digest[bundle].reference == f"{repo}@{bundle}"
    assert by_digest[bundle].size == len(raw.manifest_bytes(repo, bundle))
    assert by_digest[bundle].media_type == "application/vnd.oci.image.manifest.v1+json"
    # without the tag listing, cosign's tags are probed by name: the same answer
    assert sorted(listing.referrers(login_server, repo, subject.digest), key=str) == sorted(found, key=str)
    signatures = listing.referrers(login_server, repo, subject.digest, tags, artifact_type=SIGSTORE_BUNDLE)
    assert {r.digest for r in signatures} == {bundle, sbom_signature}
    assert listing.referrers(login_server, repo, subject.digest, tags, max_depth=1) == [
        r for r in found if r.subject == subject.digest
    ]
    assert listing.referrers(login_server, repo, bundle, tags) == []


def test_without_a_referrers_api_the_tag_schema_index_is_read(
    standin: StandIn, login_server: str, raw: RawRegistry, plane: RegistryDataPlane
) -> None:
    repo = unique("listing/tagschema")
    subject = raw.push_image(repo, "v1", [b"an image signed the old way"])
    referrer = raw.push_referrer(repo, subject.digest, SIGSTORE_BUNDLE, b"bundle in the tag schema")
    body = raw.manifest_bytes(repo, referrer)
    entry = descriptor("application/vnd.oci.image.manifest.v1+json", body, artifactType=SIGSTORE_BUNDLE)
    raw.push_manifest(
        repo,
        subject.digest.replace(":", "-"),
        {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [entry]},
    )
    # a registry without the API (ACR with customer-managed keys) answers 404 there
    standin.add_fault(service="registry", method="GET", path=f"^/v2/{re.escape(repo)}/referrers/", status=404, count=5)
    listing = RegistryListing(plane)

    found = listing.referrers(login_server, repo, subject.digest)

    assert [(r.digest, r.via, r.artifact_type, r.size) for r in found] == [
        (referrer, "tag-schema", SIGSTORE_BUNDLE, len(body))
    ]
    # with the tag listing at hand, the index is read by the digest its tag points at; the missing API is
    # remembered for the repository, so it is not asked again
    assert listing.referrers(login_server, repo, subject.digest, listing.tags(login_server, repo)) == found
    assert listing.referrers(login_server, repo, referrer, listing.tags(login_server, repo)) == []
    assert listing.counts["referrers"] == 1
    assert [f["hits"] for f in standin.faults()] == [1]


def test_size_of_a_multiarch_index_sums_its_children(
    login_server: str, raw: RawRegistry, plane: RegistryDataPlane
) -> None:
    repo = unique("listing/size")
    amd64_layers = [b"a" * 1000, b"b" * 4000]
    arm64_layers = [b"c" * 3000]
    amd64 = raw.push_image(repo, None, amd64_layers, arch="amd64")
    arm64 = raw.push_image(repo, None, arm64_layers, arch="arm64")
    index = raw.push_index(repo, "multi", [(amd64, "amd64"), (arm64, "arm64")])
    listing = RegistryListing(plane)

    size = listing.size(login_server, repo, "multi")

    amd64_config, arm64_config = (_config_size(raw, repo, child.digest) for child in (amd64, arm64))
    assert size.digest == index.digest
    assert size.total_bytes == amd64_config + 1000 + 4000 + arm64_config + 3000
    assert (size.largest_layer_bytes, size.largest_layer_digest) == (4000, digest_of(b"b" * 4000))
    assert listing.counts["manifest"] == 3  # the index and each child once
    image = listing.size(login_server, repo, arm64.digest)
    assert (image.digest, image.total_bytes, image.largest_layer_bytes) == (arm64.digest, arm64_config + 3000, 3000)
    with pytest.raises(NotFoundError, match=f"{repo}:nosuchtag is not in registry {re.escape(login_server)}"):
        listing.size(login_server, repo, "nosuchtag")


def test_listing_errors_are_retried_or_raised_by_class(
    standin: StandIn, login_server: str, raw: RawRegistry, plane: RegistryDataPlane
) -> None:
    repo = unique("listing/faults")
    raw.push_image(repo, "v1", [b"faulty"])
    listing = RegistryListing(plane)
    path = f"^/acr/v1/{re.escape(repo)}/_tags$"

    standin.add_fault(service="registry", method="GET", path=path, status=503, retry_after=0.1, count=2)
    assert [t.tag for t in listing.tags(login_server, repo)] == ["v1"]
    assert listing.counts["tags"] == 3

    standin.add_fault(service="registry", method="GET", path=path, status=400, count=3)
    with pytest.raises(RequestRejectedError) as raised:
        listing.tags(login_server, repo)
    assert login_server in raised.value.message and repo in raised.value.message and "400" in raised.value.message
    assert listing.counts["tags"] == 4  # a rejected request is sent once


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2021-09-09T21:57:58.1234567Z", datetime(2021, 9, 9, 21, 57, 58, 123456, UTC)),
        ("2021-09-09T21:57:58Z", datetime(2021, 9, 9, 21, 57, 58, tzinfo=UTC)),
        ("2021-09-09T21:57:58.5", datetime(2021, 9, 9, 21, 57, 58, 500000, UTC)),
        ("2021-09-09T23:57:58.1+02:00", datetime(2021, 9, 9, 21, 57, 58, 100000, UTC)),
    ],
)
def test_acr_times_parse(text: str, expected: datetime) -> None:
    assert parse_acr_time(text) == expected


def _config_size(raw: RawRegistry, repo: str, digest: str) -> int:
    return int(json.loads(raw.manifest_bytes(repo, digest))["config"]["size"])


def _heads(standin: StandIn, repo: str) -> int:
    """The HEADs of ``repo``'s manifests the registry answered (not counting the 401 challenges of the token flow)."""
    log = standin.requests("registry")
    return sum(1 for r in log if r["method"] == "HEAD" and f"/v2/{repo}/manifests/" in r["path"] and r["status"] != 401)


def test_digest_lookup_answers_many_tags_of_a_repository_from_its_listing(
    standin: StandIn, login_server: str, plane: RegistryDataPlane
) -> None:
    repo, few = unique("listing/many"), unique("listing/few")
    pushed = {
        f"v{i}": push_file_artifact(login_server, repo, f"v{i}", f"{repo} v{i}".encode()).digest for i in range(10)
    }
    lone = push_file_artifact(login_server, few, "v1", b"one tag").digest
    asked = [*(f"{repo}:v{i}" for i in range(10)), f"{repo}:absent", f"{few}:v1"]
    listing = RegistryListing(plane, page_size=7)
    lookup = DigestLookup(listing, login_server, [ArtifactRef.parse(a) for a in asked])
    standin.clear_requests()

    answers = {a: lookup(*a.split(":")) for a in asked}

    assert answers == {**{f"{repo}:{t}": d for t, d in pushed.items()}, f"{repo}:absent": None, f"{few}:v1": lone}
    assert listing.counts["tags"] == 2  # eleven tags asked of one repository: two pages of seven, read once
    assert _heads(standin, repo) == 0
    assert _heads(standin, few) == 1  # fewer than LIST_FROM tags of a repository: one HEAD each, as before


def test_digest_lookup_gives_up_a_listing_longer_than_the_heads_it_saves(
    standin: StandIn, login_server: str, plane: RegistryDataPlane
) -> None:
    repo = unique("listing/history")
    pushed = {
        f"v{i}": push_file_artifact(login_server, repo, f"v{i}", f"{repo} v{i}".encode()).digest for i in range(12)
    }
    wanted = [f"{repo}:v{i}" for i in range(LIST_FROM)]  # 4 tags of 12, in pages of one tag
    listing = RegistryListing(plane, page_size=1)
    lookup = DigestLookup(listing, login_server, [ArtifactRef.parse(a) for a in wanted])
    standin.clear_requests()

    answers = {a: lookup(*a.split(":")) for a in wanted}

    assert answers == {a: pushed[a.split(":")[1]] for a in wanted}
    assert listing.counts["tags"] <= LIST_FROM // 2 + 1  # stopped once the listing cost half the tags it answers
    assert _heads(standin, repo) == LIST_FROM
