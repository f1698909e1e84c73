"""The stand-in's ARM bodies against Microsoft's spec examples (``tests/emulator/spec/``) and the SDK's models,
and the ARM basics the official clients need: cloud metadata, subscriptions, tenants, generic resources, and
api-versions (accepted, refused, advertised)."""

from __future__ import annotations

import importlib
import json
import ssl
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from emulator.arm_meta import PIPELINE_API_VERSIONS, REGISTRY_API_VERSIONS
from tests.support import azure
from tests.support.images import push_file_artifact
from tests.support.standin import StandIn

pytestmark = pytest.mark.integration
SPEC = Path(__file__).parent / "spec"
NEWEST = "2026-09-01-preview"
SDK_API = "2025-03-01-preview"  # the api-version module acr_transfer/azure/registry.py uses


def example(name: str, status: str = "200") -> dict[str, Any]:
    doc = json.loads((SPEC / f"{name}.json").read_text())
    assert doc["parameters"]["api-version"] == NEWEST
    return dict(doc["responses"][status]["body"])


def raw(standin: StandIn, method: str, path: str, token: bool = True, **kw: Any) -> httpx.Response:
    headers = {"Authorization": f"Bearer {azure.arm_token()}"} if token else {}
    with httpx.Client(verify=ssl.create_default_context(cafile=standin.ca), timeout=30) as c:
        return c.request(method, standin.env["ACR_TRANSFER_ARM_ENDPOINT"] + path, headers=headers, **kw)


def paths(body: Any, prefix: str = "") -> set[str]:
    """Every key path in a JSON body (list items merged under ``[]``)."""
    out: set[str] = set()
    if isinstance(body, dict):
        for k, v in body.items():
            out.add(prefix + k)
            out |= paths(v, prefix + k + ".")
    elif isinstance(body, list):
        for item in body:
            out |= paths(item, prefix + "[].")
    return out


def registry_path(standin: StandIn, name: str = "sourceregistry") -> str:
    return str(standin.topology["registries"][name]["id"])


def get(standin: StandIn, path: str, api: str) -> dict[str, Any]:
    r = raw(standin, "GET", f"{path}?api-version={api}")
    assert r.status_code == 200, r.text
    return dict(r.json())


# --- the newest spec's examples ---------------------------------------------------------------------------
def test_registry_carries_every_property_of_the_newest_example(standin: StandIn) -> None:
    ours = get(standin, registry_path(standin), NEWEST)
    missing = {p for p in paths(example("RegistryGet")) if not p.startswith("tags.")} - paths(ours)  # user data
    assert not missing, f"registry GET lacks {sorted(missing)}"
    props = ours["properties"]
    assert props["loginServer"] == standin.topology["registries"]["sourceregistry"]["login_server"]
    assert props["policies"]["exportPolicy"]["status"] == "enabled"  # transfers need it
    assert props["networkRuleSet"]["defaultAction"] == "Allow" and props["publicNetworkAccess"] == "Enabled"


# The examples' pipelines were created with a location; the live service shows none when the PUT sent none
# (recording, ../shared/reference/acr-transfer.md §2.3), as the stand-in's seeded pipelines were.
NOT_SENT = {"location"}


@pytest.mark.parametrize(
    ("name", "kind", "pipeline", "skip"),
    [
        ("ExportPipelineGet", "exportPipelines", "exportpipeline", NOT_SENT),
        # the example's identity is user-assigned; the default topology's pipelines are system-assigned
        ("ImportPipelineGet", "importPipelines", "triggeredimport", {*NOT_SENT, "identity.userAssignedIdentities"}),
    ],
)
def test_pipelines_carry_every_property_of_the_newest_examples(
    standin: StandIn, name: str, kind: str, pipeline: str, skip: set[str]
) -> None:
    registry = "sourceregistry" if kind == "exportPipelines" else "targetregistry"
    ours = get(standin, f"{registry_path(standin, registry)}/{kind}/{pipeline}", NEWEST)
    wanted = {p for p in paths(example(name)) if not any(p.startswith(s) for s in skip)}
    missing = wanted - paths(ours)
    assert not missing, f"{kind} GET lacks {sorted(missing)}"


def wait_for_run(standin: StandIn, path: str) -> dict[str, Any]:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        body = get(standin, path, NEWEST)
        if body["properties"]["provisioningState"] in ("Succeeded", "Failed", "Canceled"):
            return body
        time.sleep(0.2)
    raise AssertionError(f"run {path} did not finish")


def test_runs_carry_every_property_of_the_newest_examples(standin: StandIn) -> None:
    """An export run and the import of its blob, both PUT and read at the newest api-version."""
    login = standin.topology["registries"]["sourceregistry"]["login_server"]
    suffix = uuid.uuid4().hex[:8]
    artifact = push_file_artifact(login, f"shapes/app{suffix}", "v1", suffix.encode()).by_tag
    src, dst = registry_path(standin, "sourceregistry"), registry_path(standin, "targetregistry")
    blob = f"shapes{suffix}.tar"
    export_path = f"{src}/pipelineRuns/xshapes{suffix}"
    body: dict[str, Any] = {
        "properties": {
            "request": {
                "pipelineResourceId": f"{src}/exportPipelines/exportpipeline",
                "artifacts": [artifact],
                "target": {"type": "AzureStorageBlob", "name": blob},
            }
        }
    }
    r = raw(standin, "PUT", f"{export_path}?api-version={NEWEST}", json=body)
    assert r.status_code == 201, r.text
    assert NEWEST in r.headers["api-supported-versions"].split(", ")
    exported = wait_for_run(standin, export_path)
    assert exported["properties"]["provisioningState"] == "Succeeded", exported
    assert not paths(example("PipelineRunGet")) - paths(exported)

    import_path = f"{dst}/pipelineRuns/ishapes{suffix}"
    digest = exported["properties"]["response"]["catalogDigest"]
    body = {
        "properties": {
            "request": {
                "pipelineResourceId": f"{dst}/importPipelines/directimport",
                "source": {"type": "AzureStorageBlob", "name": blob},
                "catalogDigest": digest,
            },
            "forceUpdateTag": "first",
        }
    }
    assert raw(standin, "PUT", f"{import_path}?api-version={NEWEST}", json=body).status_code == 201
    imported = wait_for_run(standin, import_path)
    assert imported["properties"]["provisioningState"] == "Succeeded", imported
    assert not paths(example("PipelineRunCreate_Import", "201")) - paths(imported)
    assert imported["properties"]["response"]["importedArtifacts"] == [artifact]


# --- the SDK's models ---------------------------------------------------------------------------------------
def model_paths(model_cls: Any, models: Any, prefix: str = "", depth: int = 0) -> set[str]:
    """Every key path an msrest model knows (flattened ``properties.x`` keys split, nested models followed)."""
    out: set[str] = set()
    for attr in model_cls._attribute_map.values():
        key = attr["key"].replace("\\.", "\x00")
        parts = [p.replace("\x00", ".") for p in key.split(".")]
        for i in range(1, len(parts) + 1):
            out.add(prefix + ".".join(parts[:i]))
        full = prefix + ".".join(parts)
        kind = attr["type"].strip("[]{}")
        nested = getattr(models, kind, None)
        if nested is not None and hasattr(nested, "_attribute_map") and depth < 6:
            sep = ".[]." if attr["type"].startswith("[") else "."
            out |= model_paths(nested, models, full + sep, depth + 1)
    return out


def non_null_paths(body: Any, prefix: str = "") -> set[str]:
    out: set[str] = set()
    if isinstance(body, dict):
        for k, v in body.items():
            if v is None:
                continue
            out.add(prefix + k)
            out |= non_null_paths(v, prefix + k + ".")
    elif isinstance(body, list):
        for item in body:
            out |= non_null_paths(item, prefix + "[].")
    return out


def sdk_versions_with(model: str) -> list[str]:
    import azure.mgmt.containerregistry as pkg

    found = []
    for entry in sorted(Path(pkg.__file__).parent.iterdir()):
        if entry.name.startswith("v") and (entry / "models").exists():
            models = importlib.import_module(f"azure.mgmt.containerregistry.{entry.name}.models")
            if hasattr(models, model):
                found.append(entry.name)
    return found


def api_of(module: str) -> str:
    parts = module[1:].split("_")
    return "-".join(parts[:3]) + ("-" + parts[3] if len(parts) > 3 else "")


# Properties the SDK's model knows and a registry like these leaves out on Azure too
REGISTRY_ABSENT_ON_AZURE = {
    "properties.storageAccount",  # Classic SKU only
    "properties.encryption.keyVaultProperties",  # customer-managed keys only
    "identity",  # a registry without a managed identity
    "properties.privateEndpointConnections.[]",  # none
    "properties.networkRuleSet.ipRules.[]",
    "properties.networkRuleSet.virtualNetworkRules.[]",
    "properties.status",
}


@pytest.mark.parametrize("module", sdk_versions_with("Registry"))
def test_sdk_registry_models_read_every_property_and_miss_none(standin: StandIn, module: str) -> None:
    """At every api-version the installed SDK ships, the registry body has no property that version's model
    drops (unknown) and none it expects missing, save those Azure also leaves out for such a registry."""
    models = importlib.import_module(f"azure.mgmt.containerregistry.{module}.models")
    api = api_of(module)
    body = get(standin, registry_path(standin), api)
    roundtrip = models.Registry.deserialize(body).serialize(keep_readonly=True)
    unknown = non_null_paths(body) - non_null_paths(roundtrip)
    assert not unknown, f"{api}: the SDK model drops {sorted(unknown)}"
    known = model_paths(models.Registry, models)
    missing = {p for p in known - paths(body) if not any(p.startswith(a) for a in REGISTRY_ABSENT_ON_AZURE)}
    assert not missing, f"{api}: the body lacks {sorted(missing)}"


def test_sdk_pipeline_and_run_models_of_the_products_api_version(standin: StandIn) -> None:
    """The pipelines and a finished run, read at the api-version the product uses, round-trip through its models
    with nothing dropped."""
    models = importlib.import_module(f"azure.mgmt.containerregistry.v{SDK_API.replace('-', '_')}.models")
    src, dst = registry_path(standin, "sourceregistry"), registry_path(standin, "targetregistry")
    bodies = [
        (models.ExportPipeline, get(standin, f"{src}/exportPipelines/exportpipeline", SDK_API)),
        (models.ImportPipeline, get(standin, f"{dst}/importPipelines/triggeredimport", SDK_API)),
    ]
    runs = get(standin, f"{src}/pipelineRuns", SDK_API)["value"]
    bodies += [(models.PipelineRun, run) for run in runs[:3]]
    for model, body in bodies:
        roundtrip = model.deserialize(body).serialize(keep_readonly=True)
        unknown = non_null_paths(body) - non_null_paths(roundtrip)
        assert not unknown, f"{model.__name__} drops {sorted(unknown)}"


# --- ARM basics ---------------------------------------------------------------------------------------------
def test_cloud_metadata_is_anonymous_and_names_arm(standin: StandIn) -> None:
    r = raw(standin, "GET", "/metadata/endpoints?api-version=2022-09-01", token=False)
    assert r.status_code == 200, r.text
    cloud = r.json()
    assert cloud["resourceManager"].rstrip("/") == standin.env["ACR_TRANSFER_ARM_ENDPOINT"]
    assert cloud["authentication"]["loginEndpoint"] and cloud["authentication"]["audiences"]
    assert {"name", "suffixes"} <= set(cloud)
    assert raw(standin, "GET", f"{registry_path(standin)}?api-version={NEWEST}", token=False).status_code == 401


def test_subscriptions_tenants_and_generic_resources(standin: StandIn) -> None:
    sub = standin.env["AZURE_SUBSCRIPTION_ID"]
    listed = get(standin, "/subscriptions", "2022-12-01")["value"]
    assert [s["subscriptionId"] for s in listed] == [sub] and listed[0]["state"] == "Enabled"
    assert get(standin, f"/subscriptions/{sub}", "2022-12-01")["tenantId"] == standin.topology["tenant_id"]
    assert get(standin, "/tenants", "2022-12-01")["value"][0]["tenantId"] == standin.topology["tenant_id"]
    other = raw(standin, "GET", f"/subscriptions/{uuid.uuid4()}?api-version=2022-12-01")
    assert other.status_code == 404 and other.json()["error"]["code"] == "SubscriptionNotFound"

    flt = "resourceType eq 'Microsoft.ContainerRegistry/registries'"
    r = raw(standin, "GET", f"/subscriptions/{sub}/resources", params={"$filter": flt, "api-version": "2024-11-01"})
    assert r.status_code == 200, r.text
    names = sorted(x["name"] for x in r.json()["value"])
    assert names == sorted(standin.topology["registries"])
    flt += " and name eq 'SOURCEregistry'"
    r = raw(standin, "GET", f"/subscriptions/{sub}/resources", params={"$filter": flt, "api-version": "2024-11-01"})
    assert [x["id"] for x in r.json()["value"]] == [registry_path(standin)]
    r = raw(
        standin,
        "GET",
        f"/subscriptions/{sub}/resources",
        params={"$filter": "tagName eq 'x'", "api-version": "2024-11-01"},
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "InvalidFilterInQueryString"

    listed = get(standin, f"/subscriptions/{sub}/providers/Microsoft.ContainerRegistry/registries", NEWEST)
    assert sorted(x["name"] for x in listed["value"]) == sorted(standin.topology["registries"])


def test_every_published_api_version_is_served_and_advertised(standin: StandIn) -> None:
    reg = registry_path(standin)
    for api in REGISTRY_API_VERSIONS:
        r = raw(standin, "GET", f"{reg}?api-version={api}")
        assert r.status_code == 200, (api, r.text)
        assert api in r.headers["api-supported-versions"].split(", ")
    for api in PIPELINE_API_VERSIONS:
        r = raw(standin, "GET", f"{reg}/exportPipelines?api-version={api}")
        assert r.status_code == 200, (api, r.text)
        assert r.headers["api-supported-versions"].split(", ") == list(PIPELINE_API_VERSIONS)
    # registries-only versions have no pipelines; an unpublished one is refused as ARM refuses it
    for api in ("2025-11-01", "2026-01-01-preview", "2099-01-01-preview"):
        r = raw(standin, "GET", f"{reg}/exportPipelines?api-version={api}")
        assert r.status_code == 400 and r.json()["error"]["code"] == "NoRegisteredProviderFound", r.text
        assert "registries/exportPipelines" in r.json()["error"]["message"]
    older = get(standin, reg, "2019-05-01")["properties"]
    assert "anonymousPullEnabled" not in older and "exportPolicy" not in older["policies"]


def test_source_trigger_status_is_required_when_a_source_trigger_is_given(standin: StandIn) -> None:
    container = standin.topology["storage_accounts"]["targetstorage"]["containers"]["triggered"]
    path = f"{registry_path(standin, 'targetregistry')}/importPipelines/shapesimport"
    body: dict[str, Any] = {
        "identity": {"type": "SystemAssigned"},
        "location": "westeurope",
        "properties": {
            "source": {
                "type": "AzureStorageBlobContainer",
                "uri": container,
                "keyVaultUri": standin.topology["vaults"]["targetvault"]["url"] + "/secrets/acrtriggersas",
            },
            "trigger": {"sourceTrigger": {}},
        },
    }
    r = raw(standin, "PUT", f"{path}?api-version={NEWEST}", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"] == {
        "code": "InvalidParameter",
        "message": r.json()["error"]["message"],
        "target": "properties.trigger.sourceTrigger.status",
    }
    assert "status" in r.json()["error"]["message"]
    assert raw(standin, "GET", f"{path}?api-version={NEWEST}").status_code == 404
    body["properties"]["trigger"] = {"sourceTrigger": {"status": "Disabled"}}
    r = raw(standin, "PUT", f"{path}?api-version={NEWEST}", json=body)
    assert r.status_code == 200, r.text
    assert r.json()["properties"]["trigger"]["sourceTrigger"]["status"] == "Disabled"
    assert r.json()["location"] == "westeurope"  # sent, so shown
    spec = {p for p in paths(example("ImportPipelineGet")) if not p.startswith("identity.userAssignedIdentities")}
    assert not spec - paths(r.json())
    assert raw(standin, "DELETE", f"{path}?api-version={NEWEST}").status_code == 200
