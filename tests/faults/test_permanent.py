"""Permanent faults fail once, clearly: no retry can fix them, so none is made.

Each case is a transfer that cannot succeed until a person changes something. It must fail with one
message naming the cause, no task may run twice, and a fault that can be seen before anything is created
must leave no pipelineRuns PUT in the stand-in's request log. Two faults are also shown where preflight
cannot see them (this worker cannot read the registries): then the run that meets them fails once.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from azure.storage.blob import BlobClient

from acr_transfer.errors import AcrTransferError, PreflightError
from acr_transfer.settings import get_settings
from flows.transfer import registry_transfer
from tests.faults.record import record
from tests.support import azure
from tests.support.images import Pushed, push_file_artifact
from tests.support.standin import StandIn
from tests.support.transfer import arm_puts, request, route

pytestmark = [pytest.mark.faults, pytest.mark.integration, pytest.mark.usefixtures("prefect_server")]


@pytest.fixture(scope="module")
def image(standin: StandIn) -> Pushed:
    return push_file_artifact(_login(standin, "sourceregistry"), "faults/permanent", "v1", b"permanent payload")


@pytest.fixture
def unreadable_registries(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """This worker cannot read the registries' data plane (checks and digest comparison off)."""
    monkeypatch.setenv("ACR_TRANSFER_VERIFY_DIGESTS", "false")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def _login(standin: StandIn, registry: str) -> str:
    return str(standin.topology["registries"][registry]["login_server"])


def _export_with_secret(standin: StandIn, name: str, sas: str, enabled: bool = True) -> dict[str, Any]:
    """An export pipeline whose Key Vault secret holds ``sas``; returns route overrides that use it."""
    azure.export_pipeline_with_secret(standin, name, f"{name}sas", sas, enabled=enabled)
    return {"source": {"registry": {"resource_group": azure.RG, "name": "sourceregistry"}, "export_pipeline": name}}


@dataclass(frozen=True)
class Case:
    """How to set the fault up (returns route overrides and the artifact), what the message must say, and
    how many run PUTs the failure may leave (0: caught up front)."""

    setup: Callable[[StandIn, Pushed, str], tuple[dict[str, Any], str]]
    words: tuple[str, ...]
    puts: int = 0


def _expired(s: StandIn, img: Pushed, tid: str) -> tuple[dict[str, Any], str]:
    sas = azure.container_sas(s, "sourcestorage", "transfer", "rawl", hours=-1)
    return _export_with_secret(s, f"pexp{tid}", sas), img.by_tag


def _no_write(s: StandIn, img: Pushed, tid: str) -> tuple[dict[str, Any], str]:
    return _export_with_secret(s, f"pnow{tid}", azure.container_sas(s, "sourcestorage", "transfer", "ral")), img.by_tag


def _disabled(s: StandIn, img: Pushed, tid: str) -> tuple[dict[str, Any], str]:
    sas = azure.container_sas(s, "sourcestorage", "transfer", "rawl")
    return _export_with_secret(s, f"pdis{tid}", sas, enabled=False), img.by_tag


def _missing_pipeline(s: StandIn, img: Pushed, tid: str) -> tuple[dict[str, Any], str]:
    return {
        "target": {
            "registry": {"resource_group": azure.RG, "name": "targetregistry"},
            "import_pipeline": "nosuchimport",
        }
    }, img.by_tag


def _missing_artifact(s: StandIn, img: Pushed, tid: str) -> tuple[dict[str, Any], str]:
    return {}, f"faults/absent{tid}:v1"


def _blob_taken(s: StandIn, img: Pushed, tid: str) -> tuple[dict[str, Any], str]:
    container = s.topology["storage_accounts"]["sourcestorage"]["containers"]["transfer"]
    sas = azure.container_sas(s, "sourcestorage", "transfer", "rw")[1:]
    BlobClient.from_blob_url(f"{container}/permanent/{tid}/batch001.tar", credential=sas).upload_blob(b"not ours")
    return {}, img.by_tag


def _tag_conflict(s: StandIn, img: Pushed, tid: str) -> tuple[dict[str, Any], str]:
    source = push_file_artifact(_login(s, "sourceregistry"), "faults/conflict", tid, b"the source's content")
    push_file_artifact(_login(s, "targetregistry"), "faults/conflict", tid, b"other content already in the target")
    return {}, source.by_tag


CASES = {
    "expired SAS": Case(_expired, ("pexp", "expired", "renew")),
    "SAS without write": Case(_no_write, ("pnow", "'w'")),
    "disabled secret": Case(_disabled, ("pdis", "disabled")),
    "missing pipeline": Case(_missing_pipeline, ("nosuchimport", "does not exist")),
    "artifact missing in the source": Case(_missing_artifact, ("faults/absent", "not found in source registry")),
    "blob exists without OverwriteBlobs": Case(_blob_taken, ("permanent/", "batch001.tar", "OverwriteBlobs")),
    "tag conflict without OverwriteTags": Case(_tag_conflict, ("faults/conflict", "OverwriteTags")),
}
# where this worker cannot read the registries, preflight cannot see these two: the run that meets them fails
AT_RUN_TIME = {
    "artifact missing in the source": Case(_missing_artifact, ("faults/absent", "Export failed"), puts=1),
    "tag conflict without OverwriteTags": Case(_tag_conflict, ("faults/conflict", "Import failed"), puts=2),
}


@pytest.mark.parametrize("name", list(CASES))
def test_permanent_fault_fails_once_before_anything_is_created(standin: StandIn, image: Pushed, name: str) -> None:
    error, puts, tasks = _fail(standin, image, CASES[name])
    assert isinstance(error, PreflightError), f"{type(error).__name__}: {error}"
    assert len(error.failures) == 1, error.failures
    assert puts == [], "a run was created although preflight could see the fault"
    record("permanent", fault=name, caught="preflight", message=error.failures[0], run_puts=0, attempts=max(tasks))


@pytest.mark.parametrize("name", list(AT_RUN_TIME))
def test_permanent_fault_at_run_time_fails_after_one_run(
    standin: StandIn, image: Pushed, name: str, unreadable_registries: None
) -> None:
    case = AT_RUN_TIME[name]
    error, puts, tasks = _fail(standin, image, case)
    assert not isinstance(error, PreflightError)
    assert "1 batch(es) failed" in str(error) and str(error).count("\nbatch ") == 1, str(error)
    assert len(puts) == case.puts, [p["path"] for p in puts]
    record(
        "permanent",
        fault=name,
        caught="run (registries unreadable)",
        message=str(error).split("\n", 1)[1],
        run_puts=len(puts),
        attempts=max(tasks),
    )


def _fail(standin: StandIn, image: Pushed, case: Case) -> tuple[AcrTransferError, list[dict[str, Any]], list[int]]:
    """Run the failing transfer; its error, the run PUTs it made, and how often each of its tasks ran."""
    tid = uuid.uuid4().hex[:12]
    overrides, artifact = case.setup(standin, image, tid)
    rt = route(standin, "permanent", **overrides)
    standin.clear_requests()
    state = registry_transfer(request(rt, [artifact], transfer_id=tid), return_state=True)
    assert state.is_failed()
    error = state.result(raise_on_failure=False)
    assert isinstance(error, AcrTransferError), repr(error)
    message = str(error)
    for word in case.words:
        assert word in message, f"{word!r} not in: {message}"
    tasks = _task_run_counts(state.state_details.flow_run_id)
    assert tasks and max(tasks) == 1, f"a task was retried after a permanent fault: {tasks}"
    return error, arm_puts(standin), tasks


def _task_run_counts(flow_run_id: Any) -> list[int]:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    with get_client(sync_client=True) as client:
        for _ in range(20):  # task-run states reach the server through the events pipeline
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
            if runs and all(r.state and r.state.is_final() for r in runs):
                return [r.run_count for r in runs]
            time.sleep(0.25)
    return [r.run_count for r in runs]


def test_a_refused_bridge_copy_names_the_key_vault_secret_whose_sas_failed(standin: StandIn, image: Pushed) -> None:
    """Preflight saw a valid bridge SAS; storage then refuses the copy with 403 (the SAS was revoked meanwhile,
    or a policy denies it): the failure names the route's bridge secret and its vault, as preflight would."""
    vault = standin.topology["vaults"]["targetvault"]["url"]
    standin.add_fault(
        service="storage",
        method="PUT",
        path="^/targetstorage/transfer/",
        status=403,
        code="AuthorizationFailure",
        message="This request is not authorized to perform this operation.",
        count=0,
    )
    try:
        words = ("secret 'acrbridgesas'", "403 AuthorizationFailure", "renew it", vault)
        error, puts, _ = _fail(standin, image, Case(lambda s, img, tid: ({}, img.by_tag), words, puts=1))
    finally:
        standin.clear_faults()
    assert not isinstance(error, PreflightError)
    assert [p["path"].rsplit("/", 1)[-1][0] for p in puts] == ["x"]  # exported; no import run was created
    message = str(error).split("\n", 1)[-1]
    record("permanent", fault="bridge copy refused (403)", caught="bridge", message=message, run_puts=1, attempts=1)
