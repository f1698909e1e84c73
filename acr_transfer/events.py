"""The names of every Prefect event acr-transfer emits or forwards, and of the resources they are about.

One namespace, ``acr.transfer.``, for both: the events a transfer emits (``tasks/report.py``,
``tasks/transfer.py``) and the ones the receiver forwards from Azure (``deployments/deliveries.py``), so a
trigger in prefect.yaml or an events filter in the UI matches ``acr.transfer.*`` for all of them.

==================================  ====================================================================
event                               resource (``prefect.resource.id``)
==================================  ====================================================================
``acr.transfer.blob.created``       ``acr.transfer.container.<account>.<container>``; related
                                    ``acr.transfer.blob.<account>.<container>.<blob>``
``acr.transfer.image.pushed``       ``acr.transfer.registry.<registry>``; related
                                    ``acr.transfer.repository.<registry>.<repository>``
``acr.transfer.exported``,          ``acr.transfer.transfer.<transfer id>``; related ``azure.acr.<ARM id>``
``acr.transfer.imported``,          (the registries) and ``azure.blob.<blob>``: Azure's own resources keep
``acr.transfer.failed``             Azure's names
==================================  ====================================================================

Names are lower-case where Azure's are case-insensitive (accounts, containers, registries); blob and
repository paths are kept as they are. Labels on our resources use the same prefix (:class:`Label`).
"""

from __future__ import annotations

from enum import StrEnum

PREFIX = "acr.transfer."


class EventName(StrEnum):
    """Every Prefect event acr-transfer emits (what deployment triggers ``expect``)."""

    BLOB_CREATED = "acr.transfer.blob.created"
    IMAGE_PUSHED = "acr.transfer.image.pushed"
    EXPORTED = "acr.transfer.exported"
    IMPORTED = "acr.transfer.imported"
    FAILED = "acr.transfer.failed"


class Label(StrEnum):
    """Labels of our resources, next to ``prefect.resource.id`` and ``prefect.resource.name``."""

    ACCOUNT = "acr.transfer.account"
    CONTAINER = "acr.transfer.container"
    ROUTE = "acr.transfer.route"


def container_resource_id(account: str, container: str) -> str:
    """``acr.transfer.container.<account>.<container>``: a storage container blobs arrive in."""
    return f"{PREFIX}container.{account}.{container}"


def blob_resource_id(account: str, container: str, blob: str) -> str:
    """``acr.transfer.blob.<account>.<container>.<blob>``: one blob (its path within the container)."""
    return f"{PREFIX}blob.{account}.{container}.{blob}"


def registry_resource_id(registry: str) -> str:
    """``acr.transfer.registry.<registry>``: a registry images are pushed to."""
    return f"{PREFIX}registry.{registry}"


def repository_resource_id(registry: str, repository: str) -> str:
    """``acr.transfer.repository.<registry>.<repository>``: one repository of a registry."""
    return f"{PREFIX}repository.{registry}.{repository}"


def transfer_resource_id(transfer_id: str) -> str:
    """``acr.transfer.transfer.<transfer id>``: one transfer, across its batches and attempts."""
    return f"{PREFIX}transfer.{transfer_id}"
