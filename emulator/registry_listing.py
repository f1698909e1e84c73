"""ACR's own listings (``/acr/v1/…``) over a ``RegistryStore``, in the shapes of the live recordings.

The endpoints (listed in ``emulator/registry.py``'s docstring) page like ACR: ``n`` entries (at most
``MAX_PAGE``, ``DEFAULT_PAGE`` without ``n``; ``n=0`` is an empty page), ``last`` exclusive, and a relative
``Link: </acr/v1/…?last=…&n=…&orderby=…>; rel="next"`` whenever more remain. ``orderby=timedesc|timeasc``
sorts by ``lastUpdateTime`` (ties by name); without it tags are in name order and manifests in digest order.
In time order ``last`` names the entry the previous page ended with; an entry that was pushed again (or
deleted) while a client pages may be listed twice or skipped, as in any listing ordered by a changing key.

Cost per page request, for repositories with 10,000 tags: name order lists the tag directory once and
reads only the page's tag files; time order stats every tag file (no reads); the ``digest`` filter and the
``tags`` of ``_manifests`` read every tag file (one small read each).

Errors are the store's ``RegistryError`` classes, answered as OCI error bodies by ``registry_app``:
an unknown repository is 404 ``NAME_UNKNOWN``, a bad ``n`` 400 ``PAGINATION_NUMBER_INVALID``, a bad
``orderby`` 400 ``ORDERBY_INVALID``.
"""

from __future__ import annotations

import bisect
import dataclasses
import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from emulator.registry import (
    API_VERSION_HEADERS,
    IMAGE_MANIFEST_TYPES,
    ManifestRecord,
    ManifestUnknown,
    NameUnknown,
    PaginationNumberInvalid,
    RegistryError,
    RegistryStore,
    TagRecord,
    Unsupported,
    check_repo_name,
)

DEFAULT_PAGE = 100
MAX_PAGE = 1000
ORDERS = ("timedesc", "timeasc")
CHANGEABLE = {"deleteEnabled": True, "writeEnabled": True, "readEnabled": True, "listEnabled": True}
IMAGE_CONFIG_TYPES = frozenset(
    {"application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"}
)
# a config larger than this is not an image config worth reading for architecture and os
_MAX_CONFIG_BYTES = 256 * 1024

_PATHS = [
    ("tag", re.compile(r"^(?P<name>.+)/_tags/(?P<arg>[^/]+)$")),
    ("tags", re.compile(r"^(?P<name>.+)/_tags/?(?P<arg>)$")),
    ("manifest", re.compile(r"^(?P<name>.+)/_manifests/(?P<arg>[^/]+)$")),
    ("manifests", re.compile(r"^(?P<name>.+)/_manifests/?(?P<arg>)$")),
    ("repository", re.compile(r"^(?P<name>.+?)/?(?P<arg>)$")),
]


class OrderByInvalid(RegistryError, ValueError):
    """The ``orderby`` query parameter is neither ``timedesc`` nor ``timeasc`` (nor empty)."""

    code = "ORDERBY_INVALID"


def acr_time(ns: int) -> str:
    """A time as ACR writes it: ISO-8601 UTC with seven fractional digits (``2021-09-09T21:57:58.1234567Z``)."""
    seconds, rest = divmod(ns, 1_000_000_000)
    stamp = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{rest // 100:07d}Z"


@dataclass(frozen=True)
class PageRequest:
    """What a listing request asks for: ``n`` entries after ``last``, in ``order`` ("" is name order)."""

    n: int
    last: str | None
    order: str

    @classmethod
    def of(cls, request: Request) -> PageRequest:
        """Read ``n``, ``last`` and ``orderby`` from the query.

        Raises:
            PaginationNumberInvalid: ``n`` is not a non-negative integer.
            OrderByInvalid: ``orderby`` is not ``timedesc``, ``timeasc`` or empty.
        """
        query = request.query_params
        n_param = query.get("n")
        if n_param is None or n_param == "":
            n = DEFAULT_PAGE
        elif n_param.isdigit():
            n = min(int(n_param), MAX_PAGE)
        else:
            raise PaginationNumberInvalid(f"n={n_param!r} is not a non-negative integer")
        order = (query.get("orderby") or "").lower()
        if order and order not in ORDERS:
            raise OrderByInvalid(f"orderby={query.get('orderby')!r} is not supported; use timedesc or timeasc")
        return cls(n, query.get("last") or None, order)

    def page(self, keys: list[str]) -> tuple[list[str], bool]:
        """The page of ``keys`` (already in this request's order) after ``last``, and whether more remain."""
        if self.last is None:
            start = 0
        elif not self.order:
            start = bisect.bisect_right(keys, self.last)  # name order: `last` need not exist any more
        else:
            start = keys.index(self.last) + 1 if self.last in keys else 0
        page = keys[start : start + self.n]
        return page, bool(page) and start + self.n < len(keys)

    def link(self, path: str, page: list[str]) -> dict[str, str]:
        """The ``Link`` header to the page after ``page``, as ACR writes it (relative, ``orderby`` always)."""
        query = f"last={quote(page[-1], safe='')}&n={self.n}&orderby={self.order}"
        return {"Link": f'<{path}?{query}>; rel="next"'}


def _in_order(times: dict[str, int], order: str) -> list[str]:
    """The keys of ``times`` in name order, or by time (ties by name) for ``timeasc`` / ``timedesc``."""
    if not order:
        return sorted(times)
    return sorted(times, key=lambda k: (times[k], k), reverse=order == "timedesc")


def _tag_json(record: TagRecord) -> dict[str, Any]:
    return {
        "name": record.name,
        "digest": record.digest,
        "createdTime": acr_time(record.created_ns),
        "lastUpdateTime": acr_time(record.updated_ns),
        "signed": False,
        "changeableAttributes": dict(CHANGEABLE),
    }


def _platform(store: RegistryStore, repo: str, record: ManifestRecord) -> dict[str, str]:
    """``architecture`` and ``os`` from an image manifest's config, when it is an image config."""
    if record.media_type not in IMAGE_MANIFEST_TYPES:
        return {}
    manifest = store.get_manifest(repo, record.digest)
    if manifest is None:
        return {}
    try:
        config = json.loads(manifest.data).get("config") or {}
        if config.get("mediaType") not in IMAGE_CONFIG_TYPES or int(config.get("size", 0)) > _MAX_CONFIG_BYTES:
            return {}
        doc = json.loads(store.read_blob(config["digest"]))
    except (ValueError, KeyError, TypeError, AttributeError, RegistryError):
        return {}  # not an image config: an artifact's manifest has no platform
    return {k: doc[k] for k in ("architecture", "os") if isinstance(doc, dict) and isinstance(doc.get(k), str)}


def _manifest_json(store: RegistryStore, repo: str, record: ManifestRecord, tags: list[str]) -> dict[str, Any]:
    # imageSize is the manifest's own bytes, as the live recordings show (525 for a one-layer image)
    entry: dict[str, Any] = {
        "digest": record.digest,
        "imageSize": record.size,
        "createdTime": acr_time(record.created_ns),
        "lastUpdateTime": acr_time(record.updated_ns),
        **_platform(store, repo, record),
        "mediaType": record.media_type,
    }
    if tags:
        entry["tags"] = sorted(tags)
    entry["changeableAttributes"] = dict(CHANGEABLE)
    return entry


class _AcrListingApi:
    """The ``/acr/v1`` endpoints over one store; every handler is blocking and runs in the thread pool."""

    def __init__(self, store: RegistryStore) -> None:
        self.store = store

    async def catalog(self, request: Request) -> Response:
        paging = dataclasses.replace(PageRequest.of(request), order="")  # repositories are in name order only
        repos = await run_in_threadpool(self.store.repositories)
        page, more = paging.page(repos)
        headers = paging.link("/acr/v1/_catalog", page) if more else {}
        return JSONResponse({"repositories": page}, headers={**API_VERSION_HEADERS, **headers})

    async def dispatch(self, request: Request) -> Response:
        rest = request.path_params["rest"]
        for kind, pattern in _PATHS:
            match = pattern.match(rest)
            if match:
                name = check_repo_name(match["name"])
                if request.method not in ("GET", "HEAD"):
                    raise Unsupported(f"{request.method} is not supported on /acr/v1/<name> endpoints")
                handler = getattr(self, kind)
                body, headers = await run_in_threadpool(handler, request, name, match["arg"])
                return JSONResponse(body, headers={**API_VERSION_HEADERS, **headers})
        raise NameUnknown(f"no registry endpoint at /acr/v1/{rest}")

    def _known(self, request: Request, name: str) -> dict[str, Any]:
        """The fields every answer about ``name`` starts with (``registry`` is the login server the client
        called). Raises ``NameUnknown`` when there is no such repository."""
        if not self.store.has_repository(name):
            raise NameUnknown(f"repository '{name}' is not in registry '{self.store.name}'", {"name": name})
        return {"registry": request.headers.get("host", self.store.name), "imageName": name}

    def repository(self, request: Request, name: str, _: str) -> tuple[dict[str, Any], dict[str, str]]:
        record = self.store.repository_record(name)
        body = self._known(request, name)
        if record is None:  # emptied since the check
            raise NameUnknown(f"repository '{name}' is not in registry '{self.store.name}'", {"name": name})
        body.update(
            createdTime=acr_time(record.created_ns),
            lastUpdateTime=acr_time(record.updated_ns),
            manifestCount=record.manifest_count,
            tagCount=record.tag_count,
            changeableAttributes={**CHANGEABLE, "teleportEnabled": False},
        )
        return body, {}

    def tags(self, request: Request, name: str, _: str) -> tuple[dict[str, Any], dict[str, str]]:
        body = self._known(request, name)
        paging = PageRequest.of(request)
        digest = request.query_params.get("digest")
        if digest:
            pointing = [t for t, d in self.store.tag_digests(name).items() if d == digest]
            times = self.store.tag_update_times(name) if paging.order else {}
            keys = _in_order({t: times.get(t, 0) for t in pointing}, paging.order)
        elif paging.order:
            keys = _in_order(self.store.tag_update_times(name), paging.order)
        else:
            keys = self.store.tags(name)
        page, more = paging.page(keys)
        records = [r for r in (self.store.tag_record(name, t) for t in page) if r is not None]
        body["tags"] = [_tag_json(r) for r in records]
        return body, paging.link(f"/acr/v1/{name}/_tags", page) if more else {}

    def tag(self, request: Request, name: str, tag: str) -> tuple[dict[str, Any], dict[str, str]]:
        body = self._known(request, name)
        record = self.store.tag_record(name, tag)
        if record is None:
            raise ManifestUnknown(f"tag '{name}:{tag}' is not in registry '{self.store.name}'")
        body["tag"] = _tag_json(record)
        return body, {}

    def manifests(self, request: Request, name: str, _: str) -> tuple[dict[str, Any], dict[str, str]]:
        body = self._known(request, name)
        paging = PageRequest.of(request)
        keys = _in_order(self.store.manifest_update_times(name), paging.order)
        page, more = paging.page(keys)
        tags_of = self._tags_by_digest(name) if page else {}
        entries = []
        for digest in page:
            record = self.store.manifest_record(name, digest)
            if record is not None:
                entries.append(_manifest_json(self.store, name, record, tags_of.get(digest, [])))
        body["manifests"] = entries
        return body, paging.link(f"/acr/v1/{name}/_manifests", page) if more else {}

    def manifest(self, request: Request, name: str, digest: str) -> tuple[dict[str, Any], dict[str, str]]:
        body = self._known(request, name)
        record = self.store.manifest_record(name, digest)
        if record is None:
            raise ManifestUnknown(f"manifest '{name}@{digest}' is not in registry '{self.store.name}'")
        body["manifest"] = _manifest_json(self.store, name, record, self._tags_by_digest(name).get(digest, []))
        return body, {}

    def _tags_by_digest(self, name: str) -> dict[str, list[str]]:
        found: dict[str, list[str]] = {}
        for tag, digest in self.store.tag_digests(name).items():
            found.setdefault(digest, []).append(tag)
        return found


def acr_listing_routes(store: RegistryStore) -> list[Route]:
    """The ``/acr/v1`` routes over ``store``, for ``registry_app`` to serve next to ``/v2``."""
    api = _AcrListingApi(store)
    methods = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"]
    return [
        Route("/acr/v1/_catalog", api.catalog, methods=["GET", "HEAD"]),
        Route("/acr/v1/{rest:path}", api.dispatch, methods=methods),
    ]
