"""The cleanup flow's steps: list the run records the policy lets go, delete one."""

from __future__ import annotations

from prefect import task

from acr_transfer.azure.registry import RegistryAddress
from acr_transfer.cleanup import Deletion, plan_cleanup
from tasks import clients
from tasks.retry import step_options


@task(name="plan-cleanup", **step_options())
def list_deletions(registry: RegistryAddress, older_than_days: float) -> tuple[list[Deletion], int]:
    """The run records of ``registry`` that the policy lets go, and how many it keeps."""
    runs = list(clients.shared().arm.list_runs(registry))
    deletions = plan_cleanup(runs, older_than_days)
    return deletions, len(runs) - len(deletions)


@task(name="delete-run", **step_options())
def delete_run(registry: RegistryAddress, name: str) -> bool:
    """Delete one run record; False when it was already gone."""
    return clients.shared().arm.delete_run(registry, name)
