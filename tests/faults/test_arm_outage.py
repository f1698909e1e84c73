"""An ARM outage shorter than the route's deadline costs time, not the transfer: ARM answers 503 for 90 s and
then drops connections for 90 s (three minutes down) while a transfer waits on its export, on a route with
``timeout_minutes: 30``. The transfer completes with one export and one import run, digests equal."""

from __future__ import annotations

import threading
import time
import uuid
from typing import Any

import pytest

from flows.transfer import registry_transfer
from tests.support.images import manifest_digest, push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, request, route

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
RUN_GETS = r"/pipelineRuns/[^/]+$"
DOWN_SECONDS = 90  # each of the two kinds of outage, back to back


@pytest.mark.timeout(600)  # three minutes of outage, and this shard's stand-in and Prefect start in its setup
def test_a_three_minute_arm_outage_during_the_export_wait(standin: StandIn) -> None:
    src = standin.topology["registries"]["sourceregistry"]["login_server"]
    dst = standin.topology["registries"]["targetregistry"]["login_server"]
    image = push_file_artifact(src, f"outage/app{uuid.uuid4().hex[:6]}", "v1", b"survives an ARM outage")
    req = request(route(standin, "outage", import_pipeline="directimport", timeout_minutes=30), [image.by_tag])
    outcome: dict[str, Any] = {}

    def transfer() -> None:
        try:
            outcome["result"] = registry_transfer(req)
        except BaseException as e:  # the assertion below reports it
            outcome["error"] = e

    standin.set_speed(5.0)  # the export is still running when ARM goes down
    standin.clear_requests()
    worker = threading.Thread(target=transfer, name="outage-transfer")
    worker.start()
    try:
        deadline = time.monotonic() + 120
        while not any(req.transfer_id in r["path"] for r in arm_puts(standin)):
            assert time.monotonic() < deadline and worker.is_alive(), outcome
            time.sleep(0.2)
        standin.add_fault(service="arm", method="GET", path=RUN_GETS, status=503, retry_after=2.0, count=0)
        time.sleep(DOWN_SECONDS)
        standin.clear_faults()
        standin.add_fault(service="arm", method="GET", path=RUN_GETS, reset=True, count=0)
        time.sleep(DOWN_SECONDS)
        standin.clear_faults()
        worker.join(timeout=300)
    finally:
        standin.clear_faults()
        standin.set_speed(0.3)
    assert "error" not in outcome, outcome.get("error")
    assert outcome["result"].succeeded and [r.status for r in outcome["result"].rows] == ["verified"]
    refused = [r for r in standin.requests("arm") if r["method"] == "GET" and r["status"] >= 500]
    assert len(refused) >= 5, "the outage never reached the transfer's reads"
    puts = [r["path"].rsplit("/", 1)[-1] for r in arm_puts(standin) if req.transfer_id in r["path"]]
    assert puts == [f"x{req.transfer_id}b001a1", f"i{req.transfer_id}b001a1"]  # one export, one import
    assert manifest_digest(dst, image.repo, "v1", standin.ca)[0] == image.digest
