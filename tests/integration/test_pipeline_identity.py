"""A pipeline's own identity and its Key Vault secret, end to end on the stand-in and a real Prefect server.

ACR reads a SasToken pipeline's secret as the pipeline's identity, not the worker's. A pipeline whose identity
lacks secret get fails preflight naming the principal, the vault and the az command that fixes it, and no run is
created; granting it through the control API lets the same route transfer. A run created anyway fails with
Key Vault's 403 in its message. A vault this worker may not read through ARM is "not checked".
"""

from __future__ import annotations

import time
import uuid
from typing import Any

import pytest
from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

from acr_transfer.azure.registry import RegistryAddress, RegistryArm
from acr_transfer.errors import PreflightError, RunFailedPermanent, run_failure
from flows.transfer import registry_transfer, transfer_preflight
from tests.support import azure
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, prefect_records, request, route

pytestmark = [pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


def control(standin: StandIn, method: str, path: str, **kw: Any) -> Any:
    with standin.http() as c:
        r = c.request(method, standin.control + path, **kw)
    assert r.status_code < 400, r.text
    return r.json() if r.content else None


def vault_id(standin: StandIn, vault: str) -> str:
    sub = standin.env["AZURE_SUBSCRIPTION_ID"]
    return f"/subscriptions/{sub}/resourceGroups/{azure.RG}/providers/Microsoft.KeyVault/vaults/{vault}"


def pipelines(standin: StandIn, tag: str) -> tuple[str, str, str, str, dict[str, Any]]:
    """A new export pipeline (secret in sourcevault: access policies) and a new import pipeline (secret in
    targetvault: Azure RBAC), each granted secret get by the stand-in as Microsoft's template would; returns
    their names, principals and the route overrides that use them."""
    export, imp = f"idexp{tag}", f"idimp{tag}"
    azure.export_pipeline_with_secret(
        standin, export, f"{export}sas", azure.container_sas(standin, "sourcestorage", "transfer", "rawl")
    )
    azure.import_pipeline(standin, imp, [])
    client = azure.arm()
    export_oid = client.export_pipelines.get(azure.RG, "sourceregistry", export).identity.principal_id
    import_oid = client.import_pipelines.get(azure.RG, "targetregistry", imp).identity.principal_id
    overrides = {
        "source": {"registry": {"resource_group": azure.RG, "name": "sourceregistry"}, "export_pipeline": export},
        "target": {"registry": {"resource_group": azure.RG, "name": "targetregistry"}, "import_pipeline": imp},
    }
    return export, imp, export_oid, import_oid, overrides


def test_missing_secret_get_fails_preflight_and_a_grant_lets_the_same_route_pass(standin: StandIn) -> None:
    tag = uuid.uuid4().hex[:8]
    export, imp, export_oid, import_oid, overrides = pipelines(standin, tag)
    control(standin, "DELETE", f"/vaults/sourcevault/access-policies/{export_oid}")
    assert control(standin, "DELETE", f"/role-assignments?principal={import_oid}&scope=vault:targetvault") == {
        "removed": 1
    }
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(login, f"identity/app{tag}", "v1", b"identity payload " + tag.encode())
    rt = route(standin, "identity", **overrides)

    standin.clear_requests()
    with pytest.raises(PreflightError) as caught:
        registry_transfer(request(rt, [image.by_tag]))
    failures = caught.value.failures
    assert len(failures) == 2, failures
    export_line = next(f for f in failures if f"identity of export pipeline '{export}'" in f)
    import_line = next(f for f in failures if f"identity of import pipeline '{imp}'" in f)
    assert f"principal {export_oid} may not get secret '{export}sas' in vault sourcevault" in export_line
    assert export_line.endswith(
        f"fix: az keyvault set-policy -n sourcevault --object-id {export_oid} --secret-permissions get"
    )
    assert f"principal {import_oid} may not get secret 'acrdirectsas' in vault targetvault" in import_line
    assert import_line.endswith(
        f'fix: az role assignment create --role "Key Vault Secrets User" --assignee-object-id {import_oid} '
        f"--assignee-principal-type ServicePrincipal --scope {vault_id(standin, 'targetvault')}"
    )
    assert arm_puts(standin) == [], "a run was created although preflight saw the missing grant"
    reads = [r["path"] for r in standin.requests("arm") if "Microsoft.KeyVault/vaults" in r["path"]]
    assert reads, "preflight did not read the vaults through ARM"

    control(standin, "POST", "/vaults/sourcevault/access-policies", json={"object_id": export_oid, "secrets": ["get"]})
    control(
        standin,
        "POST",
        "/role-assignments",
        json={"scope": "vault:targetvault", "role": "Key Vault Secrets User", "principal": import_oid},
    )
    result = registry_transfer(request(rt, [image.by_tag]))
    assert result.succeeded and [r.status for r in result.rows] == ["verified"]
    logs = "\n".join(prefect_records()["logs"])
    assert f"principal {export_oid} may get secret '{export}sas' in vault sourcevault (an access policy" in logs
    assert (
        f"principal {import_oid} may get secret 'acrdirectsas' in vault targetvault (role 'Key Vault Secrets User'"
        in logs
    )


def test_a_run_created_anyway_fails_with_key_vaults_answer(standin: StandIn) -> None:
    tag = uuid.uuid4().hex[:8]
    export, _, export_oid, _, _ = pipelines(standin, tag)
    control(standin, "DELETE", f"/vaults/sourcevault/access-policies/{export_oid}")
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    image = push_file_artifact(login, f"identity/run{tag}", "v1", b"run payload " + tag.encode())
    pid = f"{standin.topology['registries']['sourceregistry']['id']}/exportPipelines/{export}"
    name = f"anyway{tag}"
    azure.arm().pipeline_runs.begin_create(  # no preflight: straight to ARM, as any client could
        azure.RG,
        "sourceregistry",
        name,
        m.PipelineRun(
            request=m.PipelineRunRequest(
                pipeline_resource_id=pid,
                artifacts=[image.by_tag],
                target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=f"identity/{tag}.tar"),
            )
        ),
    )
    registry = RegistryAddress(standin.env["AZURE_SUBSCRIPTION_ID"], azure.RG, "sourceregistry")
    arm = RegistryArm()
    deadline = time.monotonic() + 30
    while (run := arm.get_run(registry, name)) is None or not run.terminal:
        assert time.monotonic() < deadline, "the run did not finish"
        time.sleep(0.2)
    assert run.failed and run.provisioning_state == "Failed" and run.status == "Failed"
    message = run.error_message or ""
    assert f"with the pipeline's managed identity (principalId {export_oid})" in message
    assert "Key Vault returned 403 Forbidden (AccessDenied)" in message
    assert "does not have secrets get permission on key vault 'sourcevault" in message
    error = run_failure(message, name)
    assert isinstance(error, RunFailedPermanent), "a missing grant is not worth a retry"


def test_a_vault_this_worker_may_not_read_through_arm_is_not_checked(standin: StandIn) -> None:
    standin.add_fault(
        service="arm",
        method="GET",
        path="/providers/Microsoft.KeyVault/vaults$",
        status=403,
        code="AuthorizationFailed",
        message="The client does not have authorization to perform action 'Microsoft.KeyVault/vaults/read'.",
        count=0,
    )
    try:
        report = transfer_preflight(request(route(standin, "identityunread"), ["identity/any:v1"]))
    finally:
        standin.clear_faults()
    lines = [c.line for c in report.checks if c.name.startswith("identity of ")]
    assert len(lines) == 2, [c.line for c in report.checks]
    for line in lines:
        assert line.startswith("✓") and "not checked: this identity cannot read the vault's access model" in line
        assert "403 AuthorizationFailed" in line
