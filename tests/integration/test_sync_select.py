"""A route that says what should be in sync: only the difference travels, with its signatures and SBOMs.

On the stand-in and a real Prefect server: select rules list the source through ACR's token flow, the target's
tags (or an export-only route's ledger) decide what is identical, the plan is frozen per transfer, and a burst of
pushes exports exactly what it pushed.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from prefect.events import emit_event
from prefect.events.worker import EventsWorker

from acr_transfer.events import EventName, registry_resource_id, repository_resource_id
from acr_transfer.sync import ledger_blob
from flows.routes import export_route, sync_routes, transfer_route
from tests.support import azure
from tests.support.artifacts import SIGSTORE_BUNDLE, RawRegistry
from tests.support.images import Pushed
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
SPDX = "application/spdx+json"
SYNC_IMPORT = "syncimport"


@pytest.fixture(scope="module")
def overwriting_import(standin: StandIn) -> str:
    """An import pipeline that may move a tag the target already has (a sync moves tags)."""
    azure.import_pipeline(standin, SYNC_IMPORT, ["OverwriteTags"])
    return SYNC_IMPORT


def routes_text(name: str, prefix: str, *, target: bool = True, extra: str = "", batch_size: int = 50) -> str:
    side = (
        "    target: {registry: {resource_group: transfer-rg, name: targetregistry}, "
        f"import_pipeline: {SYNC_IMPORT}}}\n"
        if target
        else "    target: null\n"
    )
    return (
        "version: 1\nroutes:\n"
        f"  - name: {name}\n"
        "    source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n"
        f"{side}"
        f"    batch_size: {batch_size}\n"
        "    timeout_minutes: 2\n"
        "    cleanup: {delete_export_blob: true}\n"
        "    select:\n"
        f"      repositories: ['{prefix}/*']\n"
        "      tags: ['v\\d+']\n"
        f"{extra}"
    )


def exports(standin: StandIn) -> list[str]:
    """Names of the export runs created (accepted PUTs) since the request log was cleared."""
    return [
        r["path"].rsplit("/", 1)[1] for r in arm_puts(standin) if "/pipelineRuns/x" in r["path"] and r["status"] < 300
    ]


def exported(standin: StandIn) -> set[str]:
    return {a for run in exports(standin) for a in azure.exported_artifacts(run)}


def target_digest(standin: StandIn, repo: str, reference: str) -> str | None:
    r = RawRegistry.of(standin, "targetregistry").get(
        f"/v2/{repo}/manifests/{reference}",
    )
    return r.headers.get("Docker-Content-Digest") if r.status_code == 200 else None


def referrer_digests(standin: StandIn, registry: str, repo: str, subject: str) -> set[str]:
    r = RawRegistry.of(standin, registry).get(f"/v2/{repo}/referrers/{subject}")
    r.raise_for_status()
    return {m["digest"] for m in r.json()["manifests"]}


def referrer_calls(standin: StandIn) -> list[str]:
    return [r["path"] for r in standin.requests("registry") if "/referrers/" in r["path"]]


def seed(standin: StandIn, prefix: str) -> dict[str, Pushed]:
    src = RawRegistry.of(standin)
    pushed = {}
    for repo, tag in [("app", "v1"), ("app", "v2"), ("app", "v3"), ("lib", "v1")]:
        pushed[f"{repo}:{tag}"] = src.push_image(f"{prefix}/{repo}", tag, [f"{prefix}/{repo}:{tag}".encode()])
    src.push_image(f"{prefix}/lib", "v1-rc1", [b"a release candidate, not selected"])
    src.push_image(f"{prefix}x/other", "v1", [b"another repository, not selected"])
    return pushed


def seeded_route(
    standin: StandIn, tmp_path: Path, name: str, word: str, **options: Any
) -> tuple[str, dict[str, Pushed], Path]:
    """A unique repository prefix seeded by :func:`seed`, and a routes file of one select: route over it."""
    prefix = f"{word}{uuid.uuid4().hex[:6]}"
    pushed = seed(standin, prefix)
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text(name, prefix, **options))
    return prefix, pushed, routes


def outcome_of(outcomes: list[Any]) -> Any:
    assert len(outcomes) == 1
    return outcomes[0]


def test_a_second_sync_sends_nothing_and_a_third_exactly_what_changed(
    standin: StandIn, tmp_path: Path, overwriting_import: str
) -> None:
    prefix, pushed, routes = seeded_route(standin, tmp_path, "keep-in-sync", "sync")
    standin.clear_requests()

    first = outcome_of(sync_routes(routes_file=str(routes)))
    assert (first.status, first.verified) == ("succeeded", 4), first.message
    assert exported(standin) == {f"{prefix}/{r}" for r in pushed}
    for ref, image in pushed.items():
        assert target_digest(standin, image.repo, image.tag) == image.digest, ref
    assert target_digest(standin, f"{prefix}/lib", "v1-rc1") is None  # excluded by the tags rule

    standin.clear_requests()
    second = outcome_of(sync_routes(routes_file=str(routes)))
    assert second.status == "succeeded"
    assert "0 changed, 4 identical" in second.message
    assert exports(standin) == [] and arm_puts(standin) == []  # no pipeline run at all
    # nothing changed: the referrers API (throttled by ACR) is not asked about unchanged images
    assert referrer_calls(standin) == []

    # three new tags, one moved tag, and a signature and an SBOM attached to an unchanged image
    src = RawRegistry.of(standin)
    new = [src.push_image(f"{prefix}/{repo}", tag, [f"new {repo}:{tag}".encode()]) for repo, tag in
           [("app", "v4"), ("lib", "v2"), ("lib", "v3")]]  # fmt: skip
    moved = src.push_image(f"{prefix}/app", "v1", [b"app:v1, rebuilt"])
    subject = pushed["app:v2"]
    signature = src.push_referrer(subject.repo, subject.digest, SIGSTORE_BUNDLE, b"a signature bundle")
    sbom = src.push_referrer(subject.repo, subject.digest, SPDX, b'{"spdxVersion": "SPDX-2.3"}')
    standin.clear_requests()

    third = outcome_of(sync_routes(routes_file=str(routes)))
    assert third.status == "succeeded", third.message
    assert exported(standin) == {
        *(p.by_tag for p in new),
        moved.by_tag,
        f"{subject.repo}@{signature}",
        f"{subject.repo}@{sbom}",
    }
    assert len(exports(standin)) == 1  # the referrers share their subject's batch: one run
    # the referrers API was asked about the four images sent; the unchanged one's new referrers came from
    # the manifest listings
    assert len(referrer_calls(standin)) == 4
    for image in [*new, moved]:
        assert target_digest(standin, image.repo, image.tag) == image.digest
    assert referrer_digests(standin, "targetregistry", subject.repo, subject.digest) == {signature, sbom}


def test_an_export_only_route_skips_what_its_ledger_holds_and_full_sends_it_all(
    standin: StandIn, tmp_path: Path
) -> None:
    prefix, pushed, routes = seeded_route(standin, tmp_path, "ledgered", "ledger", target=False)
    standin.clear_requests()

    blobs = export_route(route="ledgered", routes_file=str(routes))
    assert sorted(a for b in blobs for a in b.artifacts) == sorted(f"{prefix}/{r}" for r in pushed)
    ledger = azure_ledger(standin, "ledgered")
    assert ledger == {f"{prefix}/{r}": p.digest for r, p in pushed.items()}

    standin.clear_requests()
    assert export_route(route="ledgered", routes_file=str(routes)) == []
    assert exports(standin) == []

    full = export_route(route="ledgered", routes_file=str(routes), full=True)
    assert sorted(a for b in full for a in b.artifacts) == sorted(f"{prefix}/{r}" for r in pushed)
    assert len(exports(standin)) == 1


def azure_ledger(standin: StandIn, route: str) -> dict[str, str]:
    from azure.storage.blob import BlobServiceClient

    service = BlobServiceClient(
        standin.topology["storage_accounts"]["sourcestorage"]["blob_endpoint"],
        credential={"account_name": "sourcestorage", "account_key": standin.storage_key("sourcestorage")},
        connection_verify=standin.ca,
    )
    body = service.get_blob_client("transfer", ledger_blob(route)).download_blob().readall()
    return dict(json.loads(body)["exported"])


def test_a_resumed_transfer_finishes_its_frozen_list_after_new_pushes(
    standin: StandIn, tmp_path: Path, overwriting_import: str
) -> None:
    prefix, pushed, routes = seeded_route(standin, tmp_path, "frozen", "frozen", batch_size=2)
    transfer_id = uuid.uuid4().hex[:12]
    standin.clear_requests()
    # the second batch's export is refused once: the transfer stops after its first batch
    standin.add_fault(service="arm", method="PUT", path=rf"/pipelineRuns/x{transfer_id}b002a1$", status=400, count=1)
    try:
        failed = transfer_route(route="frozen", routes_file=str(routes), transfer_id=transfer_id, return_state=True)
    finally:
        standin.clear_faults()
    assert failed.is_failed()
    assert exports(standin) == [f"x{transfer_id}b001a1"]

    src = RawRegistry.of(standin)
    late = src.push_image(f"{prefix}/app", "v9", [b"pushed while the transfer was stopped"])
    result = transfer_route(route="frozen", routes_file=str(routes), transfer_id=transfer_id)
    assert result.succeeded and result.verified == 4
    assert sorted(r.artifact for r in result.rows) == sorted(f"{prefix}/{r}" for r in pushed)
    # batch 1 was imported, never exported again; batch 2 exported once; the late tag waits for the next sync
    assert exports(standin) == [f"x{transfer_id}b001a1", f"x{transfer_id}b002a1"]
    for image in pushed.values():
        assert target_digest(standin, image.repo, image.tag) == image.digest
    assert target_digest(standin, late.repo, late.tag) is None


def test_a_burst_of_pushes_exports_exactly_the_pushed_tags_once(standin: StandIn, tmp_path: Path) -> None:
    prefix = f"pushed{uuid.uuid4().hex[:6]}"
    src = RawRegistry.of(standin)
    base = src.push_image(f"{prefix}/app", "v0", [b"there before the burst"])
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text("on-push", prefix, target=False))
    images = [src.push_image(f"{prefix}/app", tag, [f"push of {tag}".encode()]) for tag in ("v1", "v2", "v3")]
    started = datetime.now(UTC)
    # five pushes of three distinct tags (v1 and v2 pushed twice), as the receiver forwards them
    for image in [images[0], images[1], images[0], images[2], images[1]]:
        emit_event(
            event=str(EventName.IMAGE_PUSHED),
            resource={"prefect.resource.id": registry_resource_id("sourceregistry")},
            related=[
                {
                    "prefect.resource.id": repository_resource_id("sourceregistry", image.repo),
                    "prefect.resource.role": "repository",
                }
            ],
            payload={"repository": image.repo, "tag": image.tag, "digest": image.digest, "artifact": image.by_tag},
        )
    EventsWorker.drain_all()
    standin.clear_requests()
    blobs = export_route(route="on-push", routes_file=str(routes), pushed_since=started.isoformat(), window_seconds=2)
    assert sorted(a for b in blobs for a in b.artifacts) == sorted(i.by_tag for i in images)
    assert len(exports(standin)) == 1
    assert base.by_tag not in exported(standin)


def test_a_transfer_outlasting_its_registry_tokens_refreshes_them_and_completes(
    standin: StandIn, tmp_path: Path, overwriting_import: str
) -> None:
    _, pushed, routes = seeded_route(standin, tmp_path, "short-tokens", "tokens")
    before = standin.set_token_lifetimes(access_seconds=2, refresh_seconds=4)
    standin.set_speed(3)  # each run takes 3 s: the transfer outlives several tokens
    try:
        result = transfer_route(route="short-tokens", routes_file=str(routes))
    finally:
        standin.set_speed(0.3)
        standin.set_token_lifetimes(**before)
    assert result.succeeded and result.verified == 4
    for image in pushed.values():
        assert target_digest(standin, image.repo, image.tag) == image.digest
    assert not any(r["status"] == 401 and "/oauth2/" in r["path"] for r in standin.requests("registry"))


def test_an_artifact_with_a_layer_over_8_gb_fails_preflight_and_nothing_is_created(
    standin: StandIn, tmp_path: Path, overwriting_import: str
) -> None:
    prefix = f"huge{uuid.uuid4().hex[:6]}"
    src = RawRegistry.of(standin)
    src.push_image(f"{prefix}/app", "v1", [b"small"])
    image = src.push_image(f"{prefix}/model", "v1", [b"a layer that says it is 9 GB"])
    doc = json.loads(src.manifest_bytes(image.repo, image.digest))
    doc["layers"][0]["size"] = 9_000_000_000
    big = src.push_manifest(image.repo, "v2", doc)
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text("too-big", prefix))
    standin.clear_requests()
    state = transfer_route(route="too-big", routes_file=str(routes), return_state=True)
    assert state.is_failed()
    message = str(state.result(raise_on_failure=False))
    assert f"{prefix}/model:v2: layer {doc['layers'][0]['digest']} is 8.4 GiB" in message
    assert big
    assert arm_puts(standin) == []


def test_dry_run_lists_what_would_be_sent_and_skipped_at_80_columns(
    standin: StandIn, tmp_path: Path, overwriting_import: str
) -> None:
    import os
    import subprocess
    import sys

    from prefect.settings import PREFECT_API_URL

    prefix = f"plan{uuid.uuid4().hex[:6]}"
    pushed = seed(standin, prefix)
    dst = RawRegistry.of(standin, "targetregistry")
    same = pushed["lib:v1"]  # already in the target: identical
    dst.push_image(same.repo, same.tag, [f"{prefix}/lib:v1".encode()])
    routes = tmp_path / "routes.yaml"
    routes.write_text(routes_text("planned", prefix))
    standin.clear_requests()
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "COLUMNS": "80"}
    proc = subprocess.run(
        [sys.executable, "-m", "deployments", "run", "--route", "planned", "--routes", str(routes), "--dry-run"],
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = proc.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80, proc.stdout
    assert "3 changed, 1 identical, 1 excluded" in proc.stdout.replace("\n", " "), proc.stdout
    for ref in ("app:v1", "app:v2", "app:v3"):
        assert any(f"{prefix}/{ref}" in line and "send" in line and "new" in line for line in lines), proc.stdout
    assert any(f"{prefix}/lib:v1" in line and "identical in target" in line for line in lines), proc.stdout
    assert any(f"{prefix}/lib:v1-rc1" in line and "skip" in line for line in lines), proc.stdout
    assert arm_puts(standin) == []  # a dry run creates nothing
