"""Preflight over fakes of the three ports: each check passes or fails with a line naming the resource and the
fix, a transient error propagates (the task retries), and nothing is ever created."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import pytest

from acr_transfer import preflight, steps
from acr_transfer.errors import AuthError, NotFoundError, SasTokenError, ServiceUnavailableError, ThrottledError
from acr_transfer.preflight import Check, DigestReader
from tests.unit.fakes import (
    BRIDGE_SECRET,
    DIGEST_A,
    DIGEST_B,
    EXPORT_CONTAINER,
    EXPORT_PIPELINE,
    EXPORT_SECRET,
    IMPORT_CONTAINER,
    IMPORT_PIPELINE,
    IMPORT_SECRET,
    TID,
    FakeAzure,
    FakeRuns,
    make_ctx,
    pipeline,
    run_state,
    sas_token,
)

BLOB = f"demo/{TID}/batch001.tar"
EXPORT_VAULT = "https://sourcevault.vault.azure.net"


# --- check_pipeline -----------------------------------------------------------------------------------------------


def test_check_pipeline_missing_names_the_resource_group() -> None:
    ctx = make_ctx(pipelines=False)
    runs = FakeRuns()
    check, facts = preflight.check_pipeline(runs, ctx.source, "export", EXPORT_PIPELINE)
    assert facts is None
    assert check == Check(
        "export pipeline 'exportpipeline' on sourceregistry",
        False,
        "does not exist in resource group transfer-rg",
        "create the export pipeline or fix the route",
    )
    assert check.line == (
        "✗ export pipeline 'exportpipeline' on sourceregistry: does not exist in resource group transfer-rg"
        " — fix: create the export pipeline or fix the route"
    )
    assert runs.calls == {"get_pipeline": 1}  # read only: preflight creates nothing


def test_check_pipeline_permission_error_is_a_failed_check_with_its_message() -> None:
    ctx = make_ctx(pipelines=False)
    runs = FakeRuns()
    denied = AuthError("import pipeline 'importpipeline' on registry 'targetregistry': 403 AuthorizationFailed")
    runs.add_pipeline(ctx.target, denied, "import", IMPORT_PIPELINE)
    check, facts = preflight.check_pipeline(runs, ctx.target, "import", IMPORT_PIPELINE)
    assert (check.ok, check.detail, facts) == (False, denied.message, None)
    assert check.fix == "let this identity read the import pipeline, or fix the route"
    assert runs.calls["create_run"] == 0


def test_check_pipeline_transient_error_propagates_for_a_retry() -> None:
    ctx = make_ctx(pipelines=False)
    runs = FakeRuns()
    runs.add_pipeline(ctx.source, ServiceUnavailableError("503"), "export", EXPORT_PIPELINE)
    with pytest.raises(ServiceUnavailableError):
        preflight.check_pipeline(runs, ctx.source, "export", EXPORT_PIPELINE)


@pytest.mark.parametrize("state", ["Failed", "Updating", "Canceled"])
def test_check_pipeline_not_succeeded_fails_but_returns_the_facts(state: str) -> None:
    ctx = make_ctx(pipelines=False)
    runs = FakeRuns()
    facts = pipeline(ctx.source, "export", EXPORT_PIPELINE, container_uri=EXPORT_CONTAINER, provisioning_state=state)
    runs.add_pipeline(ctx.source, facts)
    check, got = preflight.check_pipeline(runs, ctx.source, "export", EXPORT_PIPELINE)
    assert (check.ok, check.detail, check.fix, got) == (
        False,
        f"provisioningState is {state}",
        "re-create the pipeline",
        facts,
    )


@pytest.mark.parametrize(
    ("kind", "name", "mode", "trigger", "line"),
    [
        pytest.param(
            "export",
            EXPORT_PIPELINE,
            "SasToken",
            None,
            f"✓ export pipeline 'exportpipeline' on sourceregistry: Succeeded, SasToken, container {EXPORT_CONTAINER}",
            id="export",
        ),
        pytest.param(
            "import",
            IMPORT_PIPELINE,
            "ManagedIdentity",
            "Enabled",
            f"✓ import pipeline 'importpipeline' on targetregistry: Succeeded, ManagedIdentity, container "
            f"{IMPORT_CONTAINER}, source trigger Enabled",
            id="import-with-trigger",
        ),
    ],
)
def test_check_pipeline_ok_line(kind: str, name: str, mode: str, trigger: str | None, line: str) -> None:
    ctx = make_ctx(pipelines=False)
    registry = ctx.source if kind == "export" else ctx.target
    container = EXPORT_CONTAINER if kind == "export" else IMPORT_CONTAINER
    runs = FakeRuns()
    facts = pipeline(
        registry, kind, name, container_uri=container + "/", storage_access_mode=mode, source_trigger=trigger
    )
    runs.add_pipeline(registry, facts)
    check, got = preflight.check_pipeline(runs, registry, kind, name)
    assert (check.line, got) == (line, facts)


# --- check_export_side --------------------------------------------------------------------------------------------

Setup = Callable[[FakeAzure], object]


def _token(sp: str = "rawl", *, expires_in: timedelta = timedelta(days=30), spr: str = "https", sr: str = "c") -> Setup:
    return lambda azure: azure.secrets.add(EXPORT_SECRET, sas_token(sp, expires_in=expires_in, spr=spr, sr=sr))


@pytest.mark.parametrize(
    ("setup", "detail"),
    [
        pytest.param(
            _token(expires_in=timedelta(hours=-1)),
            f"SAS token in secret 'acrexportsas' ({EXPORT_VAULT}) expired ",
            id="sas-expired",
        ),
        pytest.param(
            _token(expires_in=timedelta(minutes=30)),
            "before the transfer's deadline",
            id="sas-expires-before-deadline",
        ),
        pytest.param(
            _token(sp="rl"),
            "lacks permission(s) 'aw' (has 'rl', needs 'rawl')",
            id="sas-missing-permission",
        ),
        pytest.param(_token(spr="https,http"), "allows plain http (spr=https,http)", id="sas-allows-http"),
        pytest.param(_token(sr="b"), "scoped to a single blob", id="sas-for-one-blob"),
        pytest.param(
            lambda azure: azure.secrets.add(EXPORT_SECRET, enabled=False),
            f"secret 'acrexportsas' ({EXPORT_VAULT}) is disabled",
            id="secret-disabled",
        ),
        pytest.param(
            lambda azure: azure.secrets.add(EXPORT_SECRET, expires_on=datetime.now(UTC) - timedelta(days=1)),
            "(Key Vault expiry)",
            id="secret-expired-in-key-vault",
        ),
        pytest.param(
            lambda azure: azure.secrets.secrets.pop(EXPORT_SECRET),
            f"secret {EXPORT_SECRET} not found",
            id="secret-missing",
        ),
        pytest.param(
            lambda azure: azure.secrets.secrets.update({EXPORT_SECRET: SasTokenError("it has no signature (sig)")}),
            "it has no signature (sig)",
            id="secret-not-a-sas",
        ),
    ],
)
def test_check_export_side_bad_sas_fails_and_stops(setup: Setup, detail: str) -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    setup(azure)
    checks = preflight.check_export_side(ctx, azure.secrets, azure.blobs, set())
    assert len(checks) == 1, [c.line for c in checks]
    (check,) = checks
    assert check.name == f"export SAS secret {EXPORT_SECRET}" and not check.ok
    assert detail in check.detail
    assert check.fix == f"renew or fix the SAS in {EXPORT_SECRET} (needs sp ⊇ rawl, spr=https)"
    assert azure.blobs.checked == []  # the container is not listed with a SAS that failed


def test_check_export_side_all_good_lists_every_check() -> None:
    ctx = make_ctx(artifacts=["a:1", "b:1"], batch_size=1)
    azure = FakeAzure.for_ctx(ctx)
    checks = preflight.check_export_side(ctx, azure.secrets, azure.blobs, set())
    token = azure.secrets.token(EXPORT_SECRET)
    assert [c.line for c in checks] == [
        f"✓ export SAS secret {EXPORT_SECRET} — {token} covers 'rawl' until after the deadline",
        f"✓ export container {EXPORT_CONTAINER} — answers a list with its SAS",
        f"✓ export blob name 'demo/{TID}/batch001.tar': free",
        f"✓ export blob name 'demo/{TID}/batch002.tar': free",
    ]
    assert azure.blobs.checked == [(EXPORT_CONTAINER, token)]


def test_check_export_side_without_key_vault_uri() -> None:
    ctx = make_ctx(export_secret=None)
    azure = FakeAzure.for_ctx(ctx)
    checks = preflight.check_export_side(ctx, azure.secrets, azure.blobs, set())
    assert checks == [Check("export SAS secret", False, "the export pipeline has no keyVaultUri", "re-create it")]
    assert azure.blobs.checked == []


def test_check_export_side_managed_identity_reads_no_secret() -> None:
    ctx = make_ctx(export_mode="ManagedIdentity", export_secret=None)
    azure = FakeAzure.for_ctx(ctx)
    checks = preflight.check_export_side(ctx, azure.secrets, azure.blobs, set())
    assert [c.line for c in checks] == [
        f"✓ export container {EXPORT_CONTAINER} — answers a list with this identity",
        f"✓ export blob name '{BLOB}': free",
    ]
    assert (azure.secrets.read, azure.blobs.checked) == ([], [(EXPORT_CONTAINER, None)])


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(AuthError(f"list blobs in container {EXPORT_CONTAINER}: 403 AuthorizationFailure"), id="denied"),
        pytest.param(NotFoundError(f"list blobs in container {EXPORT_CONTAINER}: 404 ContainerNotFound"), id="gone"),
    ],
)
def test_check_export_side_container_unreachable(error: Exception) -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.container_errors[EXPORT_CONTAINER] = error
    container = next(
        c for c in preflight.check_export_side(ctx, azure.secrets, azure.blobs, set()) if "container" in c.name
    )
    assert (container.name, container.ok, container.detail) == (
        f"export container {EXPORT_CONTAINER}",
        False,
        str(error),
    )
    assert container.fix == "check the container exists and the SAS (or identity) may list it"


@pytest.mark.parametrize(
    ("options", "own", "blob_checks"),
    [
        pytest.param((), set(), [(False, f"blob '{BLOB}' already exists in {EXPORT_CONTAINER}")], id="taken"),
        pytest.param((), {BLOB}, [], id="this-transfers-own-blob"),
        pytest.param(("OverwriteBlobs",), set(), [], id="overwrite-blobs"),
    ],
)
def test_check_export_side_blob_name(
    options: tuple[str, ...], own: set[str], blob_checks: list[tuple[bool, str]]
) -> None:
    ctx = make_ctx(export_options=options)
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.add_container(EXPORT_CONTAINER, BLOB)
    checks = [c for c in preflight.check_export_side(ctx, azure.secrets, azure.blobs, own) if "blob name" in c.name]
    assert [(c.ok, c.detail.split(" and ")[0]) for c in checks] == blob_checks
    if checks:
        assert checks[0].detail.endswith("and the export pipeline lacks OverwriteBlobs")
        assert "enable OverwriteBlobs" in checks[0].fix


def test_check_export_side_transient_secret_error_propagates() -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    azure.secrets.secrets[EXPORT_SECRET] = ThrottledError("429 from Key Vault")
    with pytest.raises(ThrottledError):
        preflight.check_export_side(ctx, azure.secrets, azure.blobs, set())


def test_check_export_side_on_resume_after_a_retried_export_passes() -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.add_container(EXPORT_CONTAINER, BLOB, f"demo/{TID}/batch001-a2.tar")
    azure.runs.put(
        ctx.source,
        run_state(f"x{TID}b001a1", "Failed", blob=BLOB),
        run_state(f"x{TID}b001a2", "Succeeded", blob=f"demo/{TID}/batch001-a2.tar"),
    )
    checks = preflight.check_export_side(ctx, azure.secrets, azure.blobs, steps.own_blobs(azure.runs, ctx))
    assert preflight.failures(checks) == []


# --- check_import_side --------------------------------------------------------------------------------------------


def test_check_import_side_all_good() -> None:
    ctx = make_ctx()
    azure = FakeAzure.for_ctx(ctx)
    checks = preflight.check_import_side(ctx, azure.secrets, azure.blobs)
    token = azure.secrets.token(IMPORT_SECRET)
    assert [c.line for c in checks] == [
        f"✓ import SAS secret {IMPORT_SECRET} — {token} covers 'rl' until after the deadline",
        f"✓ import container {EXPORT_CONTAINER} — answers a list with its SAS",
    ]


@pytest.mark.parametrize(
    ("options", "sp", "problem"),
    [
        pytest.param((), "rl", None, id="rl-is-enough"),
        pytest.param(("DeleteSourceBlobOnSuccess",), "rl", "lacks permission(s) 'd'", id="delete-needs-d"),
        pytest.param(("DeleteSourceBlobOnSuccess",), "rdl", None, id="delete-with-d"),
        pytest.param((), "r", "lacks permission(s) 'l'", id="list-missing"),
    ],
)
def test_check_import_side_permissions(options: tuple[str, ...], sp: str, problem: str | None) -> None:
    ctx = make_ctx(import_options=options)
    azure = FakeAzure.for_ctx(ctx)
    azure.secrets.add(IMPORT_SECRET, sas_token(sp))
    first = preflight.check_import_side(ctx, azure.secrets, azure.blobs)[0]
    assert first.ok is (problem is None)
    if problem:
        assert problem in first.detail and "secret 'acrimportsas'" in first.detail


def test_import_sas_must_outlive_twice_the_timeout_the_export_sas_once() -> None:
    ctx = make_ctx(timeout_minutes=60)
    azure = FakeAzure.for_ctx(ctx)
    for uri, sp in ((EXPORT_SECRET, "rawl"), (IMPORT_SECRET, "rl")):
        azure.secrets.add(uri, sas_token(sp, expires_in=timedelta(minutes=90)))
    export = preflight.check_export_side(ctx, azure.secrets, azure.blobs, set())
    imp = preflight.check_import_side(ctx, azure.secrets, azure.blobs)
    assert preflight.failures(export) == []
    assert [c.name for c in preflight.failures(imp)] == [f"import SAS secret {IMPORT_SECRET}"]
    assert "before the transfer's deadline" in imp[0].detail


def test_check_import_side_without_key_vault_uri() -> None:
    ctx = make_ctx(import_secret=None)
    azure = FakeAzure.for_ctx(ctx)
    checks = preflight.check_import_side(ctx, azure.secrets, azure.blobs)
    assert checks == [Check("import SAS secret", False, "the import pipeline has no keyVaultUri", "re-create it")]


def test_check_import_side_container_unreachable() -> None:
    ctx = make_ctx(import_container=IMPORT_CONTAINER)
    azure = FakeAzure.for_ctx(ctx)
    azure.blobs.containers.pop(IMPORT_CONTAINER)
    checks = preflight.check_import_side(ctx, azure.secrets, azure.blobs)
    assert [(c.name, c.ok) for c in checks] == [
        (f"import SAS secret {IMPORT_SECRET}", True),
        (f"import container {IMPORT_CONTAINER}", False),
    ]
    assert checks[1].detail == f"container {IMPORT_CONTAINER} does not exist"


@pytest.mark.parametrize(
    ("import_container", "bridge_secret", "bridge_sp", "bridge_check"),
    [
        pytest.param(IMPORT_CONTAINER, BRIDGE_SECRET, "cw", True, id="bridged-sas-ok"),
        pytest.param(IMPORT_CONTAINER, BRIDGE_SECRET, "c", False, id="bridged-sas-lacks-write"),
        pytest.param(IMPORT_CONTAINER, None, "", None, id="bridged-worker-identity-writes"),
        pytest.param(None, BRIDGE_SECRET, "c", None, id="shared-container-no-bridge-check"),
    ],
)
def test_check_import_side_bridge_secret(
    import_container: str | None, bridge_secret: str | None, bridge_sp: str, bridge_check: bool | None
) -> None:
    ctx = make_ctx(import_container=import_container, bridge_secret=bridge_secret)
    azure = FakeAzure.for_ctx(ctx)
    if bridge_secret:
        azure.secrets.add(bridge_secret, sas_token(bridge_sp))
    checks = preflight.check_import_side(ctx, azure.secrets, azure.blobs)
    bridge = [c for c in checks if c.name.startswith("bridge SAS secret")]
    assert [c.ok for c in bridge] == ([] if bridge_check is None else [bridge_check])
    if bridge_check is False:
        assert "lacks permission(s) 'w' (has 'c', needs 'cw')" in bridge[0].detail
    if bridge_check is None:
        assert BRIDGE_SECRET not in azure.secrets.read


# --- check_artifacts ----------------------------------------------------------------------------------------------


def reader(table: dict[str, str | Exception | None], asked: list[str] | None = None) -> DigestReader:
    """``(repo, reference) → digest`` over ``{"repo:reference": digest | None | error}`` (absent: None)."""

    def read(repo: str, reference: str) -> str | None:
        if asked is not None:
            asked.append(f"{repo}:{reference}")
        found = table.get(f"{repo}:{reference}")
        if isinstance(found, Exception):
            raise found
        return found

    return read


BOTH = {"demo/hello:v1": DIGEST_A, "demo/world:v1": DIGEST_A}


@pytest.mark.parametrize(
    ("target", "options", "detail"),
    [
        pytest.param(BOTH, (), "2 of 2 exist in the source, no tag conflicts in the target", id="same-digests"),
        pytest.param({}, (), "2 of 2 exist in the source, no tag conflicts in the target", id="not-in-target-yet"),
        pytest.param(None, (), "2 of 2 exist in the source", id="target-not-readable-here"),
        pytest.param(
            {"demo/hello:v1": DIGEST_B}, ("OverwriteTags",), "2 of 2 exist in the source", id="overwrite-tags"
        ),
    ],
)
def test_check_artifacts_pass(
    target: dict[str, str | Exception | None] | None, options: tuple[str, ...], detail: str
) -> None:
    ctx = make_ctx(import_options=options)
    asked: list[str] = []
    checks = preflight.check_artifacts(ctx, reader(dict(BOTH)), reader(target, asked) if target is not None else None)
    assert checks == [Check("artifacts in sourceregistry", True, detail)]
    if "OverwriteTags" in options:
        assert asked == []


def test_check_artifacts_missing_in_source() -> None:
    ctx = make_ctx()
    checks = preflight.check_artifacts(ctx, reader({"demo/hello:v1": DIGEST_A}), reader({}))
    assert checks == [
        Check(
            "artifact 'demo/world:v1'",
            False,
            "not found in source registry sourceregistry",
            "push it, or correct the reference (repo:tag or repo@sha256:…)",
        )
    ]


def test_check_artifacts_tag_conflict_without_overwrite_tags() -> None:
    ctx = make_ctx()
    (check,) = preflight.check_artifacts(ctx, reader(dict(BOTH)), reader({"demo/world:v1": DIGEST_B}))
    assert (check.name, check.ok) == ("artifact 'demo/world:v1'", False)
    assert check.detail == (
        f"tag already points at {DIGEST_B} in target registry targetregistry (source has {DIGEST_A}) and import "
        "pipeline 'importpipeline' lacks OverwriteTags"
    )
    assert check.fix == "enable OverwriteTags on the import pipeline, or transfer under another tag"


def test_check_artifacts_digest_refs_skip_the_tag_check() -> None:
    ctx = make_ctx(artifacts=[f"demo/hello@{DIGEST_A}", "demo/world:v1"])
    asked: list[str] = []
    checks = preflight.check_artifacts(
        ctx,
        reader({f"demo/hello:{DIGEST_A}": DIGEST_A, "demo/world:v1": DIGEST_A}),
        reader({f"demo/hello:{DIGEST_A}": DIGEST_B, "demo/world:v1": DIGEST_A}, asked),
    )
    assert preflight.failures(checks) == []
    assert asked == ["demo/world:v1"]


@pytest.mark.parametrize(
    "error",
    [
        pytest.param(AuthError("401 reading demo/hello:v1 from sourceregistry"), id="auth"),
        pytest.param(NotFoundError("no data plane for sourceregistry"), id="no-data-plane"),
    ],
)
def test_check_artifacts_unreadable_registry_is_not_checked_not_failed(error: Exception) -> None:
    ctx = make_ctx()
    checks = preflight.check_artifacts(ctx, reader({"demo/hello:v1": error, "demo/world:v1": DIGEST_A}), reader({}))
    assert checks == [
        Check(
            "artifacts in sourceregistry",
            True,
            "1 of 2 exist in the source, no tag conflicts in the target; not checked (registry not readable from "
            f"here): demo/hello:v1 ({error})",
        )
    ]


def test_check_artifacts_more_than_20_problems_are_summarised_in_order() -> None:
    refs = [f"app{i:02d}:v1" for i in range(25)]
    ctx = make_ctx(artifacts=refs)
    checks = preflight.check_artifacts(ctx, reader({}), reader({}))
    assert [c.name for c in checks] == [f"artifact '{r}'" for r in refs[:20]] + ["5 more artifacts"]
    assert checks[-1] == Check("5 more artifacts", False, "missing or in tag conflict")
    assert not any(c.ok for c in checks)


def test_check_artifacts_exactly_20_problems_are_all_named() -> None:
    refs = [f"app{i:02d}:v1" for i in range(20)]
    checks = preflight.check_artifacts(make_ctx(artifacts=refs), reader({}), reader({}))
    assert [c.name for c in checks] == [f"artifact '{r}'" for r in refs]


@pytest.mark.parametrize(
    ("options", "ok"), [pytest.param((), False, id="moved-tag-needs-overwrite"), pytest.param(("OverwriteTags",), True)]
)
def test_check_planned_reads_nothing_and_names_a_moved_tag(options: tuple[str, ...], ok: bool) -> None:
    from dataclasses import replace

    from acr_transfer.sync import PlanEntry, SendReason, SyncPlan

    plan = SyncPlan(
        route="demo",
        transfer_id="abc123def456",
        created=datetime.now(UTC),
        send=[
            PlanEntry(reference="demo/hello:v1", digest=DIGEST_A, why=SendReason.CHANGED),
            PlanEntry(reference="demo/world:v1", digest=DIGEST_B, why=SendReason.NEW),
        ],
    )
    ctx = replace(make_ctx(import_options=options), sync=plan)
    checks = preflight.check_planned(ctx)
    assert [c.ok for c in checks] == [ok]
    if ok:
        assert checks[0].detail == "2 planned from the listing: 2 changed, 0 identical; 0 B to export"
    else:
        assert checks[0].name == "artifact 'demo/hello:v1'"
        assert "lacks OverwriteTags" in checks[0].detail and DIGEST_A in checks[0].detail
