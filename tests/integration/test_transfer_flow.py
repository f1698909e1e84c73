"""registry_transfer end to end on the stand-in, Azurite and a real Prefect server."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from acr_transfer.errors import PreflightError
from acr_transfer.results import TransferResult
from flows.transfer import registry_transfer
from tests.support.images import manifest_digest, push_file_artifact, push_multiarch_index
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, prefect_records, request, route

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def login(standin: StandIn, registry: str) -> str:
    return str(standin.topology["registries"][registry]["login_server"])


def unique(prefix: str) -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


def assert_in_target(standin: StandIn, pushed: list) -> None:
    src, dst = login(standin, "sourceregistry"), login(standin, "targetregistry")
    for p in pushed:
        ref = p.digest if "@" in p.requested else p.tag
        assert manifest_digest(dst, p.repo, ref, standin.ca)[0] == manifest_digest(src, p.repo, p.digest, standin.ca)[0]


def progress_artifacts(transfer_id: str) -> dict[str, float]:
    """The latest progress of each run of the transfer, as the UI's artifacts page shows it."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterType

    with get_client(sync_client=True) as client:
        found = client.read_latest_artifacts(artifact_filter=ArtifactFilter(type=ArtifactFilterType(any_=["progress"])))
    return {a.key: float(a.data) for a in found if a.key and transfer_id in a.key}  # type: ignore[arg-type]


class Pushed:
    def __init__(self, pushed, by_digest: bool = False) -> None:
        self.repo, self.tag, self.digest = pushed.repo, pushed.tag, pushed.digest
        self.requested = pushed.by_digest if by_digest else pushed.by_tag


def test_happy_path_tag_digest_and_index(standin: StandIn) -> None:
    src = login(standin, "sourceregistry")
    suffix = unique("")
    images = [
        Pushed(push_file_artifact(src, f"flow/hello{suffix}", "v1", b"hello " + suffix.encode())),
        Pushed(push_file_artifact(src, f"flow/world{suffix}", "v2", b"world " + suffix.encode()), by_digest=True),
        Pushed(push_multiarch_index(src, f"flow/multi{suffix}", "1.0", seed=suffix)),
    ]
    req = request(route(standin, "happy"), [p.requested for p in images])
    result = registry_transfer(req)
    assert isinstance(result, TransferResult) and result.succeeded
    assert [r.status for r in result.rows] == ["verified"] * 3
    assert_in_target(standin, images)
    records = prefect_records()
    tables = [a for a in records["artifacts"] if isinstance(a, str) and req.transfer_id in a] + [
        a for a in records["artifacts"] if isinstance(a, list | dict) and req.transfer_id in json.dumps(a)
    ]
    assert tables, "no table artifact for the transfer"
    # the runs' progress artifacts are written in the background, and are at 100 % once the flow has returned
    progress = progress_artifacts(req.transfer_id)
    assert sorted(progress) == [f"export-x{req.transfer_id}b001a1", f"import-i{req.transfer_id}b001a1"]
    assert set(progress.values()) == {100.0}, progress
    wanted = {"acr.transfer.exported", "acr.transfer.imported"}
    deadline = time.monotonic() + 20  # the server persists events asynchronously
    while True:
        mine = [e for e in records["events"] if req.transfer_id in json.dumps(e)]
        if wanted <= {e["event"] for e in mine} or time.monotonic() > deadline:
            break
        time.sleep(0.5)
        records = prefect_records()
    assert wanted <= {e["event"] for e in mine}
    imported = next(e for e in mine if e["event"] == "acr.transfer.imported")
    roles = {r["prefect.resource.role"] for r in imported["related"]}
    assert {"source-registry", "target-registry", "blob"} <= roles
    assert all(r.digest.startswith("sha256:") for r in result.rows)


def test_120_artifacts_make_three_batches(standin: StandIn) -> None:
    src = login(standin, "sourceregistry")
    base = push_file_artifact(src, unique("many/app"), "t0", b"many tags of one image")
    import ssl

    import httpx

    ctx = ssl.create_default_context(cafile=standin.ca)
    with httpx.Client(verify=ctx, auth=standin.registry_admin("sourceregistry")) as c:
        accept = {"Accept": "application/vnd.oci.image.manifest.v1+json"}
        body = c.get(f"https://{src}/v2/{base.repo}/manifests/t0", headers=accept)
        for i in range(1, 120):
            c.put(
                f"https://{src}/v2/{base.repo}/manifests/t{i}",
                content=body.content,
                headers={"Content-Type": body.headers["Content-Type"]},
            ).raise_for_status()
    artifacts = [f"{base.repo}:t{i}" for i in range(120)]
    req = request(route(standin, "many", import_pipeline="directimport"), artifacts)
    standin.clear_requests()
    result = registry_transfer(req)
    assert result.succeeded and len(result.rows) == 120 and {r.batch for r in result.rows} == {1, 2, 3}
    puts = arm_puts(standin)
    assert len(puts) == 6  # three exports, three imports
    # preflight and verify read the 120 tags from the repository's tag listing, not one HEAD per tag and side
    reads = [r for r in standin.requests("registry") if base.repo in r["path"] and r["status"] != 401]
    assert [r for r in reads if r["method"] == "HEAD"] == []
    assert 0 < len([r for r in reads if "/_tags" in r["path"]]) <= 2 * 2 + 3 * 2 * 2  # 2 pages per listing
    dst = login(standin, "targetregistry")
    for tag in ("t0", "t59", "t119"):
        assert manifest_digest(dst, base.repo, tag, standin.ca)[0] == base.digest


def test_preflight_of_many_tags_of_one_repository_names_the_missing_and_the_conflicting(standin: StandIn) -> None:
    src, dst = login(standin, "sourceregistry"), login(standin, "targetregistry")
    repo = unique("flow/listed")
    for i in range(6):
        push_file_artifact(src, repo, f"v{i}", f"{repo} v{i}".encode())
    push_file_artifact(dst, repo, "v3", b"other content already in the target under v3")
    artifacts = [*(f"{repo}:v{i}" for i in range(6)), f"{repo}:v9"]
    req = request(route(standin, "listed", import_pipeline="directimport"), artifacts)
    standin.clear_requests()
    with pytest.raises(PreflightError) as exc:
        registry_transfer(req)
    failures = exc.value.failures
    assert len(failures) == 2, failures
    assert f"'{repo}:v3'" in failures[0] and "tag already points at" in failures[0]
    assert f"'{repo}:v9'" in failures[1] and "not found in source registry" in failures[1]
    assert arm_puts(standin) == []


def test_preflight_failure_creates_nothing(standin: StandIn) -> None:
    req = request(route(standin, "broken", import_pipeline="nosuchpipeline"), ["flow/none:v1"])
    standin.clear_requests()
    with pytest.raises(PreflightError) as exc:
        registry_transfer(req)
    assert "nosuchpipeline" in str(exc.value) and "fix" in str(exc.value)
    assert arm_puts(standin) == []
