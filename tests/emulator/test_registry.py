"""The stand-in's registry data plane (emulator/registry.py) and its OCI layout tars (emulator/oci.py).

The HTTP tests serve one registry over TLS on 127.0.0.1 (its own event loop in a thread) and talk to it
with real clients: oras-py for push/pull, httpx for the raw distribution API, skopeo when installed.
The layout tests drive the export/import functions in-process, as the run engine does.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import os
import shutil
import ssl
import subprocess
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from emulator.httpserver import TlsEndpoint
from emulator.oci import (
    ArtifactNotFound,
    ArtifactRefError,
    ImportFailed,
    LayoutError,
    import_layout,
    parse_artifact_ref,
    read_layout_tar,
    resolve_artifact,
    write_layout_tar,
)
from emulator.registry import (
    DOCKER_MANIFEST,
    OCI_INDEX,
    OCI_MANIFEST,
    ManifestBlobUnknown,
    RegistryStore,
    registry_app,
)
from emulator.tls import ensure_tls


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def to_json(doc: dict) -> bytes:
    return json.dumps(doc, separators=(",", ":")).encode()


def image_manifest(config: bytes, layers: list[bytes], media_type: str = OCI_MANIFEST) -> bytes:
    """An image manifest (OCI or Docker v2) for a config and layers."""
    layer_type = "application/vnd.oci.image.layer.v1.tar+gzip"
    return to_json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": digest_of(config),
                "size": len(config),
            },
            "layers": [{"mediaType": layer_type, "digest": digest_of(b), "size": len(b)} for b in layers],
        }
    )


def index_manifest(children: list[tuple[bytes, str]]) -> bytes:
    """An OCI image index over ``(manifest bytes, architecture)`` children."""
    return to_json(
        {
            "schemaVersion": 2,
            "mediaType": OCI_INDEX,
            "manifests": [
                {
                    "mediaType": OCI_MANIFEST,
                    "digest": digest_of(m),
                    "size": len(m),
                    "platform": {"os": "linux", "architecture": arch},
                }
                for m, arch in children
            ],
        }
    )


def push_image(store: RegistryStore, repo: str, ref: str, seed: str, media_type: str = OCI_MANIFEST) -> str:
    """Put a small image (config + one layer whose content depends on ``seed``) into ``store``."""
    config = to_json({"architecture": "amd64", "os": "linux", "seed": seed})
    layer = f"layer of {seed}".encode() * 100
    store.put_blob(config)
    store.put_blob(layer)
    return store.put_manifest(repo, ref, image_manifest(config, [layer], media_type), media_type)


def push_multiarch(store: RegistryStore, repo: str, tag: str) -> str:
    """Put an index of two single-arch images into ``store`` and tag it."""
    children = []
    for arch in ("amd64", "arm64"):
        digest = push_image(store, repo, f"{tag}-{arch}", f"{repo}-{tag}-{arch}")
        children.append((store.read_blob(digest), arch))
    return store.put_manifest(repo, tag, index_manifest(children), OCI_INDEX)


# -- the served registry ---------------------------------------------------------------------------------


@dataclass
class ServedRegistry:
    store: RegistryStore
    url: str
    host: str
    ca: Path

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.url, verify=ssl.create_default_context(cafile=str(self.ca)), timeout=10)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedRegistry]:
    """One registry served over TLS for this module, on its own event loop in a thread."""
    state = tmp_path_factory.mktemp("registry-state")
    tls = ensure_tls(state)
    store = RegistryStore(state / "registries" / "sourceregistry", "sourceregistry")
    endpoint = TlsEndpoint("registry", registry_app(store), tls)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_until_complete, args=(endpoint.serve(),), daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not endpoint.server.started:
        assert time.monotonic() < deadline, "the registry endpoint did not start"
        time.sleep(0.01)
    try:
        yield ServedRegistry(store, endpoint.url, f"127.0.0.1:{endpoint.port}", tls.ca)
    finally:
        endpoint.stop()
        thread.join(10)
        loop.close()


@pytest.fixture
def http(served: ServedRegistry) -> Iterator[httpx.Client]:
    with served.client() as client:
        yield client


def error_code(response: httpx.Response) -> str:
    return str(response.json()["errors"][0]["code"])


def upload(http: httpx.Client, repo: str, data: bytes) -> str:
    """Push a blob with a monolithic POST and return its digest."""
    digest = digest_of(data)
    r = http.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201, r.text
    return digest


def put_manifest(http: httpx.Client, repo: str, ref: str, data: bytes, media_type: str) -> httpx.Response:
    return http.put(f"/v2/{repo}/manifests/{ref}", content=data, headers={"Content-Type": media_type})


# -- the distribution API over TLS -----------------------------------------------------------------------


def test_base_endpoint_allows_anonymous_and_ignores_credentials(http: httpx.Client) -> None:
    for headers in ({}, {"Authorization": "Basic dXNlcjpwYXNz"}, {"Authorization": "Bearer token"}):
        r = http.get("/v2/", headers=headers)
        assert r.status_code == 200
        assert r.json() == {}
        assert r.headers["Docker-Distribution-API-Version"] == "registry/2.0"


def test_monolithic_upload_then_head_get_and_range(http: httpx.Client) -> None:
    data = os.urandom(70_000)
    digest = digest_of(data)
    r = http.post("/v2/mono/app/blobs/uploads/", params={"digest": digest}, content=data)
    assert r.status_code == 201
    assert r.headers["Location"] == f"/v2/mono/app/blobs/{digest}"
    assert r.headers["Docker-Content-Digest"] == digest

    head = http.head(f"/v2/mono/app/blobs/{digest}")
    assert head.status_code == 200
    assert head.headers["Content-Length"] == str(len(data))
    assert head.headers["Docker-Content-Digest"] == digest
    assert head.headers["Content-Type"] == "application/octet-stream"
    assert http.get(f"/v2/mono/app/blobs/{digest}").content == data

    part = http.get(f"/v2/mono/app/blobs/{digest}", headers={"Range": "bytes=10-19"})
    assert part.status_code == 206
    assert part.content == data[10:20]


def test_chunked_upload_with_status_and_out_of_order_chunk(http: httpx.Client) -> None:
    data = os.urandom(300_000)
    start = http.post("/v2/chunked/blobs/uploads/")
    assert start.status_code == 202
    assert start.headers["Range"] == "0-0"
    location = start.headers["Location"]
    assert location.startswith("/v2/chunked/blobs/uploads/")
    assert start.headers["Docker-Upload-UUID"] == location.rsplit("/", 1)[1]

    first = http.patch(location, content=data[:100_000], headers={"Content-Range": "0-99999"})
    assert first.status_code == 202
    assert first.headers["Range"] == "0-99999"
    location = first.headers["Location"]
    assert http.get(location).status_code == 204
    assert http.get(location).headers["Range"] == "0-99999"

    gap = http.patch(location, content=b"x", headers={"Content-Range": "200000-200000"})
    assert gap.status_code == 416
    assert error_code(gap) == "BLOB_UPLOAD_INVALID"

    assert http.patch(location, content=data[100_000:250_000]).headers["Range"] == "0-249999"
    digest = digest_of(data)
    done = http.put(location, params={"digest": digest}, content=data[250_000:])  # final chunk in the PUT
    assert done.status_code == 201
    assert done.headers["Location"] == f"/v2/chunked/blobs/{digest}"
    assert done.headers["Docker-Content-Digest"] == digest
    assert http.get(f"/v2/chunked/blobs/{digest}").content == data
    assert error_code(http.get(location)) == "BLOB_UPLOAD_UNKNOWN"


def test_digest_mismatch_is_rejected_and_nothing_is_stored(served: ServedRegistry, http: httpx.Client) -> None:
    wrong = digest_of(b"something else")
    r = http.post("/v2/bad/blobs/uploads/", params={"digest": wrong}, content=b"payload")
    assert r.status_code == 400
    assert error_code(r) == "DIGEST_INVALID"
    assert not served.store.has_blob(wrong)
    assert not served.store.has_blob(digest_of(b"payload"))

    location = http.post("/v2/bad/blobs/uploads/").headers["Location"]
    http.patch(location, content=b"payload")
    r = http.put(location, params={"digest": wrong})
    assert (r.status_code, error_code(r)) == (400, "DIGEST_INVALID")
    assert error_code(http.put(location, params={"digest": digest_of(b"payload")})) == "BLOB_UPLOAD_UNKNOWN"  # ended


def test_unknown_blob_gives_oci_error_body(http: httpx.Client) -> None:
    missing = digest_of(b"never pushed")
    r = http.get(f"/v2/any/repo/blobs/{missing}")
    assert r.status_code == 404
    error = r.json()["errors"][0]
    assert error["code"] == "BLOB_UNKNOWN"
    assert missing in error["message"]
    assert http.head(f"/v2/any/repo/blobs/{missing}").status_code == 404


def test_cross_repo_mount(http: httpx.Client) -> None:
    digest = upload(http, "mount/source", b"mountable blob")
    mounted = http.post("/v2/mount/target/blobs/uploads/", params={"mount": digest, "from": "mount/source"})
    assert mounted.status_code == 201
    assert mounted.headers["Location"] == f"/v2/mount/target/blobs/{digest}"
    missing = digest_of(b"not there")
    fallback = http.post("/v2/mount/target/blobs/uploads/", params={"mount": missing, "from": "mount/source"})
    assert fallback.status_code == 202
    assert "/blobs/uploads/" in fallback.headers["Location"]


def test_manifest_by_tag_and_by_digest(http: httpx.Client) -> None:
    config, layer = b'{"architecture":"amd64","os":"linux"}', os.urandom(5000)
    upload(http, "team/app/web", config)
    upload(http, "team/app/web", layer)
    manifest = image_manifest(config, [layer])
    r = put_manifest(http, "team/app/web", "v1", manifest, OCI_MANIFEST)
    assert r.status_code == 201, r.text
    digest = r.headers["Docker-Content-Digest"]
    assert digest == digest_of(manifest)
    assert r.headers["Location"] == f"/v2/team/app/web/manifests/{digest}"

    by_tag = http.get("/v2/team/app/web/manifests/v1", headers={"Accept": OCI_MANIFEST})
    by_digest = http.get(f"/v2/team/app/web/manifests/{digest}")
    assert by_tag.content == by_digest.content == manifest
    assert by_tag.headers["Docker-Content-Digest"] == by_digest.headers["Docker-Content-Digest"] == digest
    assert by_tag.headers["Content-Type"] == OCI_MANIFEST
    head = http.head("/v2/team/app/web/manifests/v1")
    assert (head.status_code, head.headers["Content-Length"]) == (200, str(len(manifest)))


def test_docker_manifest_type_from_body_when_content_type_is_generic(http: httpx.Client) -> None:
    config, layer = b'{"os":"linux"}', b"docker layer"
    upload(http, "dockerish", config)
    upload(http, "dockerish", layer)
    manifest = image_manifest(config, [layer], DOCKER_MANIFEST)
    assert put_manifest(http, "dockerish", "v2", manifest, "application/json").status_code == 201
    assert http.get("/v2/dockerish/manifests/v2").headers["Content-Type"] == DOCKER_MANIFEST


def test_manifest_errors(http: httpx.Client) -> None:
    config = b'{"for":"errors"}'
    upload(http, "errs", config)
    missing_layer = image_manifest(config, [b"never uploaded"])
    r = put_manifest(http, "errs", "v1", missing_layer, OCI_MANIFEST)
    assert (r.status_code, error_code(r)) == (400, "MANIFEST_BLOB_UNKNOWN")
    r = put_manifest(http, "errs", "v1", b"{not json", OCI_MANIFEST)
    assert (r.status_code, error_code(r)) == (400, "MANIFEST_INVALID")
    good = image_manifest(config, [])
    r = put_manifest(http, "errs", digest_of(b"other"), good, OCI_MANIFEST)
    assert (r.status_code, error_code(r)) == (400, "DIGEST_INVALID")
    assert put_manifest(http, "errs", "v1", good, OCI_MANIFEST).status_code == 201

    r = http.get("/v2/errs/manifests/v404")
    assert (r.status_code, error_code(r)) == (404, "MANIFEST_UNKNOWN")
    r = http.get("/v2/no/such/repo/manifests/v1")
    assert (r.status_code, error_code(r)) == (404, "NAME_UNKNOWN")
    r = http.get("/v2/no/such/repo/tags/list")
    assert (r.status_code, error_code(r)) == (404, "NAME_UNKNOWN")
    r = http.get("/v2/Upper/manifests/v1")
    assert (r.status_code, error_code(r)) == (400, "NAME_INVALID")


def test_multiarch_index_needs_its_children_in_the_repository(http: httpx.Client) -> None:
    children = []
    for arch in ("amd64", "arm64"):
        config, layer = to_json({"architecture": arch}), f"rootfs {arch}".encode()
        upload(http, "multi", config)
        upload(http, "multi", layer)
        children.append((image_manifest(config, [layer]), arch))
    index = index_manifest(children)
    r = put_manifest(http, "multi", "v1", index, OCI_INDEX)
    assert (r.status_code, error_code(r)) == (400, "MANIFEST_BLOB_UNKNOWN")

    for manifest, _ in children:
        assert put_manifest(http, "multi", digest_of(manifest), manifest, OCI_MANIFEST).status_code == 201
    assert put_manifest(http, "multi", "v1", index, OCI_INDEX).status_code == 201
    got = http.get("/v2/multi/manifests/v1")
    assert (got.content, got.headers["Content-Type"]) == (index, OCI_INDEX)
    for manifest, _ in children:
        assert http.get(f"/v2/multi/manifests/{digest_of(manifest)}").content == manifest


def test_tags_list_and_catalog_paging(http: httpx.Client) -> None:
    config = b'{"paging":true}'
    upload(http, "paging/repo", config)
    manifest = image_manifest(config, [])
    for tag in ("c", "a", "d", "b"):
        assert put_manifest(http, "paging/repo", tag, manifest, OCI_MANIFEST).status_code == 201
    assert http.get("/v2/paging/repo/tags/list").json() == {
        "name": "paging/repo",
        "tags": ["a", "b", "c", "d"],
    }
    first = http.get("/v2/paging/repo/tags/list", params={"n": 2})
    assert first.json()["tags"] == ["a", "b"]
    assert first.headers["Link"] == '</v2/paging/repo/tags/list?n=2&last=b>; rel="next"'
    second = http.get("/v2/paging/repo/tags/list", params={"n": 2, "last": "b"})
    assert second.json()["tags"] == ["c", "d"]
    assert "Link" not in second.headers
    assert error_code(http.get("/v2/paging/repo/tags/list", params={"n": "x"})) == "PAGINATION_NUMBER_INVALID"

    catalog = http.get("/v2/_catalog").json()["repositories"]
    assert "paging/repo" in catalog
    assert catalog == sorted(catalog)
    page = http.get("/v2/_catalog", params={"n": 1})
    assert len(page.json()["repositories"]) == 1
    assert 'rel="next"' in page.headers["Link"]


def test_delete_tag_and_manifest(http: httpx.Client) -> None:
    config = b'{"delete":1}'
    upload(http, "deleting", config)
    manifest = image_manifest(config, [])
    digest = put_manifest(http, "deleting", "keep", manifest, OCI_MANIFEST).headers["Docker-Content-Digest"]
    put_manifest(http, "deleting", "drop", manifest, OCI_MANIFEST)
    assert http.delete("/v2/deleting/manifests/drop").status_code == 202
    assert http.get("/v2/deleting/tags/list").json()["tags"] == ["keep"]
    assert http.delete(f"/v2/deleting/manifests/{digest}").status_code == 202
    assert error_code(http.get("/v2/deleting/manifests/keep")) == "NAME_UNKNOWN"


def test_referrers_lists_manifests_with_that_subject(http: httpx.Client) -> None:
    config = b'{"subject":"base"}'
    upload(http, "refs", config)
    base = image_manifest(config, [])
    base_digest = put_manifest(http, "refs", "v1", base, OCI_MANIFEST).headers["Docker-Content-Digest"]
    empty = http.get(f"/v2/refs/referrers/{base_digest}")
    assert (empty.status_code, empty.json()["manifests"]) == (200, [])

    signature = json.loads(image_manifest(config, []))
    signature["artifactType"] = "application/vnd.example.signature"
    signature["subject"] = {"mediaType": OCI_MANIFEST, "digest": base_digest, "size": len(base)}
    body = to_json(signature)
    r = put_manifest(http, "refs", digest_of(body), body, OCI_MANIFEST)
    assert r.headers["OCI-Subject"] == base_digest
    listed = http.get(f"/v2/refs/referrers/{base_digest}").json()["manifests"]
    assert [(d["digest"], d["artifactType"]) for d in listed] == [
        (digest_of(body), "application/vnd.example.signature")
    ]


def test_oras_pushes_and_pulls_a_file_artifact(served: ServedRegistry, tmp_path: Path) -> None:
    import oras.client

    payload = tmp_path / "hello.txt"
    payload.write_text("hello from oras\n")
    client = oras.client.OrasClient(hostname=served.host, tls_verify=str(served.ca))
    target = f"{served.host}/oras/hello:v1"
    response = client.push(target=target, files=[str(payload)], disable_path_validation=True, quiet=True)
    assert response.status_code == 201
    assert served.store.resolve("oras/hello", "v1") is not None

    out = tmp_path / "pulled"
    files = client.pull(target=target, outdir=str(out))
    assert [Path(f).read_text() for f in files] == ["hello from oras\n"]
    assert "v1" in client.get_tags(f"{served.host}/oras/hello")


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_inspects_an_image(served: ServedRegistry, tmp_path: Path) -> None:
    push_image(served.store, "skopeo/app", "v1", "skopeo")
    shutil.copy(served.ca, tmp_path / "ca.crt")  # skopeo's --cert-dir trusts *.crt files
    done = subprocess.run(
        ["skopeo", "inspect", "--raw", f"--cert-dir={tmp_path}", f"docker://{served.host}/skopeo/app:v1"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["mediaType"] == OCI_MANIFEST


@pytest.mark.skipif(shutil.which("skopeo") is None, reason="skopeo is not installed")
def test_skopeo_pulls_and_pushes_with_the_ca(served: ServedRegistry, tmp_path: Path) -> None:
    """skopeo copy registry → OCI layout on disk (pull) → another repository (push); digests stay equal."""
    push_image(served.store, "skopeo/source", "v1", "skopeo round trip")
    shutil.copy(served.ca, tmp_path / "ca.crt")
    certs = f"--src-cert-dir={tmp_path}", f"--dest-cert-dir={tmp_path}"
    layout = tmp_path / "layout"
    for src, dst in (
        (f"docker://{served.host}/skopeo/source:v1", f"oci:{layout}:v1"),
        (f"oci:{layout}:v1", f"docker://{served.host}/skopeo/copied:v1"),
    ):
        done = subprocess.run(["skopeo", "copy", "--preserve-digests", *certs, src, dst], capture_output=True,
                              text=True, timeout=60)  # fmt: skip
        assert done.returncode == 0, done.stderr
    assert served.store.resolve("skopeo/copied", "v1") == served.store.resolve("skopeo/source", "v1")


# -- artifact references ---------------------------------------------------------------------------------

HEX = "ab" * 32


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hello", ("hello", "latest", None)),
        ("hello:v1", ("hello", "v1", None)),
        ("team/app-web/x_y:1.0-rc_1", ("team/app-web/x_y", "1.0-rc_1", None)),
        (f"hello@sha256:{HEX}", ("hello", None, f"sha256:{HEX}")),
    ],
)
def test_parse_artifact_ref(ref: str, expected: tuple[str, str | None, str | None]) -> None:
    assert parse_artifact_ref(ref) == expected


@pytest.mark.parametrize(
    "ref",
    [
        "",
        "Hello:v1",
        "hello:",
        "hello:-v1",
        "../etc",
        "a/../b",
        "/abs",
        "hello@sha256:abc",
        f"h:v1@sha256:{HEX}",
    ],
)
def test_parse_artifact_ref_rejects_malformed_refs(ref: str) -> None:
    with pytest.raises(ArtifactRefError, match="artifact reference"):
        parse_artifact_ref(ref)


def test_resolve_artifact_names_the_missing_ref(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "src", "sourceregistry")
    digest = push_image(store, "hello", "v1", "hello")
    resolved = resolve_artifact(store, "hello:v1")
    assert (resolved.ref, resolved.digest, resolved.media_type) == ("hello:v1", digest, OCI_MANIFEST)
    assert resolve_artifact(store, f"hello@{digest}").tag is None
    with pytest.raises(ArtifactNotFound, match="artifact 'hello:v9' not found in registry 'sourceregistry'"):
        resolve_artifact(store, "hello:v9")


# -- OCI layout tars: export and import ------------------------------------------------------------------


@pytest.fixture
def source(tmp_path: Path) -> RegistryStore:
    """A source registry with a tagged image, an image referenced by digest and a multi-arch index."""
    store = RegistryStore(tmp_path / "source", "sourceregistry")
    push_image(store, "hello", "v1", "hello-v1")
    push_image(store, "team/pinned", "old", "pinned", DOCKER_MANIFEST)
    push_multiarch(store, "multi/arch", "v2")
    return store


def export(store: RegistryStore, refs: list[str], out: Path) -> Path:
    with out.open("wb") as f:
        write_layout_tar(store, [resolve_artifact(store, r) for r in refs], f)
    return out


def three_refs(store: RegistryStore) -> list[str]:
    return ["hello:v1", f"team/pinned@{store.resolve('team/pinned', 'old')}", "multi/arch:v2"]


def test_export_then_import_keeps_manifests_byte_identical(source: RegistryStore, tmp_path: Path) -> None:
    refs = three_refs(source)
    tar_path = export(source, refs, tmp_path / "export.tar")
    with read_layout_tar(tar_path) as layout:
        assert [a.ref for a in layout.artifacts] == refs
        assert [a.tag for a in layout.artifacts] == ["v1", None, "v2"]

    target = RegistryStore(tmp_path / "target", "targetregistry")
    result = import_layout(tar_path, target, overwrite_tags=False, continue_on_errors=False)
    assert (result.imported, result.failed) == (refs, [])
    for ref in refs:
        repo, tag, digest = parse_artifact_ref(ref)
        expected, got = (
            source.get_manifest(repo, digest or str(tag)),
            target.get_manifest(repo, digest or str(tag)),
        )
        assert expected is not None and got is not None
        assert (got.digest, got.data, got.media_type) == (expected.digest, expected.data, expected.media_type)
    index = json.loads(target.read_blob(str(target.resolve("multi/arch", "v2"))))
    for child in index["manifests"]:  # the children came along, by digest
        assert target.get_manifest("multi/arch", child["digest"]) is not None
    assert target.tags("team/pinned") == []


def test_layout_tar_is_deterministic_and_deduplicates_blobs(source: RegistryStore, tmp_path: Path) -> None:
    refs = [*three_refs(source), "hello:v1"]
    first = export(source, refs, tmp_path / "a.tar").read_bytes()
    second = export(source, refs, tmp_path / "b.tar").read_bytes()
    assert hashlib.sha256(first).digest() == hashlib.sha256(second).digest()
    with tarfile.open(fileobj=io.BytesIO(first)) as tar:
        names = tar.getnames()
        assert names[:2] == ["oci-layout", "index.json"]
        assert len(names) == len(set(names))
        assert all(m.mtime == 0 and m.uid == 0 and m.gid == 0 for m in tar.getmembers())
        index = json.load(tar.extractfile("index.json"))  # type: ignore[arg-type]
    assert len(index["manifests"]) == 3
    assert index["manifests"][0]["annotations"] == {
        "org.opencontainers.image.ref.name": "v1",
        "io.acr-transfer.repository": "hello",
        "io.acr-transfer.reference": "hello:v1",
    }


def test_tag_conflict_needs_overwrite_tags(source: RegistryStore, tmp_path: Path) -> None:
    tar_path = export(source, ["hello:v1"], tmp_path / "hello.tar")
    target = RegistryStore(tmp_path / "target", "targetregistry")
    other = push_image(target, "hello", "v1", "something else")
    exported = source.resolve("hello", "v1")

    with pytest.raises(ImportFailed) as failed:
        import_layout(tar_path, target, overwrite_tags=False, continue_on_errors=False)
    assert str(failed.value) == (
        f"tag 'hello:v1' already exists in the target with digest {other} (blob has {exported}); "
        "set OverwriteTags on the import pipeline to replace it"
    )
    assert target.resolve("hello", "v1") == other

    result = import_layout(tar_path, target, overwrite_tags=True, continue_on_errors=False)
    assert result.imported == ["hello:v1"]
    assert target.resolve("hello", "v1") == exported
    again = import_layout(tar_path, target, overwrite_tags=False, continue_on_errors=False)
    assert again.imported == ["hello:v1"]  # same digest: not a conflict


def test_continue_on_errors_gives_a_partial_result(source: RegistryStore, tmp_path: Path) -> None:
    refs = three_refs(source)
    tar_path = export(source, refs, tmp_path / "all.tar")
    target = RegistryStore(tmp_path / "target", "targetregistry")
    push_image(target, "hello", "v1", "conflicting")

    result = import_layout(tar_path, target, overwrite_tags=False, continue_on_errors=True)
    assert result.imported == refs[1:]
    assert [ref for ref, _ in result.failed] == ["hello:v1"]
    assert "set OverwriteTags" in result.failed[0][1]

    fresh = RegistryStore(tmp_path / "fresh", "fresh")
    push_image(fresh, "multi/arch", "v2", "conflicting")
    with pytest.raises(ImportFailed) as failed:
        import_layout(tar_path, fresh, overwrite_tags=False, continue_on_errors=False)
    assert failed.value.ref == "multi/arch:v2"
    assert failed.value.result.imported == refs[:2]  # pushed before the failure, and kept
    assert fresh.resolve("hello", "v1") is not None


def write_raw_tar(path: Path, members: dict[str, bytes]) -> Path:
    with tarfile.open(path, "w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def test_malformed_layout_tars_are_rejected(source: RegistryStore, tmp_path: Path) -> None:
    layout = {"oci-layout": b'{"imageLayoutVersion":"1.0.0"}', "index.json": b'{"manifests":[]}'}
    cases = [
        ("escapes the layout", {**layout, "../evil": b"x"}),
        ("escapes the layout", {**layout, "/etc/passwd": b"x"}),
        ("no index.json", {"oci-layout": layout["oci-layout"]}),
        ("no oci-layout", {"index.json": layout["index.json"]}),
        ("is corrupt", {**layout, f"blobs/sha256/{HEX}": b"does not hash to its name"}),
    ]
    for i, (message, members) in enumerate(cases):
        with pytest.raises(LayoutError, match=message):
            read_layout_tar(write_raw_tar(tmp_path / f"bad{i}.tar", members))
    with pytest.raises(LayoutError, match="not a readable tar"):
        read_layout_tar(write_raw_tar(tmp_path / "ok.tar", {}).with_name("missing.tar"))

    link = tmp_path / "link.tar"
    with tarfile.open(link, "w") as tar:
        info = tarfile.TarInfo("blobs/sha256/" + HEX)
        info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        tar.addfile(info)
    with pytest.raises(LayoutError, match="link"):
        read_layout_tar(link)
    target = RegistryStore(tmp_path / "target", "targetregistry")
    with pytest.raises(LayoutError):
        import_layout(tmp_path / "bad0.tar", target, overwrite_tags=True, continue_on_errors=True)
    assert target.repositories() == []


# -- the store -------------------------------------------------------------------------------------------


def test_store_survives_a_restart(source: RegistryStore) -> None:
    reopened = RegistryStore(source.root, source.name)
    assert reopened.repositories() == ["hello", "multi/arch", "team/pinned"]
    assert reopened.tags("multi/arch") == ["v2", "v2-amd64", "v2-arm64"]
    original = source.get_manifest("hello", "v1")
    assert original is not None
    assert reopened.get_manifest("hello", "v1") == original
    assert reopened.delete_tag("hello", "v1")
    assert RegistryStore(source.root, source.name).resolve("hello", "v1") is None


def test_store_validates_what_it_is_given(tmp_path: Path) -> None:
    store = RegistryStore(tmp_path / "r", "r")
    with pytest.raises(ValueError, match="not the expected"):
        store.put_blob(b"data", digest_of(b"other"))
    with pytest.raises(ManifestBlobUnknown, match="not in registry 'r'"):
        store.put_manifest("app", "v1", image_manifest(b"{}", []), OCI_MANIFEST)
    with pytest.raises(ValueError, match="repository name"):
        store.get_manifest("../escape", "v1")
    assert store.get_manifest("app", "../../etc") is None
