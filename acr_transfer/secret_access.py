"""May a pipeline's identity get its Key Vault secret? Decided over what ARM said about the vault (pure).

The rules (../shared/reference/oci-sync-and-identity.md §5.2–5.4):

- a vault with access policies grants a principal secret get when its policy's secret permissions hold
  ``get`` (or ``all``); role assignments are ignored there;
- an RBAC vault (``enableRbacAuthorization``) grants it when a role assigned to the principal at the secret,
  the vault, its resource group, the subscription (or above) carries the data action
  ``Microsoft.KeyVault/vaults/secrets/getSecret/action`` (wildcards such as ``…/secrets/*`` included,
  ``notDataActions`` taken out): Key Vault Secrets User, Secrets Officer, Administrator, or a custom role.
  Owner and Contributor carry no data actions, so they do not; access policies are ignored there.

The fix is the ``az`` command that grants what is missing, in the form §5.4 verified.
"""

from __future__ import annotations

from fnmatch import fnmatchcase

from acr_transfer.azure.vault_access import RoleGrant, VaultAccessFacts

GET_SECRET = "Microsoft.KeyVault/vaults/secrets/getSecret/action"


def covers(scope: str, target: str) -> bool:
    """Whether an assignment at ``scope`` applies to ``target`` (the same resource or one below it)."""
    s, t = scope.rstrip("/").lower(), target.rstrip("/").lower()
    return s in ("", t) or t.startswith(s + "/")


def carries(grant: RoleGrant, action: str = GET_SECRET) -> bool:
    """Whether the role's data actions include ``action`` and its not-data-actions do not take it out."""
    act = action.lower()
    allowed = any(fnmatchcase(act, p.lower()) for p in grant.data_actions)
    return allowed and not any(fnmatchcase(act, p.lower()) for p in grant.not_data_actions)


def where(facts: VaultAccessFacts, scope: str) -> str:
    """An assignment's scope in words: the vault, the secret, its resource group, the subscription."""
    s = scope.rstrip("/").lower()
    vault = facts.id.lower()
    if s == vault:
        return f"vault {facts.name}"
    if s.startswith(vault + "/"):
        return f"secret {scope.rsplit('/', 1)[-1]}"
    parts = scope.strip("/").split("/")
    if len(parts) == 4 and parts[2].lower() == "resourcegroups":
        return f"resource group {parts[3]}"
    if len(parts) == 2 and parts[0].lower() == "subscriptions":
        return f"subscription {parts[1]}"
    return scope or "the root scope"


def grant_for(facts: VaultAccessFacts, principal: str, secret: str) -> str | None:
    """How ``principal`` may get ``secret`` in the vault (in words), or None when nothing grants it."""
    oid = principal.lower()
    if not facts.rbac:
        for policy in facts.policies:
            if policy.object_id == oid and {"get", "all"} & set(policy.secrets):
                return "an access policy with secret get"
        return None
    target = f"{facts.id}/secrets/{secret}"
    for grant in facts.grants.get(oid, ()):
        if covers(grant.scope, target) and carries(grant):
            return f"role '{grant.role_name or grant.role_id}' at {where(facts, grant.scope)}"
    return None


def why_not(facts: VaultAccessFacts) -> str:
    """What the vault's model looked at, for a denied principal."""
    if not facts.rbac:
        return "uses access policies, and none gives it secret get (role assignments do not count there)"
    return (
        "uses Azure RBAC, and no role assigned to it at the secret, the vault, resource group "
        f"{facts.resource_group} or the subscription carries {GET_SECRET} (access policies do not count there)"
    )


def fix_for(facts: VaultAccessFacts, principal: str) -> str:
    """The ``az`` command that grants ``principal`` secret get on this vault."""
    if not facts.rbac:
        return f"az keyvault set-policy -n {facts.name} --object-id {principal} --secret-permissions get"
    return (
        f'az role assignment create --role "Key Vault Secrets User" --assignee-object-id {principal} '
        f"--assignee-principal-type ServicePrincipal --scope {facts.id}"
    )
