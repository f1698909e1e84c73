"""``make bench``: how fast the flows notice a finished run, how few ARM reads they spend, how many transfers
one worker carries, how many blob bytes pass through it, and what a ``select:`` route costs to plan and saves
to send (``bench/sync_bench.py``) — measured on the local stand-in.

Writes ``bench/results.json``, ``bench/results.md`` and ``bench/plot.png``. Targets are reported, never
asserted. Run durations come from the stand-in (``--run-seconds``); the Prefect API is a real
``prefect server start``; the flows run in this process, which plays the one worker.

``BENCH_SCENARIOS`` picks a subset (comma-separated): ``single``, ``concurrency``, ``baseline-100`` (100 threads
of the SDK's ``begin_create(...).result()``), ``bridge``, ``select``
(selection over 10,000 tags), ``diff`` (a sync with 1 % changed vs everything re-sent), or the groups
``transfer`` (the first three), ``sync`` (the last two) and ``all`` (the default). A subset run keeps the
sections of ``results.json`` it did not run, so ``results.md`` still shows the last figures of each.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(1, str(Path(__file__).resolve().parent))  # bench/sync_bench.py
OUT = ROOT / "bench"
RUN_SECONDS = float(os.environ.get("BENCH_RUN_SECONDS", "10"))
LEVELS = [int(x) for x in os.environ.get("BENCH_LEVELS", "1,10,50,100").split(",")]
BRIDGE_BYTES = int(os.environ.get("BENCH_BRIDGE_BYTES", str(1024**3)))
SCENARIOS = (
    "single",
    "concurrency",
    "baseline-100",
    "bridge",
    "select",
    "diff",
    "prefect-api",
    "large",
    "pg-workers",
)
GROUPS = {"all": SCENARIOS, "transfer": ("single", "concurrency", "bridge"), "sync": ("select", "diff")}


def chosen_scenarios(text: str) -> set[str]:
    """The scenarios ``BENCH_SCENARIOS`` names (scenario or group names, comma-separated; empty: all)."""
    chosen: set[str] = set()
    for word in (w.strip().lower() for w in text.split(",")):
        if not word:
            continue
        if word in GROUPS:
            chosen.update(GROUPS[word])
        elif word in SCENARIOS:
            chosen.add(word)
        else:
            raise SystemExit(f"BENCH_SCENARIOS: unknown scenario {word!r}; use {', '.join([*SCENARIOS, *GROUPS])}")
    return chosen or set(SCENARIOS)


def start_environment(home: Path) -> Any:
    """A real Prefect server and the stand-in; this process's environment points at both."""
    from deployments import stack as stack_module
    from deployments.stack import Stack

    # a free port, not 4200: on a shared machine another server may take 4200 between Stack's check and its
    # bind, and the health check would then pass against that other server
    stack_module.PREFECT_PORT = stack_module.free_port()
    stack = Stack(home)
    stack.start_prefect()
    stack.start_standin("--run-seconds", str(RUN_SECONDS))
    os.environ.update(stack.env)
    os.environ["PREFECT_HOME"] = str(home / "prefect-client")
    os.environ["PREFECT_LOGGING_LEVEL"] = "WARNING"
    return stack


class Detections:
    """When the flows learned that a run was terminal (progress notices), by run name."""

    def __init__(self) -> None:
        from acr_transfer.progress import subscribe

        self.at: dict[str, float] = {}
        self._unsubscribe = subscribe(self)

    def __call__(self, notice: Any) -> None:
        if notice.step in ("export", "import") and notice.state in ("Succeeded", "Failed") and notice.detail:
            self.at.setdefault(notice.detail, time.time())


class Sampler:
    """Peak resident memory of this process while a scenario runs (sampled at 20 Hz)."""

    def __init__(self) -> None:
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(0.05):
            for line in Path("/proc/self/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    self.peak = max(self.peak, int(line.split()[1]) * 1024)

    def __enter__(self) -> Sampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def control(stack: Any, method: str, path: str, **kw: Any) -> Any:
    import ssl

    import httpx

    ctx = ssl.create_default_context(cafile=stack.env["REQUESTS_CA_BUNDLE"])
    r = httpx.request(method, f"{stack.env['ACR_TRANSFER_EMULATOR_CONTROL']}{path}", verify=ctx, timeout=60, **kw)
    r.raise_for_status()
    return r.json() if r.content else None


def finished_at(stack: Any) -> dict[str, float]:
    return {r["name"]: r["finished_at"] for r in control(stack, "GET", "/runs") if r.get("finished_at")}


def arm_requests_by_kind(log: list[dict[str, Any]]) -> dict[str, int]:
    kinds: dict[str, int] = {}
    for r in log:
        if r["service"] != "arm":
            continue
        path = r["path"]
        if "/operationStatuses/" in path:
            kind = "GET operation status"
        elif "/pipelineRuns/" in path:
            kind = f"{r['method']} pipeline run"
        elif path.endswith("/pipelineRuns"):
            kind = "LIST pipeline runs"
        elif "Pipelines/" in path:
            kind = f"{r['method']} pipeline"
        elif "Microsoft.KeyVault/vaults" in path:
            kind = f"{r['method']} key vaults"
        elif "roleAssignments" in path or "roleDefinitions" in path:
            kind = f"{r['method']} role assignments"
        else:
            kind = f"{r['method']} registry"
        kinds[kind] = kinds.get(kind, 0) + 1
    return kinds


def latencies(names: list[str], known: dict[str, float], done: dict[str, float]) -> list[float]:
    return [max(0.0, known[n] - done[n]) for n in names if n in known and n in done]


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3)


def completed_at(flow_run_id: Any) -> float:
    """When the Prefect server recorded the flow run's final state (epoch seconds)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        run = client.read_flow_run(flow_run_id)
    assert run.end_time is not None, f"flow run {flow_run_id} has no end time"
    return run.end_time.timestamp()


def scenario_one(stack: Any, detections: Detections) -> dict[str, Any]:
    """One bridged transfer: ours, the SDK-default baseline, and the ideal."""
    from acr_transfer.models import TransferRequest
    from flows.routes import load_configured_routes
    from flows.transfer import registry_transfer

    route = load_configured_routes(ROOT / "routes.example.yaml").get("demo")
    # the process's first transfer also pays its imports, first connections and tokens (a fresh worker's first
    # flow run does too): measured, then the figures below are of the next one, as a running worker sees them
    cold_started = time.time()
    registry_transfer(TransferRequest(route=route, artifacts=["demo/hello:v1"], transfer_id=uuid.uuid4().hex[:12]))
    cold = time.time() - cold_started
    control(stack, "DELETE", "/requests")
    tid = uuid.uuid4().hex[:12]
    started = time.time()
    state = registry_transfer(
        TransferRequest(route=route, artifacts=["demo/hello:v1"], transfer_id=tid), return_state=True
    )
    returned = time.time() - started
    result = state.result()
    # the transfer is over when its flow run is recorded Completed (what the UI, automations and a deployment's
    # caller see); the call itself returns up to a second later, when Prefect's engine has joined its heartbeat
    # thread, which sleeps in one-second steps
    ours = completed_at(state.state_details.flow_run_id) - started
    log = control(stack, "GET", "/requests")
    done = finished_at(stack)
    runs = [f"x{tid}b001a1", f"i{tid}b001a1"]
    runs_info = {r["name"]: r for r in control(stack, "GET", "/runs")}
    export_run, import_run = runs_info.get(runs[0], {}), runs_info.get(runs[1], {})
    timeline = {
        "before_export_created": round(float(export_run.get("started_at", started)) - started, 2),
        "export_finished_to_import_created": round(
            float(import_run.get("started_at", 0)) - float(export_run.get("finished_at", 0)), 2
        ),
        "after_import_finished": round(started + ours - float(import_run.get("finished_at", started + ours)), 2),
        "completed_to_call_returned": round(returned - ours, 2),
    }
    ideal = RUN_SECONDS * 2
    baseline = baseline_transfer(stack)
    return {
        "succeeded": result.succeeded,
        "end_to_end_seconds": round(ours, 2),
        "call_returned_seconds": round(returned, 2),
        "first_in_process_seconds": round(cold, 2),
        "overhead_timeline_seconds": timeline,
        "ideal_seconds": ideal,
        "overhead_seconds": round(ours - ideal, 2),
        "baseline_end_to_end_seconds": round(baseline["seconds"], 2),
        "detection_latency_seconds": {
            step: round(detections.at[n] - done[n], 3) for step, n in zip(("export", "import"), runs, strict=True)
        },
        "baseline_detection_latency_seconds": baseline["detection"],
        "detection_speedup": round(
            statistics.mean(baseline["detection"].values())
            / max(statistics.mean(latencies(runs, detections.at, done)), 0.001),
            1,
        ),
        "arm_requests_by_kind": arm_requests_by_kind(log),
        "baseline_arm_requests_by_kind": baseline["requests"],
        "run_states": {n: runs_info[n]["status"] for n in runs},
    }


def _sdk_client(stack: Any) -> Any:
    """The SDK's own client, as `az` builds it: default polling, default retries, no read pacing."""
    from azure.identity import DefaultAzureCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient

    return ContainerRegistryManagementClient(
        DefaultAzureCredential(),
        stack.env["AZURE_SUBSCRIPTION_ID"],
        base_url=stack.env["ACR_TRANSFER_ARM_ENDPOINT"],
        credential_scopes=[stack.env["ACR_TRANSFER_ARM_SCOPE"]],
    )


def scenario_baseline_many(stack: Any, count: int = 100) -> dict[str, Any]:
    """The baseline at ``count``: that many threads, each running ``begin_create(...).result()`` for one export
    run (what ``count`` parallel ``az acr pipeline-run create`` do). Detection is when ``result()`` returned minus
    when the stand-in finished the run; ARM reads and 429s come from the stand-in's log."""
    from concurrent.futures import ThreadPoolExecutor

    from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

    topo = json.loads(Path(stack.env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
    arm = _sdk_client(stack)
    names = [f"bm{uuid.uuid4().hex[:12]}" for _ in range(count)]
    known: dict[str, float] = {}
    errors: list[str] = []

    def one(name: str) -> None:
        req = m.PipelineRunRequest(
            pipeline_resource_id=topo["pipelines"]["exportpipeline"]["id"],
            artifacts=["demo/hello:v1"],
            target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=f"baseline/{name}.tar"),
        )
        try:
            arm.pipeline_runs.begin_create("transfer-rg", "sourceregistry", name, m.PipelineRun(request=req)).result()
            known[name] = time.time()
        except Exception as e:  # a baseline that fails is a figure too
            errors.append(f"{type(e).__name__}: {str(e)[:120]}")

    control(stack, "DELETE", "/requests")
    started = time.time()
    with ThreadPoolExecutor(max_workers=count) as pool:
        list(pool.map(one, names))
    seconds = time.time() - started
    done = finished_at(stack)
    lat = [max(0.0, known[n] - done[n]) for n in names if n in known and n in done]
    arm_log = [r for r in control(stack, "GET", "/requests") if r["service"] == "arm"]
    reads = [r for r in arm_log if r["method"] == "GET"]
    return {
        "transfers": count,
        "completed": len(known),
        "errors": errors[:5],
        "seconds": round(seconds, 1),
        "detection_p50_seconds": pct(lat, 0.5),
        "detection_p95_seconds": pct(lat, 0.95),
        "arm_reads": len(reads),
        "arm_reads_per_second": round(len(reads) / seconds, 2) if seconds else 0,
        "arm_429s": sum(1 for r in arm_log if r["status"] == 429),
    }


def baseline_transfer(stack: Any) -> dict[str, Any]:
    """What `az acr pipeline-run create` does: begin_create(...).result() with the SDK's default polling."""
    from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

    topo = json.loads(Path(stack.env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
    arm = _sdk_client(stack)
    blob, names = f"baseline/{uuid.uuid4().hex}.tar", [f"bx{uuid.uuid4().hex[:10]}", f"bi{uuid.uuid4().hex[:10]}"]
    control(stack, "DELETE", "/requests")
    known: dict[str, float] = {}
    started = time.time()
    req = m.PipelineRunRequest(
        pipeline_resource_id=topo["pipelines"]["exportpipeline"]["id"],
        artifacts=["demo/hello:v1"],
        target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=blob),
    )
    export = arm.pipeline_runs.begin_create(
        "transfer-rg", "sourceregistry", names[0], m.PipelineRun(request=req)
    ).result()
    known[names[0]] = time.time()
    req = m.PipelineRunRequest(
        pipeline_resource_id=topo["pipelines"]["directimport"]["id"],
        catalog_digest=export.response.catalog_digest,
        source=m.PipelineRunSourceProperties(type="AzureStorageBlob", name=blob),
    )
    arm.pipeline_runs.begin_create("transfer-rg", "targetregistry", names[1], m.PipelineRun(request=req)).result()
    known[names[1]] = time.time()
    seconds = time.time() - started
    done = finished_at(stack)
    return {
        "seconds": seconds,
        "detection": {
            n[:2].replace("bx", "export").replace("bi", "import"): round(known[n] - done[n], 3) for n in names
        },
        "requests": arm_requests_by_kind(control(stack, "GET", "/requests")),
    }


def routes_file(count: int, home: Path) -> Path:
    lines = [
        "version: 1",
        "defaults:",
        "  source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}",
        "  target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: directimport}",
        "  timeout_minutes: 30",
        "  cleanup: {delete_export_blob: false}",
        "routes:",
    ]
    lines += [f"  - {{name: bench-{count}-{i}, artifacts: [demo/hello:v1]}}" for i in range(count)]
    path = home / f"routes-{count}.yaml"
    path.write_text("\n".join(lines) + "\n")
    return path


def scenario_concurrency(stack: Any, detections: Detections, count: int, home: Path) -> dict[str, Any]:
    """`count` simultaneous transfers in one sync-routes flow run."""
    from flows.routes import sync_routes

    path = routes_file(count, home)
    control(stack, "DELETE", "/requests")
    before = set(finished_at(stack))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    started = time.time()
    with Sampler() as sampler:
        state = sync_routes(routes_file=str(path), max_concurrent=count, return_state=True)
    elapsed = time.time() - started
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    outcomes = state.result(raise_on_failure=False)
    log = control(stack, "GET", "/requests")
    done = {n: t for n, t in finished_at(stack).items() if n not in before}
    lat = latencies(list(done), detections.at, done)
    reads = [
        r for r in log if r["service"] == "arm" and r["method"] == "GET" and started <= r["at"] <= started + elapsed
    ]
    # the flow ends Failed when any route failed, so count verified transfers from the stand-in: one
    # Succeeded import run per transfer that finished in this window
    runs = control(stack, "GET", "/runs")
    succeeded = sum(
        1 for r in runs if r["registry"] == "targetregistry" and r["status"] == "Succeeded" and r["name"] in done
    )
    del outcomes
    return {
        "transfers": count,
        "succeeded": succeeded,
        "elapsed_seconds": round(elapsed, 1),
        "detection_p50_seconds": pct(lat, 0.5),
        "detection_p95_seconds": pct(lat, 0.95),
        "runs_measured": len(lat),
        "arm_reads": len(reads),
        "arm_reads_per_second": round(len(reads) / elapsed, 2),
        "arm_429s": sum(1 for r in log if r["service"] == "arm" and r["status"] == 429),
        "worker_cpu_seconds": round((cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime), 1),
        "worker_peak_rss_mib": round(sampler.peak / 1024**2, 1),
    }


def scenario_bridge(stack: Any) -> dict[str, Any]:
    """A blob of BRIDGE_BYTES bridged server-side: bytes this process read meanwhile (its rchar)."""
    import hashlib

    from azure.storage.blob import BlobServiceClient, ContentSettings

    from acr_transfer.azure.storage import BlobStorage
    from acr_transfer.sas import SasToken
    from acr_transfer.settings import Settings

    topo = json.loads(Path(stack.env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text())
    keys = json.loads((stack.home / "emulator" / "storage-keys.json").read_text())
    ca = stack.env["REQUESTS_CA_BUNDLE"]
    direct = topo["storage_accounts"]["sourcestorage"]["direct_endpoint"]
    svc = BlobServiceClient(
        direct, credential={"account_name": "sourcestorage", "account_key": keys["sourcestorage"]}, connection_verify=ca
    )
    blob = f"bench/bridge-{uuid.uuid4().hex[:8]}.tar"
    chunk = os.urandom(4 * 1024 * 1024)
    md5 = hashlib.md5()
    count = max(1, BRIDGE_BYTES // len(chunk))
    for _ in range(count):
        md5.update(chunk)

    def stream() -> Any:
        for _ in range(count):
            yield chunk

    svc.get_blob_client("transfer", blob).upload_blob(
        stream(),
        length=count * len(chunk),
        metadata={"category": "acr-transfer-blob"},
        max_concurrency=4,
        content_settings=ContentSettings(content_type="application/x-tar", content_md5=bytearray(md5.digest())),
    )
    from azure.identity import DefaultAzureCredential
    from azure.keyvault.secrets import SecretClient

    cred = DefaultAzureCredential()
    src = SecretClient(topo["vaults"]["sourcevault"]["url"], cred, verify_challenge_resource=False)
    dst = SecretClient(topo["vaults"]["targetvault"]["url"], cred, verify_challenge_resource=False)
    source_sas = SasToken.parse(src.get_secret("acrexportsas").value or "")
    target_sas = SasToken.parse(dst.get_secret("acrbridgesas").value or "")
    storage = BlobStorage(Settings(), cred)
    rchar0 = _rchar()
    started = time.time()
    facts = storage.copy_blob(
        topo["pipelines"]["exportpipeline"]["container_uri"],
        blob,
        source_sas,
        topo["pipelines"]["importpipeline"]["container_uri"],
        target_sas,
    )
    seconds = time.time() - started
    through = _rchar() - rchar0
    return {
        "blob_bytes": count * len(chunk),
        "copied_bytes": facts.size,
        "copy_seconds": round(seconds, 1),
        "bytes_through_worker": through,
        "note": "rchar of this process during the copy: every byte it read from any socket or file",
    }


def _rchar() -> int:
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    return 0


def merged_results(results: dict[str, Any]) -> dict[str, Any]:
    """``results`` over the sections of the previous ``results.json`` it does not hold (a subset run)."""
    path = OUT / "results.json"
    try:
        previous = json.loads(path.read_text()) if path.exists() else {}
    except ValueError:
        previous = {}
    return {**(previous if isinstance(previous, dict) else {}), **results}


def write_outputs(results: dict[str, Any]) -> None:
    """Write results.json (merged with the previous run's sections this run lacks), results.md (a row group
    per section present) and plot.png (when this run measured concurrency)."""
    import sync_bench

    OUT.mkdir(exist_ok=True)
    merged = merged_results(results)
    (OUT / "results.json").write_text(json.dumps(merged, indent=2) + "\n")
    md = ["| scenario | figure | value | target |", "|---|---|---|---|"]
    one, levels, bridge = merged.get("single_transfer"), merged.get("concurrency") or [], merged.get("bridge")
    if one:
        base = one["baseline_detection_latency_seconds"]
        md += [
            f"| one transfer | end-to-end, to the flow run's Completed (s) | {one['end_to_end_seconds']} | ideal "
            f"{one['ideal_seconds']} + ≤ 2 |",
            f"| one transfer | until the call returned (s) | {one.get('call_returned_seconds', '—')} | — |",
            f"| one transfer | the process's first (s) | {one.get('first_in_process_seconds', '—')} | — |",
            f"| one transfer | baseline `begin_create().result()` (s) | {one['baseline_end_to_end_seconds']} | — |",
            f"| one transfer | detection latency export / import (s) | {one['detection_latency_seconds']['export']} / "
            f"{one['detection_latency_seconds']['import']} | ≤ 1.5 |",
            f"| one transfer | baseline detection export / import (s) | {base['export']} / {base['import']} | — |",
            f"| one transfer | detection speed-up over baseline | {one['detection_speedup']}× | ≥ 10× |",
        ]
    for lvl in levels:
        n = lvl["transfers"]
        md.append(
            f"| {n} simultaneous | p50 / p95 detection (s) | {lvl['detection_p50_seconds']} / "
            f"{lvl['detection_p95_seconds']} | p95 ≤ {1.5 if n == 1 else 3} |"
        )
        md.append(
            f"| {n} simultaneous | ARM reads/s, 429s | {lvl['arm_reads_per_second']}, {lvl['arm_429s']} | 429s = 0 |"
        )
        md.append(
            f"| {n} simultaneous | worker CPU s, peak RSS MiB | {lvl['worker_cpu_seconds']}, "
            f"{lvl['worker_peak_rss_mib']} | RSS < 1024 at 100 |"
        )
    if many := merged.get("baseline_100"):
        n = many["transfers"]
        md += [
            f"| baseline at {n}: {n} threads of `begin_create().result()` | completed; p50 / p95 detection (s) | "
            f"{many['completed']} of {n}; {many['detection_p50_seconds']} / {many['detection_p95_seconds']} | — |",
            f"| baseline at {n} | ARM reads, reads/s, 429s | {many['arm_reads']}, {many['arm_reads_per_second']}, "
            f"{many['arm_429s']} | — |",
        ]
    if bridge:
        md.append(
            f"| bridge {bridge['blob_bytes'] // 1024**2} MiB | bytes through the worker | "
            f"{bridge['bytes_through_worker']} | 0 blob bytes |"
        )
    md += sync_bench.markdown_rows(merged)
    import large_bench

    md += large_bench.markdown_rows(merged)
    import pg_bench

    md += pg_bench.markdown_rows(merged)
    if merged.get("prefect_api"):
        import prefect_api_bench

        now, before = merged["prefect_api"], merged.get("prefect_api_before")
        md += [
            "",
            f"Prefect API requests per transfer: {now['per_transfer']} (one batch), {now['per_extra_batch']} per "
            "further batch"
            + (f"; before: {before['per_transfer']} and {before['per_extra_batch']}" if before else "")
            + ".",
            "",
            *prefect_api_bench.markdown_rows(now, before),
        ]
    (OUT / "results.md").write_text("\n".join(md) + "\n")
    if results.get("concurrency"):
        plot(results["concurrency"])


def plot(levels: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    xs = [lvl["transfers"] for lvl in levels]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(xs, [lvl["detection_p50_seconds"] or 0 for lvl in levels], "o-", label="p50")
    a.plot(xs, [lvl["detection_p95_seconds"] or 0 for lvl in levels], "s-", label="p95")
    a.set_xscale("log")
    a.set_xlabel("simultaneous transfers")
    a.set_ylabel("detection latency (s)")
    a.legend()
    a.grid(True, alpha=0.3)
    b.plot(xs, [lvl["arm_reads_per_second"] for lvl in levels], "o-", color="tab:red", label="ARM reads/s")
    b.axhline(25, color="gray", linestyle="--", label="ARM refill 25/s")
    b.set_xscale("log")
    b.set_xlabel("simultaneous transfers")
    b.set_ylabel("ARM reads per second")
    b.legend()
    b.grid(True, alpha=0.3)
    fig.suptitle("acr-transfer on one worker (local stand-in)")
    fig.tight_layout()
    fig.savefig(OUT / "plot.png", dpi=110)


def main() -> int:
    import sync_bench

    wanted = chosen_scenarios(os.environ.get("BENCH_SCENARIOS", "all"))
    print(f"▶ scenarios: {', '.join(s for s in SCENARIOS if s in wanted)}", flush=True)
    home = Path(tempfile.mkdtemp(prefix="acr-transfer-bench-"))
    stack = start_environment(home)
    try:
        os.environ["TARGET_VAULT_URL"] = stack.env["TARGET_VAULT_URL"]
        results: dict[str, Any] = {}
        if wanted & {"single", "concurrency", "baseline-100"}:
            from deployments.demo import push_demo_images

            push_demo_images(stack.env)
            results["run_seconds"] = RUN_SECONDS
        detections = Detections()
        if "single" in wanted:
            print("▶ one transfer (ours, baseline, ideal)", flush=True)
            results["single_transfer"] = scenario_one(stack, detections)
        if "concurrency" in wanted:
            results["concurrency"] = []
            for count in LEVELS:
                print(f"▶ {count} simultaneous transfers", flush=True)
                results["concurrency"].append(scenario_concurrency(stack, detections, count, home))
        if "baseline-100" in wanted:
            print("▶ baseline: 100 threads, each begin_create(...).result()", flush=True)
            results["baseline_100"] = scenario_baseline_many(stack, 100)
        if "bridge" in wanted:
            print("▶ bridge", flush=True)
            results["bridge"] = scenario_bridge(stack)
        if "select" in wanted:
            print(f"▶ sync: selection over {sync_bench.SELECT_TAGS:,} tags", flush=True)
            results["sync_selection"] = {"run_seconds": RUN_SECONDS, **sync_bench.scenario_select(stack)}
        if "diff" in wanted:
            print(f"▶ sync: {sync_bench.DIFF_CHANGED} of {sync_bench.DIFF_TAGS:,} tags changed vs full", flush=True)
            results["sync_diff"] = {"run_seconds": RUN_SECONDS, **sync_bench.scenario_diff(stack, home)}
        if "large" in wanted:
            import large_bench

            print(f"▶ one route of {large_bench.ARTIFACTS:,} artifacts", flush=True)
            results["large_route"] = {"run_seconds": RUN_SECONDS, **large_bench.scenario_large(stack, home)}
        if "prefect-api" in wanted:
            import prefect_api_bench

            print("▶ Prefect API requests per transfer", flush=True)
            results["prefect_api"] = prefect_api_bench.scenario_prefect_api(stack, home)
            if os.environ.get("BENCH_BEFORE_ROOT"):  # the same cases with an older checkout's code
                os.environ["BENCH_CODE_ROOT"] = os.environ["BENCH_BEFORE_ROOT"]
                try:
                    results["prefect_api_before"] = prefect_api_bench.scenario_prefect_api(stack, home)
                finally:
                    os.environ.pop("BENCH_CODE_ROOT")
        if "pg-workers" in wanted:
            import pg_bench

            print(f"▶ {pg_bench.TRANSFERS} simultaneous transfers, PostgreSQL, two workers", flush=True)
            results["pg_workers"] = pg_bench.scenario_pg_workers(RUN_SECONDS)
        write_outputs(results)
        print((OUT / "results.md").read_text())
    finally:
        stack.down()
    return 0


if __name__ == "__main__":
    sys.exit(main())
