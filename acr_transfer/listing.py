"""What a registry's listings say, as values: the shared vocabulary of selection, the data plane and the plan.

The data plane (``acr_transfer/azure/acr_data.py`` and ``acr_listing.py``) produces them; selection
(``acr_transfer/selection.py``) and the sync plan (``acr_transfer/sync.py``) decide over them. No I/O here.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime


@dataclass(frozen=True)
class ListedTag:
    """One tag of a repository as the registry lists it: where it points and when it was created and last moved."""

    repo: str
    tag: str
    digest: str
    created: datetime
    updated: datetime

    @property
    def reference(self) -> str:
        return f"{self.repo}:{self.tag}"


@dataclass(frozen=True)
class Referrer:
    """A manifest that refers to ``subject`` (a signature, an SBOM, an attestation), found in ``repo``.

    ``via`` says how it was found: ``referrers-api`` (OCI 1.1 ``/v2/<repo>/referrers/<digest>``),
    ``tag-schema`` (the ``sha256-<hex>`` fallback index) or ``cosign-tag`` (cosign's ``sha256-<hex>.sig``,
    ``.att`` and ``.sbom`` tags, transferred by their tag).
    """

    repo: str
    digest: str
    subject: str
    artifact_type: str
    media_type: str
    size: int
    via: str
    tag: str | None = None

    @property
    def reference(self) -> str:
        """How a transfer names it: by tag for cosign's tags (the tag is what cosign looks up), else by digest."""
        return f"{self.repo}:{self.tag}" if self.tag else f"{self.repo}@{self.digest}"


@dataclass(frozen=True)
class ArtifactSize:
    """What one manifest (and, for an index, every child) pulls: total bytes, and its largest layer."""

    digest: str
    total_bytes: int
    largest_layer_bytes: int
    largest_layer_digest: str | None
