"""Production's shape on one machine: the Prefect server on a real PostgreSQL (``make up DB=postgres``) and two
process workers on one work pool, sharing one ARM read budget.

The stand-in's ARM read bucket is set low (``--arm-read-burst`` / ``--arm-read-rate``) and the product is told
ARM's limits with a margin (``ACR_TRANSFER_READ_BUDGET_*``, the whole subscription's, not each worker's), then
transfers run through the ``transfer`` deployment on both workers. Whatever paces the reads, a worker must never
meet a 429: two workers that each spent the budget alone would overrun the bucket. The test checks that the
transfers read more than the bucket holds, so it could fail.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from deployments import postgres
from deployments import stack as stack_module
from deployments.stack import Stack, up
from tests.support import prefect_rest
from tests.support.standin import StandIn

# the module fixture starts PostgreSQL, a Prefect server, the stand-in and two workers, and under make test's
# side-by-side shards on 2 cores that alone took minutes in CI: 300 s (the suite's default) ran out in teardown
pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

TRANSFERS = 6
WORKER_LIMIT = TRANSFERS // 2  # each worker takes at most half, so both must run some
ARM_READ_BURST, ARM_READ_RATE = 50, 3.0  # the stand-in's bucket per subscription (ARM's own: 250, 25/s)
BUDGET_BURST, BUDGET_RATE = 40, 2.4  # what the product is told: ARM's limits with a 20 % margin


def routes_yaml(path: Path) -> Path:
    lines = [
        "version: 1",
        "defaults:",
        "  source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}",
        "  target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}",
        "  timeout_minutes: 10",
        "routes:",
        *(f"  - {{name: pgw-{i}, artifacts: [demo/hello:v1]}}" for i in range(1, TRANSFERS + 1)),
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
def pg_stack() -> Iterator[Stack]:
    # not pytest's tmp_path: its base directory is 0700, and PostgreSQL runs as the OS user postgres
    home = Path(tempfile.mkdtemp(prefix="acr-transfer-pg-"))
    env = {
        "ACR_TRANSFER_ROUTES": str(routes_yaml(home / "routes.yaml")),
        "ACR_TRANSFER_READ_BUDGET_BURST": str(BUDGET_BURST),
        "ACR_TRANSFER_READ_BUDGET_PER_SECOND": str(BUDGET_RATE),
        "PREFECT_LOGGING_LEVEL": "INFO",  # the workers' "submitting" and the flows' "verified" lines are read
    }
    flags = ("--arm-read-burst", str(ARM_READ_BURST), "--arm-read-rate", str(ARM_READ_RATE))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stack_module, "PREFECT_PORT", stack_module.free_port())  # not 4200: another stack may hold it
        try:
            s = up(home, db="postgres", workers=2, worker_limit=WORKER_LIMIT, standin_flags=flags, env=env)
        except postgres.PostgresUnavailable as e:
            shutil.rmtree(home, ignore_errors=True)
            pytest.skip(f"PostgreSQL cannot be installed here: {e}")
    try:
        yield s
    finally:
        s.down()
        shutil.rmtree(home, ignore_errors=True)


def standin_of(stack: Stack) -> StandIn:
    import json

    state = stack.home / "emulator"
    topology = json.loads((state / "topology.json").read_text())
    return StandIn(state_dir=state, process=None, env=dict(stack.env), topology=topology)  # type: ignore[arg-type]


def logs_of(api_url: str, run_ids: list[str]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    with prefect_rest.api(api_url) as c:
        while True:
            page = c.post(
                "/logs/filter",
                json={"logs": {"flow_run_id": {"any_": run_ids}}, "limit": 200, "offset": len(found)},
            )
            page.raise_for_status()
            found += page.json()
            if len(page.json()) < 200:
                return found


def test_two_workers_over_postgres_share_one_arm_read_budget(pg_stack: Stack) -> None:
    api = pg_stack.env["PREFECT_API_URL"]
    standin = standin_of(pg_stack)
    standin.clear_requests()
    dep = prefect_rest.deployment(api, "transfer", "transfer")
    started = [prefect_rest.start_run(api, dep["id"], {"route": f"pgw-{i}"}) for i in range(1, TRANSFERS + 1)]
    finished = [prefect_rest.wait_for(api, run["id"], timeout=170) for run in started]

    states = {run["name"]: run["state_type"] for run in finished}
    assert all(s == "COMPLETED" for s in states.values()), states
    ids = [run["id"] for run in finished]
    # the server keeps them in PostgreSQL, not in a SQLite file
    assert pg_stack.database is not None
    listed = pg_stack.database.query("SELECT id FROM flow_run WHERE state_type = 'COMPLETED';").split()
    assert set(ids) <= set(listed)
    # a flow run's last log lines reach the server after its final state (its process ships them in batches
    # every 2 s, and at exit): read them until every run's "verified" line is there, for a while
    deadline = time.monotonic() + 30
    while True:
        verified = {
            log["flow_run_id"]
            for log in logs_of(api, ids)
            if re.search(r"transfer \w+ complete: 1 artifacts verified", log["message"])
        }
        if verified == set(ids) or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert verified == set(ids), f"not verified: {sorted(set(ids) - verified)}"
    imports = {r["name"]: r["status"] for r in standin.runs() if r["registry"] == "targetregistry"}
    for run in finished:
        tid = run["name"].rsplit("-", 1)[1]
        assert any(status == "Succeeded" for name, status in imports.items() if name.startswith(f"i{tid}b001")), tid

    # both workers ran some: each logs the flow runs it submits
    by_worker = {
        name: {i for i in ids if i in log.read_text(errors="replace")} for name, log in pg_stack.worker_logs().items()
    }
    assert len(by_worker) == 2 and all(by_worker.values()), by_worker
    assert set().union(*by_worker.values()) == set(ids)

    arm = standin.requests("arm")
    reads = [r for r in arm if r["method"] in ("GET", "HEAD")]
    throttled = [f"{r['method']} {r['path']}" for r in arm if r["status"] == 429]
    assert len(reads) > ARM_READ_BURST, f"only {len(reads)} ARM reads: the bucket was never at risk"
    assert throttled == [], f"{len(throttled)} of {len(reads)} ARM reads met a 429, e.g. {throttled[:3]}"
