"""Small generated images pushed into a stand-in registry with oras (the oras-py client).

The stand-in's registries ask for ACR's tokens, so these clients log in as the registry's admin user (its
password is in the stand-in's ``topology.json``, named by ``ACR_TRANSFER_EMULATOR_TOPOLOGY``): oras-py answers
each 401 challenge with a ``GET /oauth2/token`` under basic auth, and ``manifest_digest`` sends basic auth
directly, as real ACR allows for its admin user.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import oras.auth
import oras.client
import oras.container

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass
class Pushed:
    """What a push left in the registry: the reference a transfer names and the manifest digest."""

    repo: str
    tag: str
    digest: str

    @property
    def by_tag(self) -> str:
        return f"{self.repo}:{self.tag}"

    @property
    def by_digest(self) -> str:
        return f"{self.repo}@{self.digest}"


def admin_credentials(login_server: str) -> tuple[str, str]:
    """The admin user name and password of the stand-in registry at ``login_server`` (never print them).

    Raises:
        LookupError: no registry of the stand-in named by ``ACR_TRANSFER_EMULATOR_TOPOLOGY`` has that login server.
    """
    described = os.environ.get("ACR_TRANSFER_EMULATOR_TOPOLOGY")
    registries = json.loads(Path(described).read_text())["registries"] if described else {}
    for registry in registries.values():
        if registry["login_server"] == login_server:
            return registry["admin"]["username"], registry["admin"]["password"]
    raise LookupError(f"no stand-in registry at {login_server} in ACR_TRANSFER_EMULATOR_TOPOLOGY={described!r}")


class ChallengeTokenAuth(oras.auth.TokenAuth):
    """oras-py's token auth, asking for a new token at every 401 challenge.

    oras-py 0.2 keeps one bearer token per client and, when a request gets a 401, sends that token again; a
    registry that scopes tokens per repository and action (ACR) then refuses the ``POST`` of an upload that
    follows a ``HEAD`` of the blob (a pull token). Dropping the token makes oras ask for the challenge's scope.
    """

    def authenticate_request(self, original: Any, headers: dict[str, Any], refresh: bool = False) -> Any:
        return super().authenticate_request(original, headers, refresh=True)


oras.auth.auth_backends.setdefault("challenge-token", ChallengeTokenAuth)


def client(login_server: str) -> oras.client.OrasClient:
    """An oras client for ``127.0.0.1:PORT`` over TLS, trusting the stand-in's CA (``REQUESTS_CA_BUNDLE``),
    logged in as the registry's admin user."""
    c = oras.client.OrasClient(
        hostname=login_server,
        insecure=False,
        tls_verify=os.environ.get("REQUESTS_CA_BUNDLE", True),
        auth_backend="challenge-token",
    )
    c.auth.set_basic_auth(*admin_credentials(login_server))
    return c


def push_file_artifact(login_server: str, repo: str, tag: str, payload: bytes) -> Pushed:
    """``oras push`` of one file; returns the manifest digest the registry reports."""
    c = client(login_server)
    with tempfile.TemporaryDirectory() as d:
        path = Path(d) / "payload.txt"
        path.write_bytes(payload)
        cwd = os.getcwd()
        os.chdir(d)  # oras-py wants relative paths under the working directory
        try:
            resp = c.push(target=f"{login_server}/{repo}:{tag}", files=["payload.txt"], quiet=True)
        finally:
            os.chdir(cwd)
    resp.raise_for_status()
    return Pushed(repo, tag, resp.headers["Docker-Content-Digest"])


def push_multiarch_index(login_server: str, repo: str, tag: str, seed: str) -> Pushed:
    """Two single-layer image manifests (linux/amd64, linux/arm64) under one OCI image index."""
    c = client(login_server)
    container = c.get_container(f"{login_server}/{repo}:{tag}")
    children = []
    for arch in ("amd64", "arm64"):
        layer = f"{seed}-{arch}-layer".encode()
        config = json.dumps(
            {"architecture": arch, "os": "linux", "rootfs": {"type": "layers", "diff_ids": []}}
        ).encode()
        for blob in (layer, config):
            _upload_blob(c, container, blob)
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": digest_of(config),
                    "size": len(config),
                },
                "layers": [
                    {
                        "mediaType": "application/vnd.oci.image.layer.v1.tar",
                        "digest": digest_of(layer),
                        "size": len(layer),
                    }
                ],
            }
        ).encode()
        _put_manifest(c, login_server, repo, digest_of(manifest), manifest, OCI_MANIFEST)
        children.append(
            {
                "mediaType": OCI_MANIFEST,
                "digest": digest_of(manifest),
                "size": len(manifest),
                "platform": {"architecture": arch, "os": "linux"},
            }
        )
    index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": children}).encode()
    _put_manifest(c, login_server, repo, tag, index, OCI_INDEX)
    return Pushed(repo, tag, digest_of(index))


def _upload_blob(c: oras.client.OrasClient, container: oras.container.Container, blob: bytes) -> None:
    with tempfile.NamedTemporaryFile(delete=False) as f:
        f.write(blob)
    try:
        c.upload_blob(f.name, container, {"digest": digest_of(blob), "size": len(blob)}).raise_for_status()
    finally:
        os.unlink(f.name)


def _put_manifest(c: oras.client.OrasClient, host: str, repo: str, ref: str, body: bytes, media_type: str) -> None:
    resp = c.do_request(
        f"https://{host}/v2/{repo}/manifests/{ref}", "PUT", headers={"Content-Type": media_type}, data=body
    )
    resp.raise_for_status()


def manifest_digest(login_server: str, repo: str, ref: str, ca: str) -> tuple[str, bytes]:
    """(Docker-Content-Digest, body) of a manifest, fetched with plain HTTP as any client would."""
    import ssl

    import httpx

    accept = ", ".join([OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.v2+json"])
    r = httpx.get(
        f"https://{login_server}/v2/{repo}/manifests/{ref}",
        headers={"Accept": accept},
        auth=admin_credentials(login_server),
        verify=ssl.create_default_context(cafile=ca),
    )
    r.raise_for_status()
    return r.headers["Docker-Content-Digest"], r.content
