"""A route is run again only when it failed because the Prefect API could not keep up, never for Azure."""

from __future__ import annotations

import httpx
from prefect.exceptions import PrefectHTTPStatusError

from acr_transfer.errors import AcrTransferError, AuthError
from flows.routes import prefect_unavailable


def _status(code: int) -> PrefectHTTPStatusError:
    request = httpx.Request("POST", "http://127.0.0.1:4200/api/task_runs/")
    response = httpx.Response(code, request=request)
    return PrefectHTTPStatusError.from_httpx_error(
        httpx.HTTPStatusError(f"Server error '{code}'", request=request, response=response)
    )


def test_prefect_5xx_and_dropped_connections_are_prefects() -> None:
    assert prefect_unavailable(_status(503)) and prefect_unavailable(_status(429))
    assert prefect_unavailable(httpx.ConnectError("refused"))
    batch = "PrefectHTTPStatusError: Server error '503 Service Unavailable' for url 'http://127.0.0.1/api/task_runs/'"
    assert prefect_unavailable(AcrTransferError(f"transfer x: 1 batch(es) failed:\nbatch 1: {batch}"))


def test_azure_failures_and_prefect_4xx_are_not() -> None:
    assert not prefect_unavailable(_status(404))
    assert not prefect_unavailable(AuthError("403 from the vault"))
    mixed = (
        "transfer x: 2 batch(es) failed:\nbatch 1: PrefectHTTPStatusError: Server error '503'\nbatch 2: Export failed"
    )
    assert not prefect_unavailable(AcrTransferError(mixed))
    assert not prefect_unavailable(None)
