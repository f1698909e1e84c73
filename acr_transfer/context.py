"""Everything a transfer resolves before it acts: registries, pipelines, the plan and the deadline."""

from __future__ import annotations

from dataclasses import dataclass

from acr_transfer.azure.registry import PipelineFacts, RegistryAddress
from acr_transfer.errors import ConfigError
from acr_transfer.models import TransferRequest, TransferRoute
from acr_transfer.naming import TransferPlan, plan_transfer


@dataclass(frozen=True)
class TransferContext:
    """One transfer's resolved facts, passed from step to step (no secrets inside)."""

    route: TransferRoute
    transfer_id: str
    plan: TransferPlan
    source: RegistryAddress | None
    target: RegistryAddress | None
    export_pipeline: PipelineFacts | None = None
    import_pipeline: PipelineFacts | None = None

    @property
    def src(self) -> RegistryAddress:
        if self.source is None:
            raise ConfigError(f"route '{self.route.name}' has no source; it can only import")
        return self.source

    @property
    def dst(self) -> RegistryAddress:
        if self.target is None:
            raise ConfigError(f"route '{self.route.name}' has no target; it can only export")
        return self.target

    @property
    def export(self) -> PipelineFacts:
        if self.export_pipeline is None:
            raise RuntimeError("the export pipeline is known only after preflight")
        return self.export_pipeline

    @property
    def imp(self) -> PipelineFacts:
        if self.import_pipeline is None:
            raise RuntimeError("the import pipeline is known only after preflight")
        return self.import_pipeline

    @property
    def timeout_seconds(self) -> float:
        return self.route.timeout_minutes * 60

    @property
    def bridged(self) -> bool:
        """The blob must be copied: the export writes where the import does not read."""
        exp, imp = self.export_pipeline, self.import_pipeline
        if exp is None or imp is None:
            return False
        return exp.container_uri.rstrip("/").lower() != imp.container_uri.rstrip("/").lower()

    def with_pipelines(self, export: PipelineFacts | None, import_: PipelineFacts | None) -> TransferContext:
        return TransferContext(self.route, self.transfer_id, self.plan, self.source, self.target, export, import_)


def address(ref_parts: tuple[str, str, str]) -> RegistryAddress:
    return RegistryAddress(*ref_parts)


def resolve(request: TransferRequest, transfer_id: str, default_subscription: str | None) -> TransferContext:
    """Plan a transfer: artifacts normalised and batched, names derived, registries addressed.

    Raises:
        ConfigError: bad artifacts, a registry without subscription, or an unsafe blob name.
    """
    route = request.route
    try:
        source = address(route.source.registry.parts(default_subscription)) if route.source else None
        target = address(route.target.registry.parts(default_subscription)) if route.target else None
    except ValueError as e:
        raise ConfigError(f"route '{route.name}': {e}") from e
    refs = request.wanted_artifacts()
    if source is None:  # import-only: nothing is exported, so no artifacts are needed to plan
        refs = refs or ["import-only:latest"]
    plan = plan_transfer(route.name, route.blob_name_template, transfer_id, refs, route.batch_size)
    return TransferContext(route, transfer_id, plan, source, target)
