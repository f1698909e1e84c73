"""The container registry data plane of the stand-in: the OCI Distribution API v1.1 and ACR's own listings
(``/acr/v1/…``, in ``emulator/registry_listing.py``), backed by files.

``RegistryStore`` keeps one registry on disk, so it survives a restart of the stand-in::

    <root>/blobs/sha256/<hex>                            content: layers, configs and manifest bytes
    <root>/repositories/<repo>/_manifests/revisions/sha256/<hex>   manifest is in <repo>; holds media type
    <root>/repositories/<repo>/_manifests/tags/<tag>     the digest the tag points at
    <root>/repositories/<repo>/_manifests/created/…      when each tag, manifest and the repository was first created
    <root>/uploads/<uuid>                                blob uploads in progress

Repository names may contain ``/``; a name component can never start with ``_``, so ``_manifests`` cannot
clash with a repository. Every file is written to a temporary name and moved into place with
``os.replace``, so a reader never sees half a file. Blobs are shared by all repositories of a registry.

Timestamps, as ACR lists them (``createdTime``, ``lastUpdateTime``): a tag file's and a revision file's
mtime is set, to the nanosecond, to the time of the push that last wrote it (its ``lastUpdateTime``), and
``created/tags/<tag>``, ``created/revisions/<hex>`` and ``created/repository`` hold the nanoseconds of the
first push (its ``createdTime``), written once and removed with the tag or manifest. The clock never gives
two pushes the same 100-ns tick (ACR's resolution), so listings in time order follow the order of the pushes.
Pushes through the HTTP API and the run engine's imports (``emulator/oci.py``) both go through
``put_manifest`` and so both set them. Sorting 10,000 tags by time stats their files (no reads); sorting by
name lists the directory once and reads only the page's files.

The run engine uses the store in-process (plain, thread-safe functions); registry clients (oras, skopeo,
docker) use ``registry_app``, the HTTP API in front of it: ``/v2/…`` (catalog, tags, manifests, blobs,
uploads, referrers with optional ``n``/``last`` paging) and ``/acr/v1/…``:

    GET /acr/v1/_catalog?n=&last=                            {"repositories": […]}
    GET /acr/v1/{repo}                                       {registry, imageName, createdTime, lastUpdateTime,
                                                              manifestCount, tagCount, changeableAttributes}
    GET /acr/v1/{repo}/_tags?n=&last=&orderby=&digest=       {registry, imageName, tags: [{name, digest,
                                                              createdTime, lastUpdateTime, signed,
                                                              changeableAttributes}]}
    GET /acr/v1/{repo}/_tags/{tag}                           {registry, imageName, tag: {…}}
    GET /acr/v1/{repo}/_manifests?n=&last=&orderby=          {registry, imageName, manifests: [{digest, imageSize,
                                                              createdTime, lastUpdateTime, architecture?, os?,
                                                              mediaType, tags?, changeableAttributes}]}
    GET /acr/v1/{repo}/_manifests/{digest}                   {registry, imageName, manifest: {…}}

Each page is at most 1000 entries (100 without ``n``) and a ``Link: </acr/v1/…?last=…&n=…&orderby=…>;
rel="next"`` follows whenever more remain; ``orderby`` is ``timedesc`` / ``timeasc`` (by
``lastUpdateTime``), else name (digest) order. A repository may be written ``a/b`` or ``a%2Fb``.

Authentication is not this module's: ``registry_app`` answers every request that reaches it and ignores
``Authorization`` headers; the stand-in puts ACR's token flow in front of it (``emulator/registry_auth.py``,
wired in ``emulator/main.py``).

Errors are named exceptions (``RegistryError`` and its subclasses) carrying the OCI error code and HTTP
status the API answers with, so in-process callers catch by class and HTTP clients see the OCI error body
``{"errors":[{"code","message","detail"}]}``.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
IMAGE_MANIFEST_TYPES = frozenset({OCI_MANIFEST, DOCKER_MANIFEST})
INDEX_MANIFEST_TYPES = frozenset({OCI_INDEX, DOCKER_MANIFEST_LIST})
MANIFEST_MEDIA_TYPES = IMAGE_MANIFEST_TYPES | INDEX_MANIFEST_TYPES

# ACR rejects manifests above 4 MiB; the limit also bounds what a PUT may make us hold in memory
MAX_MANIFEST_BYTES = 4 * 1024 * 1024
DIGEST_RE = re.compile(r"^sha256:[a-f0-9]{64}$")
TAG_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPO_NAME_RE = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
_UPLOAD_ID_RE = re.compile(r"^[a-f0-9]{32}$")
_HEX_RE = re.compile(r"^[a-f0-9]{64}$")
_CHUNK = 1024 * 1024


class RegistryError(Exception):
    """Base of the registry's errors; ``code`` and ``status`` are what the HTTP API answers with."""

    code = "UNKNOWN"
    status = 400

    def __init__(self, message: str, detail: Any = None) -> None:
        super().__init__(message)
        self.detail = detail


class BlobUnknown(RegistryError, LookupError):
    """The blob is not in the registry."""

    code, status = "BLOB_UNKNOWN", 404


class BlobUploadUnknown(RegistryError, LookupError):
    """The upload session does not exist (never started, finished or cancelled)."""

    code, status = "BLOB_UPLOAD_UNKNOWN", 404


class BlobUploadInvalid(RegistryError, ValueError):
    """A chunk does not continue the upload where it stands."""

    code, status = "BLOB_UPLOAD_INVALID", 416


class DigestInvalid(RegistryError, ValueError):
    """A digest is malformed, or content does not hash to the digest it was given with."""

    code = "DIGEST_INVALID"


class NameInvalid(RegistryError, ValueError):
    """A repository name is not a valid OCI repository name."""

    code = "NAME_INVALID"


class NameUnknown(RegistryError, LookupError):
    """The repository does not exist in the registry."""

    code, status = "NAME_UNKNOWN", 404


class TagInvalid(RegistryError, ValueError):
    """A tag is not ``[A-Za-z0-9_][A-Za-z0-9._-]{0,127}``."""

    code = "TAG_INVALID"


class ManifestUnknown(RegistryError, LookupError):
    """No manifest with that tag or digest in the repository."""

    code, status = "MANIFEST_UNKNOWN", 404


class ManifestInvalid(RegistryError, ValueError):
    """A manifest is not valid JSON of a supported media type, or is too large."""

    code = "MANIFEST_INVALID"


class ManifestBlobUnknown(ManifestInvalid):
    """A manifest references a blob (config, layer) or child manifest the registry does not hold."""

    code = "MANIFEST_BLOB_UNKNOWN"


class PaginationNumberInvalid(RegistryError, ValueError):
    """The ``n`` query parameter is not a non-negative integer."""

    code = "PAGINATION_NUMBER_INVALID"


class Unsupported(RegistryError):
    """The operation is not supported by the stand-in."""

    code, status = "UNSUPPORTED", 405


@dataclass(frozen=True)
class Manifest:
    """A manifest as stored: its exact bytes, their digest and the media type it was pushed with."""

    repo: str
    digest: str
    media_type: str
    data: bytes


@dataclass(frozen=True)
class TagRecord:
    """A tag as the store keeps it: the digest it points at, when it was first created and last pushed
    (nanoseconds since the epoch, UTC)."""

    name: str
    digest: str
    created_ns: int
    updated_ns: int


@dataclass(frozen=True)
class ManifestRecord:
    """A manifest of a repository as the store keeps it: media type, size of its bytes, when it was first
    pushed into the repository and last pushed (nanoseconds since the epoch, UTC)."""

    digest: str
    media_type: str
    size: int
    created_ns: int
    updated_ns: int


@dataclass(frozen=True)
class RepositoryRecord:
    """A repository's summary: when its first manifest came, when anything in it last changed, and counts."""

    name: str
    created_ns: int
    updated_ns: int
    manifest_count: int
    tag_count: int


@dataclass(frozen=True)
class ManifestLinks:
    """What a manifest points at: ``blobs`` (config and distributable layers) or ``children`` (an index's
    manifests, as ``(digest, media_type)``), and the ``subject`` digest of a referrer."""

    blobs: list[str] = field(default_factory=list)
    children: list[tuple[str, str]] = field(default_factory=list)
    subject: str | None = None


def sha256_digest(data: bytes) -> str:
    """The ``sha256:<hex>`` digest of ``data``."""
    return "sha256:" + hashlib.sha256(data).hexdigest()


def check_digest(digest: str) -> str:
    """Return ``digest`` if it is ``sha256:<64 lowercase hex>``; raise ``DigestInvalid`` otherwise."""
    if not isinstance(digest, str) or not DIGEST_RE.match(digest):
        raise DigestInvalid(f"digest {digest!r} is not sha256:<64 lowercase hex digits> (only sha256 is supported)")
    return digest


def check_repo_name(repo: str) -> str:
    """Return ``repo`` if it is a valid OCI repository name; raise ``NameInvalid`` otherwise."""
    if not isinstance(repo, str) or len(repo) > 255 or not REPO_NAME_RE.match(repo):
        raise NameInvalid(
            f"repository name {repo!r} is invalid: use lowercase letters and digits, separated by '.', '_', "
            "'__', '-' or '/'",
        )
    return repo


def _descriptor_digest(value: Any, where: str) -> tuple[str, str]:
    if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
        raise ManifestInvalid(f"{where} is not a descriptor with a 'digest'")
    try:
        check_digest(value["digest"])
    except DigestInvalid as e:
        raise ManifestInvalid(f"{where}: {e}") from e
    return value["digest"], str(value.get("mediaType", ""))


def _is_foreign(layer_media_type: str) -> bool:
    # non-distributable layers live elsewhere (their "urls"); registries and ACR transfer do not carry them
    return ".foreign." in layer_media_type or "nondistributable" in layer_media_type


def manifest_links(data: bytes, media_type: str) -> ManifestLinks:
    """Parse a manifest and list what it references.

    Args:
        data: the manifest bytes.
        media_type: one of ``MANIFEST_MEDIA_TYPES``.

    Raises:
        ManifestInvalid: not a JSON object, an unsupported media type, or malformed descriptors.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestInvalid(f"manifest is not valid JSON: {e}") from e
    if not isinstance(doc, dict):
        raise ManifestInvalid("manifest is not a JSON object")
    subject = _descriptor_digest(doc["subject"], "subject")[0] if "subject" in doc else None
    if media_type in INDEX_MANIFEST_TYPES:
        entries = doc.get("manifests")
        if not isinstance(entries, list):
            raise ManifestInvalid("image index has no 'manifests' list")
        children = [_descriptor_digest(d, f"manifests[{i}]") for i, d in enumerate(entries)]
        return ManifestLinks(children=children, subject=subject)
    if media_type in IMAGE_MANIFEST_TYPES:
        layers = doc.get("layers", [])
        if not isinstance(layers, list):
            raise ManifestInvalid("image manifest 'layers' is not a list")
        blobs = [_descriptor_digest(doc.get("config"), "config")[0]]
        for i, layer in enumerate(layers):
            digest, layer_type = _descriptor_digest(layer, f"layers[{i}]")
            if not _is_foreign(layer_type):
                blobs.append(digest)
        return ManifestLinks(blobs=blobs, subject=subject)
    supported = ", ".join(sorted(MANIFEST_MEDIA_TYPES))
    raise ManifestInvalid(f"manifest media type {media_type!r} is not supported; use one of {supported}")


def manifest_media_type(data: bytes, content_type: str | None) -> str:
    """The media type of a pushed manifest: the request's Content-Type when it is a manifest type, else the
    JSON ``mediaType`` field, else inferred from the shape (``manifests`` → OCI index, else OCI manifest).

    Raises:
        ManifestInvalid: the Content-Type and the ``mediaType`` field disagree, or the body is not JSON.
    """
    try:
        doc = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ManifestInvalid(f"manifest is not valid JSON: {e}") from e
    declared = doc.get("mediaType") if isinstance(doc, dict) else None
    header = (content_type or "").split(";")[0].strip().lower()
    if header in MANIFEST_MEDIA_TYPES:
        if declared and declared != header:
            raise ManifestInvalid(f"Content-Type {header} does not match the manifest's mediaType {declared}")
        return header
    if isinstance(declared, str) and declared:
        return declared
    return OCI_INDEX if isinstance(doc, dict) and "manifests" in doc else OCI_MANIFEST


def _mtimes(directory: Path, names: re.Pattern[str]) -> dict[str, int]:
    """The files in ``directory`` whose name matches ``names``, with their mtimes in nanoseconds."""
    found: dict[str, int] = {}
    try:
        entries = os.scandir(directory)
    except FileNotFoundError:
        return found
    with entries:
        for entry in entries:
            if names.match(entry.name):
                try:
                    found[entry.name] = entry.stat().st_mtime_ns
                except FileNotFoundError:
                    continue  # deleted while listing
    return found


def _file_digest(path: Path) -> str:
    with open(path, "rb") as f:
        return "sha256:" + hashlib.file_digest(f, "sha256").hexdigest()


def _atomic_write(path: Path, data: bytes, mtime_ns: int | None = None) -> None:
    """Write ``data`` to ``path`` via a temporary file in the same directory and ``os.replace``; with
    ``mtime_ns``, the file's modification time is set to it (nanoseconds since the epoch) before the move."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        if mtime_ns is not None:
            os.utime(tmp, ns=(mtime_ns, mtime_ns))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _write_once(path: Path, ns: int) -> None:
    """Record ``ns`` in ``path`` unless it already holds a time (a created time is never moved)."""
    if not path.is_file():
        _atomic_write(path, str(ns).encode())


def _read_ns(path: Path, default: int) -> int:
    """The nanoseconds recorded in ``path``; ``default`` when there is none (state from before timestamps)."""
    try:
        return int(path.read_text())
    except (FileNotFoundError, ValueError):
        return default


class RegistryStore:
    """One registry's blobs, manifests and tags on disk under ``root``; safe to use from many threads.

    Args:
        root: the directory holding the registry (created if missing).
        name: the registry's name (``sourceregistry``), used in messages.
    """

    def __init__(self, root: Path, name: str) -> None:
        self.root = Path(root)
        self.name = name
        self._lock = threading.Lock()
        self._last_ns = 0
        for sub in ("blobs/sha256", "repositories", "uploads"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)

    # -- blobs -------------------------------------------------------------------------------------------

    def blob_path(self, digest: str) -> Path:
        """Where the blob with ``digest`` is (or would be) stored. Raises ``DigestInvalid`` if malformed."""
        return self.root / "blobs" / "sha256" / check_digest(digest).removeprefix("sha256:")

    def has_blob(self, digest: str) -> bool:
        """Whether the registry holds the blob (layer, config or manifest bytes) with ``digest``."""
        return DIGEST_RE.match(digest) is not None and self.blob_path(digest).is_file()

    def read_blob(self, digest: str) -> bytes:
        """The content of a blob. Raises ``BlobUnknown`` when the registry does not hold it."""
        try:
            return self.blob_path(digest).read_bytes()
        except FileNotFoundError:
            raise BlobUnknown(f"blob {digest} is not in registry '{self.name}'") from None

    def put_blob(self, data: bytes, expected_digest: str | None = None) -> str:
        """Store ``data`` as a blob and return its digest.

        Raises:
            DigestInvalid: ``expected_digest`` is malformed or is not the digest of ``data``.
        """
        actual = sha256_digest(data)
        self._check_expected(actual, expected_digest)
        target = self.blob_path(actual)
        if not target.exists():
            _atomic_write(target, data)
        return actual

    def put_blob_stream(self, stream: IO[bytes], expected_digest: str | None = None) -> str:
        """Store what ``stream`` yields as a blob, reading it in chunks, and return its digest.

        Raises:
            DigestInvalid: the content does not hash to ``expected_digest`` (nothing is stored).
        """
        fd, tmp = tempfile.mkstemp(dir=self.root / "uploads", prefix=".blob-")
        with os.fdopen(fd, "wb") as f:
            while chunk := stream.read(_CHUNK):
                f.write(chunk)
        return self._adopt(Path(tmp), expected_digest)

    def put_blob_file(self, path: Path, expected_digest: str | None = None, *, move: bool = False) -> str:
        """Store the file at ``path`` as a blob and return its digest.

        Args:
            path: the file; copied, or moved when ``move`` is true (it must then be on the store's
                filesystem, as upload files under ``root/uploads`` are).
            expected_digest: when given, the content must hash to it.

        Raises:
            DigestInvalid: the content does not hash to ``expected_digest`` (nothing is stored; a moved
                file is deleted).
        """
        if move:
            return self._adopt(Path(path), expected_digest)
        with open(path, "rb") as f:
            return self.put_blob_stream(f, expected_digest)

    def _adopt(self, tmp: Path, expected_digest: str | None) -> str:
        """Move the finished file ``tmp`` into the blob store under its digest."""
        try:
            digest = _file_digest(tmp)
            self._check_expected(digest, expected_digest)
            target = self.blob_path(digest)
            if target.exists():
                tmp.unlink()  # content-addressed: the stored copy is the same bytes
            else:
                os.replace(tmp, target)
            return digest
        finally:
            tmp.unlink(missing_ok=True)

    def _check_expected(self, actual: str, expected: str | None) -> None:
        if expected is not None and check_digest(expected) != actual:
            raise DigestInvalid(f"content has digest {actual}, not the expected {expected}", {"digest": actual})

    # -- uploads -----------------------------------------------------------------------------------------

    def start_upload(self) -> str:
        """Begin a blob upload session and return its id; its file is ``upload_path(id)``."""
        upload_id = uuid.uuid4().hex
        (self.root / "uploads" / upload_id).touch()
        return upload_id

    def upload_path(self, upload_id: str) -> Path:
        """The file an upload session appends to. Raises ``BlobUploadUnknown`` for an unknown session."""
        path = self.root / "uploads" / upload_id
        if not _UPLOAD_ID_RE.match(upload_id) or not path.is_file():
            raise BlobUploadUnknown(f"upload {upload_id!r} is not in progress in registry '{self.name}'")
        return path

    def finish_upload(self, upload_id: str, digest: str) -> str:
        """Turn an upload session into the blob ``digest``; the session ends either way.

        Raises:
            BlobUploadUnknown: no such session.
            DigestInvalid: the uploaded content does not hash to ``digest``.
        """
        return self.put_blob_file(self.upload_path(upload_id), digest, move=True)

    def cancel_upload(self, upload_id: str) -> None:
        """Abandon an upload session. Raises ``BlobUploadUnknown`` for an unknown session."""
        self.upload_path(upload_id).unlink(missing_ok=True)

    # -- manifests and tags ------------------------------------------------------------------------------

    def _manifests_dir(self, repo: str) -> Path:
        return self.root / "repositories" / check_repo_name(repo) / "_manifests"

    def _revision_path(self, repo: str, digest: str) -> Path:
        return self._manifests_dir(repo) / "revisions" / "sha256" / digest.removeprefix("sha256:")

    def put_manifest(self, repo: str, reference: str, data: bytes, media_type: str) -> str:
        """Store a manifest in ``repo`` and return its digest (of the exact bytes).

        Args:
            repo: the repository; created by its first manifest.
            reference: a tag, which is then pointed at the manifest, or the manifest's own digest.
            data: the manifest bytes, stored and served unchanged.
            media_type: one of ``MANIFEST_MEDIA_TYPES``.

        Raises:
            NameInvalid, TagInvalid: a malformed repository name or tag.
            DigestInvalid: ``reference`` is a digest other than that of ``data``.
            ManifestInvalid: malformed JSON or an unsupported media type.
            ManifestBlobUnknown: a config or layer blob, or a child manifest of an index, is not in the
                registry (children must be in ``repo``).
        """
        check_repo_name(repo)
        digest = sha256_digest(data)
        is_digest = ":" in reference  # tags cannot contain ':'
        if is_digest:
            if check_digest(reference) != digest:
                raise DigestInvalid(f"manifest has digest {digest}, not {reference} it was pushed as")
        elif not TAG_RE.match(reference):
            raise TagInvalid(f"tag {reference!r} is invalid: use up to 128 of [A-Za-z0-9._-], not starting with . or -")
        links = manifest_links(data, media_type)
        for blob in links.blobs:
            if not self.has_blob(blob):
                raise ManifestBlobUnknown(f"manifest references blob {blob}, which is not in registry '{self.name}'")
        for child, _ in links.children:
            if self.resolve(repo, child) is None:
                raise ManifestBlobUnknown(f"index references manifest {child}, which is not in repository '{repo}'")
        self.put_blob(data, digest)
        with self._lock:
            now = self._tick()
            created = self._manifests_dir(repo) / "created"
            revision = self._revision_path(repo, digest)
            _write_once(created / "repository", now)
            if not revision.is_file():
                _atomic_write(created / "revisions" / digest.removeprefix("sha256:"), str(now).encode())
            _atomic_write(revision, media_type.encode(), mtime_ns=now)
            if links.subject:  # the referrers index: one empty file per referrer, under its subject
                _write_once(self._subjects_dir(repo, links.subject) / digest.removeprefix("sha256:"), now)
            if not is_digest:
                tag_path = self._manifests_dir(repo) / "tags" / reference
                if not tag_path.is_file():
                    _atomic_write(created / "tags" / reference, str(now).encode())
                _atomic_write(tag_path, digest.encode(), mtime_ns=now)
        return digest

    def _tick(self) -> int:
        """Now, in nanoseconds, at least one 100-ns tick after the previous push (call with the lock held),
        so two pushes never share a timestamp as ACR formats it."""
        self._last_ns = max(time.time_ns(), self._last_ns + 100)
        return self._last_ns

    def resolve(self, repo: str, reference: str) -> str | None:
        """The digest of the manifest ``reference`` (tag or digest) names in ``repo``, or None.

        Raises:
            NameInvalid: a malformed repository name.
        """
        if DIGEST_RE.match(reference):
            return reference if self._revision_path(repo, reference).is_file() else None
        if not TAG_RE.match(reference):
            return None
        try:
            return (self._manifests_dir(repo) / "tags" / reference).read_text()
        except FileNotFoundError:
            return None

    def get_manifest(self, repo: str, reference: str) -> Manifest | None:
        """The manifest ``reference`` (tag or digest) names in ``repo``, or None when there is none.

        Raises:
            NameInvalid: a malformed repository name.
        """
        digest = self.resolve(repo, reference)
        if digest is None:
            return None
        try:
            media_type = self._revision_path(repo, digest).read_text()
            return Manifest(repo, digest, media_type, self.read_blob(digest))
        except (FileNotFoundError, BlobUnknown):
            return None  # deleted between the two reads

    def tags(self, repo: str) -> list[str]:
        """The tags of ``repo``, sorted; empty when the repository does not exist."""
        try:
            names = os.listdir(self._manifests_dir(repo) / "tags")  # plain names: 10,000 tags list in ms
        except FileNotFoundError:
            return []
        return sorted(name for name in names if TAG_RE.match(name))

    def has_repository(self, repo: str) -> bool:
        """Whether ``repo`` holds at least one manifest."""
        revisions = self._manifests_dir(repo) / "revisions" / "sha256"
        return revisions.is_dir() and any(not p.name.startswith(".") for p in revisions.iterdir())

    def repositories(self) -> list[str]:
        """The repositories that hold at least one manifest, sorted."""
        base = self.root / "repositories"
        found = []
        for dirpath, dirnames, _ in os.walk(base):
            if "_manifests" in dirnames:
                dirnames.remove("_manifests")  # never descend into metadata
                repo = Path(dirpath).relative_to(base).as_posix()
                if self.has_repository(repo):
                    found.append(repo)
        return sorted(found)

    # -- timestamps, for ACR's listings ------------------------------------------------------------------

    def tag_record(self, repo: str, tag: str) -> TagRecord | None:
        """The tag's digest and times, or None when ``repo`` has no such tag (one read, one stat).

        Raises:
            NameInvalid: a malformed repository name.
        """
        if not TAG_RE.match(tag):
            return None
        manifests = self._manifests_dir(repo)
        try:
            with open(manifests / "tags" / tag, "rb") as f:
                digest, updated = f.read().decode(), os.fstat(f.fileno()).st_mtime_ns
        except FileNotFoundError:
            return None
        return TagRecord(tag, digest, _read_ns(manifests / "created" / "tags" / tag, updated), updated)

    def tag_update_times(self, repo: str) -> dict[str, int]:
        """Every tag of ``repo`` with its last push time in nanoseconds, from the files' mtimes (no reads)."""
        return _mtimes(self._manifests_dir(repo) / "tags", TAG_RE)

    def tag_digests(self, repo: str) -> dict[str, str]:
        """Every tag of ``repo`` with the digest it points at (one read per tag)."""
        found = {}
        for tag in self.tags(repo):
            digest = self.resolve(repo, tag)
            if digest is not None:
                found[tag] = digest
        return found

    def manifest_digests(self, repo: str) -> list[str]:
        """The digests of the manifests in ``repo``, sorted; empty when the repository does not exist."""
        return sorted(self.manifest_update_times(repo))

    def manifest_update_times(self, repo: str) -> dict[str, int]:
        """Every manifest of ``repo`` with its last push time in nanoseconds, from the files' mtimes."""
        found = _mtimes(self._manifests_dir(repo) / "revisions" / "sha256", _HEX_RE)
        return {"sha256:" + hex_: ns for hex_, ns in found.items()}

    def manifest_record(self, repo: str, digest: str) -> ManifestRecord | None:
        """The manifest's media type, size and times, or None when it is not in ``repo``.

        Raises:
            NameInvalid: a malformed repository name.
        """
        if not DIGEST_RE.match(digest):
            return None
        manifests = self._manifests_dir(repo)
        hex_ = digest.removeprefix("sha256:")
        try:
            with open(manifests / "revisions" / "sha256" / hex_, "rb") as f:
                media_type, updated = f.read().decode(), os.fstat(f.fileno()).st_mtime_ns
            size = self.blob_path(digest).stat().st_size
        except FileNotFoundError:
            return None
        created = _read_ns(manifests / "created" / "revisions" / hex_, updated)
        return ManifestRecord(digest, media_type, size, created, updated)

    def repository_record(self, repo: str) -> RepositoryRecord | None:
        """When ``repo`` was created and last changed, and how many manifests and tags it holds; None when
        it holds no manifest.

        Raises:
            NameInvalid: a malformed repository name.
        """
        manifests = self.manifest_update_times(repo)
        if not manifests:
            return None
        tags = self.tag_update_times(repo)
        updated = max([*manifests.values(), *tags.values()])
        created = _read_ns(self._manifests_dir(repo) / "created" / "repository", min(manifests.values()))
        return RepositoryRecord(repo, created, updated, len(manifests), len(tags))

    def delete_manifest(self, repo: str, digest: str) -> bool:
        """Remove the manifest ``digest`` from ``repo`` with every tag pointing at it; False if absent.

        The bytes stay in the blob store: blobs are shared, and the stand-in collects no garbage.
        """
        check_digest(digest)
        with self._lock:
            revision = self._revision_path(repo, digest)
            if not revision.is_file():
                return False
            for tag in self.tags(repo):
                if self.resolve(repo, tag) == digest:
                    self._unlink_tag(repo, tag)
            revision.unlink()
            (self._manifests_dir(repo) / "created" / "revisions" / digest.removeprefix("sha256:")).unlink(
                missing_ok=True
            )
            return True

    def delete_tag(self, repo: str, tag: str) -> bool:
        """Remove ``tag`` from ``repo`` (the manifest stays); False if the tag does not exist."""
        if not TAG_RE.match(tag):
            return False
        with self._lock:
            existed = (self._manifests_dir(repo) / "tags" / tag).is_file()
            self._unlink_tag(repo, tag)
            return existed

    def _unlink_tag(self, repo: str, tag: str) -> None:
        (self._manifests_dir(repo) / "tags" / tag).unlink(missing_ok=True)
        (self._manifests_dir(repo) / "created" / "tags" / tag).unlink(missing_ok=True)

    def _subjects_dir(self, repo: str, subject: str) -> Path:
        return self._manifests_dir(repo) / "subjects" / subject.removeprefix("sha256:")

    def referrers(self, repo: str, digest: str) -> list[dict[str, Any]]:
        """Descriptors of the manifests in ``repo`` whose ``subject`` is ``digest`` (OCI 1.1 referrers), read from
        the index ``put_manifest`` keeps per subject (a deleted referrer's entry is skipped)."""
        index = self._subjects_dir(repo, digest)
        found = []
        for path in sorted(index.glob("[0-9a-f]*")) if index.is_dir() else []:
            manifest = self.get_manifest(repo, "sha256:" + path.name)
            if manifest is None:
                continue
            doc = json.loads(manifest.data)
            if (doc.get("subject") or {}).get("digest") != digest:
                continue
            descriptor = {
                "mediaType": manifest.media_type,
                "digest": manifest.digest,
                "size": len(manifest.data),
            }
            artifact_type = doc.get("artifactType") or (doc.get("config") or {}).get("mediaType")
            if artifact_type:
                descriptor["artifactType"] = artifact_type
            if doc.get("annotations"):
                descriptor["annotations"] = doc["annotations"]
            found.append(descriptor)
        return found


# -- the HTTP API ----------------------------------------------------------------------------------------

API_VERSION_HEADERS = {"Docker-Distribution-API-Version": "registry/2.0"}

# <name> has any number of segments, so the operation is recognised by the suffix, matched from the right
_PATHS = [
    ("upload", re.compile(r"^(?P<name>.+)/blobs/uploads/(?P<arg>[^/]*)$")),
    ("blob", re.compile(r"^(?P<name>.+)/blobs/(?P<arg>[^/]+)$")),
    ("manifest", re.compile(r"^(?P<name>.+)/manifests/(?P<arg>[^/]+)$")),
    ("tags", re.compile(r"^(?P<name>.+)/tags/list(?P<arg>)$")),
    ("referrers", re.compile(r"^(?P<name>.+)/referrers/(?P<arg>[^/]+)$")),
]


def _error_response(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RegistryError)
    body = {"errors": [{"code": exc.code, "message": str(exc), "detail": exc.detail}]}
    return JSONResponse(body, exc.status, headers=API_VERSION_HEADERS)


def _paginate(items: list[str], request: Request, path: str) -> tuple[list[str], dict[str, str]]:
    """Apply the ``n`` / ``last`` query parameters; a ``Link`` header points at the next page, if any."""
    last = request.query_params.get("last")
    if last:
        items = [i for i in items if i > last]
    n_param = request.query_params.get("n")
    if n_param is None:
        return items, {}
    if not n_param.isdigit():
        raise PaginationNumberInvalid(f"n={n_param!r} is not a non-negative integer")
    n = int(n_param)
    if len(items) <= n:
        return items, {}
    page = items[:n]
    if not page:
        return page, {}
    return page, {"Link": f'<{path}?n={n}&last={quote(page[-1], safe="")}>; rel="next"'}


async def _append_body(request: Request, path: Path) -> int:
    """Append the request body to ``path`` as it arrives and return the file's new size."""
    # plain writes: they land in the page cache, far faster than the network delivers the chunks
    with path.open("ab") as f:
        async for chunk in request.stream():
            if chunk:
                f.write(chunk)
        return f.tell()


async def _read_manifest_body(request: Request) -> bytes:
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > MAX_MANIFEST_BYTES:
            raise ManifestInvalid(f"manifest is larger than {MAX_MANIFEST_BYTES} bytes")
    return bytes(data)


class _RegistryApi:
    """The OCI distribution endpoints over one ``RegistryStore``."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    async def base(self, request: Request) -> Response:
        return JSONResponse({}, headers=API_VERSION_HEADERS)

    async def catalog(self, request: Request) -> Response:
        repos = await run_in_threadpool(self.store.repositories)
        page, headers = _paginate(repos, request, "/v2/_catalog")
        return JSONResponse({"repositories": page}, headers={**API_VERSION_HEADERS, **headers})

    async def dispatch(self, request: Request) -> Response:
        rest = request.path_params["rest"]
        for kind, pattern in _PATHS:
            match = pattern.match(rest)
            if match:
                name = check_repo_name(match["name"])
                handler = getattr(self, f"{kind}_{request.method.lower()}", None)
                if handler is None:
                    raise Unsupported(f"{request.method} is not supported on /v2/<name>/{kind} endpoints")
                response: Response = await handler(request, name, match["arg"])
                response.headers.update(API_VERSION_HEADERS)
                return response
        raise NameUnknown(f"no registry endpoint at /v2/{rest}")

    # -- blobs -------------------------------------------------------------------------------------------

    async def blob_get(self, request: Request, name: str, digest: str) -> Response:
        if not self.store.has_blob(check_digest(digest)):
            raise BlobUnknown(f"blob {digest} is not in repository '{name}'", {"digest": digest})
        # FileResponse streams from disk and answers HEAD and Range requests
        return FileResponse(
            self.store.blob_path(digest),
            media_type="application/octet-stream",
            headers={"Docker-Content-Digest": digest},
        )

    blob_head = blob_get

    # -- uploads -----------------------------------------------------------------------------------------

    def _upload_headers(self, name: str, upload_id: str, size: int) -> dict[str, str]:
        return {
            "Location": f"/v2/{name}/blobs/uploads/{upload_id}",
            "Docker-Upload-UUID": upload_id,
            "Range": f"0-{max(size - 1, 0)}",
        }

    async def _finish(self, request: Request, name: str, upload_id: str, digest: str | None) -> Response:
        if digest is None:
            raise DigestInvalid("the upload's closing request has no ?digest= parameter")
        await run_in_threadpool(self.store.finish_upload, upload_id, digest)
        headers = {"Location": f"/v2/{name}/blobs/{digest}", "Docker-Content-Digest": digest}
        return Response(status_code=201, headers=headers)

    async def upload_post(self, request: Request, name: str, upload_id: str) -> Response:
        if upload_id:
            raise Unsupported("POST starts an upload at /v2/<name>/blobs/uploads/; continue it with PATCH or PUT")
        query = request.query_params
        mount = query.get("mount")
        if mount and self.store.has_blob(check_digest(mount)):
            headers = {"Location": f"/v2/{name}/blobs/{mount}", "Docker-Content-Digest": mount}
            return Response(status_code=201, headers=headers)
        upload_id = self.store.start_upload()
        digest = query.get("digest")
        if digest is not None:  # monolithic upload: the whole blob is the body of this POST
            check_digest(digest)
            await _append_body(request, self.store.upload_path(upload_id))
            return await self._finish(request, name, upload_id, digest)
        return Response(status_code=202, headers=self._upload_headers(name, upload_id, 0))

    async def upload_patch(self, request: Request, name: str, upload_id: str) -> Response:
        path = self.store.upload_path(upload_id)
        size = path.stat().st_size
        content_range = request.headers.get("content-range")
        if content_range:
            start = content_range.removeprefix("bytes ").removeprefix("bytes=").split("-")[0]
            if not start.isdigit() or int(start) != size:
                raise BlobUploadInvalid(f"chunk Content-Range {content_range} does not start at offset {size}")
        size = await _append_body(request, path)
        return Response(status_code=202, headers=self._upload_headers(name, upload_id, size))

    async def upload_put(self, request: Request, name: str, upload_id: str) -> Response:
        path = self.store.upload_path(upload_id)
        await _append_body(request, path)
        return await self._finish(request, name, upload_id, request.query_params.get("digest"))

    async def upload_get(self, request: Request, name: str, upload_id: str) -> Response:
        size = self.store.upload_path(upload_id).stat().st_size
        return Response(status_code=204, headers=self._upload_headers(name, upload_id, size))

    async def upload_delete(self, request: Request, name: str, upload_id: str) -> Response:
        self.store.cancel_upload(upload_id)
        return Response(status_code=204)

    # -- manifests, tags, referrers ----------------------------------------------------------------------

    def _not_found(self, name: str, reference: str) -> RegistryError:
        if not self.store.has_repository(name):
            return NameUnknown(f"repository '{name}' is not in registry '{self.store.name}'", {"name": name})
        return ManifestUnknown(f"manifest '{name}:{reference}' is not in registry '{self.store.name}'")

    async def manifest_get(self, request: Request, name: str, reference: str) -> Response:
        manifest = await run_in_threadpool(self.store.get_manifest, name, reference)
        if manifest is None:
            raise self._not_found(name, reference)
        return Response(
            manifest.data, media_type=manifest.media_type, headers={"Docker-Content-Digest": manifest.digest}
        )

    manifest_head = manifest_get

    async def manifest_put(self, request: Request, name: str, reference: str) -> Response:
        data = await _read_manifest_body(request)
        media_type = manifest_media_type(data, request.headers.get("content-type"))
        digest = await run_in_threadpool(self.store.put_manifest, name, reference, data, media_type)
        headers = {"Location": f"/v2/{name}/manifests/{digest}", "Docker-Content-Digest": digest}
        subject = manifest_links(data, media_type).subject
        if subject:
            headers["OCI-Subject"] = subject  # tells clients that the referrers API is supported
        return Response(status_code=201, headers=headers)

    async def manifest_delete(self, request: Request, name: str, reference: str) -> Response:
        if DIGEST_RE.match(reference):
            deleted = await run_in_threadpool(self.store.delete_manifest, name, reference)
        else:
            deleted = await run_in_threadpool(self.store.delete_tag, name, reference)
        if not deleted:
            raise self._not_found(name, reference)
        return Response(status_code=202)

    async def tags_get(self, request: Request, name: str, _: str) -> Response:
        if not self.store.has_repository(name):
            raise NameUnknown(f"repository '{name}' is not in registry '{self.store.name}'", {"name": name})
        page, headers = _paginate(self.store.tags(name), request, f"/v2/{name}/tags/list")
        return JSONResponse({"name": name, "tags": page}, headers=headers)

    async def referrers_get(self, request: Request, name: str, digest: str) -> Response:
        descriptors = await run_in_threadpool(self.store.referrers, name, check_digest(digest))
        headers = {}
        artifact_type = request.query_params.get("artifactType")
        if artifact_type:
            descriptors = [d for d in descriptors if d.get("artifactType") == artifact_type]
            headers["OCI-Filters-Applied"] = "artifactType"
        # the spec leaves paging to the registry (an opaque Link); `n`/`last` over digests is this one's
        by_digest = {d["digest"]: d for d in descriptors}
        path = f"/v2/{name}/referrers/{digest}"
        page, link = _paginate(sorted(by_digest), request, path)
        if link and artifact_type:
            link["Link"] = link["Link"].replace(">;", f"&artifactType={quote(artifact_type, safe='')}>;", 1)
        body = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [by_digest[d] for d in page]}
        return JSONResponse(body, media_type=OCI_INDEX, headers={**headers, **link})


def registry_app(store: RegistryStore) -> Starlette:
    """The ASGI app serving ``store`` as an OCI Distribution API v1.1 registry with ACR's ``/acr/v1``
    listings; it checks no credentials (see the module docstring).

    Args:
        store: the registry to serve; the app reads and writes it in place.
    """
    from emulator.registry_listing import acr_listing_routes  # it builds on this module's store and errors

    api = _RegistryApi(store)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    routes = [
        Route("/v2/", api.base, methods=["GET", "HEAD"]),
        Route("/v2", api.base, methods=["GET", "HEAD"]),
        Route("/v2/_catalog", api.catalog, methods=["GET", "HEAD"]),
        Route("/v2/{rest:path}", api.dispatch, methods=methods),
        *acr_listing_routes(store),
    ]
    return Starlette(routes=routes, exception_handlers={RegistryError: _error_response})
