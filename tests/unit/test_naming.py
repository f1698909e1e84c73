"""Artifact normalisation, batching, and the run and blob names derived from a transfer id."""

from __future__ import annotations

import re
import string
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from acr_transfer.errors import ConfigError
from acr_transfer.naming import (
    BatchPlan,
    batches,
    blob_name,
    derive_transfer_id,
    normalise_artifact,
    normalise_artifacts,
    plan_transfer,
    run_name,
)

DIGEST = "sha256:" + "ab" * 32
DEFAULT_TEMPLATE = "{route}/{transfer_id}/batch{batch}.tar"
SAFE_BLOB = re.compile(r"[A-Za-z0-9._/-]+")

# --- artifacts ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("hello", "hello:latest"),
        ("demo/hello", "demo/hello:latest"),
        ("demo/hello:v1", "demo/hello:v1"),
        ("demo/multiarch:1.0", "demo/multiarch:1.0"),
        ("a/b/c-d_e.f:Tag_1.2-rc", "a/b/c-d_e.f:Tag_1.2-rc"),
        (f"app@{DIGEST}", f"app@{DIGEST}"),
        ("  demo/hello:v1 ", "demo/hello:v1"),
    ],
)
def test_normalise_registry_host_less_references(ref: str, expected: str) -> None:
    assert normalise_artifact(ref) == expected


@pytest.mark.parametrize(
    ("ref", "says"),
    [
        ("", "is empty"),
        ("   ", "is empty"),
        ("Hello:v1", "invalid repository 'Hello'"),
        ("demo/Hello", "invalid repository"),
        ("a/../b:v1", "invalid repository 'a/../b'"),
        ("../b", "invalid repository"),
        ("/abs:v1", "invalid repository"),
        ("a//b", "invalid repository"),
        ("app@sha256:abc", "invalid digest; expected sha256:<64 lowercase hex>"),
        ("app@sha256:" + "AB" * 32, "invalid digest"),
        ("app@md5:" + "ab" * 16, "invalid digest"),
        ("app:", "invalid tag ''"),
        ("app:bad tag", "invalid tag 'bad tag'"),
        ("app:.hidden", "invalid tag '.hidden'"),
        ("app:" + "t" * 129, "invalid tag"),
        ("localhost:5000/hello", "registry host 'localhost:5000'"),
        ("a" * 600, "longer than 512 characters"),
    ],
)
def test_invalid_references_say_what_is_wrong(ref: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        normalise_artifact(ref)
    assert says in info.value.message


def test_non_text_reference_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="is empty"):
        normalise_artifact(None)  # type: ignore[arg-type]


def test_de_duplication_keeps_the_first_order() -> None:
    refs = ["b:1", "a", "b:1", "a:latest", f"c@{DIGEST}", " a "]
    assert normalise_artifacts(refs) == ["b:1", "a:latest", f"c@{DIGEST}"]


def test_every_bad_reference_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as info:
        normalise_artifacts(["ok:1", "Bad", "also/../bad", "fine"])
    assert "'Bad'" in info.value.message and "'also/../bad'" in info.value.message
    with pytest.raises(ConfigError, match="no artifacts to transfer"):
        normalise_artifacts([])


def test_long_problem_lists_are_shortened() -> None:
    with pytest.raises(ConfigError) as info:
        normalise_artifacts([f"Bad{i}" for i in range(15)])
    assert "… and 5 more" in info.value.message


def test_a_newline_inside_a_reference_is_refused() -> None:
    with pytest.raises(ConfigError):
        normalise_artifact("a\n:v1")


# --- batches ------------------------------------------------------------------------------------------------------


def test_batches_of_at_most_50() -> None:
    items = [f"r{i}:v" for i in range(120)]
    chunks = batches(items)
    assert [len(c) for c in chunks] == [50, 50, 20]
    assert [x for c in chunks for x in c] == items
    assert [len(c) for c in batches(items, 100)] == [50, 50, 20]  # ACR's limit wins over a larger request
    assert [len(c) for c in batches(items[:5], 2)] == [2, 2, 1]
    assert [len(c) for c in batches(items[:3], 0)] == [1, 1, 1]
    assert batches([]) == []


# --- names --------------------------------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    st.text(alphabet=string.ascii_lowercase + string.digits, min_size=6, max_size=20),
    st.integers(min_value=1, max_value=999),
    st.integers(min_value=1, max_value=99),
    st.sampled_from(["export", "import"]),
)
def test_run_names_are_always_5_to_50_alphanumerics(tid: str, batch: int, attempt: int, kind: str) -> None:
    name = run_name(kind, tid, batch, attempt)
    assert re.fullmatch(r"[A-Za-z0-9]{5,50}", name)
    assert name[0] == {"export": "x", "import": "i"}[kind]
    assert name == run_name(kind, tid, batch, attempt)  # derived, so a restarted flow finds the same run


def test_run_names_differ_by_kind_batch_and_attempt() -> None:
    names = {run_name(k, "abcdef", b, a) for k in ("export", "import") for b in (1, 2) for a in (1, 2)}
    assert len(names) == 8
    plan = BatchPlan(3, ["a:1"], "x")
    assert (plan.export_run("abcdef", 1), plan.import_run("abcdef", 2)) == ("xabcdefb003a1", "iabcdefb003a2")


def test_a_transfer_id_that_breaks_the_run_name_rules_is_refused() -> None:
    with pytest.raises(ConfigError, match="not 5-50 letters or digits"):
        run_name("export", "abc-def", 1, 1)


def test_derived_transfer_ids_are_stable() -> None:
    tid = derive_transfer_id("flow-run-1")
    assert tid == derive_transfer_id("flow-run-1") != derive_transfer_id("flow-run-2")
    assert re.fullmatch(r"[a-z0-9]{12}", tid)


def test_blob_names_render_the_template() -> None:
    assert blob_name(DEFAULT_TEMPLATE, route="demo", transfer_id="abc123", batch=7) == "demo/abc123/batch007.tar"
    when = datetime(2026, 11, 20, tzinfo=UTC)
    assert blob_name("{date}/{transfer_id}.tar", route="r", transfer_id="abc123", batch=1, when=when) == (
        "20261120/abc123.tar"
    )


@pytest.mark.parametrize(
    ("template", "route"),
    [
        ("../{transfer_id}", "demo"),
        ("{route}/{transfer_id}", ".."),
        ("/{transfer_id}", "demo"),
        ("{route}//{transfer_id}", "demo"),
        ("{route}/{transfer_id}/", "demo"),
        ("{route}/./{transfer_id}", "demo"),
        ("{transfer_id}.", "demo"),
        ("{route} {transfer_id}", "demo"),
        ("{route}/{transfer_id}?x", "demo"),
        ("{route}/{transfer_id}", "dé"),
        ("{transfer_id}" + "x" * 1100, "demo"),
    ],
)
def test_unsafe_blob_names_are_refused(template: str, route: str) -> None:
    with pytest.raises(ConfigError, match="is not a safe blob path"):
        blob_name(template, route=route, transfer_id="abc123", batch=1)


PIECES = ["{route}", "{transfer_id}", "{batch}", "{date}", "/", ".", "..", "-", "_", "a", "Z", "0", " ", "é", "\\", "%"]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=8), st.text(max_size=12))
def test_every_accepted_blob_name_is_a_safe_path(pieces: list[str], route: str) -> None:
    # newlines are left out here: the known '$' bug below would fail this property for the wrong reason
    route = route.replace("\n", "")
    try:
        name = blob_name("".join(pieces), route=route, transfer_id="abc123", batch=1)
    except ConfigError:
        return
    assert SAFE_BLOB.fullmatch(name)
    assert all(segment not in ("", ".", "..") for segment in name.split("/"))


def test_a_trailing_newline_is_not_a_safe_blob_name() -> None:
    with pytest.raises(ConfigError):
        blob_name("{transfer_id}.tar\n", route="r", transfer_id="abc123", batch=1)


def test_a_template_with_a_stray_brace_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        blob_name("{transfer_id}{", route="r", transfer_id="abc123", batch=1)


# --- plans --------------------------------------------------------------------------------------------------------


def test_plan_batches_and_names_everything() -> None:
    refs = [f"repo{i}" for i in range(120)] + ["repo0:latest"]
    plan = plan_transfer("demo", DEFAULT_TEMPLATE, "abc123", refs)
    assert len(plan.artifacts) == 120 and plan.artifacts[0] == "repo0:latest"
    assert [len(b.artifacts) for b in plan.batches] == [50, 50, 20]
    assert [b.blob_name for b in plan.batches] == [f"demo/abc123/batch00{i}.tar" for i in (1, 2, 3)]
    assert plan_transfer("demo", DEFAULT_TEMPLATE, "abc123", refs, batch_size=60).batches[0].artifacts == (
        plan.batches[0].artifacts
    )


def test_plan_refuses_a_template_that_repeats_a_blob_name_and_bad_ids() -> None:
    refs = [f"repo{i}" for i in range(51)]
    with pytest.raises(ConfigError, match=r"must contain \{batch\}"):
        plan_transfer("demo", "{route}/{transfer_id}.tar", "abc123", refs)
    assert len(plan_transfer("demo", "{route}/{transfer_id}.tar", "abc123", refs[:50]).batches) == 1
    for tid in ("ABC123", "abc", "abc-123", "a" * 21):
        with pytest.raises(ConfigError, match="must be 6-20 lowercase letters or digits"):
            plan_transfer("demo", DEFAULT_TEMPLATE, tid, refs)
