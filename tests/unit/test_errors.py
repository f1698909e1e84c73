"""The error taxonomy: azure-core exceptions built in-process (over a fake transport response, no network) are
classified by status and service error code; run failures split transient from permanent; SAS signatures are
redacted; every error survives the pickling Prefect does to store it in a state."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime

import pytest
from azure.core.exceptions import (
    ClientAuthenticationError,
    HttpResponseError,
    IncompleteReadError,
    ResourceNotFoundError,
    ServiceRequestError,
    ServiceResponseError,
)
from azure.core.pipeline.transport import HttpRequest
from azure.core.pipeline.transport import HttpResponse as TransportResponse
from azure.core.utils import CaseInsensitiveDict

from acr_transfer.errors import (
    AcrTransferError,
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    PreflightError,
    RequestRejectedError,
    RunFailedPermanent,
    RunFailedTransient,
    RunTimeoutError,
    SasTokenError,
    ServiceUnavailableError,
    ThrottledError,
    TransientError,
    VerificationError,
    classify,
    from_status,
    redact,
    retry_after_from_headers,
    retry_after_seconds,
    run_failure,
)

URL = "https://sourcestorage.blob.core.windows.net/transfer/x.tar?sv=2026-10-06&sp=r&sig=TopSecret%2Bsig%3D"


class FakeResponse(TransportResponse):
    """A finished HTTP response, as a transport would hand it to azure-core (status, headers, JSON body)."""

    def __init__(self, status: int, body: object = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(HttpRequest("GET", URL), None)
        self.status_code = status
        self.reason = "Reason"
        self.headers = CaseInsensitiveDict(headers or {})
        self.content_type = "application/json"
        self._body = json.dumps(body).encode() if body is not None else b""

    def body(self) -> bytes:
        return self._body


def arm_error(
    status: int, code: str = "", message: str = "", headers: dict[str, str] | None = None
) -> HttpResponseError:
    body = {"error": {"code": code, "message": message}} if code else None
    return HttpResponseError(response=FakeResponse(status, body, headers))


# --- classify -----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "retry_after"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"x-ms-retry-after-ms": "250"}, 0.25),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # an HTTP-date already past
        ({"Retry-After": "soon"}, None),
        ({}, None),
    ],
)
def test_429_is_throttled_with_retry_after(headers: dict[str, str], retry_after: float | None) -> None:
    error = classify(arm_error(429, "TooManyRequests", "slow down", headers), "GET exportPipelines/x")
    assert isinstance(error, ThrottledError) and error.retryable
    assert error.retry_after == retry_after
    assert (error.status, error.code) == (429, "TooManyRequests")
    assert error.message == "GET exportPipelines/x: 429 TooManyRequests: slow down"


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408])
def test_5xx_and_408_are_service_unavailable(status: int) -> None:
    error = classify(arm_error(status, headers={"Retry-After": "3"}), "PUT pipelineRuns/x")
    assert isinstance(error, ServiceUnavailableError) and isinstance(error, TransientError)
    assert error.retry_after == 3.0 and error.status == status


def test_403_permission_mismatch_is_an_auth_error_with_its_code() -> None:
    error = classify(arm_error(403, "AuthorizationPermissionMismatch", "This request is not authorized"), "upload")
    assert isinstance(error, AuthError) and not error.retryable
    assert error.code == "AuthorizationPermissionMismatch"
    assert "This request is not authorized" in error.message


def test_storage_style_error_code_attribute_is_read() -> None:
    # azure-storage-blob sets error_code on the exception from the x-ms-error-code header
    exc = HttpResponseError(message="Server failed to authenticate", response=FakeResponse(403))
    exc.error_code = "AuthorizationFailure"  # type: ignore[attr-defined]
    error = classify(exc, "read blob")
    assert isinstance(error, AuthError) and error.code == "AuthorizationFailure"


def test_401_and_client_authentication_error_are_auth_errors() -> None:
    assert isinstance(classify(arm_error(401, "InvalidAuthenticationToken", "expired"), "x"), AuthError)
    assert isinstance(classify(ClientAuthenticationError("no credential"), "x"), AuthError)


def test_404_is_not_found() -> None:
    exc = ResourceNotFoundError(response=FakeResponse(404, {"error": {"code": "ResourceNotFound", "message": "gone"}}))
    error = classify(exc, "GET importPipelines/x")
    assert isinstance(error, NotFoundError) and not error.retryable
    assert error.message == "GET importPipelines/x: 404 ResourceNotFound: gone"


def test_other_4xx_is_a_rejected_request() -> None:
    error = classify(arm_error(400, "InvalidParameters", "bad run"), "PUT")
    assert type(error) is RequestRejectedError and isinstance(error, PermanentError)
    assert error.code == "InvalidParameters" and not error.retryable


@pytest.mark.parametrize(
    "exc",
    [ServiceRequestError("connection refused"), ServiceResponseError("reset"), ConnectionError("x"), TimeoutError()],
)
def test_connection_problems_are_transient(exc: Exception) -> None:
    error = classify(exc, "GET")
    assert isinstance(error, ServiceUnavailableError) and error.retryable
    assert "connection problem" in error.message


def test_a_body_cut_off_mid_read_is_transient() -> None:
    assert isinstance(classify(IncompleteReadError("cut off", response=FakeResponse(200)), "GET"), TransientError)


def test_already_classified_errors_pass_through_and_others_are_permanent() -> None:
    known = NotFoundError("x")
    assert classify(known, "y") is known
    other = classify(ValueError("odd"), "parse")
    assert type(other) is PermanentError and other.message == "parse: unexpected ValueError: odd"


def test_classified_messages_never_carry_a_signature() -> None:
    error = classify(ServiceRequestError(f"cannot reach {URL}"), "GET")
    assert "TopSecret" not in error.message and "sig=REDACTED" in error.message


# --- the status table ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        (400, RequestRejectedError),
        (401, AuthError),
        (403, AuthError),
        (404, NotFoundError),
        (405, RequestRejectedError),
        (408, ServiceUnavailableError),
        (409, RequestRejectedError),
        (412, RequestRejectedError),
        (429, ThrottledError),
        (500, ServiceUnavailableError),
        (503, ServiceUnavailableError),
        (504, ServiceUnavailableError),
    ],
)
def test_from_status_is_the_one_status_table(status: int, expected: type[AcrTransferError]) -> None:
    error = from_status(status, f"registry r.azurecr.io answered {status} to HEAD demo/hello:v1", retry_after=2.0)
    assert type(error) is expected
    assert error.status == status and error.message == f"registry r.azurecr.io answered {status} to HEAD demo/hello:v1"
    assert error.retryable is isinstance(error, TransientError) is (status in (408, 429) or status >= 500)
    assert getattr(error, "retry_after", None) == (2.0 if error.retryable else None)


def test_from_status_a_storage_auth_code_is_an_auth_error_whatever_the_4xx() -> None:
    error = from_status(404, "copy x: 404 CannotVerifyCopySource", code="CannotVerifyCopySource")
    assert type(error) is AuthError and error.code == "CannotVerifyCopySource"


@pytest.mark.parametrize("status", [0, 200, 304])
def test_from_status_without_an_error_status_is_plainly_permanent(status: int) -> None:
    assert type(from_status(status, "odd answer")) is PermanentError


@pytest.mark.parametrize("status", [400, 401, 403, 404, 408, 409, 429, 500, 503])
def test_classify_and_from_status_agree(status: int) -> None:
    exc_type = ResourceNotFoundError if status == 404 else HttpResponseError
    exc = exc_type(response=FakeResponse(status, {"error": {"code": "Code", "message": "words"}}))
    assert type(classify(exc, "GET x")) is type(from_status(status, "GET x"))


# --- Retry-After ----------------------------------------------------------------------------------------------------

NOW = datetime(2026, 10, 21, 7, 28, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("120", 120.0),
        (" 7 ", 7.0),
        ("0", 0.0),
        ("1.5", 1.5),
        ("Wed, 21 Oct 2026 07:28:30 GMT", 30.0),  # HTTP-date in the future
        ("Wednesday, 21-Oct-26 07:29:00 GMT", 60.0),  # the obsolete RFC 850 form
        ("Wed, 21 Oct 2026 07:00:00 GMT", 0.0),  # HTTP-date in the past
        ("Wed, 21 Oct 2015 07:28:00 GMT", 0.0),
        ("soon", None),
        ("-5", None),
        ("1e3", None),
        ("nan", None),
        ("", None),
        ("Wed, 21 Oct 99999 07:28:00 GMT", None),
        (None, None),
    ],
)
def test_retry_after_seconds_reads_both_forms(value: str | None, seconds: float | None) -> None:
    assert retry_after_seconds(value, now=NOW) == seconds


def test_retry_after_seconds_counts_a_date_from_now_by_default() -> None:
    assert retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0
    assert (retry_after_seconds("Mon, 01 Jan 9999 00:00:00 GMT") or 0) > 1e11
    naive_now = NOW.replace(tzinfo=None)  # a naive "now" is UTC
    assert retry_after_seconds("Wed, 21 Oct 2026 07:28:10 GMT", now=naive_now) == 10.0


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "Wed, 21 Oct 2026 07:28:05 GMT"}, 5.0),
        ({"Retry-After-Ms": "1500", "Retry-After": "9"}, 1.5),  # milliseconds win: they are more precise
        ({"x-ms-retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "soon", "Retry-After": "9"}, 9.0),
        ({}, None),
        (None, None),
    ],
)
def test_retry_after_from_headers(headers: dict[str, str] | None, seconds: float | None) -> None:
    assert retry_after_from_headers(headers, now=NOW) == seconds


# --- run failures -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "message",
    [
        "Operation timed out while reading the blob",
        "Storage returned 503 Service Unavailable",
        "InternalServerError: please try again",
        "connection reset by peer",
        "Server busy",
    ],
)
def test_run_failures_that_say_they_may_pass_are_transient(message: str) -> None:
    error = run_failure(message, "xabc123b001a1")
    assert isinstance(error, RunFailedTransient) and error.retryable
    assert error.message == f"Pipeline run 'xabc123b001a1' failed: {message}"


@pytest.mark.parametrize(
    "message",
    [
        "Failed to access storage. Status: 403 (This request is not authorized to perform this operation)",
        "AuthorizationFailure: timeout while validating",
        "The SAS token has expired; try again later",
        "Artifact demo/hello:v1 not found in the source registry",
        "",
    ],
)
def test_other_run_failures_are_permanent(message: str) -> None:
    error = run_failure(message, "iabc123b001a1")
    assert isinstance(error, RunFailedPermanent) and not error.retryable
    assert "Pipeline run 'iabc123b001a1' failed" in error.message


@pytest.mark.parametrize("message", ["Request was throttled by storage", "Service temporarily unavailable"])
def test_throttled_and_temporarily_are_transient(message: str) -> None:
    assert isinstance(run_failure(message, "x"), RunFailedTransient)


# --- redaction ----------------------------------------------------------------------------------------------------


def test_redact_removes_signature_values_only() -> None:
    text = f"GET {URL} failed; retry with '{URL.replace('sig=', 'SIG=')}' or \"?sig=abc\" &sig=def ghi"
    redacted = redact(text)
    assert "TopSecret" not in redacted and "abc" not in redacted and "def" not in redacted
    assert redacted.count("REDACTED") == 4
    assert "sv=2026-10-06&sp=r&sig=REDACTED" in redacted and redacted.endswith(" ghi")
    assert redact("nothing secret here") == "nothing secret here"
    assert "abc" not in redact("https://a/c?sv=1&sig%3Dabc%2B&sp=r")  # a SAS URL encoded once more (a copy source)


def test_every_error_message_is_redacted_on_construction() -> None:
    for cls in (ConfigError, SasTokenError, ThrottledError, RunFailedPermanent):
        error = cls(f"copy from {URL} failed")
        assert "TopSecret" not in str(error) and "TopSecret" not in repr(error)


# --- hierarchy and pickling ---------------------------------------------------------------------------------------

EVERY_ERROR: list[AcrTransferError] = [
    ThrottledError("429", retry_after=4.0, code="TooManyRequests", status=429),
    ServiceUnavailableError("503", retry_after=None, status=503),
    RunFailedTransient("run failed: timeout"),
    ConfigError("bad routes.yaml"),
    PreflightError("2 checks failed", failures=["sas expired", {"check": "container"}], code="Preflight"),
    AuthError("403", code="AuthorizationFailure", status=403),
    NotFoundError("404", status=404),
    RequestRejectedError("400", status=400),
    SasTokenError("expired"),
    RunFailedPermanent("run failed"),
    VerificationError("missing demo/hello:v1"),
    RunTimeoutError("run took too long"),
]


@pytest.mark.parametrize("error", EVERY_ERROR, ids=lambda e: type(e).__name__)
def test_errors_survive_pickling(error: AcrTransferError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error)
    assert (copy.message, copy.code, copy.status, copy.args) == (error.message, error.code, error.status, error.args)
    assert copy.__dict__ == error.__dict__
    assert copy.retryable is error.retryable is isinstance(error, TransientError)
    assert isinstance(copy, PermanentError) is not copy.retryable
