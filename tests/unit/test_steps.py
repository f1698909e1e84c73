"""The runbook's decisions over fakes of the three ports: which attempt to continue, what each run request
says, when the trigger's run is adopted, when a copy is needed, and what counts as verified."""

from __future__ import annotations

import time
from typing import Any

import pytest

from acr_transfer import steps
from acr_transfer.azure.registry import RunState
from acr_transfer.context import TransferContext
from acr_transfer.errors import (
    AuthError,
    ConfigError,
    NotFoundError,
    PermanentError,
    RunTimeoutError,
    ThrottledError,
    VerificationError,
)
from acr_transfer.naming import BatchPlan
from acr_transfer.preflight import DigestReader
from acr_transfer.steps import ArtifactResult, ArtifactStatus, TriggerWait
from tests.unit.fakes import (
    BRIDGE_SECRET,
    DIGEST_A,
    DIGEST_B,
    EXPORT_CONTAINER,
    EXPORT_SECRET,
    IMPORT_CONTAINER,
    TID,
    FakeAzure,
    FakeClock,
    make_ctx,
    run_state,
)

BLOB = f"demo/{TID}/batch001.tar"


def xname(attempt: int, batch: int = 1) -> str:
    return f"x{TID}b{batch:03d}a{attempt}"


def iname(attempt: int, batch: int = 1) -> str:
    return f"i{TID}b{batch:03d}a{attempt}"


# --- current(): which attempt to continue -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        pytest.param([], None, id="none"),
        pytest.param(["Failed"], None, id="a1-failed"),
        pytest.param(["Canceled"], None, id="a1-canceled"),
        pytest.param(["Running"], "a1", id="a1-running"),
        pytest.param([None], "a1", id="a1-accepted-no-status-yet"),
        pytest.param(["Succeeded"], "a1", id="a1-succeeded"),
        pytest.param(["Failed", "Running"], "a2", id="a1-failed-a2-running"),
        pytest.param(["Failed", "Failed"], None, id="a1-failed-a2-failed"),
        pytest.param(["Failed", "Succeeded"], "a2", id="a1-failed-a2-succeeded"),
        pytest.param(["Succeeded", "Failed"], "a1", id="a1-succeeded-a2-failed"),
        pytest.param(["Failed", "Failed", "Running"], "a3", id="two-failed-a3-running"),
    ],
)
def test_current_picks_the_attempt_to_continue(history: list[str | None], expected: str | None) -> None:
    found = [run_state(f"a{k}", status) for k, status in enumerate(history, start=1)]
    chosen = steps.current(found)
    assert (chosen.name if chosen else None) == expected


def test_current_does_not_take_provisioning_succeeded_with_status_failed_as_done() -> None:
    # ARM answers provisioningState Succeeded for a created run whose response.status later says Failed
    run = run_state("a1", "Failed", provisioning_state="Succeeded")
    assert steps.current([run]) is None


def test_attempts_stop_at_the_first_missing_name() -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, run_state(xname(1), "Failed"), run_state(xname(2), "Failed"), run_state(xname(4)))
    found = steps.attempts(azure.runs, ctx.source, lambda k: xname(k))
    assert [r.name for r in found] == [xname(1), xname(2)]
    assert azure.runs.calls["get_run"] == 3


# --- start_export -------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("history", "returned"),
    [
        pytest.param(["Succeeded"], 1, id="reuses-succeeded"),
        pytest.param(["Running"], 1, id="watches-running"),
        pytest.param(["Failed", "Running"], 2, id="watches-running-a2"),
        pytest.param(["Failed", "Succeeded"], 2, id="reuses-succeeded-a2"),
    ],
)
def test_start_export_continues_an_existing_attempt_without_creating(history: list[str], returned: int) -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, *(run_state(xname(k), s, blob=BLOB) for k, s in enumerate(history, start=1)))
    run = steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, ctx.plan.batches[0])
    assert run.name == xname(returned)
    assert azure.runs.calls["create_run"] == 0


@pytest.mark.parametrize(
    ("failed", "blob_exists", "options", "blob"),
    [
        pytest.param(0, False, (), BLOB, id="first-attempt"),
        pytest.param(0, True, (), BLOB, id="first-attempt-ignores-existing-blob"),
        pytest.param(1, False, (), BLOB, id="after-failed-no-partial-blob"),
        pytest.param(1, True, (), f"demo/{TID}/batch001-a2.tar", id="after-failed-beside-partial-blob"),
        pytest.param(2, True, (), f"demo/{TID}/batch001-a3.tar", id="a3-beside-partial-blob"),
        pytest.param(1, True, ("OverwriteBlobs",), BLOB, id="overwrite-blobs-reuses-name"),
    ],
)
def test_start_export_creates_the_next_attempt(
    failed: int, blob_exists: bool, options: tuple[str, ...], blob: str
) -> None:
    ctx = make_ctx(export_options=options)
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, *(run_state(xname(k), "Failed", blob=BLOB) for k in range(1, failed + 1)))
    if blob_exists:
        azure.blobs.add_container(EXPORT_CONTAINER, BLOB)
    run = steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, ctx.plan.batches[0])
    assert azure.runs.created == [
        (
            ctx.source,
            xname(failed + 1),
            {
                "pipelineResourceId": ctx.export.id,
                "artifacts": ["demo/hello:v1", "demo/world:v1"],
                "target": {"type": "AzureStorageBlob", "name": blob},
            },
        )
    ]
    assert (run.name, run.blob, run.status) == (xname(failed + 1), blob, "Running")


def test_start_export_looks_for_the_partial_blob_with_the_export_sas() -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, run_state(xname(1), "Failed", blob=BLOB))
    steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, ctx.plan.batches[0])
    assert azure.blobs.looked_up == [(EXPORT_CONTAINER, BLOB, azure.secrets.token(EXPORT_SECRET))]


def test_start_export_with_overwrite_blobs_does_not_look_for_a_partial_blob() -> None:
    ctx = make_ctx(export_options=("OverwriteBlobs",))
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, run_state(xname(1), "Failed", blob=BLOB))
    steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, ctx.plan.batches[0])
    assert (azure.blobs.looked_up, azure.secrets.read) == ([], [])


def test_start_export_in_managed_identity_mode_reads_no_secret() -> None:
    ctx = make_ctx(export_mode="ManagedIdentity", export_secret=None)
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, run_state(xname(1), "Failed", blob=BLOB))
    azure.blobs.add_container(EXPORT_CONTAINER, BLOB)
    run = steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, ctx.plan.batches[0])
    assert run.blob == f"demo/{TID}/batch001-a2.tar"
    assert azure.blobs.looked_up == [(EXPORT_CONTAINER, BLOB, None)]
    assert azure.secrets.read == []


def test_start_export_in_sas_mode_without_secret_names_the_problem() -> None:
    ctx = make_ctx(export_secret=None)
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, run_state(xname(1), "Failed", blob=BLOB))
    with pytest.raises(ConfigError, match="SasToken-mode pipeline has no keyVaultUri"):
        steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, ctx.plan.batches[0])
    assert azure.runs.calls["create_run"] == 0


@pytest.mark.parametrize(
    ("template", "second_blob"),
    [
        pytest.param("{route}/{transfer_id}/b{batch}", f"demo/{TID}/b001-a2", id="no-extension"),
        pytest.param("exports.d/{transfer_id}/b{batch}", f"exports.d/{TID}/b001-a2", id="dot-in-a-folder-only"),
        pytest.param("{transfer_id}.{batch}.tar.gz", f"{TID}.001.tar-a2.gz", id="last-extension"),
    ],
)
def test_start_export_attempt_blob_names(template: str, second_blob: str) -> None:
    ctx = make_ctx(blob_name_template=template)
    batch = ctx.plan.batches[0]
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.source, run_state(xname(1), "Failed", blob=batch.blob_name))
    azure.blobs.add_container(EXPORT_CONTAINER, batch.blob_name)
    run = steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, batch)
    assert run.blob == second_blob


def test_start_export_names_each_batch_by_its_index() -> None:
    ctx = make_ctx(artifacts=["a:1", "b:1", "c:1"], batch_size=2)
    azure = FakeAzure.for_ctx(ctx)
    for batch in ctx.plan.batches:
        steps.start_export(azure.runs, azure.blobs, azure.secrets, ctx, batch)
    assert [(name, body["artifacts"], body["target"]["name"]) for _, name, body in azure.runs.created] == [
        (xname(1, 1), ["a:1", "b:1"], f"demo/{TID}/batch001.tar"),
        (xname(1, 2), ["c:1"], f"demo/{TID}/batch002.tar"),
    ]


# --- start_import / create_manual_import --------------------------------------------------------------------------


def test_start_import_with_the_source_trigger_on_and_no_attempt_leaves_it_to_the_trigger() -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    assert steps.start_import(azure.runs, ctx, ctx.plan.batches[0], BLOB, DIGEST_A) is None
    assert azure.runs.calls["create_run"] == 0


def test_start_import_with_the_trigger_on_after_a_failed_manual_attempt_creates_the_next() -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.target, run_state(iname(1), "Failed", kind="import", blob=BLOB))
    run = steps.start_import(azure.runs, ctx, ctx.plan.batches[0], BLOB, None)
    assert run is not None and run.name == iname(2)
    assert azure.runs.created_names == [iname(2)]


@pytest.mark.parametrize(
    ("catalog_digest", "body"),
    [
        pytest.param(
            DIGEST_A,
            {"source": {"type": "AzureStorageBlob", "name": BLOB}, "catalogDigest": DIGEST_A},
            id="with-catalog-digest",
        ),
        pytest.param(None, {"source": {"type": "AzureStorageBlob", "name": BLOB}}, id="without-catalog-digest"),
        pytest.param("", {"source": {"type": "AzureStorageBlob", "name": BLOB}}, id="empty-catalog-digest"),
    ],
)
def test_start_import_request_body(catalog_digest: str | None, body: dict[str, Any]) -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    run = steps.start_import(azure.runs, ctx, ctx.plan.batches[0], BLOB, catalog_digest)
    assert azure.runs.created == [(ctx.target, iname(1), {"pipelineResourceId": ctx.imp.id, **body})]
    assert run is not None and run.blob == BLOB


@pytest.mark.parametrize(
    ("history", "returned", "creates"),
    [
        pytest.param(["Succeeded"], iname(1), 0, id="reuses-succeeded"),
        pytest.param(["Running"], iname(1), 0, id="watches-running"),
        pytest.param(["Failed"], iname(2), 1, id="a2-after-failed"),
        pytest.param(["Failed", "Failed"], iname(3), 1, id="a3-after-two-failed"),
    ],
)
def test_start_import_attempts(history: list[str], returned: str, creates: int) -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.target, *(run_state(iname(k), s, kind="import") for k, s in enumerate(history, start=1)))
    run = steps.start_import(azure.runs, ctx, ctx.plan.batches[0], BLOB, None)
    assert run is not None and run.name == returned
    assert azure.runs.calls["create_run"] == creates


# --- await_trigger_run --------------------------------------------------------------------------------------------

WAIT = TriggerWait(seconds=60, min_delay=5, max_delay=20)


def trigger_run(
    ctx: TransferContext, status: str, *, blob: str = BLOB, start: str = "2026-01-01T10:00:00Z"
) -> RunState:
    return run_state(
        f"{ctx.imp.name}_{start.replace(':', '')}",
        status,
        kind="import",
        blob=blob,
        pipeline_id=ctx.imp.id.upper(),  # ARM ids compare without regard to case
        trigger_timestamp=start,
        start_time=start,
    )


def test_await_trigger_run_adopts_the_trigger_run_at_once() -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.target, trigger_run(ctx, "Running"))
    clock = FakeClock()
    run, by_trigger = steps.await_trigger_run(
        azure.runs, ctx, ctx.plan.batches[0], BLOB, None, WAIT, clock=clock, sleep=clock.sleep
    )
    assert (run.name, by_trigger) == (f"{ctx.imp.name}_2026-01-01T100000Z", True)
    assert (clock.sleeps, azure.runs.calls["create_run"]) == ([], 0)


def test_await_trigger_run_waits_with_growing_delays_until_the_run_appears() -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    clock = FakeClock(on_sleep=lambda n: azure.runs.put(ctx.target, trigger_run(ctx, "Succeeded")) if n == 3 else None)
    run, by_trigger = steps.await_trigger_run(
        azure.runs, ctx, ctx.plan.batches[0], BLOB, None, WAIT, clock=clock, sleep=clock.sleep
    )
    assert by_trigger and run.succeeded
    assert clock.sleeps == [5, 7.5, 11.25]
    assert azure.runs.calls["create_run"] == 0


def test_await_trigger_run_picks_the_newest_trigger_run() -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    old = trigger_run(ctx, "Failed", start="2026-01-01T09:00:00Z")
    new = trigger_run(ctx, "Running", start="2026-01-01T11:00:00Z")
    azure.runs.put(ctx.target, new, old)
    clock = FakeClock()
    run, by_trigger = steps.await_trigger_run(
        azure.runs, ctx, ctx.plan.batches[0], BLOB, None, WAIT, clock=clock, sleep=clock.sleep
    )
    assert (run.name, by_trigger) == (new.name, True)


def test_await_trigger_run_after_a_failed_trigger_run_imports_by_hand() -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.target, trigger_run(ctx, "Failed"))
    clock = FakeClock()
    run, by_trigger = steps.await_trigger_run(
        azure.runs, ctx, ctx.plan.batches[0], BLOB, DIGEST_A, WAIT, clock=clock, sleep=clock.sleep
    )
    assert (run.name, by_trigger) == (iname(1), False)
    assert azure.runs.created == [
        (
            ctx.target,
            iname(1),
            {
                "pipelineResourceId": ctx.imp.id,
                "source": {"type": "AzureStorageBlob", "name": BLOB},
                "catalogDigest": DIGEST_A,
            },
        )
    ]


def test_await_trigger_run_manual_import_after_an_earlier_manual_attempt_takes_the_next_number() -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    azure.runs.put(ctx.target, trigger_run(ctx, "Failed"), run_state(iname(1), "Failed", kind="import", blob="old"))
    clock = FakeClock()
    run, by_trigger = steps.await_trigger_run(
        azure.runs, ctx, ctx.plan.batches[0], BLOB, None, WAIT, clock=clock, sleep=clock.sleep
    )
    assert (run.name, by_trigger) == (iname(2), False)


@pytest.mark.parametrize(
    "unrelated",
    [
        pytest.param("other-blob", id="trigger-run-of-another-blob"),
        pytest.param("other-pipeline", id="run-of-another-pipeline"),
        pytest.param("manual", id="our-own-manual-run-is-no-trigger-run"),
        pytest.param("none", id="no-run-at-all"),
    ],
)
def test_await_trigger_run_times_out_naming_the_blob(unrelated: str) -> None:
    ctx = make_ctx(source_trigger="Enabled")
    azure = FakeAzure.for_ctx(ctx)
    if unrelated == "other-blob":
        azure.runs.put(ctx.target, trigger_run(ctx, "Succeeded", blob="demo/other/batch001.tar"))
    elif unrelated == "other-pipeline":
        other = ctx.target.child("importPipelines", "otherpipeline")
        azure.runs.put(
            ctx.target,
            run_state(
                "otherpipeline_1", "Succeeded", kind="import", blob=BLOB, pipeline_id=other, trigger_timestamp="t"
            ),
        )
    elif unrelated == "manual":
        azure.runs.put(ctx.target, run_state(iname(1), "Succeeded", kind="import", blob=BLOB, pipeline_id=ctx.imp.id))
    clock = FakeClock()
    started, wall = clock.now, time.monotonic()
    with pytest.raises(RunTimeoutError) as info:
        steps.await_trigger_run(azure.runs, ctx, ctx.plan.batches[0], BLOB, None, WAIT, clock=clock, sleep=clock.sleep)
    message = info.value.message
    assert f"blob '{BLOB}'" in message and "import pipeline 'importpipeline'" in message and "within 1 min" in message
    assert clock.now - started >= WAIT.seconds
    assert clock.sleeps == [5, 7.5, 11.25, 16.875, 20]  # grows ×1.5, capped at max_delay, until the deadline
    assert time.monotonic() - wall < 1  # the fake sleep moved the clock; nothing really slept
    assert azure.runs.calls["create_run"] == 0


# --- bridge -------------------------------------------------------------------------------------------------------


def test_bridge_is_not_needed_when_both_pipelines_share_a_container() -> None:
    ctx = make_ctx(import_container=EXPORT_CONTAINER + "/")
    azure = FakeAzure.for_ctx(ctx)
    assert steps.bridge(azure.blobs, azure.secrets, ctx, run_state(xname(1), blob=BLOB)) is None
    assert azure.blobs.copies == []


def test_bridge_from_a_managed_identity_export_pipeline_reads_with_a_delegated_sas() -> None:
    ctx = make_ctx(import_container=IMPORT_CONTAINER, export_mode="ManagedIdentity", export_secret=None)
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.add_container(EXPORT_CONTAINER, BLOB)
    steps.bridge(azure.blobs, azure.secrets, ctx, run_state(xname(1), blob=BLOB))
    assert azure.blobs.delegated == [(EXPORT_CONTAINER, BLOB)]  # signed by the worker's identity, for this blob
    [(source, blob, source_sas, target, _)] = azure.blobs.copies
    assert (source, blob, target) == (EXPORT_CONTAINER, BLOB, IMPORT_CONTAINER)
    assert source_sas.permissions == "r" and source_sas.resource == "b"
    assert source_sas.expiry is not None  # lasts the route's deadline and an hour, not open-ended
    assert ctx.export.secret_uri is None and all(uri != ctx.export.secret_uri for uri in azure.secrets.read)


@pytest.mark.parametrize("bridge_secret", [BRIDGE_SECRET, None], ids=["bridge-sas", "worker-identity-writes"])
def test_bridge_copies_the_exported_blob_into_the_import_container(bridge_secret: str | None) -> None:
    ctx = make_ctx(import_container=IMPORT_CONTAINER, bridge_secret=bridge_secret)
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.add_container(EXPORT_CONTAINER, f"demo/{TID}/batch001-a2.tar")
    facts = steps.bridge(azure.blobs, azure.secrets, ctx, run_state(xname(2), blob=f"demo/{TID}/batch001-a2.tar"))
    target_sas = azure.secrets.token(BRIDGE_SECRET) if bridge_secret else None
    assert azure.blobs.copies == [
        (
            EXPORT_CONTAINER,
            f"demo/{TID}/batch001-a2.tar",
            azure.secrets.token(EXPORT_SECRET),
            IMPORT_CONTAINER,
            target_sas,
        )
    ]
    assert facts is not None and facts.name == f"demo/{TID}/batch001-a2.tar"
    assert f"demo/{TID}/batch001-a2.tar" in azure.blobs.containers[IMPORT_CONTAINER]


# --- verify -------------------------------------------------------------------------------------------------------


def batch_of(*artifacts: str) -> BatchPlan:
    return BatchPlan(1, list(artifacts), BLOB)


@pytest.mark.parametrize(
    ("requested", "imported", "digests"),
    [
        pytest.param(["a/b:v1", "c:v2"], ["a/b:v1", "c:v2"], ["", ""], id="all-imported"),
        pytest.param(["a/b:v1"], ["a/b:v1", "extra:v9"], [""], id="more-imported-than-asked"),
        pytest.param([f"a@{DIGEST_A}"], [f"a@{DIGEST_A}"], [DIGEST_A], id="digest-ref"),
        pytest.param(["repo:latest"], ["repo"], [""], id="imported-repo-means-latest"),
        pytest.param(["repo:v1"], [" repo:v1 ", "not a ref!"], [""], id="imported-list-not-normalised"),
    ],
)
def test_verify_all_imported(requested: list[str], imported: list[str], digests: list[str]) -> None:
    export = run_state(xname(1), blob=BLOB)
    imp = run_state(iname(1), kind="import", blob=BLOB, imported=imported)
    results = steps.verify(batch_of(*requested), export, imp)
    assert results == [
        ArtifactResult(ref, 1, xname(1), iname(1), ArtifactStatus.VERIFIED, digest)
        for ref, digest in zip(requested, digests, strict=True)
    ]


def test_verify_names_the_missing_artifact_and_the_run_message() -> None:
    imp = run_state(iname(1), kind="import", imported=["a:v1"], error="manifest unknown for b:v1")
    with pytest.raises(VerificationError) as info:
        steps.verify(batch_of("a:v1", "b:v1"), run_state(xname(1)), imp)
    assert info.value.message == (
        f"batch 1: import run '{iname(1)}' did not import 1 of 2 artifacts: b:v1 "
        "(run message: manifest unknown for b:v1)"
    )


def test_verify_a_digest_ref_is_not_satisfied_by_another_digest() -> None:
    imp = run_state(iname(1), kind="import", imported=[f"a@{DIGEST_B}"])
    with pytest.raises(VerificationError, match=f"a@{DIGEST_A}"):
        steps.verify(batch_of(f"a@{DIGEST_A}"), run_state(xname(1)), imp)


def test_verify_import_only_has_no_export_run() -> None:
    imp = run_state(iname(1), kind="import", imported=["a:v1"])
    (result,) = steps.verify(batch_of("a:v1"), None, imp)
    assert (result.export_run, result.import_run, result.status) == ("", iname(1), ArtifactStatus.VERIFIED)


# --- compare_digests ----------------------------------------------------------------------------------------------


def verified(ref: str, digest: str = "") -> ArtifactResult:
    return ArtifactResult(ref, 1, xname(1), iname(1), ArtifactStatus.VERIFIED, digest)


def reader(table: dict[str, str | None] | Exception, asked: list[str] | None = None) -> DigestReader:
    """A ``(repo, reference) → digest`` reader over ``{"repo:reference": digest}``, or one that raises."""

    def read(repo: str, reference: str) -> str | None:
        if asked is not None:
            asked.append(f"{repo}:{reference}")
        if isinstance(table, Exception):
            raise table
        return table[f"{repo}:{reference}"]

    return read


def test_compare_digests_equal_fills_the_digest() -> None:
    out, notes = steps.compare_digests([verified("a:v1")], reader({"a:v1": DIGEST_A}), reader({"a:v1": DIGEST_A}))
    assert (out, notes) == ([verified("a:v1", DIGEST_A)], [])


def test_compare_digests_a_digest_ref_reads_only_the_target() -> None:
    asked: list[str] = []
    target = reader({f"a:{DIGEST_A}": DIGEST_A})
    out, _ = steps.compare_digests([verified(f"a@{DIGEST_A}", DIGEST_A)], reader({}, asked), target)
    assert asked == []
    assert out[0].digest == DIGEST_A


def test_compare_digests_mismatch_names_both_digests() -> None:
    with pytest.raises(VerificationError) as info:
        steps.compare_digests([verified("a:v1")], reader({"a:v1": DIGEST_A}), reader({"a:v1": DIGEST_B}))
    assert info.value.message == f"digests differ between source and target: a:v1: source {DIGEST_A}, target {DIGEST_B}"


def test_compare_digests_a_snapshot_that_predates_a_push_is_read_again_before_a_mismatch() -> None:
    snapshot, target = reader({"a:v1": DIGEST_A, "b:v1": DIGEST_B}), reader({"a:v1": DIGEST_B, "b:v1": DIGEST_B})
    asked: list[str] = []
    fresh = reader({"a:v1": DIGEST_B}, asked)  # a:v1 was pushed again after the snapshot, and exported so
    out, _ = steps.compare_digests([verified("a:v1"), verified("b:v1")], snapshot, target, fresh_source=fresh)
    assert [r.digest for r in out] == [DIGEST_B, DIGEST_B]
    assert asked == ["a:v1"]  # only the one that differed
    with pytest.raises(VerificationError, match=f"a:v1: source {DIGEST_A}, target {DIGEST_B}"):
        steps.compare_digests([verified("a:v1")], snapshot, target, fresh_source=reader({"a:v1": DIGEST_A}))


def test_compare_digests_target_missing_names_the_artifact() -> None:
    with pytest.raises(VerificationError, match=r"not found in the target registry: b:v1$"):
        steps.compare_digests(
            [verified("a:v1"), verified("b:v1")],
            reader({"a:v1": DIGEST_A, "b:v1": DIGEST_B}),
            reader({"a:v1": DIGEST_A, "b:v1": None}),
        )


@pytest.mark.parametrize(
    ("error", "note"),
    [
        pytest.param(
            AuthError("401 on targetregistry"), "a:v1: digest not compared (401 on targetregistry)", id="auth"
        ),
        pytest.param(NotFoundError("no data plane"), "a:v1: digest not compared (no data plane)", id="not-found"),
        pytest.param(ValueError("odd"), "a:v1: digest not compared (ValueError)", id="unexpected"),
    ],
)
def test_compare_digests_an_unreadable_digest_is_a_note_not_a_failure(error: Exception, note: str) -> None:
    out, notes = steps.compare_digests([verified("a:v1")], reader({"a:v1": DIGEST_A}), reader(error))
    assert (out, notes) == ([verified("a:v1")], [note])


def test_compare_digests_a_transient_error_is_raised_for_a_retry() -> None:
    with pytest.raises(ThrottledError):
        steps.compare_digests([verified("a:v1")], reader({"a:v1": DIGEST_A}), reader(ThrottledError("429")))


# --- own_blobs ----------------------------------------------------------------------------------------------------


def test_own_blobs_are_every_blob_name_of_batches_this_transfer_exported() -> None:
    ctx = make_ctx(artifacts=["a:1", "b:1", "c:1", "d:1"], batch_size=1)
    azure = FakeAzure.for_ctx(ctx)
    blob = [b.blob_name for b in ctx.plan.batches]
    azure.runs.put(
        ctx.source,
        run_state(xname(1, 1), "Succeeded", blob=blob[0]),
        run_state(xname(1, 2), "Failed", blob=blob[1]),
        run_state(xname(1, 3), "Failed", blob=blob[2]),
        run_state(xname(2, 3), "Running", blob=blob[2].replace(".tar", "-a2.tar")),
    )
    # a failed attempt's batch keeps its base name (its partial blob is ours); the untried batch 4 is not ours
    assert steps.own_blobs(azure.runs, ctx) == {blob[0], blob[1], blob[2], f"demo/{TID}/batch003-a2.tar"}


def test_bridge_refuses_an_export_run_without_a_blob_name() -> None:
    ctx = make_ctx(import_container=IMPORT_CONTAINER)
    azure = FakeAzure.for_ctx(ctx)
    with pytest.raises(PermanentError, match=f"export run '{xname(1)}' names no blob to bridge"):
        steps.bridge(azure.blobs, azure.secrets, ctx, run_state(xname(1), blob=None))
    assert azure.blobs.copies == []
