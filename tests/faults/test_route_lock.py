"""One lock for every entry point: two ``acr-transfer run`` of one route started in the same second never run
at once; the second creates its first pipeline run only after the first transfer has finished."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from tests.support.images import push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, routes_file_text

pytestmark = [pytest.mark.integration, pytest.mark.faults, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]


def _start(routes: Path, route: str, transfer_id: str) -> subprocess.Popen[str]:
    from prefect.settings import PREFECT_API_URL

    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "120"}
    cmd = [sys.executable, "-m", "deployments", "run", "--route", route, "--routes", str(routes),
           "--transfer-id", transfer_id, "--output", "json"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_two_cli_runs_of_one_route_never_overlap(standin: StandIn, tmp_path: Path) -> None:
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    name = f"locked{uuid.uuid4().hex[:6]}"
    image = push_file_artifact(login, f"lock/{name}", "v1", b"one transfer at a time")
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_file_text(name, image.by_tag))
    standin.set_speed(2.0)  # each run takes a while: overlapping transfers would interleave their PUTs
    standin.clear_requests()
    first, second = uuid.uuid4().hex[:12], uuid.uuid4().hex[:12]
    try:
        procs = [_start(routes, name, first), _start(routes, name, second)]
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        standin.set_speed(0.3)
    for proc, (out, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, out + err
    puts = {tid: [r for r in arm_puts(standin) if tid in r["path"]] for tid in (first, second)}
    assert all(len(p) == 2 for p in puts.values()), puts  # one export and one import run each, no more
    runs = {r["name"]: r for r in standin.runs()}
    # whichever got the lock first: its import run had finished before the other created its export run
    (a, b) = sorted(puts, key=lambda tid: min(r["at"] for r in puts[tid]))
    a_import_done = runs[f"i{a}b001a1"]["finished_at"]
    b_first_put = min(r["at"] for r in puts[b])
    assert a_import_done is not None and b_first_put >= a_import_done, (a_import_done, b_first_put)
