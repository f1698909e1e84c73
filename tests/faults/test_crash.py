"""A crash at every step: SIGKILL the process running a transfer, retry it, and nothing is lost or doubled.

The flow runs in its own process (as on a worker). The test watches the stand-in — its request log, its
fault rules' hit counts, its runs — and kills the process at one point of the runbook. Re-running the same
transfer id must complete with every artifact digest-equal in the target, exactly one export and one import
run (both Succeeded: no duplicate), and the same blobs left in storage as an uninterrupted transfer leaves.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from azure.storage.blob import ContainerClient

from flows.transfer import registry_transfer
from tests.faults.record import record
from tests.support import azure
from tests.support.images import Pushed, manifest_digest, push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import request, route

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]
ROUTE = "crash"
RUN_SECONDS = 2.5  # long enough to land a kill inside a run's wait
CONTAINERS = (("sourcestorage", "transfer"), ("targetstorage", "transfer"))


@pytest.fixture(scope="module")
def image(standin: StandIn) -> Pushed:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    return push_file_artifact(login, "faults/crash", "v1", b"crash payload")


@pytest.fixture(scope="module")
def slow_runs(standin: StandIn):
    standin.set_speed(RUN_SECONDS)
    try:
        yield
    finally:
        standin.set_speed(0.3)


@pytest.fixture(scope="module")
def clean_leftovers(standin: StandIn, image: Pushed, slow_runs: None) -> set[str]:
    """The blobs an uninterrupted transfer leaves behind (with its id written as TID)."""
    tid = uuid.uuid4().hex[:12]
    assert registry_transfer(request(route(standin, ROUTE), [image.by_tag], transfer_id=tid)).succeeded
    return _blobs(standin, tid)


class Crash:
    """Where to kill: an optional fault that holds the process at the point, and when the point is reached."""

    def __init__(self, reached: Callable[[StandIn, str], bool], hold: Callable[[str], dict[str, Any]] | None = None):
        self.reached = reached
        self.hold = hold


def _logged(method: str, pattern: str, status: int | None = None) -> Callable[[StandIn, str], bool]:
    def reached(standin: StandIn, tid: str) -> bool:
        regex = re.compile(pattern.format(tid=tid))
        return any(
            r["method"] == method and regex.search(r["path"]) and (status is None or r["status"] == status)
            for r in standin.requests("arm")
        )

    return reached


def _polled(kind: str) -> Callable[[StandIn, str], bool]:
    """The process is waiting on the run: it has read the run at least twice after creating it."""

    def reached(standin: StandIn, tid: str) -> bool:
        log = standin.requests("arm")
        name = f"/pipelineRuns/{kind}{tid}b001a1"
        put = next((r["at"] for r in log if r["method"] == "PUT" and r["path"].endswith(name)), None)
        gets = [r for r in log if r["method"] == "GET" and r["path"].endswith(name) and put and r["at"] > put]
        return len(gets) >= 2 and _still_running(standin, f"{kind}{tid}b001a1")

    return reached


def _held(standin: StandIn, tid: str) -> bool:
    """The process sent the request that the fault rule holds."""
    return any(rule["hits"] for rule in standin.faults())


def _still_running(standin: StandIn, name: str) -> bool:
    return any(run["name"] == name and run["finished_at"] is None for run in standin.runs())


def _copy_hold(delay: float, status: int | None) -> Callable[[str], dict[str, Any]]:
    def rule(tid: str) -> dict[str, Any]:
        body: dict[str, Any] = {"service": "storage", "method": "PUT", "path": f"^/targetstorage/transfer/.*{tid}"}
        return body | {"delay": delay} | ({"status": status} if status else {})

    return rule


def _put_hold(tid: str) -> dict[str, Any]:
    return {"service": "arm", "method": "PUT", "path": f"/pipelineRuns/x{tid}", "delay": 30, "status": 503}


CRASHES = {
    # the export PUT is held (and never applied): the process has passed preflight and created nothing
    "after preflight": Crash(_held, _put_hold),
    "after export-run creation": Crash(_logged("PUT", r"/pipelineRuns/x{tid}b001a1$", 201)),
    "during the export wait": Crash(_polled("x")),
    # the copy into the import container is held (and never applied): the export is Succeeded, nothing copied
    "after export success": Crash(_held, _copy_hold(30, 503)),
    # the copy is under way on the server when the process dies, and completes without it
    "during the bridge": Crash(_held, _copy_hold(2, None)),
    "after import-run creation": Crash(_logged("PUT", r"/pipelineRuns/i{tid}b001a1$", 201)),
    "during the import wait": Crash(_polled("i")),
}


@pytest.mark.parametrize("point", list(CRASHES))
def test_killed_transfer_resumes_without_loss_or_duplicate(
    standin: StandIn, image: Pushed, clean_leftovers: set[str], point: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    from prefect.settings import PREFECT_API_URL

    crash = CRASHES[point]
    tid = uuid.uuid4().hex[:12]
    standin.clear_requests()
    if crash.hold:
        standin.add_fault(**crash.hold(tid), count=1)
    output = tmp_path_factory.mktemp("captured") / f"crash-{tid}.log"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(ROOT)}
    with open(output, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.faults.crash_runner", str(standin.state_dir), ROUTE, image.by_tag, tid],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 90
        while not crash.reached(standin, tid):
            assert proc.poll() is None, f"the transfer ended before '{point}':\n{output.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"'{point}' was never reached:\n{output.read_text()[-3000:]}"
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
        standin.clear_faults()

    started = time.monotonic()
    result = registry_transfer(request(route(standin, ROUTE), [image.by_tag], transfer_id=tid))
    recovered = time.monotonic() - started

    assert result.succeeded and result.verified == 1
    target = standin.topology["registries"]["targetregistry"]["login_server"]
    assert manifest_digest(target, image.repo, image.tag, standin.ca)[0] == image.digest
    arm = azure.arm()
    exports = [r for r in arm.pipeline_runs.list(azure.RG, "sourceregistry") if r.name.startswith(f"x{tid}")]
    imports = [r for r in arm.pipeline_runs.list(azure.RG, "targetregistry") if r.name.startswith(f"i{tid}")]
    assert [(r.name, r.provisioning_state) for r in exports] == [(f"x{tid}b001a1", "Succeeded")]
    assert [(r.name, r.provisioning_state) for r in imports] == [(f"i{tid}b001a1", "Succeeded")]
    leftovers = _blobs(standin, tid)
    assert leftovers == clean_leftovers, f"blobs differ from an uninterrupted transfer: {leftovers}"
    record(
        "crash",
        point=point,
        outcome="resumed: digests equal, 1 export + 1 import run, both Succeeded",
        export_runs=len(exports),
        import_runs=len(imports),
        blobs_left=sorted(leftovers),
        recover_seconds=round(recovered, 2),
    )


def _blobs(standin: StandIn, tid: str) -> set[str]:
    """Every blob of this transfer in both transfer containers, as 'account/container/name' with TID."""
    found = set()
    for account, container in CONTAINERS:
        url = standin.topology["storage_accounts"][account]["containers"][container]
        sas = azure.container_sas(standin, account, container, "rl")[1:]
        client = ContainerClient.from_container_url(url, credential=sas)
        for blob in client.list_blobs(name_starts_with=f"{ROUTE}/{tid}/"):
            found.add(f"{account}/{container}/{blob.name.replace(tid, 'TID')}")
    return found
