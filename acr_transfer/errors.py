"""One error hierarchy for every failure a transfer can meet; callers catch by class.

    AcrTransferError
    ├── TransientError             worth retrying: the same call may succeed later
    │   ├── ThrottledError         ARM/storage 429 (carries retry_after)
    │   ├── ServiceUnavailableError 5xx, timeouts, dropped connections
    │   └── RunFailedTransient     a pipeline run failed for a reason that may pass (storage busy, timeout)
    └── PermanentError             retrying cannot help; a person must change something
        ├── ConfigError            bad input: routes.yaml, a request, a name (nothing was created)
        ├── PreflightError         one or more preflight checks failed (all are listed)
        ├── AuthError              401/403: credential, RBAC, Key Vault access
        ├── NotFoundError          a pipeline, registry, secret, container or blob does not exist
        ├── RequestRejectedError   any other 4xx (400, 409, 412, …): the service refused the request as sent
        ├── SasTokenError          a SAS is expired, lacks a permission, or is not https-only
        ├── RunFailedPermanent     a pipeline run failed for a reason that will not pass by itself
        ├── VerificationError      artifacts missing from the target, or digests differ
        └── RunTimeoutError        a run did not finish within the route's timeout

Two functions hold the HTTP knowledge, and an adapter uses them instead of growing its own map:

- ``from_status(status, message, retry_after=…, code=…)`` is the one status table (401/403 auth, 404 not
  found, 408/429/5xx transient, any other 4xx permanent); ``classify(exc)`` applies it to azure-core
  exceptions, keyed on HTTP status and the service's error code (never on the exception class alone:
  Azurite and Azure send different storage 403 codes); adapters speaking plain HTTP call it directly.
- ``retry_after_seconds(value)`` is the one ``Retry-After`` parser (delta-seconds or HTTP-date, RFC 9110
  §10.2.3); ``retry_after_from_headers(headers)`` adds Azure's ``retry-after-ms`` headers.

Every message is scrubbed of SAS signatures before it is stored anywhere.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

SIG_RE = re.compile(r"(?i)(sig(?:=|%3D))[^&\s'\"]+")


def redact(text: str) -> str:
    """Remove SAS signatures from any text (URLs with a query, error bodies, reprs)."""
    return SIG_RE.sub(r"\1REDACTED", text)


def shown(value: object, limit: int = 80) -> str:
    """A user's value as a message may quote it: invisible characters escaped, at most ``limit`` characters.

    A value in an error message reaches terminals, logs and the Prefect UI; an escape sequence, a newline or
    a megabyte of it must not.
    """
    text = value if isinstance(value, str) else repr(value)
    clipped = len(text) > limit
    text = text[:limit]
    text = "".join(ch if ch.isprintable() else ch.encode("unicode_escape").decode("ascii") for ch in text)
    return text + "…" if clipped else text


class AcrTransferError(Exception):
    """Base of every error this project raises on purpose. ``str()`` is safe to log (no secrets)."""

    retryable = False

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None) -> None:
        super().__init__(redact(message))
        self.code = code
        self.status = status

    @property
    def message(self) -> str:
        return str(self.args[0])

    def __reduce__(self) -> tuple[Any, ...]:
        # keep pickling (Prefect persists exceptions in states) independent of keyword arguments
        return (_rebuild, (type(self), self.message, self.code, self.status, dict(self.__dict__)))


def _rebuild(cls: type[AcrTransferError], message: str, code: str | None, status: int | None, state: dict[str, Any]):
    obj = cls.__new__(cls)
    AcrTransferError.__init__(obj, message, code=code, status=status)
    obj.__dict__.update(state)
    return obj


class TransientError(AcrTransferError):
    """Worth retrying with backoff."""

    retryable = True

    def __init__(self, message: str, *, retry_after: float | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.retry_after = retry_after


class ThrottledError(TransientError):
    """The service answered 429; wait ``retry_after`` seconds."""


class ServiceUnavailableError(TransientError):
    """5xx, a timeout or a dropped connection."""


class RunFailedTransient(TransientError):
    """A pipeline run failed for a reason that may pass; a new attempt may succeed."""


class PermanentError(AcrTransferError):
    """Retrying cannot help; the message says what to change."""


class ConfigError(PermanentError):
    """Invalid input (routes.yaml, request, names); raised before anything is created."""


class PreflightError(PermanentError):
    """At least one preflight check failed; ``failures`` holds every failed check."""

    def __init__(self, message: str, failures: list[Any] | None = None, **kw: Any) -> None:
        super().__init__(message, **kw)
        self.failures = failures or []


class AuthError(PermanentError):
    """Authentication or authorisation failed (401/403)."""


class NotFoundError(PermanentError):
    """A resource does not exist."""


class RequestRejectedError(PermanentError):
    """The service refused the request as it was sent (400, 405, 409, 412, 422, …); sending it again cannot help."""


class SasTokenError(PermanentError):
    """A SAS token is expired, not yet valid, lacks a permission or allows plain http."""


class RunFailedPermanent(PermanentError):
    """A pipeline run failed for a reason that will not pass by itself."""


class VerificationError(PermanentError):
    """The target registry does not hold what was requested."""


class RunTimeoutError(PermanentError):
    """A run did not reach a terminal state within the route's timeout."""


# storage error codes (Azurite's and Azure's) that mean the SAS or identity cannot do the operation
_STORAGE_AUTH_CODES = {
    "AuthorizationFailure",
    "AuthenticationFailed",
    "AuthorizationPermissionMismatch",
    "AuthorizationResourceTypeMismatch",
    "AuthorizationProtocolMismatch",
    "AuthorizationSourceIPMismatch",
    "InvalidAuthenticationInfo",
    "CannotVerifyCopySource",
}
# words in pipelineRunErrorMessage that mark a failure a retry can fix
_TRANSIENT_RUN_WORDS = re.compile(
    r"(?i)(\btimeout\b|\btimed out\b|throttl|too many requests|server ?busy|service unavailable|"
    r"internal server error|temporar|transient|try again|\b(?:503|500|502|504|429)\b|connection reset)"
)


def run_failure(message: str, run_name: str) -> AcrTransferError:
    """Classify a Failed run by its ``pipelineRunErrorMessage``: transient only when it says so."""
    text = f"Pipeline run '{run_name}' failed: {message}"
    if _TRANSIENT_RUN_WORDS.search(message or "") and not re.search(r"\b403\b|Authorization|expired", message or ""):
        return RunFailedTransient(text)
    return RunFailedPermanent(text)


def _error_code(exc: Any) -> str:
    code = getattr(exc, "error_code", None)
    if code is None:
        err = getattr(exc, "error", None)
        code = getattr(err, "code", None)
    return str(getattr(code, "value", code) or "")


def classify(exc: BaseException, what: str) -> AcrTransferError:
    """Map any exception from an Azure SDK call to this hierarchy; ``what`` names the call for the message.

    Already-classified errors pass through unchanged.
    """
    if isinstance(exc, AcrTransferError):
        return exc
    from azure.core.exceptions import (  # local: keep this module importable without azure-core
        ClientAuthenticationError,
        DecodeError,
        HttpResponseError,
        IncompleteReadError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )

    if isinstance(
        exc,
        (ServiceRequestError, ServiceResponseError, IncompleteReadError, DecodeError, ConnectionError, TimeoutError),
    ):
        return ServiceUnavailableError(f"{what}: connection problem ({type(exc).__name__}): {exc}")
    if not isinstance(exc, HttpResponseError):
        return PermanentError(f"{what}: unexpected {type(exc).__name__}: {exc}")
    status = exc.status_code or 0
    code = _error_code(exc)
    detail = f"{what}: {status} {code}".rstrip() + f": {_first_line(exc)}"
    response = getattr(exc, "response", None)
    error = from_status(
        status, detail, retry_after=retry_after_from_headers(getattr(response, "headers", None)), code=code
    )
    if isinstance(error, (TransientError, AuthError)):
        return error
    # the status alone did not say auth or not-found (no status, or an unusual one): trust azure-core's class
    if isinstance(exc, ClientAuthenticationError):
        return AuthError(detail, code=code, status=status)
    if isinstance(exc, ResourceNotFoundError):
        return NotFoundError(detail, code=code, status=status)
    return error


def from_status(
    status: int, message: str, *, retry_after: float | None = None, code: str | None = None
) -> AcrTransferError:
    """The error for an HTTP error answer: the one status table of this project.

    ====================================  ===========================================
    429                                   ThrottledError (with ``retry_after``)
    408, 5xx                              ServiceUnavailableError (with ``retry_after``)
    a storage auth error code, 401, 403   AuthError
    404                                   NotFoundError
    any other 4xx                         RequestRejectedError
    anything else (no status, 1xx-3xx)    PermanentError
    ====================================  ===========================================

    Args:
        status: the HTTP status the service answered.
        message: the whole error message: what was asked, of which resource, and what came back (the caller
            knows the domain; this function only picks the class).
        retry_after: seconds the service asked to wait (see :func:`retry_after_from_headers`); kept on
            transient errors only, since a permanent one is never retried.
        code: the service's error code (ARM ``error.code``, storage ``x-ms-error-code``), if any.

    Returns:
        The classified error, to raise.
    """
    if status == 429:
        return ThrottledError(message, retry_after=retry_after, code=code, status=status)
    if status >= 500 or status == 408:
        return ServiceUnavailableError(message, retry_after=retry_after, code=code, status=status)
    if code in _STORAGE_AUTH_CODES or status in (401, 403):
        return AuthError(message, code=code, status=status)
    if status == 404:
        return NotFoundError(message, code=code, status=status)
    if 400 <= status < 500:
        return RequestRejectedError(message, code=code, status=status)
    return PermanentError(message, code=code, status=status)


def _first_line(exc: Any) -> str:
    err = getattr(exc, "error", None)
    message = getattr(err, "message", None) or getattr(exc, "message", None) or str(exc)
    return str(message).strip().splitlines()[0] if message else ""


_DELTA_SECONDS = re.compile(r"\d+(?:\.\d+)?")  # RFC 9110 allows whole seconds; fractions are read too


def retry_after_seconds(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds a ``Retry-After`` value asks to wait, in either form of RFC 9110: delta-seconds or HTTP-date.

    Args:
        value: the header's value (``"120"``, ``"1.5"``, ``"Wed, 21 Oct 2026 07:28:00 GMT"``), or None.
        now: the time to count an HTTP-date from (default: the current UTC time); a naive value is UTC.

    Returns:
        The seconds to wait; 0 for a date already past; None when there is no value or it is neither form
        (the caller's own backoff applies).
    """
    if value is None:
        return None
    text = str(value).strip()
    if _DELTA_SECONDS.fullmatch(text):
        return float(text)
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when is None:  # pragma: no cover - Python < 3.10 returned None instead of raising
        return None
    now = now or datetime.now(UTC)
    # an HTTP-date is always GMT; "-0000" or an asctime date parses naive
    when = when if when.tzinfo else when.replace(tzinfo=UTC)
    now = now if now.tzinfo else now.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


def retry_after_from_headers(headers: Mapping[str, str] | None, now: datetime | None = None) -> float | None:
    """Seconds the service asked to wait: Azure's ``retry-after-ms`` / ``x-ms-retry-after-ms`` (milliseconds)
    when present, else ``Retry-After`` (see :func:`retry_after_seconds`); None when it asked nothing usable.

    ``headers`` may be any mapping; names are matched without regard to case.
    """
    if not headers:
        return None
    lowered = {str(k).lower(): v for k, v in headers.items()}
    for key in ("retry-after-ms", "x-ms-retry-after-ms"):
        ms = str(lowered.get(key, "")).strip()
        if _DELTA_SECONDS.fullmatch(ms):
            return float(ms) / 1000
    return retry_after_seconds(lowered.get("retry-after"), now)
