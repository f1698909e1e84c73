"""A Prefect server restart while a transfer waits on its export (Prefect 3.9 keeps concurrency leases in
memory: the restart forgets the route lock's lease while its slot stays counted). The transfer completes, and
the next transfer of that route starts without waiting on the stale lock."""

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

from tests.support.images import push_file_artifact
from tests.support.prefect_server import PrefectServer
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, routes_file_text

pytestmark = [pytest.mark.integration, pytest.mark.faults]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def prefect(tmp_path: Path) -> Iterator[PrefectServer]:
    server = PrefectServer(tmp_path / "prefect-home")
    server.start()
    try:
        yield server
    finally:
        server.stop()


def _run(server: PrefectServer, routes: Path, route: str, transfer_id: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PREFECT_API_URL": server.api}
    cmd = [sys.executable, "-m", "deployments", "run", "--route", route, "--routes", str(routes),
           "--transfer-id", transfer_id, "--output", "json"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(what: str, ready: object, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not ready():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.3)


def test_a_prefect_restart_during_the_export_wait(standin: StandIn, prefect: PrefectServer, tmp_path: Path) -> None:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    name = f"restart{uuid.uuid4().hex[:6]}"
    image = push_file_artifact(login, f"restart/{name}", "v1", b"survives a Prefect restart")
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_file_text(name, image.by_tag))
    first = uuid.uuid4().hex[:12]
    standin.set_speed(15.0)  # the export is still running when the server comes back
    try:
        proc = _run(prefect, routes, name, first)
        _wait_for("the export run", lambda: any(first in r["path"] for r in arm_puts(standin)), 120)
        prefect.stop()
        prefect.start()  # same port, same database; the lease of the route lock is gone, its slot still counted
        out, err = proc.communicate(timeout=300)
    finally:
        standin.set_speed(0.3)
    assert proc.returncode == 0, out + err
    doc = json.loads(out)
    assert doc["ok"] and [r["status"] for r in doc["result"]["rows"]] == ["verified"]
    assert len([r for r in arm_puts(standin) if first in r["path"]]) == 2  # one export, one import

    # the lock is free again: no slot left counted for a lease the restart forgot, no holder on record
    lock = httpx.get(f"{prefect.api}/v2/concurrency_limits/acr-transfer-route-{name}", timeout=10).json()
    assert lock["active_slots"] == 0, lock
    holder = httpx.get(f"{prefect.api}/variables/name/acr_transfer_lock_{name}", timeout=10)
    assert holder.status_code == 404, holder.text

    second = uuid.uuid4().hex[:12]
    out, err = _run(prefect, routes, name, second).communicate(timeout=300)
    assert json.loads(out)["ok"], out + err
