"""Our own Prefect bookkeeping never fails a transfer Azure is completing.

A proxy in front of a real Prefect server answers 503 to the transfer's artifacts (progress and summary), its
event stream and the shared ARM read budget's leases while the transfer waits on its runs. The transfer goes on
(one warning per kind of call, no failed step), completes once the API answers again, and the server then holds
its verified summary. The proxy also counts every Prefect API request the transfer made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.faults.record import record
from tests.support.images import push_file_artifact
from tests.support.prefect_proxy import PrefectProxy
from tests.support.prefect_server import PrefectServer
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, routes_file_text

pytestmark = [pytest.mark.integration, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]
BOOKKEEPING = (r"^/api/artifacts", r"^/api/events/in$", r"^/api/v2/concurrency_limits/increment$")


@pytest.fixture
def proxied(tmp_path: Path) -> Iterator[tuple[PrefectServer, PrefectProxy]]:
    server = PrefectServer(tmp_path / "prefect-home")
    server.start()
    proxy = PrefectProxy(server.api.removesuffix("/api"))
    proxy.start()
    try:
        yield server, proxy
    finally:
        proxy.stop()
        server.stop()


@pytest.mark.timeout(420)
def test_a_transfer_outlives_prefect_refusing_its_bookkeeping(
    standin: StandIn, proxied: tuple[PrefectServer, PrefectProxy], tmp_path: Path
) -> None:
    server, proxy = proxied
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    name = f"books{uuid.uuid4().hex[:6]}"
    image = push_file_artifact(login, f"books/{name}", "v1", b"verified whatever Prefect said")
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_file_text(name, image.by_tag))
    tid = uuid.uuid4().hex[:12]
    env = {**os.environ, "PREFECT_API_URL": f"{proxy.url}/api", "ACR_TRANSFER_READ_BUDGET_SHARED": "prefect"}
    cmd = [sys.executable, "-m", "deployments", "run", "--route", name, "--routes", str(routes),
           "--transfer-id", tid, "--output", "json"]  # fmt: skip
    standin.set_speed(8.0)  # both runs are still running while the bookkeeping is refused
    try:
        proc = subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not any(tid in r["path"] for r in arm_puts(standin)):
            assert time.monotonic() < deadline and proc.poll() is None, "the export was never created"
            time.sleep(0.2)
        proxy.refuse(*BOOKKEEPING)
        deadline = time.monotonic() + 120  # through the export wait and into the import's
        while len([r for r in arm_puts(standin) if tid in r["path"]]) < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "the import was never created"
            time.sleep(0.2)
        time.sleep(3)
        proxy.refuse()
        out, err = proc.communicate(timeout=240)
    finally:
        standin.set_speed(0.3)
        proxy.refuse()
    assert proc.returncode == 0, out + err[-3000:]
    doc = json.loads(out)
    assert doc["ok"] and [r["status"] for r in doc["result"]["rows"]] == ["verified"]
    assert len([r for r in arm_puts(standin) if tid in r["path"]]) == 2  # one export, one import
    refused = sum(proxy.refused.values())
    assert refused > 0 and any("artifacts" in k for k in proxy.refused), proxy.refused
    # reported once the API answered again: the verified summary is on the server
    summary = httpx.post(
        f"{server.api}/artifacts/filter", json={"artifacts": {"key": {"any_": [f"transfer-summary-{name}"]}}}
    ).json()
    assert summary and f"{tid}" in json.dumps(summary), summary
    record(
        "durability",
        case="Prefect answers 503 to artifacts, events and read-budget leases during both run waits",
        outcome="completed and verified; summary published once Prefect answered",
        observed=f"{refused} Prefect requests refused; {sum(proxy.counts.values())} Prefect API requests in all",
    )
