"""In-memory stand-ins for the three ports (``acr_transfer/ports.py``) and builders for what the core reads.

Each fake holds plain dicts a test fills and reads back: what exists (pipelines, runs, blobs, secrets), which
call should fail and with what error, and every call made. No network, no Prefect, no stand-in. The fakes
satisfy the Protocols structurally, so mypy checks each one wherever a port is expected.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from acr_transfer.azure.keyvault import SecretFacts
from acr_transfer.azure.registry import PipelineFacts, RegistryAddress, RunState
from acr_transfer.azure.storage import BlobFacts
from acr_transfer.azure.vault_access import VaultAccessFacts
from acr_transfer.context import TransferContext, resolve
from acr_transfer.errors import NotFoundError
from acr_transfer.models import TransferRequest, TransferRoute
from acr_transfer.ports import Blobs, PipelineRuns, Secrets, VaultAccess
from acr_transfer.sas import SasToken

SUB = "00000000-0000-0000-0000-000000000001"
OTHER_SUB = "00000000-0000-0000-0000-000000000002"
RG = "transfer-rg"
SOURCE_REGISTRY = "sourceregistry"
TARGET_REGISTRY = "targetregistry"
EXPORT_PIPELINE = "exportpipeline"
IMPORT_PIPELINE = "importpipeline"
TID = "abc123def456"
EXPORT_CONTAINER = "https://sourcestorage.blob.core.windows.net/transfer"
IMPORT_CONTAINER = "https://targetstorage.blob.core.windows.net/transfer"
EXPORT_SECRET = "https://sourcevault.vault.azure.net/secrets/acrexportsas"
IMPORT_SECRET = "https://targetvault.vault.azure.net/secrets/acrimportsas"
BRIDGE_SECRET = "https://targetvault.vault.azure.net/secrets/acrbridgesas"
DIGEST_A = "sha256:" + "a" * 64
DIGEST_B = "sha256:" + "b" * 64


# --- ARM: pipelines and runs --------------------------------------------------------------------------------------


def run_state(
    name: str,
    status: str | None = "Succeeded",
    *,
    blob: str | None = None,
    kind: str = "export",
    provisioning_state: str | None = None,
    pipeline_id: str = "",
    registry: RegistryAddress | None = None,
    artifacts: Sequence[str] = (),
    imported: Sequence[str] = (),
    catalog_digest: str | None = None,
    error: str | None = None,
    trigger_timestamp: str | None = None,
    start_time: str | None = None,
    request: dict[str, Any] | None = None,
) -> RunState:
    """A run as ``RunState.from_json`` reads ARM's GET of ``pipelineRuns/{name}``.

    ``provisioning_state`` defaults to Failed for a Failed/Canceled ``status``, else Succeeded (ARM reports a
    created run as Succeeded while its ``response.status`` is still Running). ``request`` replaces the request
    built from ``blob``/``kind``/``pipeline_id``/``artifacts`` (as :meth:`FakeRuns.create_run` stores the body).
    """
    if provisioning_state is None:
        provisioning_state = "Failed" if (status or "").lower() in ("failed", "canceled") else "Succeeded"
    if request is None:
        request = {"pipelineResourceId": pipeline_id}
        if artifacts:
            request["artifacts"] = list(artifacts)
        if blob is not None:
            request["target" if kind == "export" else "source"] = {"type": "AzureStorageBlob", "name": blob}
        if catalog_digest and kind == "import":
            request["catalogDigest"] = catalog_digest
    response: dict[str, Any] = {"progress": {"percentage": "100" if status == "Succeeded" else "0"}}
    if status is not None:
        response["status"] = status
    if imported:
        response["importedArtifacts"] = list(imported)
    if error:
        response["pipelineRunErrorMessage"] = error
    if catalog_digest and kind == "export":
        response["catalogDigest"] = catalog_digest
    if trigger_timestamp:
        response["trigger"] = {"sourceTrigger": {"timestamp": trigger_timestamp}}
    if start_time:
        response["startTime"] = start_time
    run_id = registry.child("pipelineRuns", name) if registry else f"/pipelineRuns/{name}"
    body = {
        "name": name,
        "id": run_id,
        "type": "Microsoft.ContainerRegistry/registries/pipelineRuns",
        "properties": {"provisioningState": provisioning_state, "request": request, "response": response},
    }
    return RunState.from_json(body)


def pipeline(
    registry: RegistryAddress,
    kind: str,
    name: str,
    *,
    container_uri: str,
    secret_uri: str | None = None,
    storage_access_mode: str = "SasToken",
    options: Sequence[str] = (),
    source_trigger: str | None = None,
    provisioning_state: str = "Succeeded",
) -> PipelineFacts:
    """An export or import pipeline as ``RegistryArm.get_pipeline`` reports it."""
    collection = "exportPipelines" if kind == "export" else "importPipelines"
    return PipelineFacts(
        id=registry.child(collection, name),
        name=name,
        kind=kind,
        provisioning_state=provisioning_state,
        container_uri=container_uri.rstrip("/"),
        secret_uri=secret_uri,
        storage_access_mode=storage_access_mode,
        options=tuple(options),
        source_trigger=(source_trigger or "Disabled") if kind == "import" else None,
    )


@dataclass
class FakeRuns:
    """``PipelineRuns`` in memory.

    ``pipelines[(registry, kind, name)]`` is what ``get_pipeline`` returns, or an exception it raises (missing:
    NotFoundError). ``runs[(registry.id, name)]`` is what ``get_run`` returns. ``create_run`` records
    ``(registry, name, request)`` in ``created`` and stores a run in state ``new_run_status``; a test moves
    it on with :meth:`put`. ``calls`` counts calls by method name.
    """

    pipelines: dict[tuple[RegistryAddress, str, str], PipelineFacts | Exception] = field(default_factory=dict)
    runs: dict[tuple[str, str], RunState] = field(default_factory=dict)
    created: list[tuple[RegistryAddress, str, dict[str, Any]]] = field(default_factory=list)
    new_run_status: str = "Running"
    calls: Counter[str] = field(default_factory=Counter)

    def add_pipeline(
        self, registry: RegistryAddress, facts: PipelineFacts | Exception, kind: str = "", name: str = ""
    ) -> None:
        """Register a pipeline (its kind and name are read from ``facts`` unless it is an exception)."""
        if isinstance(facts, PipelineFacts):
            kind, name = facts.kind, facts.name
        self.pipelines[(registry, kind, name)] = facts

    def put(self, registry: RegistryAddress, *states: RunState) -> None:
        """Make runs exist (or replace them) on ``registry``."""
        for state in states:
            self.runs[(registry.id, state.name)] = state

    def get_pipeline(self, registry: RegistryAddress, kind: str, name: str) -> PipelineFacts:
        self.calls["get_pipeline"] += 1
        found = self.pipelines.get((registry, kind, name))
        if found is None:
            raise NotFoundError(f"{kind} pipeline '{name}' on registry '{registry.name}' does not exist")
        if isinstance(found, Exception):
            raise found
        return found

    def get_run(self, registry: RegistryAddress, name: str) -> RunState | None:
        self.calls["get_run"] += 1
        return self.runs.get((registry.id, name))

    def list_runs(self, registry: RegistryAddress) -> list[RunState]:
        self.calls["list_runs"] += 1
        return [state for (registry_id, _), state in self.runs.items() if registry_id == registry.id]

    def create_run(self, registry: RegistryAddress, name: str, request: dict[str, Any]) -> RunState:
        self.calls["create_run"] += 1
        self.created.append((registry, name, request))
        state = run_state(name, self.new_run_status, registry=registry, request=request)
        self.put(registry, state)
        return state

    @property
    def created_names(self) -> list[str]:
        return [name for _, name, _ in self.created]


# --- storage ------------------------------------------------------------------------------------------------------


def blob_facts(name: str, size: int = 1024) -> BlobFacts:
    """A blob as ``BlobStorage.blob_facts`` reports it."""
    return BlobFacts(
        name=name,
        size=size,
        content_md5=b"\x00" * 16,
        metadata={"category": "acr-transfer-blob"},
        last_modified=datetime(2026, 1, 1, tzinfo=UTC),
        etag='"0x1"',
    )


@dataclass
class FakeBlobs:
    """``Blobs`` in memory: ``containers[uri][blob]``; a container not listed does not exist (NotFoundError).

    ``container_errors[uri]`` is raised by ``check_container`` (and ``blob_facts``) for that container.
    ``checked``, ``looked_up`` and ``copies`` record each call with the SAS it was given.
    """

    containers: dict[str, dict[str, BlobFacts]] = field(default_factory=dict)
    container_errors: dict[str, Exception] = field(default_factory=dict)
    checked: list[tuple[str, SasToken | None]] = field(default_factory=list)
    looked_up: list[tuple[str, str, SasToken | None]] = field(default_factory=list)
    copies: list[tuple[str, str, SasToken, str, SasToken | None]] = field(default_factory=list)
    delegated: list[tuple[str, str]] = field(default_factory=list)  # user-delegation SAS asked for (container, blob)

    def add_container(self, uri: str, *blobs: str) -> None:
        self.containers.setdefault(uri.rstrip("/"), {}).update({b: blob_facts(b) for b in blobs})

    def _container(self, uri: str) -> dict[str, BlobFacts]:
        uri = uri.rstrip("/")
        if uri in self.container_errors:
            raise self.container_errors[uri]
        if uri not in self.containers:
            raise NotFoundError(f"container {uri} does not exist")
        return self.containers[uri]

    def check_container(self, container_uri: str, sas: SasToken | None) -> None:
        self.checked.append((container_uri, sas))
        self._container(container_uri)

    def blob_facts(self, container_uri: str, blob: str, sas: SasToken | None) -> BlobFacts | None:
        self.looked_up.append((container_uri, blob, sas))
        return self._container(container_uri).get(blob)

    def copy_blob(
        self,
        source_container_uri: str,
        blob: str,
        source_sas: SasToken,
        target_container_uri: str,
        target_sas: SasToken | None,
    ) -> BlobFacts:
        self.copies.append((source_container_uri, blob, source_sas, target_container_uri, target_sas))
        facts = self._container(source_container_uri).get(blob)
        if facts is None:
            raise NotFoundError(f"blob '{blob}' does not exist in {source_container_uri}")
        self._container(target_container_uri)[blob] = facts
        return facts

    def delegated_read_sas(self, container_uri: str, blob: str, valid_for: timedelta) -> SasToken:
        self.delegated.append((container_uri, blob))
        self._container(container_uri)
        return sas_token("r", expires_in=valid_for, sr="b")


# --- Key Vault ----------------------------------------------------------------------------------------------------


def sas_token(
    sp: str = "rawl", *, expires_in: timedelta = timedelta(days=30), spr: str | None = "https", sr: str = "c"
) -> SasToken:
    """A container SAS parsed from its query string, expiring ``expires_in`` from now (negative: expired)."""
    se = (datetime.now(UTC) + expires_in).strftime("%Y-%m-%dT%H:%M:%SZ")
    query = f"sv=2024-08-04&sr={sr}&sp={sp}&se={se}" + (f"&spr={spr}" if spr else "") + "&sig=c2lnbmF0dXJl"
    return SasToken.parse(query)


def secret_facts(uri: str, *, enabled: bool = True, expires_on: datetime | None = None) -> SecretFacts:
    """A secret's attributes as ``KeyVaultSecrets`` reports them."""
    vault, _, name = uri.partition("/secrets/")
    return SecretFacts(
        uri=uri,
        vault=vault,
        name=name.strip("/"),
        version=None,
        enabled=enabled,
        expires_on=expires_on,
        not_before=None,
        content_type=None,
    )


@dataclass
class FakeSecrets:
    """``Secrets`` in memory: ``secrets[uri]`` is a (facts, token) pair or an exception ``sas`` raises (missing:
    NotFoundError). ``read`` lists every URI asked for."""

    secrets: dict[str, tuple[SecretFacts, SasToken] | Exception] = field(default_factory=dict)
    read: list[str] = field(default_factory=list)

    def add(self, uri: str, token: SasToken | None = None, **facts: Any) -> SasToken:
        """Store a secret holding ``token`` (default: a valid rawl container SAS); returns the token."""
        token = token or sas_token()
        self.secrets[uri] = (secret_facts(uri, **facts), token)
        return token

    def token(self, uri: str) -> SasToken:
        found = self.secrets[uri]
        assert not isinstance(found, Exception)
        return found[1]

    def sas(self, secret_uri: str) -> tuple[SecretFacts, SasToken]:
        self.read.append(secret_uri)
        found = self.secrets.get(secret_uri)
        if found is None:
            raise NotFoundError(f"secret {secret_uri} not found; create it or fix the pipeline's keyVaultUri")
        if isinstance(found, Exception):
            raise found
        return found


# --- a transfer's context -----------------------------------------------------------------------------------------


def make_route(
    *,
    name: str = "demo",
    artifacts: Sequence[str] = ("demo/hello:v1", "demo/world:v1"),
    source: bool = True,
    target: bool = True,
    batch_size: int = 50,
    blob_name_template: str = "{route}/{transfer_id}/batch{batch}.tar",
    bridge_secret: str | None = None,
    timeout_minutes: float = 60,
    source_subscription: str = SUB,
    target_subscription: str = SUB,
) -> TransferRoute:
    """A route between two registries in ``transfer-rg`` (either side may be left out)."""
    data: dict[str, Any] = {
        "name": name,
        "artifacts": list(artifacts),
        "batch_size": batch_size,
        "blob_name_template": blob_name_template,
        "timeout_minutes": timeout_minutes,
        "bridge": {"secret_uri": bridge_secret},
    }
    if source:
        registry = {"subscription_id": source_subscription, "resource_group": RG, "name": SOURCE_REGISTRY}
        data["source"] = {"registry": registry, "export_pipeline": EXPORT_PIPELINE}
    if target:
        registry = {"subscription_id": target_subscription, "resource_group": RG, "name": TARGET_REGISTRY}
        data["target"] = {"registry": registry, "import_pipeline": IMPORT_PIPELINE}
    return TransferRoute.model_validate(data)


def make_ctx(
    *,
    route: TransferRoute | None = None,
    artifacts: Sequence[str] = ("demo/hello:v1", "demo/world:v1"),
    source: bool = True,
    target: bool = True,
    batch_size: int = 50,
    blob_name_template: str = "{route}/{transfer_id}/batch{batch}.tar",
    bridge_secret: str | None = None,
    timeout_minutes: float = 60,
    transfer_id: str = TID,
    allowed_subscriptions: Iterable[str] = (SUB,),
    pipelines: bool = True,
    export_container: str = EXPORT_CONTAINER,
    import_container: str | None = None,
    export_mode: str = "SasToken",
    import_mode: str = "SasToken",
    export_secret: str | None = EXPORT_SECRET,
    import_secret: str | None = IMPORT_SECRET,
    export_options: Sequence[str] = (),
    import_options: Sequence[str] = (),
    source_trigger: str = "Disabled",
) -> TransferContext:
    """A resolved transfer (``context.resolve`` with explicit allowed subscriptions) and, unless
    ``pipelines=False``, the pipelines preflight would have read. The import pipeline reads the export container
    unless ``import_container`` names another one (then the transfer is bridged)."""
    route = route or make_route(
        artifacts=artifacts,
        source=source,
        target=target,
        batch_size=batch_size,
        blob_name_template=blob_name_template,
        bridge_secret=bridge_secret,
        timeout_minutes=timeout_minutes,
    )
    ctx = resolve(TransferRequest(route=route), transfer_id, None, allowed_subscriptions=list(allowed_subscriptions))
    if not pipelines:
        return ctx
    export = (
        pipeline(
            ctx.source,
            "export",
            EXPORT_PIPELINE,
            container_uri=export_container,
            secret_uri=export_secret,
            storage_access_mode=export_mode,
            options=export_options,
        )
        if ctx.has_source
        else None
    )
    imp = (
        pipeline(
            ctx.target,
            "import",
            IMPORT_PIPELINE,
            container_uri=import_container or export_container,
            secret_uri=import_secret,
            storage_access_mode=import_mode,
            options=import_options,
            source_trigger=source_trigger,
        )
        if ctx.has_target
        else None
    )
    return ctx.with_pipelines(export, imp)


@dataclass
class FakeAzure:
    """The three fakes, filled with what ``ctx`` needs to pass preflight: its pipelines, their containers (empty)
    and valid SAS secrets for each (export rawl, import rld, bridge cw)."""

    runs: FakeRuns
    blobs: FakeBlobs
    secrets: FakeSecrets

    @classmethod
    def for_ctx(cls, ctx: TransferContext) -> FakeAzure:
        runs, blobs, secrets = FakeRuns(), FakeBlobs(), FakeSecrets()
        sides = [(ctx.source, ctx.export, "rawl")] if ctx.has_source else []
        sides += [(ctx.target, ctx.imp, "rld")] if ctx.has_target else []
        for registry, facts, sp in sides:
            runs.add_pipeline(registry, facts)
            blobs.add_container(facts.container_uri)
            if facts.secret_uri:
                secrets.add(facts.secret_uri, sas_token(sp))
        if ctx.route.bridge.secret_uri:
            secrets.add(ctx.route.bridge.secret_uri, sas_token("cw"))
        return cls(runs, blobs, secrets)


@dataclass
class FakeClock:
    """A monotonic clock and a sleep that only moves it; ``on_sleep(n)`` runs after the n-th sleep (from 1)."""

    now: float = 1000.0
    sleeps: list[float] = field(default_factory=list)
    on_sleep: Callable[[int], None] | None = None

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds
        if self.on_sleep is not None:
            self.on_sleep(len(self.sleeps))


def _satisfy_ports(runs: FakeRuns, blobs: FakeBlobs, secrets: FakeSecrets) -> tuple[PipelineRuns, Blobs, Secrets]:
    # mypy checks here that each fake satisfies its Protocol
    return runs, blobs, secrets


# --- ARM: who may read a vault's secrets ----------------------------------------------------------------------


@dataclass
class FakeVaultAccess:
    """``VaultAccess`` in memory: ``vaults[vault URL]`` is the vault's facts (or an exception to raise); a URI
    of another vault raises NotFoundError. ``asked`` lists (subscription, secret URI, principals) per call."""

    vaults: dict[str, VaultAccessFacts | Exception] = field(default_factory=dict)
    asked: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)

    def vault_access(self, subscription: str, secret_uri: str, principals: Sequence[str]) -> VaultAccessFacts:
        self.asked.append((subscription, secret_uri, tuple(principals)))
        base = secret_uri.split("/secrets/")[0]
        found = self.vaults.get(base)
        if found is None:
            raise NotFoundError(
                f"no key vault with URI {base} is visible to this identity in subscription {subscription}"
            )
        if isinstance(found, Exception):
            raise found
        return found


def _satisfy_access_port(access: FakeVaultAccess) -> VaultAccess:
    return access
