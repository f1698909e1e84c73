"""Everything a transfer resolves before it acts: registries, pipelines, the plan and the deadline."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, replace

from acr_transfer.azure.registry import PipelineFacts, RegistryAddress
from acr_transfer.errors import ConfigError
from acr_transfer.models import RegistryRef, TransferRequest, TransferRoute
from acr_transfer.naming import MAX_ARTIFACTS, TransferPlan, plan_transfer
from acr_transfer.settings import get_settings
from acr_transfer.sync import SyncPlan


@dataclass(frozen=True)
class TransferContext:
    """One transfer's resolved facts, passed from step to step (no secrets inside).

    Each fact has one name: ``source``/``target`` (the registries) and ``export``/``imp`` (the pipelines, known
    after preflight) raise when the route lacks that side; ``has_source``/``has_target`` ask first.
    """

    route: TransferRoute
    transfer_id: str
    plan: TransferPlan
    _source: RegistryAddress | None
    _target: RegistryAddress | None
    _export: PipelineFacts | None = None
    _import: PipelineFacts | None = None
    sync: SyncPlan | None = None  # a select: route's plan, once made (tasks/sync.py)

    @property
    def has_source(self) -> bool:
        return self._source is not None

    @property
    def has_target(self) -> bool:
        return self._target is not None

    @property
    def source(self) -> RegistryAddress:
        if self._source is None:
            raise ConfigError(f"route '{self.route.name}' has no source; it can only import")
        return self._source

    @property
    def target(self) -> RegistryAddress:
        if self._target is None:
            raise ConfigError(f"route '{self.route.name}' has no target; it can only export")
        return self._target

    @property
    def export(self) -> PipelineFacts:
        if self._export is None:
            raise RuntimeError("the export pipeline is known only after preflight")
        return self._export

    @property
    def imp(self) -> PipelineFacts:
        if self._import is None:
            raise RuntimeError("the import pipeline is known only after preflight")
        return self._import

    def registries(self) -> list[tuple[RegistryAddress, str]]:
        """The registries this transfer touches, with their role (``source-registry``, ``target-registry``)."""
        pairs = ((self._source, "source-registry"), (self._target, "target-registry"))
        return [(registry, role) for registry, role in pairs if registry is not None]

    @property
    def timeout_seconds(self) -> float:
        return self.route.timeout_minutes * 60

    @property
    def bridged(self) -> bool:
        """The blob must be copied: the export writes where the import does not read."""
        exp, imp = self._export, self._import
        if exp is None or imp is None:
            return False
        return exp.container_uri.rstrip("/").lower() != imp.container_uri.rstrip("/").lower()

    def with_pipelines(self, export: PipelineFacts | None, import_: PipelineFacts | None) -> TransferContext:
        return replace(self, _export=export, _import=import_)


def address(
    ref: RegistryRef, default_subscription: str | None, allowed_subscriptions: Collection[str]
) -> RegistryAddress:
    """Where a registry is, once its subscription is known to be one this deployment may reach.

    Args:
        ref: the registry as a route names it.
        default_subscription: for a registry named without one (``AZURE_SUBSCRIPTION_ID``).
        allowed_subscriptions: subscriptions it may be in (``Settings.permitted_subscriptions()``, which falls
            back to the default subscription).

    Raises:
        ConfigError: no subscription, or one not allowed; the message names the registry, the subscription and
            ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS.
    """
    try:
        subscription, resource_group, name = ref.parts(default_subscription)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    allowed = {s.lower() for s in allowed_subscriptions}
    if subscription.lower() not in allowed:
        listed = ", ".join(sorted(allowed)) or "none: AZURE_SUBSCRIPTION_ID is not set either"
        raise ConfigError(
            f"registry '{name}' is in subscription {subscription}, which this deployment may not reach (allowed: "
            f"{listed}); add it to ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS if routes may use it, or fix the registry"
        )
    return RegistryAddress(subscription, resource_group, name)


def resolve(
    request: TransferRequest,
    transfer_id: str,
    default_subscription: str | None,
    *,
    allowed_subscriptions: Collection[str],
    max_artifacts: int = MAX_ARTIFACTS,
) -> TransferContext:
    """Plan a transfer: artifacts normalised and batched, names derived, registries addressed. Nothing here
    touches the network, so whatever it refuses never reaches ARM.

    Args:
        request: the transfer.
        transfer_id: its id (6-20 lowercase letters or digits).
        default_subscription: for registries named without one.
        allowed_subscriptions: subscriptions registries may be in.
        max_artifacts: the most artifacts one transfer may name.

    Raises:
        ConfigError: bad or too many artifacts, a registry without subscription or in one not allowed, or an
            unsafe blob name.
    """
    route = request.route
    try:
        source = address(route.source.registry, default_subscription, allowed_subscriptions) if route.source else None
        target = address(route.target.registry, default_subscription, allowed_subscriptions) if route.target else None
    except ConfigError as e:
        raise ConfigError(f"route '{route.name}': {e.message}") from None
    refs = request.wanted_artifacts()
    if source is None:  # import-only: nothing is exported, so no artifacts are needed to plan
        refs = refs or ["import-only:latest"]
    if route.select is not None and not request.artifacts:  # the sync plan decides, once the pipelines are known
        plan = TransferPlan(route.name, transfer_id, [])
    else:
        plan = plan_transfer(route.name, route.blob_name_template, transfer_id, refs, route.batch_size, max_artifacts)
    return TransferContext(route, transfer_id, plan, source, target)


def resolve_configured(request: TransferRequest, transfer_id: str) -> TransferContext:
    """:func:`resolve` with this process's settings: default and allowed subscriptions, artifact limit."""
    settings = get_settings()
    return resolve(
        request,
        transfer_id,
        settings.subscription_id,
        allowed_subscriptions=settings.permitted_subscriptions(),
        max_artifacts=settings.max_artifacts,
    )
