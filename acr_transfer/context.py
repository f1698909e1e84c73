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
    source: RegistryAddress
    target: RegistryAddress
    export_pipeline: PipelineFacts | None = None
    import_pipeline: PipelineFacts | None = None

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

    def with_pipelines(self, export: PipelineFacts, import_: PipelineFacts) -> TransferContext:
        return TransferContext(self.route, self.transfer_id, self.plan, self.source, self.target, export, import_)

    def pipelines(self) -> tuple[PipelineFacts, PipelineFacts]:
        if self.export_pipeline is None or self.import_pipeline is None:
            raise RuntimeError("pipelines are known only after preflight")
        return self.export_pipeline, self.import_pipeline


def address(ref_parts: tuple[str, str, str]) -> RegistryAddress:
    return RegistryAddress(*ref_parts)


def resolve(request: TransferRequest, transfer_id: str, default_subscription: str | None) -> TransferContext:
    """Plan a transfer: artifacts normalised and batched, names derived, registries addressed.

    Raises:
        ConfigError: bad artifacts, a registry without subscription, or an unsafe blob name.
    """
    route = request.route
    try:
        source = address(route.source.registry.parts(default_subscription))
        target = address(route.target.registry.parts(default_subscription))
    except ValueError as e:
        raise ConfigError(f"route '{route.name}': {e}") from e
    plan = plan_transfer(route.name, route.blob_name_template, transfer_id, request.wanted_artifacts(), route.batch_size)
    return TransferContext(route, transfer_id, plan, source, target)
