"""What the stand-in's export and import runs do with artifacts: one tar blob in OCI image layout.

An export run writes ONE tar per run (ACR's format is undocumented; the stand-in uses the OCI image
layout, which oras, skopeo and crane all read)::

    oci-layout            {"imageLayoutVersion":"1.0.0"}
    index.json            one descriptor per exported artifact
    blobs/sha256/<hex>    every manifest, config and layer reachable from those artifacts

Each descriptor in ``index.json`` carries ``org.opencontainers.image.ref.name`` (the tag; absent for a
digest reference), ``io.acr-transfer.repository`` and ``io.acr-transfer.reference`` (``repo:tag`` or
``repo@sha256:…``), because the layout itself has no notion of repositories.

The tar is deterministic (fixed order, mtime 0, uid/gid 0), so exporting the same artifacts twice gives
the same bytes and the same sha256. Foreign (non-distributable) layers are not carried, as in ACR.

Errors, caught by class::

    ArtifactRefError(ValueError)   an artifact reference is malformed
    ArtifactNotFound(LookupError)  an artifact (or a blob it needs) is not in the source registry
    LayoutError(ValueError)        a tar is not a well-formed, intact layout
    TagExists(ValueError)          an import would move an existing tag (OverwriteTags not set)
    ImportFailed(Exception)        the first failed artifact of an import without ContinueOnErrors
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import tarfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import TracebackType
from typing import IO, BinaryIO

from emulator.registry import (
    DIGEST_RE,
    MANIFEST_MEDIA_TYPES,
    OCI_INDEX,
    REPO_NAME_RE,
    TAG_RE,
    RegistryError,
    RegistryStore,
    manifest_links,
    manifest_media_type,
)

ANNOTATION_REF_NAME = "org.opencontainers.image.ref.name"
ANNOTATION_REPOSITORY = "io.acr-transfer.repository"
ANNOTATION_REFERENCE = "io.acr-transfer.reference"
OCI_LAYOUT = b'{"imageLayoutVersion":"1.0.0"}'
_BLOB_NAME_RE = re.compile(r"^blobs/sha256/([a-f0-9]{64})$")


class ArtifactRefError(ValueError):
    """An artifact reference is not ``repo``, ``repo:tag`` or ``repo@sha256:<64 hex>``."""


class ArtifactNotFound(LookupError):
    """An artifact, or a manifest or blob it needs, is not in the registry."""


class LayoutError(ValueError):
    """A tar is not a well-formed OCI image layout, or its content does not match its digests."""


class TagExists(ValueError):
    """A tag exists in the target with another digest, and the import may not move it."""


@dataclass
class ImportResult:
    """What an import did: normalised refs imported, and ``(ref, message)`` for each that failed."""

    imported: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)


class ImportFailed(Exception):
    """An artifact failed to import and ContinueOnErrors was not set.

    Attributes:
        ref: the artifact that failed.
        result: what was imported before it (it stays in the target).
    """

    def __init__(self, message: str, ref: str, result: ImportResult) -> None:
        super().__init__(message)
        self.ref = ref
        self.result = result


@dataclass(frozen=True)
class ResolvedArtifact:
    """An artifact reference resolved in a registry: the manifest it names, and its size in bytes."""

    ref: str
    repo: str
    tag: str | None
    digest: str
    media_type: str
    size: int


def normalise_ref(repo: str, tag: str | None, digest: str | None) -> str:
    """``repo@digest`` when a digest is given, else ``repo:tag``."""
    return f"{repo}@{digest}" if digest else f"{repo}:{tag}"


def parse_artifact_ref(ref: str) -> tuple[str, str | None, str | None]:
    """Split an artifact reference into ``(repo, tag, digest)``; exactly one of tag and digest is set.

    ``repo`` means ``repo:latest``; ``repo:tag``; ``repo@sha256:<64 lowercase hex>``.

    Raises:
        ArtifactRefError: the reference is empty or malformed (uppercase or ``..`` in the repository, a bad
            tag or digest, or both a tag and a digest); the message names it.
    """
    if not isinstance(ref, str) or not ref:
        raise ArtifactRefError(f"artifact reference {ref!r} is empty; use repo, repo:tag or repo@sha256:<digest>")
    tag: str | None = None
    digest: str | None = None
    if "@" in ref:
        repo, digest = ref.split("@", 1)
        if not DIGEST_RE.match(digest):
            raise ArtifactRefError(f"artifact reference {ref!r}: digest must be sha256:<64 lowercase hex digits>")
    elif ":" in ref:
        repo, tag = ref.rsplit(":", 1)
        if not TAG_RE.match(tag):
            raise ArtifactRefError(
                f"artifact reference {ref!r}: tag {tag!r} must be up to 128 of [A-Za-z0-9._-], "
                "not starting with '.' or '-'"
            )
    else:
        repo, tag = ref, "latest"
    if not REPO_NAME_RE.match(repo) or len(repo) > 255:
        raise ArtifactRefError(
            f"artifact reference {ref!r}: repository {repo!r} must be lowercase letters and digits separated "
            "by '.', '_', '-' or '/' (a tag and a digest together are not accepted)"
        )
    return repo, tag, digest


def resolve_artifact(store: RegistryStore, ref: str) -> ResolvedArtifact:
    """Find the manifest an artifact reference names in ``store``.

    Raises:
        ArtifactRefError: the reference is malformed.
        ArtifactNotFound: no such repository, tag or digest in the registry.
    """
    repo, tag, digest = parse_artifact_ref(ref)
    normalised = normalise_ref(repo, tag, digest)
    manifest = store.get_manifest(repo, digest or str(tag))
    if manifest is None:
        raise ArtifactNotFound(f"artifact '{normalised}' not found in registry '{store.name}'")
    return ResolvedArtifact(normalised, repo, tag, manifest.digest, manifest.media_type, len(manifest.data))


def _walk(read: Callable[[str], bytes], digest: str, media_type: str) -> tuple[list[tuple[str, str]], list[str]]:
    """The manifests reachable from a root manifest as ``(digest, media_type)``, children before their
    index (the order a registry accepts them in), and the blobs they reference, without duplicates."""
    manifests: list[tuple[str, str]] = []
    blobs: dict[str, None] = {}

    def visit(d: str, declared: str) -> None:
        if any(d == seen for seen, _ in manifests):
            return
        data = read(d)
        kind = declared if declared in MANIFEST_MEDIA_TYPES else manifest_media_type(data, None)
        links = manifest_links(data, kind)
        for child, child_type in links.children:
            visit(child, child_type)
        manifests.append((d, kind))
        blobs.update(dict.fromkeys(links.blobs))

    visit(digest, media_type)
    return manifests, list(blobs)


def _tar_info(name: str, size: int = 0, *, directory: bool = False) -> tarfile.TarInfo:
    # fixed metadata, so the same content always gives the same tar bytes
    info = tarfile.TarInfo(name)
    info.size, info.mtime, info.uid, info.gid, info.uname, info.gname = size, 0, 0, 0, "", ""
    info.type = tarfile.DIRTYPE if directory else tarfile.REGTYPE
    info.mode = 0o755 if directory else 0o644
    return info


def _export_plan(store: RegistryStore, artifacts: list[ResolvedArtifact]) -> tuple[list[dict], set[str]]:
    """The ``index.json`` descriptors and the set of blob digests (manifests included) to export."""

    descriptors: list[dict] = []
    blobs: set[str] = set()
    seen_refs: set[str] = set()
    for art in artifacts:
        if art.ref in seen_refs:
            continue
        seen_refs.add(art.ref)

        def read(digest: str, art: ResolvedArtifact = art) -> bytes:
            manifest = store.get_manifest(art.repo, digest)
            if manifest is None:
                raise ArtifactNotFound(
                    f"manifest {digest} of artifact '{art.ref}' not found in registry '{store.name}'"
                )
            return manifest.data

        manifests, layer_blobs = _walk(read, art.digest, art.media_type)
        for blob in layer_blobs:
            if not store.has_blob(blob):
                raise ArtifactNotFound(f"blob {blob} of artifact '{art.ref}' not found in registry '{store.name}'")
        blobs.update(layer_blobs)
        blobs.update(d for d, _ in manifests)
        annotations = {ANNOTATION_REPOSITORY: art.repo, ANNOTATION_REFERENCE: art.ref}
        if art.tag:
            annotations[ANNOTATION_REF_NAME] = art.tag
        descriptors.append(
            {"mediaType": art.media_type, "digest": art.digest, "size": art.size, "annotations": annotations}
        )
    return descriptors, blobs


def write_layout_tar(store: RegistryStore, artifacts: list[ResolvedArtifact], out: BinaryIO) -> None:
    """Write the artifacts, with every manifest and blob they reach, to ``out`` as an OCI layout tar.

    Blob files are streamed into the tar, never held in memory. The output is deterministic: the same
    artifacts in the same order give the same bytes. An artifact listed twice is written once.

    Args:
        store: the source registry.
        artifacts: what to export, from ``resolve_artifact``.
        out: a writable binary stream (need not be seekable).

    Raises:
        ArtifactNotFound: a manifest or blob an artifact needs is missing from the registry.
    """
    descriptors, blobs = _export_plan(store, artifacts)
    index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": descriptors}
    index_bytes = json.dumps(index, sort_keys=True, separators=(",", ":")).encode()
    with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT) as tar:
        # oci-layout and index.json first: a streaming reader learns what the tar holds before the blobs
        for name, data in (("oci-layout", OCI_LAYOUT), ("index.json", index_bytes)):
            tar.addfile(_tar_info(name, len(data)), io.BytesIO(data))
        tar.addfile(_tar_info("blobs", directory=True))
        tar.addfile(_tar_info("blobs/sha256", directory=True))
        for digest in sorted(blobs):
            path = store.blob_path(digest)
            with path.open("rb") as f:
                tar.addfile(_tar_info(f"blobs/sha256/{digest[7:]}", path.stat().st_size), f)


class LayoutArtifact(ResolvedArtifact):
    """One artifact listed in a layout's ``index.json`` (the same facts as a resolved one)."""


class LayoutTar:
    """An opened, verified OCI layout tar: its artifacts and its blobs. Close it (or use ``with``)."""

    def __init__(self, path: Path, tar: tarfile.TarFile, blobs: dict[str, tarfile.TarInfo]) -> None:
        self.path = path
        self._tar = tar
        self._blobs = blobs
        self.artifacts: list[LayoutArtifact] = []

    def blob_digests(self) -> list[str]:
        """The digests of every blob in the tar, sorted."""
        return sorted(self._blobs)

    def has_blob(self, digest: str) -> bool:
        """Whether the tar holds the blob ``digest``."""
        return digest in self._blobs

    def open_blob(self, digest: str) -> IO[bytes]:
        """A stream of the blob's content. Raises ``LayoutError`` when the tar does not hold it."""
        member = self._blobs.get(digest)
        stream = self._tar.extractfile(member) if member is not None else None
        if stream is None:
            raise LayoutError(f"blob {digest} is not in {self.path.name}")
        return stream

    def read_blob(self, digest: str) -> bytes:
        """The blob's content. Raises ``LayoutError`` when the tar does not hold it."""
        with self.open_blob(digest) as f:
            return f.read()

    def close(self) -> None:
        """Close the tar file."""
        self._tar.close()

    def __enter__(self) -> LayoutTar:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()


def _member_files(tar: tarfile.TarFile, where: str) -> dict[str, tarfile.TarInfo]:
    """The tar's regular files by normalised name, after rejecting anything that could escape or alias."""
    files: dict[str, tarfile.TarInfo] = {}
    for member in tar.getmembers():
        name = member.name.removeprefix("./").rstrip("/")
        if member.name.startswith("/") or "\\" in name or ".." in PurePosixPath(name).parts:
            raise LayoutError(f"{where}: member {member.name!r} escapes the layout (absolute path or '..')")
        if member.isdir():
            continue
        if not member.isfile():
            raise LayoutError(f"{where}: member {member.name!r} is a link or device; only files are allowed")
        if name in files:
            raise LayoutError(f"{where}: member {member.name!r} appears twice")
        files[name] = member
    return files


def _verified_blobs(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], where: str) -> dict[str, tarfile.TarInfo]:
    """The blob members by digest, each checked to hash to its name."""
    blobs: dict[str, tarfile.TarInfo] = {}
    for name, member in files.items():
        if not name.startswith("blobs/"):
            continue
        match = _BLOB_NAME_RE.match(name)
        if match is None:
            raise LayoutError(f"{where}: {name!r} is not blobs/sha256/<64 hex> (only sha256 is supported)")
        stream = tar.extractfile(member)
        assert stream is not None  # a regular file
        hasher = hashlib.sha256()
        while chunk := stream.read(1024 * 1024):
            hasher.update(chunk)
        actual = hasher.hexdigest()
        if actual != match[1]:
            raise LayoutError(f"{where}: blob {name} is corrupt: its content hashes to sha256:{actual}")
        blobs["sha256:" + match[1]] = member
    return blobs


def _read_json(tar: tarfile.TarFile, files: dict[str, tarfile.TarInfo], name: str, where: str) -> dict:
    member = files.get(name)
    stream = tar.extractfile(member) if member is not None else None
    if stream is None:
        raise LayoutError(f"{where}: no {name}; this is not an OCI image layout")
    try:
        doc = json.load(stream)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise LayoutError(f"{where}: {name} is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise LayoutError(f"{where}: {name} is not a JSON object")
    return doc


def _layout_artifact(entry: object, i: int, blobs: dict[str, tarfile.TarInfo], where: str) -> LayoutArtifact:
    """Check one ``index.json`` descriptor against the tar's blobs and turn it into a ``LayoutArtifact``."""
    at = f"{where}: index.json manifests[{i}]"
    if not isinstance(entry, dict):
        raise LayoutError(f"{at} is not a descriptor")
    digest, media_type = entry.get("digest"), entry.get("mediaType")
    annotations = entry.get("annotations") or {}
    repo, tag = annotations.get(ANNOTATION_REPOSITORY), annotations.get(ANNOTATION_REF_NAME)
    if not isinstance(digest, str) or digest not in blobs:
        raise LayoutError(f"{at}: manifest {digest!r} is not in the tar")
    if media_type not in MANIFEST_MEDIA_TYPES:
        raise LayoutError(f"{at}: mediaType {media_type!r} is not a manifest type")
    if not isinstance(repo, str):
        raise LayoutError(f"{at} has no {ANNOTATION_REPOSITORY} annotation; the tar was not written by an export")
    try:
        parse_artifact_ref(normalise_ref(repo, tag, None if tag else digest))
    except ArtifactRefError as e:
        raise LayoutError(f"{at}: {e}") from e
    size = blobs[digest].size
    if entry.get("size") != size:
        raise LayoutError(f"{at}: size {entry.get('size')} differs from the blob's {size} bytes")
    ref = normalise_ref(repo, tag, None if tag else digest)
    return LayoutArtifact(ref, repo, tag, digest, str(media_type), size)


def read_layout_tar(path: Path) -> LayoutTar:
    """Open an OCI layout tar (plain or compressed) after checking it is well formed and intact.

    Every blob is hashed, so a corrupt or tampered tar is rejected before anything is imported.

    Raises:
        LayoutError: not a tar; a member that is absolute, has ``..``, is a link or device, or appears
            twice; no ``oci-layout`` 1.0.0 or ``index.json``; a blob that does not hash to its name; an
            ``index.json`` entry that is not in the tar or lacks the repository annotation.
    """
    path = Path(path)
    try:
        tar = tarfile.open(path, "r:*")  # noqa: SIM115 - the returned LayoutTar owns and closes it
    except (tarfile.TarError, OSError) as e:
        raise LayoutError(f"{path.name} is not a readable tar archive: {e}") from e
    try:
        return _load_layout(tar, path)
    except tarfile.TarError as e:  # a truncated member surfaces while hashing
        tar.close()
        raise LayoutError(f"{path.name} is a damaged tar archive: {e}") from e
    except BaseException:
        tar.close()
        raise


def _load_layout(tar: tarfile.TarFile, path: Path) -> LayoutTar:
    where = path.name
    files = _member_files(tar, where)
    if _read_json(tar, files, "oci-layout", where).get("imageLayoutVersion") != "1.0.0":
        raise LayoutError(f"{where}: oci-layout is not imageLayoutVersion 1.0.0")
    index = _read_json(tar, files, "index.json", where)
    blobs = _verified_blobs(tar, files, where)
    entries = index.get("manifests")
    if not isinstance(entries, list):
        raise LayoutError(f"{where}: index.json has no 'manifests' list")
    layout = LayoutTar(path, tar, blobs)
    layout.artifacts = [_layout_artifact(entry, i, blobs, where) for i, entry in enumerate(entries)]
    return layout


def _import_artifact(layout: LayoutTar, art: LayoutArtifact, store: RegistryStore, overwrite_tags: bool) -> None:
    """Push one artifact's blobs, then its manifests (children first), then point its tag at it."""
    if art.tag:
        existing = store.resolve(art.repo, art.tag)
        if existing is not None and existing != art.digest and not overwrite_tags:
            raise TagExists(
                f"tag '{art.repo}:{art.tag}' already exists in the target with digest {existing} "
                f"(blob has {art.digest}); set OverwriteTags on the import pipeline to replace it"
            )
    manifests, blobs = _walk(layout.read_blob, art.digest, art.media_type)
    for blob in blobs:
        if not store.has_blob(blob):
            with layout.open_blob(blob) as stream:
                store.put_blob_stream(stream, blob)
    for digest, media_type in manifests[:-1]:
        store.put_manifest(art.repo, digest, layout.read_blob(digest), media_type)
    store.put_manifest(art.repo, art.tag or art.digest, layout.read_blob(art.digest), manifests[-1][1])


def import_layout(path: Path, store: RegistryStore, *, overwrite_tags: bool, continue_on_errors: bool) -> ImportResult:
    """Import every artifact of an OCI layout tar into ``store``, in ``index.json`` order.

    Args:
        path: the tar written by ``write_layout_tar``.
        store: the target registry.
        overwrite_tags: move a tag that exists with another digest (OverwriteTags); an existing tag with
            the same digest is never a conflict.
        continue_on_errors: record a failed artifact and go on (ContinueOnErrors) instead of stopping.

    Raises:
        LayoutError: the tar is malformed or corrupt (nothing is imported).
        ImportFailed: an artifact failed and ``continue_on_errors`` is false; what was pushed before stays.
    """
    result = ImportResult()
    with read_layout_tar(path) as layout:
        for art in layout.artifacts:
            try:
                _import_artifact(layout, art, store, overwrite_tags)
            except (TagExists, LayoutError, RegistryError) as e:
                message = str(e) if isinstance(e, TagExists) else f"artifact '{art.ref}' could not be imported: {e}"
                result.failed.append((art.ref, message))
                if not continue_on_errors:
                    raise ImportFailed(message, art.ref, result) from e
                continue
            result.imported.append(art.ref)
    return result
