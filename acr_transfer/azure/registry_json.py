"""A registry's JSON answers read into values: ACR's times, ``Link`` headers, tag entries, manifests and
their descriptors. No requests: ``acr_listing.py`` fetches, this module reads what came back.

Every reader raises ``PermanentError`` (or ``ValueError`` for a bare time) with a message naming the
registry, when an answer is not the shape the OCI distribution spec or ACR's ``/acr/v1`` listings give it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import httpx

from acr_transfer.errors import PermanentError, shown
from acr_transfer.listing import ListedTag, Referrer

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
INDEX_TYPES = frozenset({OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"})
MANIFEST_TYPES = INDEX_TYPES | {OCI_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"}
_LINK_NEXT = re.compile(r'<([^>]*)>\s*;[^,]*\brel="?next"?', re.IGNORECASE)
_TIME = re.compile(
    r"^(\d{4}-\d{2}-\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(?:\.(\d+))?\s*(Z|z|[+-]\d{2}:?\d{2})?$",
)


def parse_acr_time(value: object) -> datetime:
    """An ISO-8601 time as ACR writes it (``2021-09-09T21:57:58.1234567Z``: up to 7 fractional digits or
    more, ``Z`` or an offset, or none for UTC), as an aware UTC datetime (microseconds; extra digits dropped).

    Raises:
        ValueError: ``value`` is not such a time.
    """
    match = _TIME.match(value.strip()) if isinstance(value, str) else None
    if match is None:
        raise ValueError(f"{shown(value)!r} is not an ISO-8601 time")
    day, hour, minute, second, fraction, zone = match.groups()
    micros = int((fraction or "0")[:6].ljust(6, "0"))
    when = datetime.fromisoformat(f"{day}T{hour}:{minute}:{second}").replace(microsecond=micros)
    offset = timedelta()
    if zone and zone.upper() != "Z":
        sign = -1 if zone[0] == "-" else 1
        digits = zone[1:].replace(":", "")
        offset = sign * timedelta(hours=int(digits[:2]), minutes=int(digits[2:]))
    return when.replace(tzinfo=timezone(offset)).astimezone(UTC)


def next_page(response: httpx.Response) -> str | None:
    """The ``rel="next"`` target of the response's ``Link`` header, as it was sent; None on the last page."""
    match = _LINK_NEXT.search(response.headers.get("Link", ""))
    return match[1].strip() if match else None


@dataclass(frozen=True)
class FetchedManifest:
    """A manifest as fetched: its digest (of the bytes), media type, size in bytes and parsed JSON."""

    digest: str
    media_type: str
    size: int
    doc: dict[str, Any]

    @property
    def artifact_type(self) -> str:
        """``artifactType``, else the config's media type (how the referrers API describes a manifest)."""
        config = self.doc.get("config")
        fallback = config.get("mediaType", "") if isinstance(config, dict) else ""
        return str(self.doc.get("artifactType") or fallback)


def manifest_media_type(response: httpx.Response, doc: dict[str, Any]) -> str:
    """A manifest's media type: the Content-Type when it is a manifest type, else the JSON ``mediaType``,
    else from its shape (``manifests`` → an OCI index), as a registry decides it on push."""
    content_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if content_type in MANIFEST_TYPES:
        return content_type
    declared = doc.get("mediaType")
    if isinstance(declared, str) and declared:
        return declared
    return OCI_INDEX if "manifests" in doc else OCI_MANIFEST


def oci_error_code(response: httpx.Response) -> str | None:
    """The first OCI error code of the body (``{"errors":[{"code":…}]}``), if there is one."""
    try:
        errors = response.json().get("errors")
        return str(errors[0]["code"]) if errors else None
    except (ValueError, AttributeError, LookupError, TypeError):
        return None


def json_object(response: httpx.Response, login_server: str, what: str) -> dict[str, Any]:
    """The response's JSON object. Raises ``PermanentError`` when it is not one."""
    try:
        doc = response.json()
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise PermanentError(
            f"registry {login_server} answered {what} with something that is not a JSON object; is "
            f"{login_server} a container registry?"
        )
    return doc


def list_field(body: dict[str, Any], field: str, login_server: str) -> list[Any]:
    """``body[field]`` as a list (absent or null is an empty page). Raises ``PermanentError`` otherwise."""
    value = body.get(field)
    if value is None:
        return []
    if not isinstance(value, list):
        raise PermanentError(f"registry {login_server} listed {field!r} as {type(value).__name__}, not a list")
    return value


def listed_tag(entry: Any, login_server: str, repo: str) -> ListedTag:
    """One ``/acr/v1/{repo}/_tags`` entry as a ``ListedTag`` (a missing time is taken from the other).

    Raises:
        PermanentError: the entry lacks a name, a digest or both times, or a time is not ISO-8601.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry.get("digest"):
        raise PermanentError(
            f"registry {login_server} listed a tag of repository {repo} without a name and digest: {shown(entry)}"
        )
    created, updated = entry.get("createdTime") or entry.get("lastUpdateTime"), entry.get("lastUpdateTime")
    try:
        created_at = parse_acr_time(created)
        updated_at = parse_acr_time(updated or created)
    except ValueError as e:
        raise PermanentError(
            f"registry {login_server} listed tag {repo}:{entry['name']} with an unreadable time: {e}"
        ) from None
    return ListedTag(repo, entry["name"], str(entry["digest"]), created_at, updated_at)


def descriptors(value: Any, field: str, login_server: str) -> list[dict[str, Any]]:
    """A manifest's descriptor list. Raises ``PermanentError`` when an entry has no digest."""
    entries = value if isinstance(value, list) else []
    for entry in entries:
        if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
            raise PermanentError(f"registry {login_server} served a manifest whose {field} lack a digest")
    return entries


def descriptor_size(descriptor: dict[str, Any], login_server: str) -> int:
    """A descriptor's ``size`` (0 when absent). Raises ``PermanentError`` for a negative or non-integer one."""
    size = descriptor.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise PermanentError(f"registry {login_server} served a descriptor with size {shown(size)}")
    return size


def descriptor_referrer(entry: Any, repo: str, subject: str, via: str, login_server: str) -> Referrer:
    """One descriptor of a referrers index (the API's or the tag schema's) as a ``Referrer``.

    Raises:
        PermanentError: the entry has no digest.
    """
    if not isinstance(entry, dict) or not isinstance(entry.get("digest"), str):
        raise PermanentError(f"registry {login_server} listed a referrer of {repo}@{subject} without a digest")
    return Referrer(
        repo=repo,
        digest=entry["digest"],
        subject=subject,
        artifact_type=str(entry.get("artifactType") or ""),
        media_type=str(entry.get("mediaType") or ""),
        size=descriptor_size(entry, login_server),
        via=via,
    )


def is_foreign(media_type: str) -> bool:
    # non-distributable layers live elsewhere (their "urls"); registries and ACR transfer do not carry them
    return ".foreign." in media_type or "nondistributable" in media_type
