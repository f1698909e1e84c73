"""References as values: ``ArtifactRef`` parses repo / repo:tag / repo@digest once, and ``RunName`` reads back
the run names ``naming`` derives."""

from __future__ import annotations

import pytest

from acr_transfer.errors import ConfigError
from acr_transfer.naming import run_name
from acr_transfer.refs import ArtifactRef, RunName

DIGEST = "sha256:" + "0123456789abcdef" * 4
OTHER = "sha256:" + "f" * 64

# --- ArtifactRef.parse --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "repository", "tag", "digest", "text_form"),
    [
        pytest.param("repo", "repo", "latest", None, "repo:latest", id="repo-means-latest"),
        pytest.param("repo:v1", "repo", "v1", None, "repo:v1", id="repo-tag"),
        pytest.param("team/app:1.0-rc_2", "team/app", "1.0-rc_2", None, "team/app:1.0-rc_2", id="nested-repo-tag"),
        pytest.param("a/b/c", "a/b/c", "latest", None, "a/b/c:latest", id="nested-no-tag"),
        pytest.param("repo:V1", "repo", "V1", None, "repo:V1", id="upper-case-tag-is-fine"),
        pytest.param(f"repo@{DIGEST}", "repo", None, DIGEST, f"repo@{DIGEST}", id="repo-digest"),
        pytest.param(f"team/app@{DIGEST}", "team/app", None, DIGEST, f"team/app@{DIGEST}", id="nested-digest"),
        pytest.param("  repo:v1\n", "repo", "v1", None, "repo:v1", id="surrounding-space"),
        pytest.param("my-app__x.y:t", "my-app__x.y", "t", None, "my-app__x.y:t", id="separators"),
    ],
)
def test_parse(text: str, repository: str, tag: str | None, digest: str | None, text_form: str) -> None:
    ref = ArtifactRef.parse(text)
    assert (ref.repository, ref.tag, ref.digest, str(ref)) == (repository, tag, digest, text_form)
    assert ArtifactRef.parse(str(ref)) == ref  # str() round-trips


@pytest.mark.parametrize(
    ("text", "says"),
    [
        pytest.param("", "is empty or not text", id="empty"),
        pytest.param("myregistry.azurecr.io/app:v1", "starts with a registry host 'myregistry.azurecr.io'", id="host"),
        pytest.param("localhost/app", "starts with a registry host 'localhost'", id="localhost"),
        pytest.param("localhost:5000/app:v1", "starts with a registry host 'localhost:5000'", id="host-with-port"),
        pytest.param("repo:-bad", "has an invalid tag '-bad'", id="tag-starts-with-dash"),
        pytest.param("repo:" + "t" * 129, "has an invalid tag", id="tag-too-long"),
        pytest.param("repo:", "has an invalid tag ''", id="empty-tag"),
        pytest.param("repo@sha256:abc", "has an invalid digest; expected sha256:<64 lowercase hex>", id="short-digest"),
        pytest.param("repo@" + DIGEST.upper(), "has an invalid digest", id="upper-case-digest"),
        pytest.param("repo@sha512:" + "a" * 128, "has an invalid digest", id="sha512-not-requestable"),
        pytest.param("Repo:v1", "has an invalid repository 'Repo'", id="upper-case-repo"),
        pytest.param("team//app", "has an invalid repository 'team//app'", id="empty-segment"),
        pytest.param("a" * 257, "has an invalid repository", id="repository-too-long"),
        pytest.param("a" * 513, "is longer than 512 characters", id="reference-too-long"),
    ],
)
def test_parse_refuses_naming_the_reference(text: str, says: str) -> None:
    with pytest.raises(ConfigError) as info:
        ArtifactRef.parse(text)
    assert says in info.value.message
    if text:
        assert f"artifact '{text[:20]}" in info.value.message


def test_reference_by_digest_and_with_digest() -> None:
    tagged = ArtifactRef.parse("team/app:v1")
    pinned = tagged.with_digest(OTHER)
    assert (tagged.reference, tagged.by_digest) == ("v1", False)
    assert (pinned, pinned.reference, pinned.by_digest) == (ArtifactRef("team/app", None, OTHER), OTHER, True)
    assert str(pinned) == f"team/app@{OTHER}"
    assert ArtifactRef.parse("repo").reference == "latest"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("repo", "repo:latest", id="reference"),
        pytest.param(f"repo@{DIGEST}", f"repo@{DIGEST}", id="digest"),
        pytest.param("not a reference!", None, id="free-text"),
        pytest.param("registry.io/repo:v1", None, id="host"),
        pytest.param("", None, id="empty"),
    ],
)
def test_lenient(text: str, expected: str | None) -> None:
    ref = ArtifactRef.lenient(text)
    assert (str(ref) if ref else None) == expected


# --- RunName ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "parsed"),
    [
        pytest.param("xabc123b002a1", RunName("export", "abc123", 2, 1), id="export"),
        pytest.param("iabc123def456b010a12", RunName("import", "abc123def456", 10, 12), id="import"),
        pytest.param("x" + "a" * 20 + "b999a1", RunName("export", "a" * 20, 999, 1), id="longest-id"),
        pytest.param("importpipeline_2026-01-01T10:00:00Z", None, id="trigger-run"),
        pytest.param("xabc12b001a1", None, id="transfer-id-too-short"),
        pytest.param("xABC123b001a1", None, id="upper-case-id"),
        pytest.param("xabc123b01a1", None, id="batch-not-three-digits"),
        pytest.param("yabc123b001a1", None, id="unknown-kind"),
        pytest.param("xabc123b001", None, id="no-attempt"),
        pytest.param("myrun", None, id="someone-elses"),
    ],
)
def test_run_name_parse(name: str, parsed: RunName | None) -> None:
    assert RunName.parse(name) == parsed
    if parsed is not None:
        assert str(parsed) == name


def test_run_name_str_refuses_a_name_acr_would_not_take() -> None:
    with pytest.raises(ConfigError, match="derived run name 'xabc-123b001a1' is not 5-50 letters or digits"):
        str(RunName("export", "abc-123", 1, 1))


@pytest.mark.parametrize("kind", ["export", "import"])
@pytest.mark.parametrize(("batch", "attempt"), [(1, 1), (2, 3), (50, 20), (999, 1)])
def test_derived_run_names_parse_back(kind: str, batch: int, attempt: int) -> None:
    name = run_name(kind, "abc123def456", batch, attempt)
    assert RunName.parse(name) == RunName(kind, "abc123def456", batch, attempt)  # type: ignore[arg-type]


def test_derived_run_names_of_batch_1000_parse_back() -> None:
    assert RunName.parse(run_name("export", "abc123def456", 1000, 1)) == RunName("export", "abc123def456", 1000, 1)


def test_run_name_refuses_an_unknown_kind() -> None:
    with pytest.raises(ValueError, match="run kind must be export or import, not 'copy'"):
        run_name("copy", "abc123def456", 1, 1)
