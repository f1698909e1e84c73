"""What a transfer is: routes, requests and results, as pydantic models.

These are Prefect flow parameters too, so every field has a description (the Prefect UI renders them as a
form) and no field ever holds a secret: SAS tokens are referenced by Key Vault secret URI or read from the
pipelines at run time.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from acr_transfer.errors import ConfigError, shown
from acr_transfer.naming import TRANSFER_ID, blob_name, blob_path_problem
from acr_transfer.patterns import (
    RuleProblem,
    SelectionRuleError,
    check_each,
    glob_pattern,
    rule_problem,
    semver_rule,
    tag_pattern,
)
from acr_transfer.refs import ArtifactRef

ACR_NAME = re.compile(r"^[A-Za-z0-9]{5,50}\Z")
SUBSCRIPTION_ID = re.compile(r"^[0-9A-Fa-f]{8}-(?:[0-9A-Fa-f]{4}-){3}[0-9A-Fa-f]{12}\Z")
ROUTE_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}\Z")
REGISTRY_ID = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourceGroups/(?P<rg>[^/]+)/providers/Microsoft\.ContainerRegistry/"
    r"registries/(?P<name>[^/]+)/?\Z",
    re.IGNORECASE,
)
SECRET_URI = re.compile(r"^https://[^/\s?#]+/secrets/[A-Za-z0-9-]{1,127}/?\Z")
PLACEHOLDERS = {"route", "transfer_id", "batch", "date"}
# Prefect's API refuses a flow run whose parameters are larger (its setting server.api.max_parameter_size, env
# PREFECT_SERVER_API_MAX_PARAMETER_SIZE, counts the compact JSON of the parameters); this is its default
PARAMETER_LIMIT = 524_288
PARAMETER_RESERVE = 1024  # left for a flow's other parameters (take_route_lock, lock_wait_seconds, …)
RESOURCE_GROUP_PUNCTUATION = set("_-.()")


def subscription_problem(value: str) -> str | None:
    """What is wrong with a subscription id (it must be a GUID), or None."""
    if SUBSCRIPTION_ID.match(value):
        return None
    return f"subscription '{shown(value)}' is not a subscription id (a GUID like 00000000-0000-0000-0000-000000000000)"


def resource_group_problem(value: str) -> str | None:
    """What is wrong with a resource group name, or None.

    Azure's rule: 1-90 letters or digits (Unicode ones too), '_', '-', '.', '(' and ')', not ending in '.';
    so neither '.' nor '..' can ever reach an ARM URL as a path segment.
    """
    if (
        1 <= len(value) <= 90
        and all(ch.isalpha() or ch.isdecimal() or ch in RESOURCE_GROUP_PUNCTUATION for ch in value)
        and not value.endswith(".")
    ):
        return None
    return (
        f"resource group '{shown(value)}' is not a resource group name: 1-90 letters, digits, '_', '-', '.', "
        "'(' or ')', not ending in '.'"
    )


class Strict(BaseModel):
    """Unknown fields are errors: a typo must not silently become a default."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class RegistryRef(Strict):
    """A registry by ARM resource id, or by subscription + resource group + name."""

    resource_id: str | None = Field(
        None,
        description="ARM id: /subscriptions/SUB/resourceGroups/RG/providers/Microsoft.ContainerRegistry/"
        "registries/NAME",
    )
    subscription_id: str | None = Field(None, description="Subscription (default: AZURE_SUBSCRIPTION_ID)")
    resource_group: str | None = Field(None, description="Resource group of the registry")
    name: str | None = Field(None, description="Registry name (5-50 letters or digits)")

    @model_validator(mode="after")
    def _one_way_to_name_it(self) -> RegistryRef:
        if self.resource_id:
            m = REGISTRY_ID.match(self.resource_id)
            if not m:
                raise ValueError(
                    f"registry resource_id '{shown(self.resource_id, 200)}' is not a registry id "
                    "(/subscriptions/…/resourceGroups/…/providers/Microsoft.ContainerRegistry/registries/NAME)"
                )
            _check_parts(m.group("sub"), m.group("rg"), m.group("name"), f" in resource_id '{shown(self.resource_id)}'")
            for field, part in (("subscription_id", "sub"), ("resource_group", "rg"), ("name", "name")):
                given = getattr(self, field)
                if given and given.lower() != m.group(part).lower():
                    raise ValueError(
                        f"registry {field} '{shown(given)}' contradicts resource_id '{shown(self.resource_id, 200)}'"
                    )
            return self
        if not (self.name and self.resource_group):
            raise ValueError("name a registry by resource_id, or by resource_group and name")
        _check_parts(self.subscription_id, self.resource_group, self.name, "")
        return self

    def parts(self, default_subscription: str | None) -> tuple[str, str, str]:
        """(subscription, resource group, name); the subscription falls back to the default.

        Raises:
            ValueError: no subscription anywhere, or the default one is not a subscription id.
        """
        if self.resource_id:
            m = REGISTRY_ID.match(self.resource_id)
            assert m is not None
            return m.group("sub"), m.group("rg"), m.group("name")
        sub = self.subscription_id or default_subscription
        if not sub:
            raise ValueError(f"registry '{self.name}' has no subscription_id and AZURE_SUBSCRIPTION_ID is not set")
        problem = subscription_problem(sub)
        if problem:
            raise ValueError(f"registry '{self.name}': {problem} (from AZURE_SUBSCRIPTION_ID)")
        return sub, str(self.resource_group), str(self.name)


def _check_parts(subscription: str | None, resource_group: str | None, name: str | None, where: str) -> None:
    """Every part of a registry's address is safe as an ARM URL path segment, or ValueError naming the part."""
    problem = (
        (subscription_problem(subscription) if subscription is not None else None)
        or (resource_group_problem(resource_group) if resource_group is not None else None)
        or (
            None
            if name is None or ACR_NAME.match(name)
            else f"registry name '{shown(name)}' must be 5-50 letters or digits"
        )
    )
    if problem:
        raise ValueError(problem + where)


def _pipeline_name(value: str) -> str:
    if not ACR_NAME.match(value):
        raise ValueError(f"pipeline name '{shown(value)}' must be 5-50 letters or digits (no '-' or '_')")
    return value


class SourceSide(Strict):
    """Where artifacts come from."""

    registry: RegistryRef = Field(..., description="Source registry")
    export_pipeline: str = Field(..., description="Export pipeline on the source registry")

    _check = field_validator("export_pipeline")(classmethod(lambda cls, v: _pipeline_name(v)))


class TargetSide(Strict):
    """Where artifacts go."""

    registry: RegistryRef = Field(..., description="Target registry")
    import_pipeline: str = Field(..., description="Import pipeline on the target registry")

    _check = field_validator("import_pipeline")(classmethod(lambda cls, v: _pipeline_name(v)))


class BridgeConfig(Strict):
    """How the blob is copied when the export and import containers differ (server-side, no bytes pass here)."""

    secret_uri: str | None = Field(
        None,
        description="Key Vault secret URI holding a SAS with create+write on the import container "
        "(empty: the worker's own credential writes)",
    )

    @field_validator("secret_uri")
    @classmethod
    def _secret_uri(cls, value: str | None) -> str | None:
        if value and not SECRET_URI.match(value):
            raise ValueError(
                f"bridge secret_uri '{shown(value, 200)}' must look like https://VAULT/secrets/NAME (no version)"
            )
        return value


class CleanupPolicy(Strict):
    """What may be deleted once a transfer is verified. Nothing of a failed transfer is ever deleted."""

    delete_runs_after_days: int | None = Field(
        30, ge=0, description="Delete succeeded run records older than this many days (empty: keep them)"
    )
    delete_export_blob: bool = Field(True, description="Delete the export-side blob after a verified import")
    delete_abandoned_blobs_after_days: int | None = Field(
        7,
        ge=0,
        description="Delete the blobs of a transfer left unfinished and not being continued, this many days after "
        "its last run (empty: only report them); its run records are kept",
    )


class Selection(Strict):
    """What should be in sync: repositories by glob, tags by anchored regex, semver range and recency.

    Rules apply in this order: repositories / exclude_repositories, then tags, exclude_tags, semver, latest.
    Digest tags (``sha256-<hex>`` and cosign's ``.sig``/``.att``/``.sbom``) are never selected as tags: they
    travel as referrers of their subject.
    """

    repositories: list[str] = Field(
        ["**"],
        description="Repository globs: * within a path segment, ** any number of segments, ? and [...] "
        "(default: every repository)",
    )
    exclude_repositories: list[str] = Field(
        [], description="Repository globs to leave out, even when repositories matches them"
    )
    tags: list[str] = Field([], description="Tag regexes, each matching the whole tag (empty: every tag)")
    exclude_tags: list[str] = Field([], description="Tag regexes to leave out, each matching the whole tag")
    semver: str | list[str] | None = Field(
        None,
        description="Only tags that are versions in this range, e.g. '>=1.4 <3', '^1.2', '~2.0' (a list: any "
        "of the ranges); tags that are not versions are left out",
    )
    latest: int | None = Field(
        None, ge=1, le=10000, description="Only the N most recently updated of the matching tags, per repository"
    )
    referrers: bool = Field(
        True, description="Send the signatures, SBOMs and attestations that refer to each selected artifact"
    )

    @field_validator("repositories", "exclude_repositories")
    @classmethod
    def _globs(cls, values: list[str], info: ValidationInfo) -> list[str]:
        if not values and info.field_name == "repositories":
            raise SelectionRuleError(
                [RuleProblem("repositories", None, "[] selects no repository; leave it out for every one ('**')")]
            )
        return check_each(str(info.field_name), values, glob_pattern)

    @field_validator("tags", "exclude_tags")
    @classmethod
    def _regexes(cls, values: list[str], info: ValidationInfo) -> list[str]:
        return check_each(str(info.field_name), values, tag_pattern)

    @field_validator("semver", mode="before")
    @classmethod
    def _ranges(cls, value: object) -> object:
        # before pydantic's union check, so a YAML number (semver: 1.4) is told to be quoted, not two type errors
        if value is None:
            return None
        if not isinstance(value, list):
            problem = rule_problem("semver", None, value, semver_rule)
            if problem:
                raise SelectionRuleError([problem])
            return value
        if not value:
            raise SelectionRuleError(
                [RuleProblem("semver", None, "[] selects no tag; leave it out, or give at least one range")]
            )
        return check_each("semver", value, semver_rule)


class TransferRoute(Strict):
    """One source → target path with its artifacts and policies (an entry of routes.yaml)."""

    name: str = Field(..., description="Route name: lowercase letters, digits and '-'")
    description: str = Field("", description="What this route is for")
    source: SourceSide | None = Field(None, description="Export side (empty on an import-only route)")
    target: TargetSide | None = Field(None, description="Import side (empty on an export-only route)")
    artifacts: list[str] = Field(default_factory=list, description="Artifacts: repo, repo:tag or repo@sha256:…")
    select: Selection | None = Field(
        None,
        description="What should be in sync: the source's repositories and tags these rules select (added "
        "to artifacts)",
    )
    skip: Literal["identical", "none"] | None = Field(
        None,
        description="identical: leave out what the target already holds, digest-equal; none: send everything "
        "(default: identical with select, none for an artifact list)",
    )
    blob_name_template: str = Field(
        "{route}/{transfer_id}/batch{batch}.tar",
        description="Blob name; placeholders {route}, {transfer_id}, {batch}, {date}",
    )
    timeout_minutes: float = Field(60, gt=0, le=24 * 60, description="Longest a single run may take")
    batch_size: int = Field(50, ge=1, le=50, description="Artifacts per pipeline run (ACR allows 50)")
    bridge: BridgeConfig = Field(default_factory=BridgeConfig, description="Used when the containers differ")
    cleanup: CleanupPolicy = Field(default_factory=CleanupPolicy)

    @field_validator("name")
    @classmethod
    def _route_name(cls, value: str) -> str:
        if not ROUTE_NAME.match(value):
            raise ValueError(f"route name '{shown(value)}' must be lowercase letters, digits and '-' (1-63)")
        return value

    @property
    def effective_skip(self) -> Literal["identical", "none"]:
        """``skip`` as it applies: when not given, ``identical`` for a route with ``select`` and ``none`` for a
        plain artifact list (so an existing route keeps re-sending its whole list)."""
        if self.skip is not None:
            return self.skip
        return "identical" if self.select is not None else "none"

    @model_validator(mode="after")
    def _a_side(self) -> TransferRoute:
        if self.source is None and self.target is None:
            raise ValueError(f"route '{self.name}' needs a source, a target, or both")
        return self

    @field_validator("blob_name_template")
    @classmethod
    def _template(cls, value: str) -> str:
        names = set(re.findall(r"{([^{}]*)}", value))
        unknown = names - PLACEHOLDERS
        if unknown:
            raise ValueError(
                f"blob_name_template has unknown placeholders {sorted(unknown)}; use {sorted(PLACEHOLDERS)}"
            )
        if "transfer_id" not in names:
            raise ValueError("blob_name_template must contain {transfer_id} so every transfer writes its own blob")
        try:  # a route name and a transfer id are letters, digits and '-': the sample renders like any real one
            blob_name(value, route="route", transfer_id="a1b2c3d4e5f6", batch=1)
        except ConfigError as e:
            raise ValueError(f"does not render a usable blob name: {e.message}") from None
        return value


def _transfer_id(value: str | None) -> str | None:
    if value is not None and not TRANSFER_ID.fullmatch(value):
        raise ValueError(f"transfer_id '{shown(value)}' must be 6-20 lowercase letters or digits")
    return value


class ImportRequest(Strict):
    """Import one blob that is already in the import pipeline's container (the target half alone)."""

    route: TransferRoute = Field(..., description="The route; only its target is used")
    blob: str = Field(..., description="Blob name in the import pipeline's container")
    catalog_digest: str | None = Field(None, description="sha256 of the blob from the export run, when known")
    artifacts: list[str] | None = Field(None, description="Artifacts the blob must bring in (verified when given)")
    transfer_id: str | None = Field(None, description="Stable id; default derived from the pipeline and blob name")

    @field_validator("blob")
    @classmethod
    def _blob(cls, value: str) -> str:
        problem = blob_path_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("catalog_digest")
    @classmethod
    def _catalog_digest(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[A-Za-z0-9:@+/=_.-]{1,256}", value):
            raise ValueError(f"catalog_digest '{shown(value)}' is not a digest (sha256:…, at most 256 characters)")
        return value

    _tid = field_validator("transfer_id")(classmethod(lambda cls, v: _transfer_id(v)))


class PushedTag(Strict):
    """One tag a push event reported (``export-on-push``): what was pushed, where it points, and when."""

    repository: str = Field(..., description="Repository the image was pushed to")
    tag: str = Field(..., description="The tag pushed")
    digest: str = Field(..., description="The manifest digest the push reported")
    occurred: datetime = Field(..., description="When the push happened")

    @model_validator(mode="after")
    def _a_reference(self) -> PushedTag:
        try:
            ArtifactRef.parse(f"{self.repository}@{self.digest}")
            ArtifactRef.parse(f"{self.repository}:{self.tag}")
        except ConfigError as e:
            raise ValueError(f"pushed tag: {e.message}") from None
        return self


class TransferRequest(Strict):
    """A transfer to run: a route, optionally other artifacts, and an id to resume by."""

    route: TransferRoute = Field(..., description="The route (usually loaded from routes.yaml)")
    artifacts: list[str] | None = Field(None, description="Transfer these instead of the route's artifacts")
    transfer_id: str | None = Field(
        None,
        description="Stable id of this transfer (letters/digits, 6-20); default: derived from the flow run, "
        "so a retried flow run continues the same transfer",
    )
    dry_run: bool = Field(False, description="Only plan and check; create nothing")
    full: bool = Field(
        False, description="Send every selected artifact, ignoring what the target or the export ledger already holds"
    )

    pushed: list[PushedTag] | None = Field(
        None, description="Export what these pushes brought (filtered by the route's select:) instead of listing"
    )

    _tid = field_validator("transfer_id")(classmethod(lambda cls, v: _transfer_id(v)))

    def wanted_artifacts(self) -> list[str]:
        return list(self.artifacts) if self.artifacts else list(self.route.artifacts)


JsonSizes = dict[int, tuple[str, int]]  # id of a string → the string (kept alive, so the id stays its) and its size


def parameter_bytes(request: TransferRequest | ImportRequest, sizes: JsonSizes | None = None) -> int:
    """The bytes ``request`` takes as the ``request`` parameter of a flow run, counted as Prefect's API counts
    them: ``json.dumps`` of its JSON form, compact, non-ASCII characters escaped.

    Args:
        request: the request.
        sizes: the encoded size of each string met so far, to share between calls: a string many requests hold
            (a description from an alias or the defaults) is encoded once.
    """
    return len('{"request":}') + _json_size(request.model_dump(mode="json"), {} if sizes is None else sizes)


def _json_size(value: object, sizes: JsonSizes) -> int:
    """``len(json.dumps(value, separators=(",", ":")))``, a string met before not encoded again."""
    if isinstance(value, str):
        known = sizes.get(id(value))
        if known is None or known[0] is not value:
            known = sizes[id(value)] = (value, len(json.dumps(value)))
        return known[1]
    if isinstance(value, dict):
        items = sum(_json_size(str(k), sizes) + 1 + _json_size(v, sizes) for k, v in value.items())
        return 2 + items + max(len(value) - 1, 0)
    # a list (artifacts: at most max_artifacts references, each short) and a number go to the C encoder at once
    return len(json.dumps(value, separators=(",", ":")))


def parameter_size_problem(
    request: TransferRequest | ImportRequest, limit: int = PARAMETER_LIMIT, sizes: JsonSizes | None = None
) -> str | None:
    """What is wrong with the size of ``request`` as a flow run's parameters, or None (also when ``limit`` is 0).

    A request over Prefect's limit would be refused with a 422 when its flow run is created, echoing the whole
    input; this says so before any flow run exists, naming the route and the size. ``sizes`` as for
    :func:`parameter_bytes`.
    """
    if limit <= 0:
        return None
    size = parameter_bytes(request, sizes)
    if size + PARAMETER_RESERVE <= limit:
        return None
    return (
        f"route '{shown(request.route.name)}' makes a request of {size:,} bytes, more than a Prefect flow run takes "
        f"as parameters ({limit:,} bytes with {PARAMETER_RESERVE:,} left for the flow's other parameters; Prefect's "
        "server.api.max_parameter_size); list fewer or shorter artifacts, shorten its description, or split it "
        "into several routes"
    )
