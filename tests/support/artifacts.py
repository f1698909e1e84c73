"""Hand-made registry content for listing and referrer tests, pushed and read with plain HTTP (httpx).

``RawRegistry`` talks to one stand-in registry as any client would: a monolithic blob upload, a manifest PUT by
tag or digest, and GETs of any path. When the stand-in's topology names the registry's admin user it sends
basic auth with it (ACR takes the admin user's basic auth directly); otherwise it sends nothing.
"""

from __future__ import annotations

import hashlib
import json
import ssl
from dataclasses import dataclass
from typing import Any

import httpx

from tests.support.images import Pushed
from tests.support.standin import StandIn

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
COSIGN_SIMPLESIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest_of(data), "size": len(data), **extra}


@dataclass
class RawRegistry:
    """One registry of a stand-in, reached with httpx; ``login_server`` is ``127.0.0.1:PORT``."""

    login_server: str
    ca: str
    auth: tuple[str, str] | None = None

    @classmethod
    def of(cls, standin: StandIn, registry: str = "sourceregistry") -> RawRegistry:
        described = standin.topology["registries"][registry]
        admin = described.get("admin")
        auth = (str(admin["username"]), str(admin["password"])) if admin else None
        return cls(str(described["login_server"]), standin.ca, auth)

    def client(self) -> httpx.Client:
        return httpx.Client(
            base_url=f"https://{self.login_server}",
            verify=ssl.create_default_context(cafile=self.ca),
            auth=self.auth,
            timeout=30,
        )

    def get(self, path: str, **params: Any) -> httpx.Response:
        with self.client() as c:
            return c.get(path, params=params or None)

    def push_blob(self, repo: str, data: bytes) -> str:
        digest = digest_of(data)
        with self.client() as c:
            r = c.post(f"/v2/{repo}/blobs/uploads/", params={"digest": digest}, content=data)
        assert r.status_code == 201, r.text
        return digest

    def push_manifest(self, repo: str, reference: str | None, doc: dict[str, Any]) -> str:
        """PUT ``doc`` as a manifest under ``reference`` (a tag), or by its own digest when None."""
        body = json.dumps(doc, separators=(",", ":")).encode()
        with self.client() as c:
            r = c.put(
                f"/v2/{repo}/manifests/{reference or digest_of(body)}",
                content=body,
                headers={"Content-Type": doc["mediaType"]},
            )
        assert r.status_code == 201, r.text
        return digest_of(body)

    def push_image(self, repo: str, tag: str | None, layers: list[bytes], arch: str = "amd64") -> Pushed:
        """An image: an image config for ``arch`` and the given layers; tagged, or pushed by digest."""
        config = json.dumps({"architecture": arch, "os": "linux", "rootfs": {"type": "layers"}}).encode()
        for blob in (config, *layers):
            self.push_blob(repo, blob)
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(IMAGE_CONFIG, config),
            "layers": [descriptor(LAYER, layer) for layer in layers],
        }
        return Pushed(repo, tag or "", self.push_manifest(repo, tag, doc))

    def push_index(self, repo: str, tag: str, children: list[tuple[Pushed, str]]) -> Pushed:
        """An OCI index over images already in ``repo``, each with its architecture."""
        manifests = []
        for child, arch in children:
            with self.client() as c:
                body = c.get(f"/v2/{repo}/manifests/{child.digest}", headers={"Accept": OCI_MANIFEST}).content
            manifests.append(descriptor(OCI_MANIFEST, body, platform={"architecture": arch, "os": "linux"}))
        doc = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": manifests}
        return Pushed(repo, tag, self.push_manifest(repo, tag, doc))

    def push_referrer(self, repo: str, subject: str, artifact_type: str, payload: bytes) -> str:
        """An OCI 1.1 referrer of ``subject`` (cosign's bundle layout: empty config, one layer), by digest."""
        subject_body = self.manifest_bytes(repo, subject)
        empty = b"{}"
        for blob in (empty, payload):
            self.push_blob(repo, blob)
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": descriptor(OCI_EMPTY, empty),
            "layers": [descriptor(artifact_type, payload)],
            "subject": descriptor(_media_type(subject_body), subject_body),
            "annotations": {"org.opencontainers.image.created": "2026-11-20T10:00:00Z"},
        }
        return self.push_manifest(repo, None, doc)

    def push_cosign_signature(self, repo: str, subject: str, payload: bytes) -> Pushed:
        """A legacy cosign signature of ``subject``: tag ``sha256-<hex>.sig``, no ``subject`` field."""
        config = b'{"architecture":"","os":"","rootfs":{"type":"layers","diff_ids":[]}}'
        for blob in (config, payload):
            self.push_blob(repo, blob)
        doc = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": descriptor(IMAGE_CONFIG, config),
            "layers": [
                descriptor(COSIGN_SIMPLESIGNING, payload, annotations={"dev.cosignproject.cosign/signature": "MEUCIQ"})
            ],
        }
        tag = subject.replace(":", "-") + ".sig"
        return Pushed(repo, tag, self.push_manifest(repo, tag, doc))

    def manifest_bytes(self, repo: str, reference: str) -> bytes:
        with self.client() as c:
            r = c.get(f"/v2/{repo}/manifests/{reference}", headers={"Accept": f"{OCI_MANIFEST}, {OCI_INDEX}"})
        r.raise_for_status()
        return r.content


def _media_type(body: bytes) -> str:
    return str(json.loads(body).get("mediaType") or OCI_MANIFEST)
