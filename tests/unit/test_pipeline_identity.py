"""Preflight of a pipeline's own identity over a fake of ARM's vault facts: an access policy or a role that
carries secret get passes, anything else fails naming the principal, the vault and the az command that fixes
it, and a vault this worker cannot read is "not checked"."""

from __future__ import annotations

import dataclasses

import pytest

from acr_transfer import preflight
from acr_transfer.azure.vault_access import AccessPolicy, RoleGrant, VaultAccessFacts
from acr_transfer.context import TransferContext
from acr_transfer.errors import AuthError, ServiceUnavailableError
from acr_transfer.secret_access import carries, covers
from tests.unit.fakes import EXPORT_SECRET, IMPORT_SECRET, SUB, FakeAzure, FakeVaultAccess, make_ctx

PRINCIPAL = "11111111-2222-4333-8444-555555555555"
UAMI = "99999999-8888-4777-8666-555555555555"
VAULT_URL = "https://sourcevault.vault.azure.net"
RG_SCOPE = f"/subscriptions/{SUB}/resourceGroups/transfer-rg"
VAULT_ID = f"{RG_SCOPE}/providers/Microsoft.KeyVault/vaults/sourcevault"
GET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"
META = "Microsoft.KeyVault/vaults/secrets/readMetadata/action"


def policy_vault(*policies: AccessPolicy) -> VaultAccessFacts:
    return VaultAccessFacts(VAULT_ID, "sourcevault", VAULT_URL + "/", rbac=False, policies=policies)


def rbac_vault(
    *grants: RoleGrant, principal: str = PRINCIPAL, policies: tuple[AccessPolicy, ...] = ()
) -> VaultAccessFacts:
    return VaultAccessFacts(VAULT_ID, "sourcevault", VAULT_URL + "/", True, policies, {principal: grants})


def role(name: str, scope: str, *data: str, not_data: tuple[str, ...] = ()) -> RoleGrant:
    return RoleGrant(scope, "guid-" + name.replace(" ", ""), name, tuple(data), not_data)


def with_principals(ctx: TransferContext, *principals: str) -> TransferContext:
    return ctx.with_pipelines(dataclasses.replace(ctx.export, principals=principals), ctx.imp)


def identity_check(facts: VaultAccessFacts | Exception, principals: tuple[str, ...] = (PRINCIPAL,)) -> preflight.Check:
    ctx = with_principals(make_ctx(), *principals)
    access = FakeVaultAccess({VAULT_URL: facts})
    check = preflight.check_pipeline_identity(ctx.export, ctx.source.subscription, access)
    assert access.asked in ([], [(SUB, EXPORT_SECRET, principals)])
    return check


# --- access policies ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("secrets", [("get",), ("list", "get"), ("all",)])
def test_an_access_policy_with_secret_get_passes(secrets: tuple[str, ...]) -> None:
    check = identity_check(policy_vault(AccessPolicy(PRINCIPAL, secrets)))
    assert check.ok, check.line
    assert check.line == (
        f"✓ identity of export pipeline 'exportpipeline': principal {PRINCIPAL} may get secret 'acrexportsas' in vault "
        "sourcevault (an access policy with secret get)"
    )


@pytest.mark.parametrize(
    "policies",
    [
        pytest.param((), id="no-policy"),
        pytest.param((AccessPolicy(PRINCIPAL, ("list",)),), id="list-only"),
        pytest.param((AccessPolicy("someone-else", ("get",)),), id="another-principal"),
    ],
)
def test_a_policy_vault_without_get_fails_with_set_policy(policies: tuple[AccessPolicy, ...]) -> None:
    check = identity_check(policy_vault(*policies))
    assert not check.ok
    assert PRINCIPAL in check.detail and "vault sourcevault" in check.detail and "access policies" in check.detail
    assert check.fix == f"az keyvault set-policy -n sourcevault --object-id {PRINCIPAL} --secret-permissions get"


def test_a_role_on_a_policy_vault_does_not_count() -> None:
    facts = VaultAccessFacts(
        VAULT_ID, "sourcevault", VAULT_URL, False, (), {PRINCIPAL: (role("Key Vault Secrets User", VAULT_ID, GET),)}
    )
    check = identity_check(facts)
    assert not check.ok and "role assignments do not count there" in check.detail


# --- Azure RBAC ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("grant", "where"),
    [
        pytest.param(role("Key Vault Secrets User", VAULT_ID, GET, META), "vault sourcevault", id="user-at-vault"),
        pytest.param(
            role("Key Vault Secrets Officer", RG_SCOPE, "Microsoft.KeyVault/vaults/secrets/*"),
            "resource group transfer-rg",
            id="officer-at-group",
        ),
        pytest.param(
            role("Key Vault Administrator", f"/subscriptions/{SUB}", "Microsoft.KeyVault/vaults/*"),
            f"subscription {SUB}",
            id="admin-at-subscription",
        ),
        pytest.param(
            role("secret reader", f"{VAULT_ID}/secrets/acrexportsas", GET),
            "secret acrexportsas",
            id="custom-at-the-secret",
        ),
    ],
)
def test_a_role_carrying_get_secret_at_or_above_the_vault_passes(grant: RoleGrant, where: str) -> None:
    check = identity_check(rbac_vault(grant))
    assert check.ok, check.line
    assert check.detail.endswith(f"(role '{grant.role_name}' at {where})")


@pytest.mark.parametrize(
    "grant",
    [
        pytest.param(role("Owner", RG_SCOPE), id="owner-has-no-data-actions"),
        pytest.param(role("Contributor", VAULT_ID), id="contributor-has-no-data-actions"),
        pytest.param(role("Key Vault Reader", VAULT_ID, META), id="metadata-only"),
        pytest.param(
            role("Key Vault Secrets User", f"{RG_SCOPE}/providers/Microsoft.KeyVault/vaults/othervault", GET),
            id="another-vault",
        ),
        pytest.param(role("Key Vault Secrets User", f"{VAULT_ID}/secrets/another", GET), id="another-secret"),
        pytest.param(
            role("careful", VAULT_ID, "Microsoft.KeyVault/vaults/secrets/*", not_data=(GET,)), id="not-data-action"
        ),
    ],
)
def test_a_role_that_does_not_carry_get_secret_here_fails_with_role_assignment(grant: RoleGrant) -> None:
    check = identity_check(rbac_vault(grant))
    assert not check.ok, check.line
    assert PRINCIPAL in check.detail and "Azure RBAC" in check.detail
    assert check.fix == (
        f'az role assignment create --role "Key Vault Secrets User" --assignee-object-id {PRINCIPAL} '
        f"--assignee-principal-type ServicePrincipal --scope {VAULT_ID}"
    )


def test_an_access_policy_on_an_rbac_vault_does_not_count() -> None:
    check = identity_check(rbac_vault(policies=(AccessPolicy(PRINCIPAL, ("get",)),)))
    assert not check.ok and "access policies do not count there" in check.detail


def test_any_of_the_pipelines_identities_may_hold_the_grant() -> None:
    facts = rbac_vault(role("Key Vault Secrets User", VAULT_ID, GET), principal=UAMI)
    check = identity_check(facts, (PRINCIPAL, UAMI))
    assert check.ok and UAMI in check.detail


def test_a_pipeline_without_identity_fails() -> None:
    check = identity_check(policy_vault(), ())
    assert not check.ok and "has no managed identity" in check.detail


# --- what this worker cannot read -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(AuthError("list the key vaults of subscription: 403 AuthorizationFailed: no read"), id="403"),
        pytest.param(None, id="vault-not-visible"),
    ],
)
def test_a_vault_this_worker_cannot_read_is_not_checked(error: Exception | None) -> None:
    ctx = with_principals(make_ctx(), PRINCIPAL)
    access = FakeVaultAccess({VAULT_URL: error} if error else {})
    check = preflight.check_pipeline_identity(ctx.export, SUB, access)
    assert check.ok and check.detail.startswith("not checked: this identity cannot read the vault's access model (")


def test_a_transient_error_propagates_for_a_retry() -> None:
    with pytest.raises(ServiceUnavailableError):
        identity_check(ServiceUnavailableError("503"))


# --- in the sides ------------------------------------------------------------------------------------------------


def test_each_side_checks_its_pipeline_identity_before_the_secret() -> None:
    ctx = make_ctx()
    ctx = ctx.with_pipelines(
        dataclasses.replace(ctx.export, principals=(PRINCIPAL,)), dataclasses.replace(ctx.imp, principals=(UAMI,))
    )
    azure = FakeAzure.for_ctx(ctx)
    access = FakeVaultAccess(
        {
            VAULT_URL: policy_vault(AccessPolicy(PRINCIPAL, ("get",))),
            "https://targetvault.vault.azure.net": policy_vault(),
        }
    )
    export = preflight.check_export_side(ctx, azure.secrets, azure.blobs, set(), access)
    imp = preflight.check_import_side(ctx, azure.secrets, azure.blobs, access)
    assert export[0].name == "identity of export pipeline 'exportpipeline'" and export[0].ok
    assert imp[0].name == "identity of import pipeline 'importpipeline'" and not imp[0].ok and UAMI in imp[0].detail
    assert [c.ok for c in export[1:] + imp[1:]] == [True] * (len(export) + len(imp) - 2)  # the SAS checks still run
    assert [a[1] for a in access.asked] == [EXPORT_SECRET, IMPORT_SECRET]


def test_managed_identity_mode_has_no_identity_check() -> None:
    ctx = make_ctx(export_mode="ManagedIdentity", export_secret=None)
    azure = FakeAzure.for_ctx(ctx)
    access = FakeVaultAccess()
    checks = preflight.check_export_side(ctx, azure.secrets, azure.blobs, set(), access)
    assert access.asked == [] and all(not c.name.startswith("identity of") for c in checks)


def test_scope_and_action_rules() -> None:
    assert covers("/subscriptions/S", "/subscriptions/s/resourceGroups/x") and covers("", "/anything")
    assert not covers("/subscriptions/S/resourceGroups/x", "/subscriptions/S/resourceGroups/xy")
    assert carries(role("any", "", "*")) and carries(role("kv", "", "microsoft.keyvault/vaults/*"))
    assert not carries(role("keys", "", "Microsoft.KeyVault/vaults/keys/*"))
