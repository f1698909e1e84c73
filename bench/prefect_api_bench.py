"""How many Prefect API requests one transfer makes, and one more batch adds (``BENCH_SCENARIOS=prefect-api``).

A counting proxy (``tests/support/prefect_proxy.py``) sits in front of the bench's Prefect server; each case is
one ``acr-transfer run`` in its own process, as a user runs it, pointed at the proxy. Every HTTP request and
every websocket opened (the events stream) is counted, grouped by what it is for.

``BENCH_CODE_ROOT`` runs the same cases with another checkout's code (e.g. a worktree of an older commit, to
measure "before"); the stand-in and Prefect server stay this checkout's.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CASES = (("1 artifact, 1 batch", 1, 1), ("10 artifacts, 5 batches", 10, 2))
GROUPS = (
    ("flow runs", ("/flow_runs", "/flows")),
    ("task runs", ("/task_runs",)),
    ("logs", ("/logs",)),
    ("artifacts", ("/artifacts",)),
    ("events", ("/events",)),
    ("concurrency (locks, budget)", ("/concurrency_limits", "/v2/concurrency_limits")),
    ("variables", ("/variables",)),
)


def _group(key: str) -> str:
    path = key.split(" ", 1)[1]
    for name, prefixes in GROUPS:
        if any(path.startswith(f"/api{p}") for p in prefixes):
            return name
    return "other"


def _routes(home: Path, name: str, artifacts: list[str], batch_size: int) -> Path:
    path = home / f"{name}.yaml"
    path.write_text(
        "version: 1\nroutes:\n"
        f"  - name: {name}\n"
        "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}\n"
        f"    batch_size: {batch_size}\n"
        "    timeout_minutes: 10\n"
        f"    artifacts: [{', '.join(artifacts)}]\n"
    )
    return path


def scenario_prefect_api(stack: Any, home: Path) -> dict[str, Any]:
    import sync_bench

    from tests.support.prefect_proxy import PrefectProxy

    code = Path(os.environ.get("BENCH_CODE_ROOT", str(ROOT)))
    store = sync_bench._store(stack)
    tags = [f"t{i}" for i in range(max(n for _, n, _ in CASES))]
    for tag in tags:
        sync_bench.put_image(store, "papi/app", tag)
    proxy = PrefectProxy(stack.env["PREFECT_API_URL"].removesuffix("/api"))
    proxy.start()
    cases: list[dict[str, Any]] = []
    try:
        for label, count, batch_size in CASES:
            name = f"papi{len(cases)}{int(time.time()) % 100000}"
            routes = _routes(home, name, [f"papi/app:{t}" for t in tags[:count]], batch_size)
            before = Counter(proxy.counts)
            env = {**os.environ, "PREFECT_API_URL": f"{proxy.url}/api", "PYTHONPATH": str(code)}
            started = time.monotonic()
            done = subprocess.run(
                [sys.executable, "-m", "deployments", "run", "--route", name, "--routes", str(routes)],
                cwd=code,
                env=env,
                capture_output=True,
                text=True,
                timeout=900,
            )
            seconds = time.monotonic() - started
            made = Counter(proxy.counts)
            made.subtract(before)
            by_group: Counter[str] = Counter()
            for key, n in made.items():
                if n > 0:
                    by_group[_group(key)] += n
            cases.append(
                {
                    "case": label,
                    "batches": -(-count // batch_size),
                    "ok": done.returncode == 0,
                    "seconds": round(seconds, 1),
                    "requests": sum(by_group.values()),
                    "by_group": dict(sorted(by_group.items())),
                    "top": [f"{k} ×{n}" for k, n in made.most_common(8) if n > 0],
                }
            )
            print(f"  {label}: {cases[-1]['requests']} Prefect API requests ({seconds:.0f} s)", flush=True)
    finally:
        proxy.stop()
    one, many = cases[0], cases[-1]
    per_batch = (many["requests"] - one["requests"]) / max(1, many["batches"] - one["batches"])
    return {"code": str(code), "cases": cases, "per_transfer": one["requests"], "per_extra_batch": round(per_batch, 1)}


def markdown_rows(result: dict[str, Any], before: dict[str, Any] | None = None) -> list[str]:
    lines = [
        "| case | Prefect API requests | " + " | ".join(g for g, _ in GROUPS) + " | other |",
        "|---|---|" + "---|" * (len(GROUPS) + 1),
    ]
    for label, res in (("before", before), ("now", result)):
        if not res:
            continue
        for c in res["cases"]:
            groups = [str(c["by_group"].get(g, 0)) for g, _ in GROUPS] + [str(c["by_group"].get("other", 0))]
            lines.append(f"| {label}: {c['case']} | {c['requests']} | " + " | ".join(groups) + " |")
    return lines
