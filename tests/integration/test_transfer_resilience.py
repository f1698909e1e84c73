"""The transfer's promises under trouble: preflight stops bad input before anything is created, transient
faults are retried, permanent ones are not. A killed flow resuming without transferring twice is proven at
every step in tests/faults/test_crash.py."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from azure.storage.blob import BlobClient

from acr_transfer.errors import AcrTransferError, PreflightError
from acr_transfer.routes import load_routes
from flows.transfer import registry_transfer
from tests.support import azure
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, request, route

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]
ROOT = Path(__file__).resolve().parents[2]


def login(standin: StandIn, registry: str) -> str:
    return str(standin.topology["registries"][registry]["login_server"])


@pytest.fixture(scope="module")
def image(standin: StandIn):
    return push_file_artifact(login(standin, "sourceregistry"), "resilience/app", "v1", b"resilience payload")


def with_export(standin: StandIn, name: str, secret: str, sas: str) -> str:
    azure.export_pipeline_with_secret(standin, name, secret, sas)
    return name


def preflight_fails(standin: StandIn, req, *expected: str) -> str:
    standin.clear_requests()
    with pytest.raises(PreflightError) as exc:
        registry_transfer(req)
    message = str(exc.value)
    for word in expected:
        assert word in message, message
    assert "fix" in message
    assert arm_puts(standin) == [], "a run was created after a failed preflight"
    return message


def test_preflight_names_the_resource_and_the_fix(standin: StandIn, image) -> None:
    kv = azure.secrets(standin, "sourcevault")
    cases = []
    disabled = with_export(
        standin, "pfdisabled", "pfdisabledsas", azure.container_sas(standin, "sourcestorage", "transfer", "rawl")
    )
    kv.update_secret_properties("pfdisabledsas", enabled=False)
    cases.append((disabled, ["pfdisabledsas", "disabled"]))
    cases.append(
        (
            with_export(
                standin,
                "pfexpired",
                "pfexpiredsas",
                azure.container_sas(standin, "sourcestorage", "transfer", "rawl", hours=-1),
            ),
            ["pfexpiredsas", "expired"],
        )
    )
    cases.append(
        (
            with_export(
                standin, "pfnowrite", "pfnowritesas", azure.container_sas(standin, "sourcestorage", "transfer", "ral")
            ),
            ["pfnowritesas", "'w'"],
        )
    )
    cases.append(
        (
            with_export(
                standin,
                "pfshort",
                "pfshortsas",
                azure.container_sas(standin, "sourcestorage", "transfer", "rawl", hours=1),
            ),
            ["pfshortsas", "deadline"],
        )
    )
    for pipeline, words in cases:
        rt = route(
            standin,
            f"pf-{pipeline}",
            source={"registry": {"resource_group": azure.RG, "name": "sourceregistry"}, "export_pipeline": pipeline},
            timeout_minutes=180,
        )
        preflight_fails(standin, request(rt, [image.by_tag]), *words)


def test_preflight_refuses_a_taken_blob_name(standin: StandIn, image) -> None:
    tid = uuid.uuid4().hex[:12]
    rt = route(standin, "taken")
    blob = f"taken/{tid}/batch001.tar"
    container = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    sas = azure.container_sas(standin, "sourcestorage", "transfer", "rw")[1:]
    BlobClient.from_blob_url(f"{container}/{blob}", credential=sas).upload_blob(b"someone else's blob")
    preflight_fails(standin, request(rt, [image.by_tag], transfer_id=tid), blob, "OverwriteBlobs")


def test_example_routes_direct_and_triggered(standin: StandIn, image, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGET_VAULT_URL", standin.topology["vaults"]["targetvault"]["url"])
    routes = load_routes(ROOT / "routes.example.yaml")
    assert set(routes.names()) >= {"demo", "direct", "triggered"}
    standin.clear_requests()
    direct = registry_transfer(request(routes.get("direct"), [image.by_tag]))
    assert direct.succeeded
    copies = [r for r in standin.requests("storage") if r["method"] == "PUT" and "/targetstorage/" in r["path"]]
    assert copies == [], "the direct route must not copy the blob"

    triggered_req = request(routes.get("triggered"), [image.by_tag])
    result = registry_transfer(triggered_req)
    assert result.succeeded
    runs = [
        r
        for r in azure.arm().pipeline_runs.list(azure.RG, "targetregistry")
        if r.request.source and triggered_req.transfer_id in (r.request.source.name or "")
    ]
    assert len(runs) == 1, [r.name for r in runs]
    assert "_" in runs[0].name and runs[0].response.trigger.source_trigger.timestamp
    assert result.rows[0].import_run == runs[0].name


def test_transient_arm_faults_are_retried(standin: StandIn, image) -> None:
    req = request(route(standin, "arm-faults", import_pipeline="directimport"), [image.by_tag])
    standin.add_fault(service="arm", method="GET", path="/pipelineRuns/", status=429, retry_after=1, count=2)
    standin.add_fault(service="arm", method="GET", path="/pipelineRuns/", status=503, count=2)
    standin.add_fault(service="arm", method="PUT", path="/pipelineRuns/", status=503, count=1)
    try:
        result = registry_transfer(req)
    finally:
        standin.clear_faults()
    assert result.succeeded
    log = standin.requests("arm")
    throttled = [r for r in log if r["status"] == 429]
    assert throttled
    for t in throttled:  # no read of the same run came before Retry-After elapsed
        later = [r for r in log if r["path"] == t["path"] and r["at"] > t["at"]]
        assert later and later[0]["at"] - t["at"] >= 0.95


def test_transient_run_failure_gets_a_new_attempt(standin: StandIn, image) -> None:
    req = request(route(standin, "run-retry", import_pipeline="directimport"), [image.by_tag])
    standin.set_outcome(f"x{req.transfer_id}b001a1", fail="Transient failure: storage returned 503 ServerBusy")
    standin.clear_requests()
    result = registry_transfer(req)
    assert result.succeeded
    exports = azure.arm().pipeline_runs
    first = exports.get(azure.RG, "sourceregistry", f"x{req.transfer_id}b001a1")
    second = exports.get(azure.RG, "sourceregistry", f"x{req.transfer_id}b001a2")
    assert first.provisioning_state == "Failed" and second.provisioning_state == "Succeeded"
    assert result.rows[0].export_run == second.name


def test_permanent_run_failure_is_attempted_once(standin: StandIn, image) -> None:
    req = request(route(standin, "run-permanent", import_pipeline="directimport"), [image.by_tag])
    standin.set_outcome(f"x{req.transfer_id}b001a1", fail="Failed to access storage: 403 (AuthorizationFailure)")
    standin.clear_requests()
    with pytest.raises(AcrTransferError) as exc:
        registry_transfer(req)
    assert "AuthorizationFailure" in str(exc.value)
    assert len(arm_puts(standin)) == 1
