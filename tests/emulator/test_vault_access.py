"""Pipeline identities and Key Vault access in the stand-in: each pipeline its own principal, vaults with an
access model readable through ARM (Microsoft.KeyVault/vaults, Microsoft.Authorization), grant and revoke through
the control API and ARM, and Key Vault's 403 for a caller the model does not allow."""

from __future__ import annotations

import ssl
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from azure.core.exceptions import HttpResponseError
from azure.mgmt.containerregistry.v2025_03_01_preview import models as m

from tests.support import azure
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration
SECRETS_USER = "4633458b-17de-408a-b874-0445c86b69e6"
SECRETS_OFFICER = "b86a8fe4-44ce-4948-aee5-eccb2c155cd7"
AUTH_API = "api-version=2022-04-01"
KV_API = "api-version=2026-02-01"


def arm(standin: StandIn, method: str, path: str, **kw: Any) -> httpx.Response:
    url = standin.env["ACR_TRANSFER_ARM_ENDPOINT"] + path
    headers = {"Authorization": f"Bearer {azure.arm_token()}"}
    with httpx.Client(verify=ssl.create_default_context(cafile=standin.ca), timeout=30) as c:
        return c.request(method, url, headers=headers, **kw)


def control(standin: StandIn, method: str, path: str, **kw: Any) -> httpx.Response:
    with standin.http() as c:
        return c.request(method, standin.control + path, **kw)


def sub_scope(standin: StandIn) -> str:
    return f"/subscriptions/{standin.env['AZURE_SUBSCRIPTION_ID']}"


def vault_id(standin: StandIn, vault: str) -> str:
    return f"{sub_scope(standin)}/resourceGroups/{azure.RG}/providers/Microsoft.KeyVault/vaults/{vault}"


def assignments(standin: StandIn, scope: str, filter_: str = "atScope()") -> list[dict[str, Any]]:
    r = arm(standin, "GET", f"{scope}/providers/Microsoft.Authorization/roleAssignments?{AUTH_API}&$filter={filter_}")
    assert r.status_code == 200, r.text
    return list(r.json()["value"])


def worker_oid(standin: StandIn) -> str:
    import base64
    import json

    payload = azure.arm_token().split(".")[1]
    return str(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))["oid"])


def new_export_pipeline(standin: StandIn, name: str, identity: m.IdentityProperties | None = None) -> dict[str, Any]:
    uri = standin.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    secret = standin.topology["vaults"]["sourcevault"]["secrets"]["acrexportsas"]
    azure.arm().export_pipelines.begin_create(
        azure.RG,
        "sourceregistry",
        name,
        m.ExportPipeline(
            identity=identity or m.IdentityProperties(type="SystemAssigned"),
            target=m.ExportPipelineTargetProperties(type="AzureStorageBlobContainer", uri=uri, key_vault_uri=secret),
        ),
    ).result()
    path = f"{standin.topology['registries']['sourceregistry']['id']}/exportPipelines/{name}"
    return dict(arm(standin, "GET", f"{path}?api-version=2025-06-01-preview").json())


@pytest.fixture
def restore_worker(standin: StandIn) -> Iterator[None]:
    """Whatever a test revokes from the worker, it gets back (other tests read the vaults as the worker)."""
    yield
    control(standin, "POST", "/vaults/sourcevault/access-policies", json={"object_id": "worker", "secrets": ["all"]})
    control(
        standin,
        "POST",
        "/role-assignments",
        json={"scope": "vault:targetvault", "role": "Key Vault Secrets Officer", "principal": "worker"},
    )


# --- identities ----------------------------------------------------------------------------------------------


def test_every_pipeline_has_its_own_stable_system_identity(standin: StandIn) -> None:
    name = "ident" + uuid.uuid4().hex[:10]
    first = new_export_pipeline(standin, name)["identity"]
    again = new_export_pipeline(standin, name)["identity"]  # a re-PUT keeps the principal
    seeded = azure.arm().export_pipelines.get(azure.RG, "sourceregistry", "exportpipeline").identity
    assert first["type"] == "systemAssigned"  # the live service's casing (acr-transfer.md §2.3)
    assert first == again and uuid.UUID(first["principalId"]) and first["tenantId"] == standin.env["AZURE_TENANT_ID"]
    assert len({first["principalId"], seeded.principal_id, worker_oid(standin)}) == 3


def test_user_assigned_identities_get_principal_and_client_per_resource_id(standin: StandIn) -> None:
    base = f"{sub_scope(standin)}/resourceGroups/{azure.RG}/providers/Microsoft.ManagedIdentity/userAssignedIdentities"
    one, two = f"{base}/transferid1", f"{base}/transferid2"
    identity = m.IdentityProperties(
        type="UserAssigned", user_assigned_identities={one: m.UserIdentityProperties(), two: m.UserIdentityProperties()}
    )
    a = new_export_pipeline(standin, "uami" + uuid.uuid4().hex[:10], identity)["identity"]
    b = new_export_pipeline(standin, "uami" + uuid.uuid4().hex[:10], identity)["identity"]
    assert a["type"] == "userAssigned" and "principalId" not in a
    assert a["userAssignedIdentities"] == b["userAssignedIdentities"]  # the same identity on two pipelines
    ids = a["userAssignedIdentities"]
    assert ids[one]["principalId"] != ids[two]["principalId"] and ids[one]["clientId"] != ids[one]["principalId"]
    bad = arm(
        standin,
        "PUT",
        f"{standin.topology['registries']['sourceregistry']['id']}/exportPipelines/badidentity1?api-version=2025-06-01-preview",
        json={
            "identity": {"type": "UserAssigned"},
            "properties": {"target": {"uri": "https://x/y", "keyVaultUri": "https://v/secrets/s"}},
        },
    )
    assert bad.status_code == 400 and bad.json()["error"]["code"] == "InvalidIdentity"


# --- vaults and role assignments through ARM -------------------------------------------------------------------


def test_vaults_show_their_access_model_through_arm(standin: StandIn) -> None:
    listed = arm(standin, "GET", f"{sub_scope(standin)}/providers/Microsoft.KeyVault/vaults?{KV_API}")
    in_group = arm(
        standin, "GET", f"{sub_scope(standin)}/resourceGroups/{azure.RG}/providers/Microsoft.KeyVault/vaults?{KV_API}"
    )
    assert listed.status_code == in_group.status_code == 200
    assert (
        [v["name"] for v in listed.json()["value"]]
        == ["sourcevault", "targetvault"]
        == [v["name"] for v in in_group.json()["value"]]
    )
    source = arm(standin, "GET", f"{vault_id(standin, 'sourcevault')}?{KV_API}").json()
    props = source["properties"]
    assert source["type"] == "Microsoft.KeyVault/vaults" and source["id"] == vault_id(standin, "sourcevault")
    assert props["vaultUri"] == standin.topology["vaults"]["sourcevault"]["url"] + "/"
    assert props["tenantId"] == standin.env["AZURE_TENANT_ID"] and props["sku"] == {"family": "A", "name": "standard"}
    assert props["enableRbacAuthorization"] is False
    worker = next(p for p in props["accessPolicies"] if p["objectId"] == worker_oid(standin))
    assert {"get", "list", "set"} <= set(worker["permissions"]["secrets"])
    seeded = azure.arm().export_pipelines.get(azure.RG, "sourceregistry", "exportpipeline").identity.principal_id
    assert any(p["objectId"] == seeded and p["permissions"]["secrets"] == ["get"] for p in props["accessPolicies"])
    target = arm(standin, "GET", f"{vault_id(standin, 'targetvault')}?{KV_API}").json()["properties"]
    assert target["enableRbacAuthorization"] is True
    missing = arm(standin, "GET", f"{vault_id(standin, 'novault')}?{KV_API}")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "ResourceNotFound"


def test_role_assignments_at_the_vault_include_those_above_it(standin: StandIn) -> None:
    principal = str(uuid.uuid4())
    group = f"{sub_scope(standin)}/resourceGroups/{azure.RG}"
    made = control(
        standin,
        "POST",
        "/role-assignments",
        json={"scope": "resource_group", "role": "Key Vault Secrets User", "principal": principal},
    )
    assert made.status_code == 201, made.text
    elsewhere = control(
        standin,
        "POST",
        "/role-assignments",
        json={"scope": "vault:sourcevault", "role": SECRETS_OFFICER, "principal": principal},
    )
    assert elsewhere.status_code == 201
    at_target = assignments(standin, vault_id(standin, "targetvault"))
    mine = [a["properties"] for a in at_target if a["properties"]["principalId"] == principal]
    assert [(a["scope"], a["roleDefinitionId"].rsplit("/", 1)[1]) for a in mine] == [(group, SECRETS_USER)]
    item = next(a for a in at_target if a["properties"]["principalId"] == principal)
    assert item["type"] == "Microsoft.Authorization/roleAssignments" and item["id"].endswith(
        "/roleAssignments/" + item["name"]
    )
    everything = assignments(standin, group, f"principalId eq '{principal}'")  # at, above and below
    assert len(everything) == 2
    assert len(assignments(standin, group, f"atScope() and assignedTo('{principal}')")) == 1
    gone = control(standin, "DELETE", f"/role-assignments?principal={principal}")
    assert gone.json() == {"removed": 2} and assignments(standin, group, f"principalId eq '{principal}'") == []


def test_role_definitions_and_an_az_style_role_assignment(standin: StandIn) -> None:
    scope = vault_id(standin, "targetvault")
    found = arm(
        standin,
        "GET",
        f"{scope}/providers/Microsoft.Authorization/roleDefinitions?{AUTH_API}"
        "&$filter=roleName eq 'Key Vault Secrets User'",
    )
    [definition] = found.json()["value"]
    assert definition["name"] == SECRETS_USER
    assert definition["properties"]["permissions"][0]["dataActions"] == [
        "Microsoft.KeyVault/vaults/secrets/getSecret/action",
        "Microsoft.KeyVault/vaults/secrets/readMetadata/action",
    ]
    owner = arm(
        standin,
        "GET",
        f"{sub_scope(standin)}/providers/Microsoft.Authorization/roleDefinitions/8e3af657-a8ff-443c-a75c-2fe8c4bcb635?{AUTH_API}",
    )
    assert owner.json()["properties"]["permissions"][0]["dataActions"] == []
    principal, name = str(uuid.uuid4()), str(uuid.uuid4())
    body = {
        "properties": {
            "roleDefinitionId": definition["id"],
            "principalId": principal,
            "principalType": "ServicePrincipal",
        }
    }
    path = f"{scope}/providers/Microsoft.Authorization/roleAssignments/{name}?{AUTH_API}"
    created = arm(standin, "PUT", path, json=body)
    assert created.status_code == 201 and created.json()["properties"]["scope"] == scope
    twice = arm(
        standin,
        "PUT",
        f"{scope}/providers/Microsoft.Authorization/roleAssignments/{uuid.uuid4()}?{AUTH_API}",
        json=body,
    )
    assert twice.status_code == 409 and twice.json()["error"]["code"] == "RoleAssignmentExists"
    assert arm(standin, "GET", path).json()["properties"]["principalId"] == principal
    assert arm(standin, "DELETE", path).status_code == 200 and arm(standin, "GET", path).status_code == 404


def test_access_policies_through_arm_and_the_control_api(standin: StandIn) -> None:
    principal = str(uuid.uuid4())
    path = f"{vault_id(standin, 'sourcevault')}?{KV_API}"
    vault = arm(standin, "GET", path).json()  # az keyvault set-policy: GET the vault, PUT it back with a policy
    vault["properties"]["accessPolicies"].append(
        {"tenantId": standin.env["AZURE_TENANT_ID"], "objectId": principal, "permissions": {"secrets": ["get"]}}
    )
    assert arm(standin, "PUT", path, json=vault).status_code == 200

    def policy() -> list[str] | None:
        found = control(standin, "GET", "/vaults/sourcevault/access").json()["access_policies"]
        return next((p["permissions"]["secrets"] for p in found if p["objectId"] == principal), None)

    assert policy() == ["get"]
    add = arm(
        standin,
        "PUT",
        f"{vault_id(standin, 'sourcevault')}/accessPolicies/add?{KV_API}",
        json={"properties": {"accessPolicies": [{"objectId": principal, "permissions": {"secrets": ["list"]}}]}},
    )
    assert add.status_code == 200 and policy() == ["get", "list"]
    assert control(standin, "DELETE", f"/vaults/sourcevault/access-policies/{principal}").status_code == 204
    assert policy() is None
    granted = control(
        standin, "POST", "/vaults/sourcevault/access-policies", json={"object_id": principal, "secrets": ["get"]}
    )
    assert granted.status_code == 201 and policy() == ["get"]
    bad = control(
        standin, "POST", "/vaults/sourcevault/access-policies", json={"object_id": principal, "secrets": ["steal"]}
    )
    assert bad.status_code == 400 and "unknown secret permissions" in bad.json()["error"]


# --- Key Vault's data plane ---------------------------------------------------------------------------------


def _denied(standin: StandIn, vault: str, secret: str) -> dict[str, Any]:
    with pytest.raises(HttpResponseError) as caught:
        azure.secrets(standin, vault).get_secret(secret)
    assert caught.value.status_code == 403
    err = caught.value.response.json()["error"]
    return dict(err)


@pytest.mark.usefixtures("restore_worker")
def test_key_vault_answers_403_in_its_own_words_to_a_caller_without_access(standin: StandIn) -> None:
    oid = worker_oid(standin)
    assert control(standin, "DELETE", f"/vaults/sourcevault/access-policies/{oid}").status_code == 204
    err = _denied(standin, "sourcevault", "acrexportsas")
    assert (err["code"], err["innererror"]["code"]) == ("Forbidden", "AccessDenied")
    assert (
        f"oid={oid}" in err["message"]
        and "does not have secrets get permission on key vault 'sourcevault" in err["message"]
    )
    removed = control(standin, "DELETE", "/role-assignments?principal=worker&scope=vault:targetvault")
    assert removed.json()["removed"] == 1
    err = _denied(standin, "targetvault", "acrimportsas")
    assert (err["code"], err["innererror"]["code"]) == ("Forbidden", "ForbiddenByRbac")
    assert (
        "Microsoft.KeyVault/vaults/secrets/getSecret/action" in err["message"]
        and "DeniedWithNoValidRBAC" in err["message"]
    )
    # a role at the resource group grants it again; an access policy on an RBAC vault does not
    control(standin, "POST", "/vaults/targetvault/access-policies", json={"object_id": "worker", "secrets": ["get"]})
    _denied(standin, "targetvault", "acrimportsas")
    control(
        standin,
        "POST",
        "/role-assignments",
        json={"scope": "resource_group", "role": "Key Vault Secrets User", "principal": "worker"},
    )
    assert azure.secrets(standin, "targetvault").get_secret("acrimportsas").name == "acrimportsas"
    control(standin, "DELETE", "/role-assignments?principal=worker&scope=resource_group")
    control(standin, "DELETE", f"/vaults/targetvault/access-policies/{oid}")


def test_a_run_reads_its_secret_as_its_pipeline_and_fails_as_acr_does(standin: StandIn) -> None:
    name = "denied" + uuid.uuid4().hex[:10]
    principal = new_export_pipeline(standin, name)["identity"]["principalId"]
    assert control(standin, "DELETE", f"/vaults/sourcevault/access-policies/{principal}").status_code == 204
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    artifact = push_file_artifact(login, "vaultaccess/app", "v1", b"vault access payload").by_tag
    pid = f"{standin.topology['registries']['sourceregistry']['id']}/exportPipelines/{name}"
    run = m.PipelineRun(
        request=m.PipelineRunRequest(
            pipeline_resource_id=pid,
            artifacts=[artifact],
            target=m.PipelineRunTargetProperties(type="AzureStorageBlob", name=f"{name}.tar"),
        )
    )
    client = azure.arm()
    client.pipeline_runs.begin_create(azure.RG, "sourceregistry", "run" + name, run).polling_method()
    deadline = time.monotonic() + 30
    while True:
        got = client.pipeline_runs.get(azure.RG, "sourceregistry", "run" + name)
        if got.provisioning_state in ("Succeeded", "Failed") or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (got.provisioning_state, got.response.status) == ("Failed", "Failed")
    message = got.response.pipeline_run_error_message
    assert f"principalId {principal}" in message and "403 Forbidden (AccessDenied)" in message
    assert "does not have secrets get permission on key vault 'sourcevault" in message and "sig=" not in message
