"""``BENCH_SCENARIOS=pg-workers make bench``: production's shape on one machine — the Prefect server on a real
PostgreSQL, two process workers on one work pool — carrying ``BENCH_PG_TRANSFERS`` (100) simultaneous transfers.

The stack is ``make up DB=postgres WORKERS=2``'s (``deployments.stack.up``), with runs of ``BENCH_RUN_SECONDS``.
The transfers are two ``sync-routes`` flow runs of half the routes each, one per worker (each worker takes one
flow run at a time, ``--limit 1``), through a copy of the ``sync-routes`` deployment without its one-at-a-time
limit. Unlike the other scenarios nothing runs in the bench process, so what it measures comes from outside:

- **detection latency**: the worker's log line ``<step> run <name>: 100% (Succeeded)`` (its timestamp is when
  the flow learned it) minus the moment the stand-in finished the run;
- **verified**: routes the ``sync-routes`` summaries report ``succeeded`` (every artifact verified), and the
  import runs the stand-in finished Succeeded;
- **ARM**: reads and 429s in the stand-in's request log, across both workers;
- **memory**: peak RSS of each worker with its flow-run processes (sampled at 5 Hz).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

TRANSFERS = int(os.environ.get("BENCH_PG_TRANSFERS", "100"))
DETECTED = re.compile(r"^(export|import) run (\S+): 100% \(Succeeded\)")
ROUTE_LINE = re.compile(r"^route (\S+): (succeeded|failed|skipped)")


class TreeSampler:
    """Peak resident memory of each named process with all its descendants (sampled at 5 Hz)."""

    def __init__(self, pids: dict[str, int]) -> None:
        self.pids = pids
        self.peak = dict.fromkeys(pids, 0)
        self.peak_total = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def _tree_rss(pid: int) -> int:
        total, todo = 0, [pid]
        while todo:
            p = todo.pop()
            try:
                status = Path(f"/proc/{p}/status").read_text()
                for tid in os.listdir(f"/proc/{p}/task"):
                    todo += [int(c) for c in Path(f"/proc/{p}/task/{tid}/children").read_text().split()]
            except OSError:
                continue
            rss = next((line.split()[1] for line in status.splitlines() if line.startswith("VmRSS:")), "0")
            total += int(rss) * 1024
        return total

    def _run(self) -> None:
        while not self._stop.wait(0.2):
            now = {name: self._tree_rss(pid) for name, pid in self.pids.items()}
            for name, rss in now.items():
                self.peak[name] = max(self.peak[name], rss)
            self.peak_total = max(self.peak_total, sum(now.values()))

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def bench_deployment(api: Any) -> str:
    """A copy of ``sync-routes`` without its concurrency limit and schedule, so two of its runs go at once."""
    dep = api.get("/deployments/name/sync-routes/sync-routes").json()
    keep = ("flow_id", "work_pool_name", "work_queue_name", "entrypoint", "path", "pull_steps", "job_variables")
    body = {k: dep[k] for k in keep if dep.get(k) is not None}
    body |= {"name": "sync-routes-bench", "tags": ["bench"], "parameter_openapi_schema": {}, "paused": False}
    r = api.post("/deployments/", json={**body, "enforce_parameter_schema": False})
    r.raise_for_status()
    return str(r.json()["id"])


def logs_since(api: Any, since: float) -> list[dict[str, Any]]:
    after = datetime.fromtimestamp(since, UTC).isoformat()
    found: list[dict[str, Any]] = []
    while True:
        body = {"logs": {"timestamp": {"after_": after}}, "limit": 200, "offset": len(found), "sort": "TIMESTAMP_ASC"}
        page = api.post("/logs/filter", json=body)
        page.raise_for_status()
        found += page.json()
        if len(page.json()) < 200:
            return found


def first_read_after(
    reads: list[dict[str, Any]], done: dict[str, float], registry_of: dict[str, str]
) -> dict[str, float]:
    """For each finished run, when ARM was first read about it after it finished: a GET of the run, or a LIST of
    its registry's runs (which the watcher reads for many runs at once)."""
    paths = [(r["at"], r["path"].split("?")[0]) for r in reads]
    seen: dict[str, float] = {}
    for name, finished in done.items():
        ends = (f"/pipelineRuns/{name}", f"/registries/{registry_of.get(name, '?')}/pipelineRuns")
        after = [at for at, path in paths if at >= finished and path.endswith(ends)]
        if after:
            seen[name] = min(after)
    return seen


def _epoch(stamp: str) -> float:
    return datetime.fromisoformat(stamp.replace("Z", "+00:00")).timestamp()


def scenario_pg_workers(run_seconds: float, count: int = TRANSFERS) -> dict[str, Any]:
    """``count`` simultaneous transfers over PostgreSQL and two process workers (see the module docstring)."""
    from run import arm_requests_by_kind, control, finished_at, pct, routes_file

    from deployments import stack as stack_module
    from tests.support import prefect_rest

    home = Path(tempfile.mkdtemp(prefix="acr-transfer-bench-pg-"))
    path = routes_file(count, home)
    names = [f"bench-{count}-{i}" for i in range(count)]
    stack_module.PREFECT_PORT = stack_module.free_port()  # as in run.py: not 4200 on a shared machine
    started_up = time.time()
    stack = stack_module.up(
        home,
        db="postgres",
        workers=2,
        worker_limit=1,
        standin_flags=("--run-seconds", str(run_seconds)),
        # INFO: the detection and summary lines are what this scenario reads (run.py sets WARNING for itself)
        env={"ACR_TRANSFER_ROUTES": str(path), "PREFECT_LOGGING_LEVEL": "INFO"},
    )
    up_seconds = time.time() - started_up
    try:
        api_url = stack.env["PREFECT_API_URL"]
        with prefect_rest.api(api_url) as api:
            dep_id = bench_deployment(api)
            control(stack, "DELETE", "/requests")
            before = set(finished_at(stack))
            workers = {n: stack.pids[n] for n in stack.worker_logs()}
            started = time.time()
            with TreeSampler(workers) as sampler:
                halves = [names[: count // 2], names[count // 2 :]]
                runs = [
                    prefect_rest.start_run(
                        api_url,
                        dep_id,
                        {"routes": half, "max_concurrent": len(half), "routes_file": str(path)},
                    )
                    for half in halves
                ]
                final = [prefect_rest.wait_for(api_url, r["id"], timeout=3600) for r in runs]
            elapsed = time.time() - started
            logs = logs_since(api, started - 1)
        detected: dict[str, float] = {}
        outcomes: dict[str, str] = {}
        for line in logs:
            if m := DETECTED.match(line["message"]):
                detected.setdefault(m.group(2), _epoch(line["timestamp"]))
            if (m := ROUTE_LINE.match(line["message"])) and m.group(1) in names:
                outcomes[m.group(1)] = m.group(2)
        done = {n: t for n, t in finished_at(stack).items() if n not in before}
        lat = [max(0.0, detected[n] - done[n]) for n in done if n in detected]
        log = control(stack, "GET", "/requests")
        arm = [r for r in log if r["service"] == "arm"]
        if dump := os.environ.get("BENCH_DUMP_REQUESTS"):  # the raw material, for a closer look
            Path(dump).write_text(json.dumps({"arm": arm, "done": done, "detected": detected}))
        reads = [r for r in arm if r["method"] in ("GET", "HEAD")]
        registry_of = {r["name"]: r["registry"] for r in control(stack, "GET", "/runs")}
        seen = first_read_after(reads, done, registry_of)
        polled = [seen[n] - done[n] for n in done if n in seen]
        told = [max(0.0, detected[n] - seen[n]) for n in done if n in seen and n in detected]
        imports_ok = sum(
            1
            for r in control(stack, "GET", "/runs")
            if r["registry"] == "targetregistry" and r["status"] == "Succeeded" and r["name"] in done
        )
        per_worker = {
            name: sum(r["id"] in p.read_text(errors="replace") for r in runs) for name, p in stack.worker_logs().items()
        }
        return {
            "transfers": count,
            "database": "postgresql",
            "workers": len(workers),
            "run_seconds": run_seconds,
            "stack_up_seconds": round(up_seconds, 1),
            "verified": sum(1 for o in outcomes.values() if o == "succeeded"),
            "import_runs_succeeded": imports_ok,
            "sync_runs": {r["name"]: r["state_type"] for r in final},
            "sync_runs_per_worker": per_worker,
            "elapsed_seconds": round(elapsed, 1),
            "detection_p50_seconds": pct(lat, 0.5),
            "detection_p95_seconds": pct(lat, 0.95),
            "runs_measured": len(lat),
            # detection = the first read after the run finished (polling) + from that read to the log line
            "first_read_after_finish_p50_p95_seconds": [pct(polled, 0.5), pct(polled, 0.95)],
            "read_to_log_line_p50_p95_seconds": [pct(told, 0.5), pct(told, 0.95)],
            "arm_reads": len(reads),
            "arm_reads_per_second": round(len(reads) / elapsed, 2),
            "arm_429s": sum(1 for r in arm if r["status"] == 429),
            "arm_requests_by_kind": arm_requests_by_kind(arm),
            "worker_peak_rss_mib": {n: round(v / 1024**2, 1) for n, v in sampler.peak.items()},
            "workers_peak_rss_mib_total": round(sampler.peak_total / 1024**2, 1),
        }
    finally:
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


def markdown_rows(results: dict[str, Any]) -> list[str]:
    """The scenario's rows of results.md (none when results.json has no ``pg_workers`` section)."""
    pg = results.get("pg_workers")
    if not pg:
        return []
    n, rss = pg["transfers"], pg["worker_peak_rss_mib"]
    return [
        f"| {n} simultaneous, PostgreSQL, 2 workers | verified | {pg['verified']} of {n} | {n} of {n} |",
        f"| {n} simultaneous, PostgreSQL, 2 workers | p50 / p95 detection (s) | {pg['detection_p50_seconds']} / "
        f"{pg['detection_p95_seconds']} | p95 ≤ 3 |",
        f"| {n} simultaneous, PostgreSQL, 2 workers | ARM reads/s, 429s (both workers) | "
        f"{pg['arm_reads_per_second']}, {pg['arm_429s']} | 429s = 0 |",
        f"| {n} simultaneous, PostgreSQL, 2 workers | peak RSS MiB per worker (with its flow runs) | "
        f"{' / '.join(str(v) for v in rss.values())} | — |",
    ]
