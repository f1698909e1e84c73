"""Facts about a SAS token — permissions, expiry, protocol, scope — and never its signature.

A SAS is a bearer secret: whoever holds the query string can use it. So :class:`SasToken` keeps the raw
query in a private field reachable only through :attr:`SasToken.query` (the one place a storage client needs
it), and its ``str``/``repr``, every exception and every problem sentence show only the facts:
``SAS(sp=rawl, se=2026-12-24T10:00Z, spr=https, sr=c)``.

:func:`sas_problems` checks a token against what a transfer needs, the way ACR and Storage will, and says
what to fix in one sentence per problem. Both are pure: no I/O, no clock unless ``now`` is left out.

Letters follow Azure's SAS permissions (``r`` read, ``a`` add, ``c`` create, ``w`` write, ``d`` delete,
``l`` list, …): an ACR export needs ``rawl``; an import ``rl``, plus ``d`` with DeleteSourceBlobOnSuccess.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from urllib.parse import parse_qsl

from acr_transfer.errors import SasTokenError

# what an account SAS must cover for ACR transfer and the blob bridge: containers (c) and blobs (o)
ACCOUNT_RESOURCE_TYPES = "co"
_PERMISSION_LETTERS = re.compile(r"^[a-z]+$")


@dataclass(frozen=True, repr=False)  # __repr__ below: the facts, never the query
class SasToken:
    """The parsed fields of a SAS token; the signature is kept only inside :attr:`query`."""

    permissions: str  # sp, as given (e.g. "rawl")
    expiry: datetime | None  # se, aware UTC
    start: datetime | None  # st, aware UTC
    protocol: str | None  # spr: "https" or "https,http"; absent means both
    resource: str | None  # sr for a service SAS: c (container), b (blob), …
    resource_types: str | None  # srt for an account SAS: s, c, o
    services: str | None  # ss for an account SAS: b, f, q, t
    version: str | None  # sv
    _query: str = field(repr=False)  # the whole token, signature included: only via .query

    @classmethod
    def parse(cls, value: str, *, where: str = "the value") -> SasToken:
        """Parse a SAS token, with or without its leading ``?``.

        Args:
            value: the token (e.g. a Key Vault secret's value).
            where: how messages name its origin, e.g. "secret 'acrexportsas' (vault sourcevault)".

        Raises:
            SasTokenError: it is not a SAS token (no signature, no sp, no se, unreadable fields); the message
                says which part is wrong and never contains the value.
        """
        if not isinstance(value, str):
            raise SasTokenError(f"{where} is not a SAS token (expected text, got {type(value).__name__})")
        query = value.strip().removeprefix("?")
        if "://" in query.split("?", 1)[0]:
            raise _not_a_sas(where, "it is a URL; store only the token, the part after '?'")
        fields: dict[str, str] = {}
        for name, item in parse_qsl(query, keep_blank_values=True):
            name = name.lower()
            if name in fields:
                raise _not_a_sas(where, f"'{name}' appears twice")
            fields[name] = item
        if not fields.get("sig"):
            raise _not_a_sas(where, "it has no signature (sig)")
        if "si" in fields and not ("sp" in fields and "se" in fields):
            raise _not_a_sas(
                where,
                "it uses a stored access policy (si), whose permissions and expiry the token does not show; "
                "generate a SAS that carries sp and se itself",
            )
        permissions = fields.get("sp", "")
        if not _PERMISSION_LETTERS.match(permissions):
            raise _not_a_sas(where, "its permissions (sp) are missing or not lowercase permission letters such as rawl")
        if not fields.get("se"):
            raise _not_a_sas(where, "it has no expiry (se)")
        return cls(
            permissions=permissions,
            expiry=_time(fields["se"], "expiry (se)", where),
            start=_time(fields["st"], "start (st)", where) if fields.get("st") else None,
            protocol=fields.get("spr") or None,
            resource=fields.get("sr") or None,
            resource_types=fields.get("srt") or None,
            services=fields.get("ss") or None,
            version=fields.get("sv") or None,
            _query=query,
        )

    @property
    def query(self) -> str:
        """The token without its leading ``?``, signature included: hand it only to a storage client."""
        return self._query

    @property
    def is_account_sas(self) -> bool:
        """An account SAS (``srt``/``ss``) rather than a service SAS for one container or blob (``sr``)."""
        return self.resource_types is not None or (self.services is not None and self.resource is None)

    def missing(self, required: str) -> str:
        """The letters of ``required`` that ``sp`` lacks, in ``required``'s order (each once)."""
        return "".join(dict.fromkeys(letter for letter in required if letter not in self.permissions))

    def __str__(self) -> str:
        parts = [f"sp={self.permissions}"]
        if self.start is not None:
            parts.append(f"st={format_utc(self.start)}")
        if self.expiry is not None:
            parts.append(f"se={format_utc(self.expiry)}")
        named = (("spr", self.protocol), ("sr", self.resource), ("ss", self.services), ("srt", self.resource_types))
        parts += [f"{name}={value}" for name, value in named if value is not None]
        return f"SAS({', '.join(parts)})"

    __repr__ = __str__


def sas_problems(
    token: SasToken,
    *,
    required: str,
    valid_until: datetime,
    https_only: bool,
    where: str,
    now: datetime | None = None,
) -> list[str]:
    """Everything that stops ``token`` from serving a transfer, one actionable sentence each.

    Args:
        token: the parsed SAS.
        required: the permission letters the step needs ("rawl" export, "rl"/"rdl" import, "cw" bridge).
        valid_until: the transfer's deadline; the SAS must still be valid then.
        https_only: the storage endpoint is https, so the SAS should not allow plain http.
        where: names the token's origin in every sentence, e.g. "secret 'acrexportsas' (vault sourcevault)".
        now: the current time (default: the clock), for tests and for checking a schedule ahead.

    Returns:
        Sentences naming ``where``, what is wrong and what to do; empty when the token is fine.
    """
    now = _aware(now or datetime.now(UTC))
    valid_until = _aware(valid_until)
    subject = f"SAS token in {where}"
    problems: list[str] = []
    if token.start is not None and token.start > now:
        problems.append(
            f"{subject} is not valid until {format_utc(token.start)} (st); wait until then or generate it "
            "with an earlier start time"
        )
    if token.expiry is not None and token.expiry <= now:
        problems.append(f"{subject} expired {format_utc(token.expiry)}; renew it before transferring")
    elif token.expiry is not None and token.expiry < valid_until:
        problems.append(
            f"{subject} expires {format_utc(token.expiry)}, before the transfer's deadline "
            f"{format_utc(valid_until)}; extend it or lower timeout_minutes"
        )
    lacking = token.missing(required)
    if lacking:
        problems.append(
            f"{subject} lacks permission(s) '{lacking}' (has '{token.permissions}', needs '{required}'); "
            f"generate it with at least sp={required}"
        )
    problems += _scope_problems(token, subject, https_only)
    return problems


def _scope_problems(token: SasToken, subject: str, https_only: bool) -> list[str]:
    problems = []
    # no spr means "https,http": Storage would then accept the token over plain http
    if https_only and (token.protocol is None or "http" in token.protocol.replace(" ", "").split(",")):
        allowed = f"spr={token.protocol}" if token.protocol else "no spr, so https and http"
        problems.append(f"{subject} allows plain http ({allowed}); generate it https-only (spr=https, --https-only)")
    if token.is_account_sas:
        lacking = "".join(t for t in ACCOUNT_RESOURCE_TYPES if t not in (token.resource_types or ""))
        if lacking:
            problems.append(
                f"{subject} is an account SAS whose resource types (srt={token.resource_types or ''}) lack "
                f"'{lacking}'; ACR transfer needs containers and objects: generate it with srt={ACCOUNT_RESOURCE_TYPES}"
            )
        if token.services is not None and "b" not in token.services:
            problems.append(
                f"{subject} is an account SAS for services ss={token.services}, not blob storage; generate it with ss=b"
            )
    elif token.resource is not None and token.resource != "c":
        problems.append(
            f"{subject} is scoped to a single blob or other resource (sr={token.resource}); ACR transfer needs a "
            "container SAS (sr=c) or an account SAS"
        )
    return problems


def format_utc(when: datetime) -> str:
    """``2026-12-24T10:00Z`` (seconds only when not zero), the form every message in this project uses."""
    when = _aware(when)
    return when.strftime("%Y-%m-%dT%H:%M:%SZ" if when.second else "%Y-%m-%dT%H:%MZ")


def _aware(when: datetime) -> datetime:
    # a naive time is taken as UTC, as Azure does for SAS times
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def _time(text: str, what: str, where: str) -> datetime:
    try:
        return _aware(datetime.fromisoformat(text))
    except ValueError:
        raise _not_a_sas(where, f"its {what} is not an ISO 8601 UTC time") from None


def _not_a_sas(where: str, reason: str) -> SasTokenError:
    return SasTokenError(f"{where} is not a usable SAS token: {reason}")
