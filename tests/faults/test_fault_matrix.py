"""The fault matrix: every Azure call a transfer makes, under every transient fault a service sends.

For each target (ARM PUT run, ARM GET run, ARM list runs, Key Vault get secret, storage list, storage copy,
registry pull) and each fault (429 with Retry-After, 500, 503, a dropped connection, 2 s of latency) the
stand-in injects the fault into the first matching requests of one real transfer. The transfer must still
complete with every artifact digest-equal in the target, exactly one Succeeded export and one Succeeded
import run for the batch, and no retry sent before the service's Retry-After had elapsed.
"""

from __future__ import annotations

import re
import time
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from flows.transfer import registry_transfer
from tests.faults.record import record
from tests.support import azure
from tests.support.images import Pushed, manifest_digest, push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import request, route

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


@dataclass(frozen=True)
class Target:
    """Which requests of a transfer a fault hits."""

    service: str
    method: str
    path: str  # regex over the request path (no query)
    import_pipeline: str = "importpipeline"


TARGETS = {
    "ARM PUT run": Target("arm", "PUT", r"/pipelineRuns/[^/]+$"),
    "ARM GET run": Target("arm", "GET", r"/pipelineRuns/[^/]+$"),
    # a transfer lists runs when it adopts the run of an import pipeline's source trigger
    "ARM list runs": Target("arm", "GET", r"/pipelineRuns$", import_pipeline="triggeredimport"),
    "Key Vault get secret": Target("keyvault", "GET", r"/secrets/"),
    "storage list": Target("storage", "GET", r"^/(source|target)storage/[a-z]+$"),
    "storage copy": Target("storage", "PUT", r"^/targetstorage/[a-z]+/.+"),
    "registry pull": Target("registry", "HEAD", r"^/v2/.+/manifests/"),
}
RETRY_AFTER = 1.0
FAULTS: dict[str, dict[str, Any]] = {
    "429 + Retry-After": {"status": 429, "retry_after": RETRY_AFTER, "count": 2},
    "500": {"status": 500, "count": 2},
    "503": {"status": 503, "count": 2},
    "dropped connection": {"reset": True, "count": 2},
    "2 s latency": {"delay": 2.0, "count": 1},
}


@pytest.fixture(scope="module")
def image(standin: StandIn) -> Pushed:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    return push_file_artifact(login, "faults/matrix", "v1", b"fault matrix payload")


@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("target", list(TARGETS))
def test_transfer_completes_under_fault(standin: StandIn, image: Pushed, target: str, fault: str) -> None:
    where, how = TARGETS[target], FAULTS[fault]
    tid = uuid.uuid4().hex[:12]
    rt = route(standin, "matrix", import_pipeline=where.import_pipeline)
    standin.clear_requests()
    standin.add_fault(service=where.service, method=where.method, path=where.path, **how)
    started = time.monotonic()
    try:
        result = registry_transfer(request(rt, [image.by_tag], transfer_id=tid))
    finally:
        rules = standin.faults()
        standin.clear_faults()
    elapsed = time.monotonic() - started
    log = standin.requests()

    hits = sum(r["hits"] for r in rules)
    assert hits >= 1, f"the fault never hit a request: {where} is not exercised by this transfer"
    assert result.succeeded and result.verified == 1
    target_login = standin.topology["registries"]["targetregistry"]["login_server"]
    assert manifest_digest(target_login, image.repo, image.tag, standin.ca)[0] == image.digest
    exports, imports = _runs_of(tid, result)
    assert [r.provisioning_state for r in exports] == ["Succeeded"], [r.name for r in exports]
    assert [r.provisioning_state for r in imports] == ["Succeeded"], [r.name for r in imports]
    if "retry_after" in how:
        _assert_retry_after_honoured(log, where, how["retry_after"])

    attempts, recovery = _recovery(log, where)
    record(
        "matrix",
        target=target,
        fault=fault,
        outcome="completed, digests equal, 1 export + 1 import Succeeded",
        faults_hit=hits,
        attempts=attempts,
        recover_seconds=round(recovery, 2),
        transfer_seconds=round(elapsed, 2),
    )


def _matches(entry: dict[str, Any], where: Target) -> bool:
    return (
        entry["service"] == where.service
        and entry["method"] == where.method
        and re.search(where.path, entry["path"]) is not None
    )


def _assert_retry_after_honoured(log: list[dict[str, Any]], where: Target, retry_after: float) -> None:
    """After each 429, the same request came again only once Retry-After had passed."""
    throttled = [r for r in log if r.get("fault") == "status" and r["status"] == 429 and _matches(r, where)]
    assert throttled
    for t in throttled:
        again = [r for r in log if r["path"] == t["path"] and r["method"] == t["method"] and r["at"] > t["at"]]
        assert again, f"{t['method']} {t['path']} was never retried"
        gap = again[0]["at"] - t["at"]
        assert gap >= retry_after - 0.05, f"{t['method']} {t['path']} retried {gap:.2f} s after a 429 (Retry-After 1)"


def _recovery(log: list[dict[str, Any]], where: Target) -> tuple[int, float]:
    """Per faulted request path: the requests from its first fault to its first clean answer, and the seconds
    between; the worst path's figures (a transfer reads several secrets, blobs and runs at once)."""
    worst = (0, 0.0)
    for path in {r["path"] for r in log if r.get("fault") and _matches(r, where)}:
        hits = sorted((r for r in log if r["path"] == path and _matches(r, where)), key=lambda r: r["at"])
        first = next(i for i, r in enumerate(hits) if r.get("fault"))
        attempts, seconds = len(hits) - first, hits[-1]["at"] - hits[first]["at"]
        for i in range(first, len(hits)):
            if hits[i].get("fault") == "delay":  # a slow answer is still an answer, after the delay
                attempts, seconds = i - first + 1, hits[i]["at"] - hits[first]["at"] + FAULTS["2 s latency"]["delay"]
                break
            if hits[i].get("fault") is None and 0 < hits[i]["status"] < 500 and hits[i]["status"] != 429:
                attempts, seconds = i - first + 1, hits[i]["at"] - hits[first]["at"]
                break
        worst = max(worst, (attempts, seconds))
    return worst


def _runs_of(tid: str, result: Any) -> tuple[list[Any], list[Any]]:
    """The transfer's export runs, and the import runs that read its blob (ours or the source trigger's)."""
    arm = azure.arm()
    exports = [r for r in arm.pipeline_runs.list(azure.RG, "sourceregistry") if r.name.startswith(f"x{tid}")]
    blobs = set(result.blobs)
    imports = [
        r
        for r in arm.pipeline_runs.list(azure.RG, "targetregistry")
        if r.name.startswith(f"i{tid}") or (r.request.source is not None and r.request.source.name in blobs)
    ]
    return exports, imports
