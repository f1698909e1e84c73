"""The sync scenarios of ``make bench``: what a ``select:`` route costs to plan, and what it saves to send.

1. **Selection over 10,000 tags** (``scenario_select``): ``SELECT_TAGS`` tags across ``SELECT_REPOS``
   repositories, written straight into the stand-in's on-disk source registry, are listed through the
   product's own client (``RegistryListing`` over ``RegistryDataPlane``: HTTPS and ACR's token flow) the way
   ``plan-sync`` lists them (``tasks.sync.WORKERS`` threads), and a realistic rule is applied
   (``selection.select``). Then the referrers of a sample of the selected subjects are looked up, to show the
   per-subject cost of a subject that is sent: one ``/v2/<repo>/referrers/<digest>`` per distinct selected
   digest, plus one more per referrer found (the walk asks for the referrers' referrers). Subjects the other
   side already holds are not looked up one by one: ``plan-sync`` pages through each repository's manifests
   (``/acr/v1/<repo>/_manifests``) instead, which is timed here too.
2. **A sync with 1 % changed vs everything re-sent** (``scenario_diff``): a route selecting ``DIFF_TAGS`` tags
   (batches of 50) on sourceregistry → targetregistry, through an import pipeline with ``OverwriteTags``. A
   first sync brings the target in sync; then ``DIFF_CHANGED`` tags are re-pushed with new content and the
   route is synced again, and finally run again with ``full=True``: runs created, bytes exported (the export
   blobs' sizes in the export container) and wall time of each.

Figures are reported, never asserted. Everything here talks to the stand-in started by ``bench/run.py``.
"""

from __future__ import annotations

import json
import os
import ssl
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

SELECT_REPOS = int(os.environ.get("BENCH_SELECT_REPOS", "10"))
SELECT_TAGS = int(os.environ.get("BENCH_SELECT_TAGS", "10000"))
REFERRER_SAMPLE = int(os.environ.get("BENCH_REFERRER_SAMPLE", "200"))
SIGNED_EVERY = 4  # every 4th release tag of the selection scenario carries a signature (an OCI 1.1 referrer)
DIFF_REPOS = int(os.environ.get("BENCH_DIFF_REPOS", "10"))
DIFF_TAGS = int(os.environ.get("BENCH_DIFF_TAGS", "1000"))
DIFF_CHANGED = int(os.environ.get("BENCH_DIFF_CHANGED", "10"))
LAYER_BYTES = int(os.environ.get("BENCH_LAYER_BYTES", "4096"))

SELECT_PREFIX = "bench/select"
DIFF_PREFIX = "bench/sync"
DIFF_ROUTE = "bench-sync"
SYNC_IMPORT = "benchsyncimport"
SELECT_RULE: dict[str, Any] = {"repositories": [f"{SELECT_PREFIX}/*"], "tags": [r"^v\d+\.\d+\.\d+$"], "latest": 50}
DIFF_RULE: dict[str, Any] = {"repositories": [f"{DIFF_PREFIX}/*"], "tags": [r"v\d+\.\d+\.\d+"]}

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
IMAGE_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER = "application/vnd.oci.image.layer.v1.tar"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
SIGSTORE_BUNDLE = "application/vnd.dev.sigstore.bundle.v0.3+json"
CONFIG = b'{"architecture":"amd64","os":"linux","rootfs":{"type":"layers","diff_ids":[]}}'
EMPTY = b"{}"


# -- the stand-in ------------------------------------------------------------------------------------------


def _topology(stack: Any) -> dict[str, Any]:
    return dict(json.loads(Path(stack.env["ACR_TRANSFER_EMULATOR_TOPOLOGY"]).read_text()))


def _control(stack: Any, method: str, path: str) -> Any:
    import httpx

    ctx = ssl.create_default_context(cafile=stack.env["REQUESTS_CA_BUNDLE"])
    r = httpx.request(method, f"{stack.env['ACR_TRANSFER_EMULATOR_CONTROL']}{path}", verify=ctx, timeout=120)
    r.raise_for_status()
    return r.json() if r.content else None


def _store(stack: Any, registry: str = "sourceregistry") -> Any:
    """The stand-in's on-disk registry (``<state dir>/registries/<name>``, as ``emulator/world.py`` keeps it);
    its writes are atomic, so writing while the stand-in serves is safe."""
    from emulator.registry import RegistryStore

    return RegistryStore(stack.home / "emulator" / "registries" / registry, registry)


def _descriptor(media_type: str, data: bytes, digest: str) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": digest, "size": len(data)}


def _layer(repo: str, tag: str, generation: int) -> bytes:
    """Distinct bytes per (repo, tag, generation), ``LAYER_BYTES`` long."""
    head = f"{repo}:{tag} build {generation}\n".encode()
    return head + os.urandom(max(0, LAYER_BYTES - len(head)))


def put_image(store: Any, repo: str, tag: str, generation: int = 0) -> tuple[str, bytes]:
    """One small image (shared config, its own layer) pushed straight into ``store`` as ``repo:tag``."""
    layer = _layer(repo, tag, generation)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(IMAGE_CONFIG, CONFIG, store.put_blob(CONFIG)),
        "layers": [_descriptor(LAYER, layer, store.put_blob(layer))],
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    return store.put_manifest(repo, tag, data, OCI_MANIFEST), data


def put_signature(store: Any, repo: str, subject: str, subject_bytes: bytes) -> str:
    """An OCI 1.1 referrer of ``subject`` (cosign's bundle layout: empty config, one layer), by digest."""
    from emulator.registry import sha256_digest

    payload = f"a signature bundle for {repo}@{subject}".encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "artifactType": SIGSTORE_BUNDLE,
        "config": _descriptor(OCI_EMPTY, EMPTY, store.put_blob(EMPTY)),
        "layers": [_descriptor(SIGSTORE_BUNDLE, payload, store.put_blob(payload))],
        "subject": {"mediaType": OCI_MANIFEST, "digest": subject, "size": len(subject_bytes)},
    }
    data = json.dumps(manifest, separators=(",", ":")).encode()
    return str(store.put_manifest(repo, sha256_digest(data), data, OCI_MANIFEST))


def select_tag_names(count: int) -> list[str]:
    """A repository's tags in push order: four release tags (``v<major>.<minor>.<patch>``) to one build tag."""
    names, release = [], 0
    for i in range(count):
        if i % 5 == 4:
            names.append(f"main-{i:05d}")
        else:
            names.append(f"v{1 + release // 400}.{(release // 20) % 20}.{release % 20}")
            release += 1
    return names


def seed_select(stack: Any) -> dict[str, Any]:
    """``SELECT_TAGS`` tags across ``SELECT_REPOS`` repositories; every ``SIGNED_EVERY``-th release signed."""
    store = _store(stack)
    per_repo = SELECT_TAGS // SELECT_REPOS
    started, signatures = time.perf_counter(), 0
    for r in range(SELECT_REPOS):
        repo = f"{SELECT_PREFIX}/r{r:02d}"
        releases = 0
        for tag in select_tag_names(per_repo):
            digest, data = put_image(store, repo, tag)
            if tag.startswith("v"):
                if releases % SIGNED_EVERY == 0:
                    put_signature(store, repo, digest, data)
                    signatures += 1
                releases += 1
    return {
        "repositories": SELECT_REPOS,
        "tags": per_repo * SELECT_REPOS,
        "signatures": signatures,
        "seed_seconds": round(time.perf_counter() - started, 1),
    }


def seed_diff(stack: Any) -> dict[str, Any]:
    """``DIFF_TAGS`` release tags across ``DIFF_REPOS`` repositories, no referrers."""
    store = _store(stack)
    per_repo = DIFF_TAGS // DIFF_REPOS
    started = time.perf_counter()
    for r in range(DIFF_REPOS):
        for i in range(per_repo):
            put_image(store, f"{DIFF_PREFIX}/r{r:02d}", f"v3.{i // 100}.{i % 100}")
    return {
        "repositories": DIFF_REPOS,
        "tags": per_repo * DIFF_REPOS,
        "seed_seconds": round(time.perf_counter() - started, 1),
    }


def move_tags(stack: Any) -> list[str]:
    """Re-push ``DIFF_CHANGED`` of the diff scenario's tags with new content, spread over its repositories."""
    store = _store(stack)
    per_repo = DIFF_TAGS // DIFF_REPOS
    moved = []
    for k in range(DIFF_CHANGED):
        repo, i = f"{DIFF_PREFIX}/r{k % DIFF_REPOS:02d}", (k // DIFF_REPOS * 7 + k * 13) % per_repo
        tag = f"v3.{i // 100}.{i % 100}"
        put_image(store, repo, tag, generation=1)
        moved.append(f"{repo}:{tag}")
    return moved


def registry_requests(log: list[dict[str, Any]], registry_port: str | None = None) -> dict[str, int]:
    """The stand-in's registry requests by kind (what the server saw, 401 challenges included)."""
    kinds: Counter[str] = Counter()
    for r in log:
        if r["service"] != "registry":
            continue
        path = r["path"]
        if r["status"] == 401:
            kind = "401 challenge"
        elif path.startswith("/oauth2/"):
            kind = f"POST {path}"
        elif path.startswith("/v2/_catalog"):
            kind = "GET catalog"
        elif "/_tags" in path:
            kind = "GET acr tags"
        elif "/_manifests" in path:
            kind = "GET acr manifests"
        elif "/referrers/" in path:
            kind = "GET referrers"
        elif "/manifests/" in path:
            kind = f"{r['method']} manifest"
        else:
            kind = f"{r['method']} other"
        kinds[kind] += 1
    return dict(sorted(kinds.items()))


# -- 1. selection over 10,000 tags --------------------------------------------------------------------------


def scenario_select(stack: Any) -> dict[str, Any]:
    """List every tag of the seeded repositories and select from them, then look up a sample's referrers."""
    from acr_transfer import selection
    from acr_transfer.azure.acr_data import RegistryDataPlane
    from acr_transfer.azure.acr_listing import RegistryListing
    from acr_transfer.models import Selection
    from acr_transfer.settings import get_credential, get_settings
    from tasks.sync import WORKERS

    seeded = seed_select(stack)
    login = _topology(stack)["registries"]["sourceregistry"]["login_server"]
    rules = Selection.model_validate(SELECT_RULE)
    plane = RegistryDataPlane(get_settings(), get_credential())  # cold: no token yet, as a new worker starts
    listing = RegistryListing(plane)
    try:
        _control(stack, "DELETE", "/requests")
        started = time.perf_counter()
        repos = [r for r in listing.repositories(login) if selection.repository_excluded(rules, r) is None]
        catalog_done = time.perf_counter()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            listed = dict(zip(repos, pool.map(lambda repo: listing.tags(login, repo), repos), strict=True))
        listed_done = time.perf_counter()
        chosen = selection.select(rules, listed)
        selected_done = time.perf_counter()
        list_counts, plane_counts = dict(listing.counts), dict(plane.counts)
        list_log = registry_requests(_control(stack, "GET", "/requests"))

        # referrers of a sample of the selected subjects, spread over every repository, as plan-sync looks
        # them up (one lookup per distinct digest, the repository's listing given so nothing is probed)
        subjects = sorted({(t.repo, t.digest) for t in chosen.tags})
        size = min(REFERRER_SAMPLE, len(subjects))
        sample = [subjects[i * len(subjects) // size] for i in range(size)]
        _control(stack, "DELETE", "/requests")
        before_list, before_plane = Counter(listing.counts), Counter(plane.counts)
        ref_started = time.perf_counter()
        with ThreadPoolExecutor(max_workers=WORKERS) as pool:
            found = list(pool.map(lambda s: listing.referrers(login, s[0], s[1], tags=listed.get(s[0], [])), sample))
        ref_seconds = time.perf_counter() - ref_started
        ref_counts = dict(Counter(listing.counts) - before_list)
        ref_plane = dict(Counter(plane.counts) - before_plane)
        ref_log = registry_requests(_control(stack, "GET", "/requests"))
        # the same lookups one at a time: the latency of one referrers request, without the pool's overlap
        one_started = time.perf_counter()
        for repo, digest in sample[:50]:
            listing.referrers(login, repo, digest, tags=listed.get(repo, []))
        one_ms = (time.perf_counter() - one_started) / max(1, len(sample[:50])) * 1000
        manifests = _manifest_listing(stack, listing, plane, login, repos)
    finally:
        plane.http.close()
    tags_listed = sum(len(v) for v in listed.values())
    with_referrers = sum(1 for f in found if f)
    return {
        "seeded": seeded,
        "rule": SELECT_RULE,
        "workers": WORKERS,
        "page_size": listing.page_size,
        "repositories_listed": len(repos),
        "tags_listed": tags_listed,
        "tags_selected": len(chosen.tags),
        "tags_excluded": len(chosen.excluded),
        "catalog_seconds": round(catalog_done - started, 3),
        "tags_seconds": round(listed_done - catalog_done, 3),
        "select_seconds": round(selected_done - listed_done, 3),
        "list_and_select_seconds": round(selected_done - started, 3),
        "listing_requests": list_counts,
        "data_plane_requests": plane_counts,
        "server_requests": list_log,
        "referrers": {
            "subjects": len(sample),
            "subjects_with_referrers": with_referrers,
            "referrers_found": sum(len(f) for f in found),
            "seconds": round(ref_seconds, 3),
            "ms_per_subject": round(ref_seconds / max(1, len(sample)) * 1000, 2),
            "ms_per_subject_sequential": round(one_ms, 2),
            "listing_requests": ref_counts,
            "data_plane_requests": ref_plane,
            "server_requests": ref_log,
            "note": "a sent subject costs one referrers request per distinct selected digest, plus one per "
            "referrer found (the walk asks for the referrers of each referrer)",
        },
        "manifest_listing": manifests,
    }


def _manifest_listing(stack: Any, listing: Any, plane: Any, login: str, repos: list[str]) -> dict[str, Any]:
    """What plan-sync spends on the referrers of unchanged subjects: every selected repository's manifests,
    paged (``/acr/v1/<repo>/_manifests``), on one side (the other side's listing costs as much again)."""
    from tasks.sync import WORKERS

    _control(stack, "DELETE", "/requests")
    before_list, before_plane = Counter(listing.counts), Counter(plane.counts)
    started = time.perf_counter()
    with ThreadPoolExecutor(max_workers=WORKERS) as pool:
        found = list(pool.map(lambda repo: listing.manifests(login, repo), repos))
    seconds = time.perf_counter() - started
    return {
        "repositories": len(repos),
        "manifests": sum(len(f) for f in found),
        "untagged": sum(1 for f in found for tags in f.values() if not tags),
        "seconds": round(seconds, 3),
        "listing_requests": dict(Counter(listing.counts) - before_list),
        "data_plane_requests": dict(Counter(plane.counts) - before_plane),
        "server_requests": registry_requests(_control(stack, "GET", "/requests")),
    }


# -- 2. a sync with 1 % changed vs everything re-sent ------------------------------------------------------


def ensure_import_pipeline(stack: Any) -> None:
    """An import pipeline on targetregistry reading the export container itself (targetvault's acrdirectsas),
    its source trigger off, with OverwriteTags (a sync moves tags), as tests/support/azure.py creates one."""
    from azure.identity import DefaultAzureCredential
    from azure.mgmt.containerregistry import ContainerRegistryManagementClient
    from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

    topo = _topology(stack)
    arm = ContainerRegistryManagementClient(
        DefaultAzureCredential(),
        stack.env["AZURE_SUBSCRIPTION_ID"],
        base_url=stack.env["ACR_TRANSFER_ARM_ENDPOINT"],
        credential_scopes=[stack.env["ACR_TRANSFER_ARM_SCOPE"]],
        polling_interval=0.1,
    )
    uri = topo["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    vault = topo["vaults"]["targetvault"]["url"]
    arm.import_pipelines.begin_create(
        "transfer-rg",
        "targetregistry",
        SYNC_IMPORT,
        m.ImportPipeline(
            identity=m.IdentityProperties(type="SystemAssigned"),
            options=["OverwriteTags"],
            source=m.ImportPipelineSourceProperties(
                type="AzureStorageBlobContainer", uri=uri, key_vault_uri=f"{vault}/secrets/acrdirectsas"
            ),
            trigger=m.PipelineTriggerProperties(source_trigger=m.PipelineSourceTriggerProperties(status="Disabled")),
        ),
    ).result()


def diff_routes_file(home: Path) -> Path:
    repos = ", ".join(f"'{g}'" for g in DIFF_RULE["repositories"])
    tags = ", ".join(f"'{t}'" for t in DIFF_RULE["tags"])
    text = (
        "version: 1\nroutes:\n"
        f"  - name: {DIFF_ROUTE}\n"
        "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, "
        f"import_pipeline: {SYNC_IMPORT}}}\n"
        "    batch_size: 50\n"
        "    timeout_minutes: 30\n"
        "    cleanup: {delete_export_blob: false}\n"
        "    select:\n"
        f"      repositories: [{repos}]\n"
        f"      tags: [{tags}]\n"
    )
    path = home / "routes-sync.yaml"
    path.write_text(text)
    return path


def exported_bytes(stack: Any, transfer_id: str) -> tuple[int, int]:
    """(blobs, bytes) the transfer's export runs wrote into the export container (read with the account key)."""
    from azure.storage.blob import BlobServiceClient

    topo = _topology(stack)
    keys = json.loads((stack.home / "emulator" / "storage-keys.json").read_text())
    service = BlobServiceClient(
        topo["storage_accounts"]["sourcestorage"]["direct_endpoint"],
        credential={"account_name": "sourcestorage", "account_key": keys["sourcestorage"]},
        connection_verify=stack.env["REQUESTS_CA_BUNDLE"],
    )
    blobs = list(service.get_container_client("transfer").list_blobs(name_starts_with=f"{DIFF_ROUTE}/{transfer_id}/"))
    return len(blobs), sum(int(b.size or 0) for b in blobs)


def measured_sync(stack: Any, routes: Path, *, full: bool = False) -> dict[str, Any]:
    """One ``transfer`` flow run of the diff route: wall time, runs created, bytes exported, plan, requests."""
    from flows.routes import transfer_route
    from tasks import clients

    shared = clients.shared()
    before_list, before_plane = Counter(shared.listing.counts), Counter(shared.data_plane.counts)
    _control(stack, "DELETE", "/requests")
    started = time.time()
    state = transfer_route(route=DIFF_ROUTE, routes_file=str(routes), full=full, return_state=True)
    seconds = time.time() - started
    result = state.result(raise_on_failure=False)
    log = _control(stack, "GET", "/requests")
    runs = sorted(
        {
            r["path"].rsplit("/", 1)[1]
            for r in log
            if r["service"] == "arm" and r["method"] == "PUT" and "/pipelineRuns/" in r["path"] and r["status"] < 300
        }
    )
    out: dict[str, Any] = {
        "full": full,
        "seconds": round(seconds, 1),
        "succeeded": bool(getattr(result, "succeeded", False)),
        "runs_created": len(runs),
        "export_runs": sum(1 for n in runs if n.startswith("x")),
        "import_runs": sum(1 for n in runs if n.startswith("i")),
        "listing_requests": dict(Counter(shared.listing.counts) - before_list),
        "data_plane_requests": dict(Counter(shared.data_plane.counts) - before_plane),
        "server_registry_requests": registry_requests(log),
    }
    if isinstance(result, BaseException):
        out["error"] = str(result)[:500]
        return out
    plan = result.plan
    blobs, size = exported_bytes(stack, result.transfer_id)
    out.update(
        {
            "transfer_id": result.transfer_id,
            "verified": result.verified,
            "plan": plan.summary() if plan is not None else "",
            "sent": len(plan.send) if plan is not None else 0,
            "batches": len(plan.batches) if plan is not None else 0,
            "export_blobs": blobs,
            "bytes_exported": size,
        }
    )
    return out


def scenario_diff(stack: Any, home: Path) -> dict[str, Any]:
    """First sync (brings the target in sync), then 1 % moved and synced again, then everything re-sent."""
    ensure_import_pipeline(stack)
    seeded = seed_diff(stack)
    routes = diff_routes_file(home)
    first = measured_sync(stack, routes)
    moved = move_tags(stack)
    incremental = measured_sync(stack, routes)
    full = measured_sync(stack, routes, full=True)
    ratio = None
    if incremental.get("bytes_exported") and full.get("bytes_exported"):
        ratio = round(full["bytes_exported"] / incremental["bytes_exported"], 1)
    return {
        "seeded": seeded,
        "rule": DIFF_RULE,
        "batch_size": 50,
        "tags_moved": len(moved),
        "first_sync": first,
        "incremental": incremental,
        "full": full,
        "bytes_saved_factor": ratio,
    }


# -- results ------------------------------------------------------------------------------------------------


def _kinds(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "—"


def markdown_rows(results: dict[str, Any]) -> list[str]:
    """The rows of ``results.md`` for whichever sync sections ``results`` holds."""
    md: list[str] = []
    sel = results.get("sync_selection")
    if sel:
        name = f"select over {sel['tags_listed']:,} tags"
        ref = sel["referrers"]
        md += [
            f"| {name} | list + select wall time (s) | {sel['list_and_select_seconds']} "
            f"(catalog {sel['catalog_seconds']}, tags {sel['tags_seconds']}, select {sel['select_seconds']}) | — |",
            f"| {name} | tags listed / selected | {sel['tags_listed']} / {sel['tags_selected']} "
            f"(`{', '.join(sel['rule']['tags'])}`, latest {sel['rule']['latest']}) | — |",
            f"| {name} | listing requests | {_kinds(sel['listing_requests'])} | — |",
            f"| {name} | data-plane requests | {_kinds(sel['data_plane_requests'])} | — |",
            f"| {name} | referrers of {ref['subjects']} subjects (s, ms/subject) | {ref['seconds']}, "
            f"{ref['ms_per_subject']} ({ref['ms_per_subject_sequential']} one at a time) | — |",
            f"| {name} | referrers requests ({ref['referrers_found']} found) | {_kinds(ref['listing_requests'])} "
            "| 1 per selected digest (+1 per referrer found) |",
        ]
        man = sel.get("manifest_listing")
        if man:
            md.append(
                f"| {name} | manifest listing of {man['repositories']} repositories ({man['manifests']} manifests, "
                f"{man['untagged']} untagged): s, requests | {man['seconds']}, {_kinds(man['listing_requests'])} "
                "| — |"
            )
    diff = results.get("sync_diff")
    if diff:
        name = f"sync {diff['seeded']['tags']:,} tags"
        for key, label in (
            ("first_sync", "first sync"),
            ("incremental", f"{diff['tags_moved']} moved"),
            ("full", "`full=True`"),
        ):
            run = diff[key]
            md.append(
                f"| {name}, {label} | runs, bytes exported, wall time (s) | {run['runs_created']}, "
                f"{run.get('bytes_exported', '—')}, {run['seconds']} | — |"
            )
            md.append(
                f"| {name}, {label} | plan; registry requests (stand-in's count) | {run.get('plan', '—')}; "
                f"{_kinds(run['server_registry_requests'])} | — |"
            )
        if diff.get("bytes_saved_factor"):
            md.append(f"| {name} | bytes full / 1 % changed | {diff['bytes_saved_factor']}× | — |")
    return md
