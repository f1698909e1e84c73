"""Resolving a transfer: registries addressed only in allowed subscriptions, the plan, and the facts each step
asks of the context (which sides exist, whether the blob must be bridged)."""

from __future__ import annotations

import pytest

from acr_transfer.azure.registry import RegistryAddress
from acr_transfer.context import address, resolve
from acr_transfer.errors import ConfigError
from acr_transfer.models import RegistryRef, TransferRequest
from tests.unit.fakes import (
    EXPORT_CONTAINER,
    IMPORT_CONTAINER,
    OTHER_SUB,
    RG,
    SUB,
    TID,
    make_ctx,
    make_route,
)

REF = RegistryRef(resource_group=RG, name="sourceregistry")
ARM_ID = f"/subscriptions/{SUB}/resourceGroups/{RG}/providers/Microsoft.ContainerRegistry/registries/sourceregistry"

# --- address ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "default", "allowed"),
    [
        pytest.param(RegistryRef(subscription_id=SUB, resource_group=RG, name="sourceregistry"), None, [SUB], id="own"),
        pytest.param(REF, SUB, [SUB], id="default-subscription"),
        pytest.param(RegistryRef(resource_id=ARM_ID), None, [OTHER_SUB, SUB], id="by-resource-id"),
    ],
)
def test_address_in_an_allowed_subscription(ref: RegistryRef, default: str | None, allowed: list[str]) -> None:
    registry = address(ref, default, allowed)
    assert registry == RegistryAddress(SUB, RG, "sourceregistry")
    assert registry.id == ARM_ID


@pytest.mark.parametrize(
    ("subscription", "allowed"),
    [
        ("abcdef00-0000-0000-0000-00000000000a", "ABCDEF00-0000-0000-0000-00000000000A"),
        ("ABCDEF00-0000-0000-0000-00000000000A", "abcdef00-0000-0000-0000-00000000000a"),
    ],
    ids=["allowed-upper-case", "registry-upper-case"],
)
def test_address_compares_subscriptions_without_case(subscription: str, allowed: str) -> None:
    ref = RegistryRef(subscription_id=subscription, resource_group=RG, name="sourceregistry")
    assert address(ref, None, [allowed]) == RegistryAddress(subscription, RG, "sourceregistry")


@pytest.mark.parametrize(
    ("ref", "default", "allowed", "says"),
    [
        pytest.param(
            REF,
            SUB,
            [OTHER_SUB],
            f"registry 'sourceregistry' is in subscription {SUB}, which this deployment may not reach (allowed: "
            f"{OTHER_SUB}); add it to ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS",
            id="not-allowed",
        ),
        pytest.param(REF, SUB, [], "(allowed: none: AZURE_SUBSCRIPTION_ID is not set either)", id="nothing-allowed"),
        pytest.param(
            REF,
            None,
            [SUB],
            "registry 'sourceregistry' has no subscription_id and AZURE_SUBSCRIPTION_ID is not set",
            id="no-subscription",
        ),
        pytest.param(REF, "not-a-guid", [SUB], "subscription 'not-a-guid' is not a subscription id", id="bad-default"),
    ],
)
def test_address_refuses(ref: RegistryRef, default: str | None, allowed: list[str], says: str) -> None:
    with pytest.raises(ConfigError) as info:
        address(ref, default, allowed)
    assert says in info.value.message


# --- resolve ------------------------------------------------------------------------------------------------------


def test_resolve_plans_batches_and_addresses_both_registries() -> None:
    ctx = make_ctx(artifacts=["a", "b:v1", "a:latest", "c:v1"], batch_size=2, pipelines=False)
    assert (ctx.transfer_id, ctx.plan.artifacts) == (TID, ["a:latest", "b:v1", "c:v1"])
    assert [(b.index, b.artifacts, b.blob_name) for b in ctx.plan.batches] == [
        (1, ["a:latest", "b:v1"], f"demo/{TID}/batch001.tar"),
        (2, ["c:v1"], f"demo/{TID}/batch002.tar"),
    ]
    assert ctx.registries() == [
        (RegistryAddress(SUB, RG, "sourceregistry"), "source-registry"),
        (RegistryAddress(SUB, RG, "targetregistry"), "target-registry"),
    ]
    assert ctx.timeout_seconds == 3600


def test_resolve_takes_the_requests_artifacts_over_the_routes() -> None:
    request = TransferRequest(route=make_route(artifacts=["route/only:v1"]), artifacts=["asked/for:v2"])
    ctx = resolve(request, TID, None, allowed_subscriptions=[SUB])
    assert ctx.plan.artifacts == ["asked/for:v2"]


def test_resolve_names_the_route_and_the_variable_for_a_subscription_not_allowed() -> None:
    request = TransferRequest(route=make_route(target_subscription=OTHER_SUB))
    with pytest.raises(ConfigError) as info:
        resolve(request, TID, None, allowed_subscriptions=[SUB])
    message = info.value.message
    assert message.startswith(f"route 'demo': registry 'targetregistry' is in subscription {OTHER_SUB}")
    assert "ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS" in message


def test_resolve_import_only_route_plans_without_artifacts() -> None:
    request = TransferRequest(route=make_route(source=False, artifacts=[]))
    ctx = resolve(request, TID, None, allowed_subscriptions=[SUB])
    assert (ctx.has_source, ctx.has_target) == (False, True)
    assert ctx.plan.artifacts == ["import-only:latest"]
    assert len(ctx.plan.batches) == 1


def test_resolve_export_route_without_artifacts_is_refused() -> None:
    request = TransferRequest(route=make_route(target=False, artifacts=[]))
    with pytest.raises(ConfigError, match="no artifacts to transfer"):
        resolve(request, TID, None, allowed_subscriptions=[SUB])


@pytest.mark.parametrize(("count", "refused"), [(3, False), (4, True)], ids=["at-the-limit", "over-the-limit"])
def test_resolve_too_many_artifacts(count: int, refused: bool) -> None:
    request = TransferRequest(route=make_route(artifacts=[f"app:v{i}" for i in range(count)]))
    if not refused:
        assert len(resolve(request, TID, None, allowed_subscriptions=[SUB], max_artifacts=3).plan.artifacts) == 3
        return
    with pytest.raises(ConfigError) as info:
        resolve(request, TID, None, allowed_subscriptions=[SUB], max_artifacts=3)
    assert info.value.message.startswith("4 artifacts are more than one transfer takes (3, 1 runs of 50)")
    assert "ACR_TRANSFER_MAX_ARTIFACTS" in info.value.message


@pytest.mark.parametrize("tid", ["abc", "ABC123DEF", "abc-123-def"])
def test_resolve_refuses_a_bad_transfer_id(tid: str) -> None:
    with pytest.raises(ConfigError, match=f"transfer id '{tid}' must be 6-20 lowercase letters or digits"):
        resolve(TransferRequest(route=make_route()), tid, None, allowed_subscriptions=[SUB])


# --- the context's facts ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("import_container", "bridged"),
    [
        pytest.param(None, False, id="same-container"),
        pytest.param(EXPORT_CONTAINER + "/", False, id="trailing-slash"),
        pytest.param(EXPORT_CONTAINER.upper(), False, id="other-case"),
        pytest.param(IMPORT_CONTAINER, True, id="other-container"),
        pytest.param(EXPORT_CONTAINER + "2", True, id="other-container-same-account"),
    ],
)
def test_bridged_when_the_containers_differ(import_container: str | None, bridged: bool) -> None:
    assert make_ctx(import_container=import_container).bridged is bridged


def test_not_bridged_before_the_pipelines_are_known() -> None:
    assert make_ctx(import_container=IMPORT_CONTAINER, pipelines=False).bridged is False


@pytest.mark.parametrize(
    ("source", "target", "missing", "says"),
    [
        pytest.param(False, True, "source", "route 'demo' has no source; it can only import", id="import-only"),
        pytest.param(True, False, "target", "route 'demo' has no target; it can only export", id="export-only"),
    ],
)
def test_a_half_route_has_one_side(source: bool, target: bool, missing: str, says: str) -> None:
    ctx = make_ctx(source=source, target=target)
    assert (ctx.has_source, ctx.has_target) == (source, target)
    with pytest.raises(ConfigError) as info:
        getattr(ctx, missing)
    assert info.value.message == says
    present = ctx.target if missing == "source" else ctx.source
    assert ctx.registries() == [(present, "target-registry" if missing == "source" else "source-registry")]
    assert ctx.bridged is False


@pytest.mark.parametrize("side", ["export", "imp"])
def test_pipelines_are_known_only_after_preflight(side: str) -> None:
    with pytest.raises(RuntimeError, match="known only after preflight"):
        getattr(make_ctx(pipelines=False), side)
