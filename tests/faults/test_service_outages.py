"""Key Vault, storage and the registry down for longer than any fixed retry budget, outside the run waits: the
step is retried until the route's deadline, says what is down and since when, and the transfer completes once
the service answers again, with one export and one import run.

Each case takes one service down (503 to every matching request) from before the transfer starts until
``DOWN_SECONDS`` later: Key Vault while preflight reads the SAS secrets, the import storage account while the
bridge copies the blob into it, the registry while preflight reads the artifacts' digests.
"""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from flows.transfer import registry_transfer
from tests.faults.record import record
from tests.support.images import manifest_digest, push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, request, route

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
DOWN_SECONDS = 40  # far past the per-call and task retries of before (a few seconds at the tests' backoff)

OUTAGES: dict[str, tuple[dict[str, Any], str]] = {
    "Key Vault during preflight": (
        {"service": "keyvault", "method": "GET", "path": "/secrets/"},
        "preflight of the export side",
    ),
    "storage during the bridge": (
        {"service": "storage", "method": "PUT", "path": "^/targetstorage/transfer/"},
        "bridge (batch 1)",
    ),
    "the registry during preflight": (
        {"service": "registry", "method": "*", "path": "/v2/outages/.*/manifests/"},
        "preflight of the artifacts",
    ),
}


def _retry_artifacts(transfer_id: str) -> list[Any]:
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return [a for a in client.read_artifacts(limit=200) if (a.key or "").endswith(transfer_id)]


@pytest.mark.timeout(300)
@pytest.mark.parametrize("case", list(OUTAGES))
def test_a_service_outage_outside_the_run_wait_is_outlasted(standin: StandIn, case: str) -> None:
    rule, step = OUTAGES[case]
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    dst = standin.topology["registries"]["targetregistry"]["login_server"]
    image = push_file_artifact(src, f"outages/app{uuid.uuid4().hex[:6]}", "v1", b"outlasts an outage")
    req = request(route(standin, "outages", timeout_minutes=30), [image.by_tag])  # bridged
    standin.clear_requests()
    standin.add_fault(**rule, status=503, count=0)
    restored = threading.Timer(DOWN_SECONDS, standin.clear_faults)
    restored.start()
    started = time.monotonic()
    try:
        result = registry_transfer(req)
    finally:
        restored.cancel()
        standin.clear_faults()
    took = time.monotonic() - started

    assert result.succeeded and [r.status for r in result.rows] == ["verified"]
    assert manifest_digest(dst, image.repo, "v1", standin.ca)[0] == image.digest
    refused = [r for r in standin.requests(rule["service"]) if r["status"] == 503]
    # refused for longer than every fixed retry of before (seconds at the tests' backoff) put together
    assert refused and refused[-1]["at"] - refused[0]["at"] > DOWN_SECONDS / 2, "the outage never lasted"
    assert took >= DOWN_SECONDS  # it waited the outage out rather than failing
    puts = [r["path"].rsplit("/", 1)[-1] for r in arm_puts(standin) if req.transfer_id in r["path"]]
    assert puts == [f"x{req.transfer_id}b001a1", f"i{req.transfer_id}b001a1"]  # one export, one import
    # what a person saw meanwhile: the step's retry artifact said what was failing, then that it recovered
    told = [a.description for a in _retry_artifacts(req.transfer_id)]
    assert any(d.startswith(f"transfer {req.transfer_id}: {step} succeeded after ") for d in told), told
    record(
        "durability",
        case=f"{case}: 503 for {DOWN_SECONDS} s (route timeout 30 min)",
        outcome="step retried until the service answered; completed, digests equal, 1 export + 1 import run",
        observed=f"{len(refused)} requests refused; transfer took {took:.0f} s",
    )
