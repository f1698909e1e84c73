"""What a registry holds, read over its data plane: repositories, tags with their times, referrers, sizes.

``RegistryListing`` builds on ``RegistryDataPlane.send`` (ACR's token flow) and reads:

- ``/v2/_catalog`` for the repositories;
- ``/acr/v1/{repo}/_tags`` for the tags: digest, ``createdTime`` and ``lastUpdateTime`` in one listing, no
  request per tag;
- ``/v2/{repo}/referrers/{digest}`` (OCI 1.1) for the referrers, or the tag schema's ``sha256-<hex>`` index
  when the registry has no referrers API, plus cosign's ``sha256-<hex>.sig`` / ``.att`` / ``.sbom`` tags;
- the manifests themselves for sizes.

Every listing follows ``Link: <…>; rel="next"`` (relative, as ACR sends it with an empty ``orderby=``) on
the same registry. A 408, 429 or 5xx answer is retried (honouring ``Retry-After``), page by page; every other
error answer is raised at once, mapped through the project's one status table (``errors.from_status``)::

    AuthError              the registry refused this identity (401/403)
    NotFoundError          a manifest asked for by name is not there
    RequestRejectedError   the registry refused the request as sent (400, 405, …)
    TransientError         still throttled or unavailable after every attempt
    PermanentError         the registry answered something that is not the listing asked for

``counts`` tallies the requests sent, by kind (``catalog``, ``tags``, ``referrers``, ``manifest``), for
benchmarks. Reading the answers (times, ``Link``, descriptors) is ``registry_json.py``'s.
"""

from __future__ import annotations

import contextlib
import hashlib
import threading
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any
from urllib.parse import quote, urljoin, urlsplit

import httpx

from acr_transfer.azure.acr_data import ACCEPT, RegistryDataPlane
from acr_transfer.azure.registry_json import (
    INDEX_TYPES,
    OCI_INDEX,
    FetchedManifest,
    descriptor_referrer,
    descriptor_size,
    descriptors,
    is_foreign,
    json_object,
    list_field,
    listed_tag,
    manifest_media_type,
    next_page,
    oci_error_code,
)
from acr_transfer.errors import (
    AuthError,
    NotFoundError,
    PermanentError,
    RequestRejectedError,
    VerificationError,
    from_status,
    retry_after_from_headers,
    shown,
)
from acr_transfer.listing import ArtifactSize, ListedTag, Referrer
from acr_transfer.refs import ArtifactRef
from acr_transfer.retry import call_with_retries

STREAMING_ARTIFACT = "application/vnd.azure.artifact.streaming.v1"
COSIGN_SUFFIXES = (".sig", ".att", ".sbom")
MAX_REFERRER_DEPTH = 4


class RegistryListing:
    """Read a registry's repositories, tags, referrers and sizes through one ``RegistryDataPlane``.

    Args:
        plane: the authenticated data plane (its settings give the retry attempts and backoff).
        page_size: the ``n`` asked for per page of a listing (a registry may send fewer, with a ``Link``).
    """

    def __init__(self, plane: RegistryDataPlane, page_size: int = 100) -> None:
        if page_size < 1:
            raise ValueError(f"page_size must be at least 1, not {page_size}")
        self.plane = plane
        self.page_size = page_size
        self.counts: Counter[str] = Counter()
        self._no_referrers_api: set[tuple[str, str]] = set()

    # -- listings ----------------------------------------------------------------------------------------

    def repositories(self, login_server: str) -> list[str]:
        """Every repository of the registry, in the order listed (``/v2/_catalog``, every page).

        Raises:
            AuthError: the identity may not list the catalog (on ABAC registries that needs the role
                Container Registry Repository Catalog Lister).
            RequestRejectedError, TransientError, PermanentError: as in the module docstring.
        """
        found: dict[str, None] = {}
        for body in self._pages("catalog", login_server, "/v2/_catalog", None, "list the repositories"):
            found.update(dict.fromkeys(str(r) for r in list_field(body, "repositories", login_server)))
        return list(found)

    def tags(self, login_server: str, repo: str) -> list[ListedTag]:
        """Every tag of ``repo`` with its digest and times (``/acr/v1/{repo}/_tags``, every page); ``[]``
        when the repository does not exist.

        Raises:
            AuthError: the identity may not read the repository (grant it AcrPull).
            RequestRejectedError, TransientError: as in the module docstring.
            PermanentError: a tag entry lacks its name, digest or times.
        """
        found: dict[str, ListedTag] = {}
        for page in self._tag_pages(login_server, repo):
            for tag in page:
                found.setdefault(tag.tag, tag)
        return list(found.values())

    def tag_digests(self, login_server: str, repo: str, wanted: set[str], budget: int) -> dict[str, str | None] | None:
        """The digest of each ``wanted`` tag (None: not in the repository) from the tag listing, or None when the
        listing would cost more than ``budget`` pages (a repository with a long tag history: HEADs are cheaper).

        Raises:
            AuthError, RequestRejectedError, TransientError, PermanentError: as in the module docstring.
        """
        found: dict[str, str | None] = {}
        for pages, page in enumerate(self._tag_pages(login_server, repo), start=1):
            for tag in page:
                if tag.tag in wanted:
                    found.setdefault(tag.tag, tag.digest)
            if len(found) == len(wanted):
                return found
            if pages >= budget:
                return None
        return {tag: found.get(tag) for tag in wanted}

    def _tag_pages(self, login_server: str, repo: str) -> Iterator[list[ListedTag]]:
        """The tags of ``repo``, a page at a time (``/acr/v1/{repo}/_tags``); nothing when it does not exist."""
        path = f"/acr/v1/{_path(repo)}/_tags"
        for body in self._pages("tags", login_server, path, repo, f"list the tags of repository {repo}"):
            yield [listed_tag(entry, login_server, repo) for entry in list_field(body, "tags", login_server)]

    def manifests(self, login_server: str, repo: str) -> dict[str, list[str]]:
        """Every manifest of ``repo`` by digest, with its tags (none: untagged — a referrer pushed by digest, a
        child of an index, an image whose tag moved on); ``{}`` when the repository does not exist
        (``/acr/v1/{repo}/_manifests``, every page).

        Raises:
            AuthError, RequestRejectedError, TransientError, PermanentError: as in the module docstring.
        """
        found: dict[str, list[str]] = {}
        path = f"/acr/v1/{_path(repo)}/_manifests"
        for body in self._pages("manifests", login_server, path, repo, f"list the manifests of repository {repo}"):
            for entry in list_field(body, "manifests", login_server):
                if isinstance(entry, dict) and isinstance(entry.get("digest"), str):
                    tags = entry.get("tags")
                    found[entry["digest"]] = [str(t) for t in tags] if isinstance(tags, list) else []
        return found

    def referrer(self, login_server: str, repo: str, digest: str) -> Referrer | None:
        """The manifest ``repo@digest`` as a referrer of its ``subject``; None when it has no subject (or is gone).

        Raises:
            VerificationError, AuthError, RequestRejectedError, TransientError, PermanentError: as for
                :meth:`size`.
        """
        manifest = self._manifest(login_server, repo, digest)
        subject = manifest.doc.get("subject") if manifest is not None else None
        if manifest is None or not isinstance(subject, dict) or not isinstance(subject.get("digest"), str):
            return None
        if manifest.artifact_type == STREAMING_ARTIFACT:
            return None
        return Referrer(
            repo=repo,
            digest=manifest.digest,
            subject=subject["digest"],
            artifact_type=manifest.artifact_type,
            media_type=manifest.media_type,
            size=manifest.size,
            via="manifest",
        )

    # -- referrers ---------------------------------------------------------------------------------------

    def referrers(
        self,
        login_server: str,
        repo: str,
        digest: str,
        tags: list[ListedTag] | None = None,
        *,
        artifact_type: str | None = None,
        max_depth: int = MAX_REFERRER_DEPTH,
    ) -> list[Referrer]:
        """The referrers of the manifest ``digest`` in ``repo``, and theirs in turn (a signature of an SBOM),
        up to ``max_depth`` levels, each once; artifact streaming referrers are left out.

        Found through the OCI 1.1 referrers API, or when the registry has none (404) the tag schema's
        ``sha256-<hex>`` index, plus cosign's ``sha256-<hex>.sig`` / ``.att`` / ``.sbom`` tags: looked up in
        ``tags`` when given (the repository's listing, so nothing is probed), else probed by name.

        Args:
            tags: the repository's tags (``tags()``), to find cosign's tags and the tag schema's index
                without probing; None probes them by name (one GET each).
            artifact_type: keep only referrers of this type (filtered here, after the whole walk, so a
                signature of an SBOM is found even when only signatures are asked for).
            max_depth: how many levels of referrers of referrers to follow (1: the direct ones only).

        Raises:
            AuthError, RequestRejectedError, TransientError: as in the module docstring.
            VerificationError: a referrer's manifest does not hash to its digest.
            PermanentError: the registry answered a referrers listing that is not an image index.
        """
        by_tag = {t.tag: t for t in tags} if tags is not None else None
        found: dict[tuple[str, str | None], Referrer] = {}
        visited, frontier = {digest}, [digest]
        for _ in range(max_depth):
            following: list[str] = []
            for subject in frontier:
                for ref in self._direct_referrers(login_server, repo, subject, by_tag):
                    if (ref.digest, ref.tag) in found:
                        continue
                    found[(ref.digest, ref.tag)] = ref
                    if ref.digest not in visited:
                        visited.add(ref.digest)
                        following.append(ref.digest)
            frontier = following
            if not frontier:
                break
        return [r for r in found.values() if artifact_type is None or r.artifact_type == artifact_type]

    def _direct_referrers(
        self, login_server: str, repo: str, subject: str, by_tag: dict[str, ListedTag] | None
    ) -> list[Referrer]:
        """The referrers of ``subject`` itself: the API's (or the tag schema's) and cosign's tags."""
        listed = self._api_referrers(login_server, repo, subject)
        if listed is None:
            listed = self._tag_schema_referrers(login_server, repo, subject, by_tag)
        listed += self._cosign_referrers(login_server, repo, subject, by_tag)
        return [r for r in listed if r.artifact_type != STREAMING_ARTIFACT]

    def _api_referrers(self, login_server: str, repo: str, subject: str) -> list[Referrer] | None:
        """What ``/v2/{repo}/referrers/{subject}`` lists; None when the registry has no such API (404)."""
        if (login_server, repo) in self._no_referrers_api:
            return None
        path = f"/v2/{_path(repo)}/referrers/{subject}"
        what = f"list the referrers of {repo}@{subject}"
        found = []
        try:
            for body in self._pages("referrers", login_server, path, repo, what, accept=OCI_INDEX, missing=False):
                for entry in list_field(body, "manifests", login_server):
                    found.append(descriptor_referrer(entry, repo, subject, "referrers-api", login_server))
        except _Missing:
            self._no_referrers_api.add((login_server, repo))  # as regclient does: probe once per repository
            return None
        return found

    def _tag_schema_referrers(
        self, login_server: str, repo: str, subject: str, by_tag: dict[str, ListedTag] | None
    ) -> list[Referrer]:
        """The referrers the tag schema's ``<alg>-<hex>`` index lists; ``[]`` when there is none (known from
        ``by_tag`` without a request, when given)."""
        tag = subject.replace(":", "-", 1)
        if by_tag is not None and tag not in by_tag:
            return []
        index = self._manifest(login_server, repo, by_tag[tag].digest if by_tag is not None else tag)
        if index is None or index.media_type not in INDEX_TYPES:
            return []
        entries = index.doc.get("manifests")
        return [
            descriptor_referrer(entry, repo, subject, "tag-schema", login_server)
            for entry in (entries if isinstance(entries, list) else [])
        ]

    def _cosign_referrers(
        self, login_server: str, repo: str, subject: str, by_tag: dict[str, ListedTag] | None
    ) -> list[Referrer]:
        """cosign's legacy tags for ``subject``, each fetched once to learn what it is."""
        prefix = subject.replace(":", "-", 1)
        found = []
        for tag in (prefix + suffix for suffix in COSIGN_SUFFIXES):
            if by_tag is not None and tag not in by_tag:
                continue
            reference = by_tag[tag].digest if by_tag is not None else tag
            manifest = self._manifest(login_server, repo, reference)
            if manifest is not None:
                found.append(
                    Referrer(
                        repo=repo,
                        digest=manifest.digest,
                        subject=subject,
                        artifact_type=manifest.artifact_type,
                        media_type=manifest.media_type,
                        size=manifest.size,
                        via="cosign-tag",
                        tag=tag,
                    )
                )
        return found

    # -- sizes -------------------------------------------------------------------------------------------

    def size(self, login_server: str, repo: str, reference: str) -> ArtifactSize:
        """What ``repo:reference`` (a tag or a digest) pulls: for an image, its config and layers; for an
        index, every child's (each fetched once), summed; and the largest layer over all of them.
        Non-distributable (foreign) layers are not counted: they are not pulled from the registry.

        Raises:
            NotFoundError: the manifest, or a child of an index, is not in the repository.
            VerificationError: a manifest's bytes do not hash to the digest it was asked for by.
            AuthError, RequestRejectedError, TransientError, PermanentError: as in the module docstring.
        """
        root = self._required_manifest(login_server, repo, reference)
        total, largest = 0, (0, "")
        seen = {root.digest}
        pending = [root]
        while pending:
            manifest = pending.pop()
            if manifest.media_type in INDEX_TYPES:
                for child in descriptors(manifest.doc.get("manifests"), "manifests", login_server):
                    if child["digest"] not in seen:
                        seen.add(child["digest"])
                        pending.append(self._required_manifest(login_server, repo, child["digest"]))
                continue
            config = manifest.doc.get("config")
            total += descriptor_size(config, login_server) if isinstance(config, dict) else 0
            for layer in descriptors(manifest.doc.get("layers", []), "layers", login_server):
                if is_foreign(str(layer.get("mediaType", ""))):
                    continue
                size = descriptor_size(layer, login_server)
                total += size
                largest = max(largest, (size, layer["digest"]))
        return ArtifactSize(root.digest, total, largest[0], largest[1] or None)

    def _required_manifest(self, login_server: str, repo: str, reference: str) -> FetchedManifest:
        manifest = self._manifest(login_server, repo, reference)
        if manifest is None:
            raise NotFoundError(
                f"manifest {repo}{'@' if ':' in reference else ':'}{reference} is not in registry {login_server}; "
                "check the repository, the tag or digest, and that the artifact was not deleted",
                status=404,
            )
        return manifest

    # -- requests ----------------------------------------------------------------------------------------

    def _manifest(self, login_server: str, repo: str, reference: str) -> FetchedManifest | None:
        """GET ``repo``'s manifest ``reference`` (Accept: the four manifest and index types); None on 404.

        Raises:
            VerificationError: asked for by digest, the bytes hash to another.
            PermanentError: the answer is not a JSON object.
        """
        what = f"read manifest {repo}:{reference}"
        path = f"/v2/{_path(repo)}/manifests/{reference}"
        response = self._get("manifest", login_server, path, repo, what, accept=ACCEPT)
        if response is None:
            return None
        data = response.content
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        if reference.startswith("sha256:") and digest != reference:
            raise VerificationError(
                f"registry {login_server} answered manifest {repo}@{reference} with bytes whose digest is "
                f"{digest}; the registry's content is corrupt, do not transfer it"
            )
        doc = json_object(response, login_server, what)
        return FetchedManifest(digest, manifest_media_type(response, doc), len(data), doc)

    def _pages(
        self,
        kind: str,
        login_server: str,
        path: str,
        repo: str | None,
        what: str,
        *,
        accept: str = "application/json",
        missing: bool = True,
    ) -> Iterator[dict[str, Any]]:
        """The JSON bodies of a listing's pages, following ``Link`` on the same registry.

        A 404 ends the listing with nothing more when ``missing`` (an unknown repository lists nothing),
        else raises ``_Missing``.

        Raises:
            PermanentError: a ``Link`` leads to another host or back to a page already read.
        """
        params: dict[str, str] | None = {"n": str(self.page_size)} if kind != "referrers" else None
        seen = {path}
        while True:
            response = self._get(kind, login_server, path, repo, what, params=params, accept=accept)
            if response is None:
                if missing:
                    return
                raise _Missing
            yield json_object(response, login_server, what)
            link = next_page(response)
            if link is None:
                return
            path, params = _same_registry(link, login_server, path, what), None
            if path in seen:
                raise PermanentError(
                    f"registry {login_server} answered {what} with a Link back to a page already read "
                    f"({shown(path)}); the listing cannot be completed, report it to the registry's operator"
                )
            seen.add(path)

    def _get(
        self,
        kind: str,
        login_server: str,
        path: str,
        repo: str | None,
        what: str,
        *,
        params: dict[str, str] | None = None,
        accept: str,
    ) -> httpx.Response | None:
        """One GET, retried while the registry answers 408, 429 or 5xx; None on 404.

        Raises:
            AuthError, RequestRejectedError, TransientError, PermanentError: as in the module docstring.
        """
        settings = self.plane.settings

        def once() -> httpx.Response | None:
            self.counts[kind] += 1
            response = self.plane.send("GET", login_server, path, repo=repo, params=params, headers={"Accept": accept})
            if response.status_code == 404:
                return None
            if response.status_code >= 400:
                raise _error(response, login_server, repo, what)
            return response

        return call_with_retries(
            once,
            f"{what} on registry {login_server}",
            attempts=settings.storage_retry_total + 1,
            base_delay=settings.retry_base_seconds,
        )


class _Missing(Exception):
    """A listing's endpoint answered 404 where that means "not supported here" (the referrers API)."""


def _path(repo: str) -> str:
    """``repo`` as a URL path: ``/`` kept (as az sends it), anything else that could break the path escaped."""
    return quote(repo, safe="/")


def _same_registry(link: str, login_server: str, current: str, what: str) -> str:
    """The path and query a ``Link`` target names, resolved against the current page on ``login_server``.

    Raises:
        PermanentError: the target is on another host (a token for this registry is not sent elsewhere).
    """
    base = f"https://{login_server}{current}"
    target = urlsplit(urljoin(base, link))
    if target.netloc.lower() != login_server.lower():
        raise PermanentError(
            f"registry {login_server} answered {what} with a Link to another host ({shown(target.netloc)}); "
            "the listing was not followed there"
        )
    return target.path + (f"?{target.query}" if target.query else "")


def _error(response: httpx.Response, login_server: str, repo: str | None, what: str) -> Exception:
    """The error for a failed answer: classified by status, with a message that says what to do."""
    status = response.status_code
    asked = f"registry {login_server} answered {status} to {what}"
    code = oci_error_code(response)
    if code:
        asked += f" ({code})"
    error = from_status(status, asked, retry_after=retry_after_from_headers(response.headers), code=code)
    if isinstance(error, AuthError):
        grant = (
            f"grant it pull (AcrPull) on the registry or on repository {repo}"
            if repo
            else "grant it AcrPull on the registry (on an ABAC registry, Container Registry Repository Catalog Lister)"
        )
        return AuthError(f"{asked}: it refused this identity; {grant}", code=code, status=status)
    if isinstance(error, RequestRejectedError):
        return RequestRejectedError(
            f"{asked}: it rejected the request; check the repository name and the reference (a tag or "
            "sha256:<64 hex digits>)",
            code=code,
            status=status,
        )
    return error


LIST_FROM = 4  # a repository asked for this many tags or more is listed instead of read tag by tag


class DigestLookup:
    """``(repo, reference) → digest | None`` for a known set of artifacts, in as few requests as it can.

    A repository asked for ``LIST_FROM`` tags or more is answered from one tag listing (a page of 100 tags per
    request, instead of one HEAD per tag), read once on first use; the listing is given up for HEADs when it would
    cost more pages than half the tags it answers, or when this identity may not list. Digest references and
    repositories asked for fewer tags are read one HEAD each, as ``RegistryDataPlane.manifest_digest``.
    """

    def __init__(self, listing: RegistryListing, login_server: str, refs: Iterable[ArtifactRef]) -> None:
        self.listing, self.login_server = listing, login_server
        wanted: dict[str, set[str]] = {}
        for ref in refs:
            if not ref.by_digest:
                wanted.setdefault(ref.repository, set()).add(ref.reference)
        self._wanted = {repo: tags for repo, tags in wanted.items() if len(tags) >= LIST_FROM}
        self._listed: dict[str, dict[str, str | None] | None] = {}
        self._locks = {repo: threading.Lock() for repo in self._wanted}

    def __call__(self, repo: str, reference: str) -> str | None:
        if repo in self._wanted and reference in self._wanted[repo]:
            table = self._table(repo)
            if table is not None:
                return table.get(reference)
        return self.listing.plane.manifest_digest(self.login_server, repo, reference)

    def prefetch(self, *others: DigestLookup, threads: int = 8) -> None:
        """List every repository this lookup (and ``others``) will read from a listing, ``threads`` at a time,
        instead of one after another as their first artifacts are asked for. Best effort: a listing that fails
        here is tried again, and its error raised, when an artifact of it is asked for."""
        jobs = [(lookup, repo) for lookup in (self, *others) for repo in lookup._wanted]
        if len(jobs) < 2:
            return
        with ThreadPoolExecutor(min(threads, len(jobs)), thread_name_prefix="acr-listing") as pool:
            for _ in pool.map(lambda job: _quietly(job[0]._table, job[1]), jobs):
                pass

    def _table(self, repo: str) -> dict[str, str | None] | None:
        with self._locks[repo]:
            if repo not in self._listed:
                wanted = self._wanted[repo]
                try:
                    self._listed[repo] = self.listing.tag_digests(
                        self.login_server, repo, wanted, budget=max(1, len(wanted) // 2)
                    )
                except (AuthError, RequestRejectedError):
                    self._listed[repo] = None  # may pull but not list: read tag by tag, which says what is wrong
            return self._listed[repo]


def _quietly(read: Callable[[str], object], repo: str) -> None:
    with contextlib.suppress(Exception):
        read(repo)
