"""One route of 2,500 artifacts — 50 batches of 50, ACR's most per run — as one transfer on one worker
(``BENCH_SCENARIOS=large``).

The images are written straight into the stand-in's source registry (``sync_bench.put_image``); the route lists
all 2,500; one ``transfer`` flow run in this process carries them. The ideal is the critical path of the runs the
stand-in recorded (the longest export + import of one batch: every batch runs at once); ARM reads and 429s come
from the stand-in's request log.
"""

from __future__ import annotations

import time
from datetime import datetime
from pathlib import Path
from typing import Any

ARTIFACTS = 2500
BATCH = 50
ROUTE = "large"


def _seconds(run: dict[str, Any]) -> float:
    start, end = run.get("started_at"), run.get("finished_at")
    if not start or not end:
        return 0.0
    if isinstance(start, int | float):
        return float(end) - float(start)
    return (datetime.fromisoformat(str(end)) - datetime.fromisoformat(str(start))).total_seconds()


def scenario_large(stack: Any, home: Path) -> dict[str, Any]:
    import sync_bench

    from flows.routes import transfer_route

    store = sync_bench._store(stack)
    refs = []
    for i in range(ARTIFACTS):
        repo, tag = f"large/app{i // 500}", f"v{i}"
        sync_bench.put_image(store, repo, tag)
        refs.append(f"{repo}:{tag}")
    routes = home / "large.yaml"
    routes.write_text(
        "version: 1\nroutes:\n"
        f"  - name: {ROUTE}\n"
        "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}\n"
        f"    batch_size: {BATCH}\n"
        "    timeout_minutes: 60\n"
        "    artifacts:\n" + "".join(f"      - {r}\n" for r in refs)
    )
    sync_bench._control(stack, "DELETE", "/requests")
    started = time.time()
    state = transfer_route(route=ROUTE, routes_file=str(routes), return_state=True)
    seconds = time.time() - started
    result = state.result(raise_on_failure=False)
    log = sync_bench._control(stack, "GET", "/requests")
    arm = [r for r in log if r["service"] == "arm"]
    runs = [r for r in sync_bench._control(stack, "GET", "/runs") if getattr(result, "transfer_id", "?") in r["name"]]
    by_batch: dict[str, float] = {}
    for run in runs:
        batch = run["name"][-6:]  # b001a1
        by_batch[batch] = by_batch.get(batch, 0.0) + _seconds(run)
    ideal = max(by_batch.values(), default=0.0)
    timeline = _timeline(runs, started)
    window = max((r["at"] for r in arm), default=0) - min((r["at"] for r in arm), default=0)
    reads = sum(1 for r in arm if r["method"] == "GET")
    return {
        "artifacts": ARTIFACTS,
        "batches": len(by_batch),
        "succeeded": bool(getattr(result, "succeeded", False)),
        "verified": getattr(result, "verified", 0),
        "seconds": round(seconds, 1),
        "ideal_seconds": round(ideal, 1),
        "arm_reads": reads,
        "arm_reads_per_second": round(reads / window, 1) if window else 0,
        "arm_429s": sum(1 for r in arm if r["status"] == 429),
        "timeline_seconds": timeline,
        "error": "" if not isinstance(result, BaseException) else str(result)[:300],
    }


def _timeline(runs: list[dict[str, Any]], started: float) -> dict[str, float]:
    """Where the time went: seconds from the flow's start to the first and last export and import created and
    finished (the stand-in's records), so the gaps before, between and after the runs show."""
    out: dict[str, float] = {}
    for kind, prefix in (("export", "x"), ("import", "i")):
        mine = [r for r in runs if r["name"].startswith(prefix)]
        for edge, key in (("created", "started_at"), ("finished", "finished_at")):
            stamps = [float(r[key]) for r in mine if isinstance(r.get(key), int | float)]
            if stamps:
                out[f"first_{kind}_{edge}"] = round(min(stamps) - started, 1)
                out[f"last_{kind}_{edge}"] = round(max(stamps) - started, 1)
    return out


def markdown_rows(merged: dict[str, Any]) -> list[str]:
    large = merged.get("large_route")
    if not large:
        return []
    return [
        f"| {large['artifacts']:,} artifacts, one route | verified | {large['verified']:,} | {large['artifacts']:,} |",
        f"| {large['artifacts']:,} artifacts, one route | total (s), ideal (s) | {large['seconds']}, "
        f"{large['ideal_seconds']} | ≤ ideal + 10 |",
        f"| {large['artifacts']:,} artifacts, one route | ARM reads/s, 429s | {large['arm_reads_per_second']}, "
        f"{large['arm_429s']} | ≤ 25/s, 0 |",
    ]
