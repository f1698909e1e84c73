"""Selection: which of a source's tags a route's ``select:`` chooses, and why each other one is left out.

A seeded source of 219 tags in 20 repositories (semver tags, prereleases, ``-rc`` tags, moving and date tags,
cosign's digest tags, nested repositories) and a table of rules, each with exactly the ``repo:tag`` set it must
select, written out or derived by an obvious rule of the test's own; then the reasons, and the versions and ranges
underneath."""

from __future__ import annotations

import hashlib
import itertools
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from acr_transfer.listing import ListedTag
from acr_transfer.models import Selection
from acr_transfer.patterns import Version, glob_pattern, parse_range, parse_version, tag_pattern
from acr_transfer.selection import (
    Excluded,
    digest_tag_subject,
    is_digest_tag,
    pushed_excluded,
    repository_excluded,
    select,
    select_tags,
)

T0 = datetime(2026, 1, 1, tzinfo=UTC)

# The three "rich" repositories hold every kind of tag, each pushed at its hour; equal hours are one push.
RICH_TAGS = [
    ("v0.0.3", 0), ("v0.3.1", 1), ("v1.0.0", 2), ("v1.3.9", 3), ("1.4", 4), ("v1.4.0", 5), ("v1.4.0+build.7", 6),
    ("V1.4.0", 7), ("v1.4.1", 8), ("v1.4.2-rc1", 9), ("v1.10.2", 10), ("v2.0.0-alpha", 11), ("v2.0.0-alpha.1", 12),
    ("v2.0.0-beta", 13), ("v2.0.0-rc.1", 14), ("v2.0.0", 15), ("v2.1.0-rc2", 16), ("v2.5.3", 17), ("stable", 17),
    ("stable-2025", 18), ("v3.0.0-rc.1", 19), ("v3.0.0", 20), ("latest", 20), ("latest-arm64", 20), ("main", 21),
    ("2026.01.15", 22), ("20260115", 22), ("sha256-abc.sig", 23),  # the last only looks like a digest tag
]  # fmt: skip
# The other 17 hold a few.
SMALL_TAGS = [
    ("v1.0.0", 0), ("v1.4.0", 1), ("v2.0.0-rc.1", 2), ("v2.0.0", 3), ("latest", 4), ("stable", 5), ("20260115", 6),
]  # fmt: skip
RICH = ["platform/api", "base/os/debian", "apps/shop"]
REPOS = [
    "platform/api", "platform/web", "platform/worker", "platform/legacy-auth", "platform/legacy-db",
    "platform/api/v2", "base", "base/os", "base/os/debian", "base/os/alpine", "base/python", "basement",
    "tools/debug", "tools/ci/runner", "apps/shop", "apps/shop/cart", "apps/blog", "data/etl",
    "mirror/library/nginx", "scratch",
]  # fmt: skip


def digest(repo: str, tag: str) -> str:
    return "sha256:" + hashlib.sha256(f"{repo}:{tag}".encode()).hexdigest()


def build_source() -> tuple[dict[str, list[ListedTag]], set[str]]:
    """Every repository's tags, and the references of the cosign digest tags among them."""
    listing: dict[str, list[ListedTag]] = {}
    cosign: set[str] = set()
    for index, repo in enumerate(REPOS):
        pushed = list(RICH_TAGS if repo in RICH else SMALL_TAGS)
        subject = digest(repo, "v2.0.0")[len("sha256:") :]
        if repo in RICH:  # a signature, an attestation and the referrers tag index of v2.0.0
            signed = [(f"sha256-{subject}.sig", 24), (f"sha256-{subject}.att", 24), (f"sha256-{subject}", 24)]
        else:  # every other small repository has a signature, pushed last (so newer than any release)
            signed = [(f"sha256-{subject}.sig", 7)] if index % 2 == 0 else []
        cosign.update(f"{repo}:{tag}" for tag, _ in signed)
        listing[repo] = [
            ListedTag(repo, tag, digest(repo, tag), T0, T0 + timedelta(hours=hour)) for tag, hour in pushed + signed
        ]
    return listing, cosign


SOURCE, COSIGN = build_source()
ALL = {t.reference for tags in SOURCE.values() for t in tags}


def refs(repos: list[str], tags: set[str] | list[str]) -> set[str]:
    """``repo:tag`` for every repository given and every tag given that it has."""
    return {f"{repo}:{tag}" for repo in repos for tag in tags if f"{repo}:{tag}" in ALL}


def every_tag_of(repos: list[str]) -> set[str]:
    return {ref for ref in ALL if ref.rsplit(":", 1)[0] in repos} - COSIGN


def test_the_source_is_what_the_cases_assume() -> None:
    assert len(REPOS) == 20 and len(ALL) == 219
    assert len(COSIGN) == 3 * 3 + 7
    assert sum(len(tags) for tags in SOURCE.values()) == len(ALL)  # no tag twice


PLATFORM = ["platform/api", "platform/web", "platform/worker", "platform/legacy-auth", "platform/legacy-db"]
API = ["platform/api"]
V3 = r"v\d+\.\d+\.\d+"
FROM_1_4_BELOW_2 = ["1.4", "v1.4.0", "v1.4.0+build.7", "v1.4.1", "v1.4.2-rc1", "v1.10.2"]  # rich tags, by hand
PRE_2 = ["v2.0.0-alpha", "v2.0.0-alpha.1", "v2.0.0-beta", "v2.0.0-rc.1"]  # prereleases: below 2.0.0

CASES = [
    # --- repositories -------------------------------------------------------------------------------------------
    pytest.param({}, ALL - COSIGN, id="nothing-given-selects-every-tag-but-digest-tags"),
    pytest.param({"repositories": ["platform/*"]}, every_tag_of(PLATFORM), id="star-stays-in-one-segment"),
    pytest.param(
        {"repositories": ["base/**"], "tags": ["stable"]},
        {"base:stable", "base/os:stable", "base/os/debian:stable", "base/os/alpine:stable", "base/python:stable"},
        id="double-star-is-any-segments-none-included-not-basement",
    ),
    pytest.param(
        {"repositories": ["**/debian", "mirror/**"], "tags": ["latest"]},
        {"base/os/debian:latest", "mirror/library/nginx:latest"},
        id="leading-double-star-and-any-of-several-globs",
    ),
    pytest.param(
        {"repositories": ["platform/*"], "exclude_repositories": ["platform/legacy*"], "tags": ["latest"]},
        {"platform/api:latest", "platform/web:latest", "platform/worker:latest"},
        id="exclude-repositories",
    ),
    pytest.param(
        {"repositories": ["tools/**", "data/*"], "exclude_repositories": ["tools/ci/**"], "tags": ["latest"]},
        {"tools/debug:latest", "data/etl:latest"},
        id="exclude-a-subtree",
    ),
    pytest.param(
        {"repositories": ["platform/api/?2", "apps/*"], "tags": ["stable"]},
        {"platform/api/v2:stable", "apps/shop:stable", "apps/blog:stable"},
        id="question-mark-is-one-character",
    ),
    pytest.param({"repositories": ["[bt]*"], "tags": ["stable"]}, {"base:stable", "basement:stable"}, id="class"),
    pytest.param({"repositories": ["[!b]*"], "tags": ["latest"]}, {"scratch:latest"}, id="negated-class"),
    pytest.param(
        {"repositories": ["**/*-*"], "tags": ["latest"]},
        {"platform/legacy-auth:latest", "platform/legacy-db:latest"},
        id="star-inside-the-last-segment",
    ),
    pytest.param({"repositories": ["platform"]}, set(), id="a-plain-path-is-that-repository-only"),
    # --- tags and exclude_tags: regexes that match the whole tag ------------------------------------------------
    pytest.param(
        {"repositories": API, "tags": [V3]},
        refs(
            API, ["v0.0.3", "v0.3.1", "v1.0.0", "v1.3.9", "v1.4.0", "v1.4.1", "v1.10.2", "v2.0.0", "v2.5.3", "v3.0.0"]
        ),
        id="regex-is-anchored-at-both-ends",
    ),
    pytest.param(
        {"repositories": API, "tags": ["latest|stable"]},
        {"platform/api:latest", "platform/api:stable"},
        id="alternation-is-anchored-as-a-whole-not-latest-arm64",
    ),
    pytest.param(
        {"repositories": API, "tags": [r"^v1\..*$"], "exclude_tags": [r".*-rc\d+", r".*\+.*"]},
        refs(API, ["v1.0.0", "v1.3.9", "v1.4.0", "v1.4.1", "v1.10.2"]),
        id="written-anchors-and-exclude-tags",
    ),
    pytest.param({"repositories": API, "tags": ["2026.*"]}, refs(API, ["2026.01.15", "20260115"]), id="date-tags"),
    pytest.param({"repositories": API, "tags": ["v2"]}, set(), id="a-prefix-is-not-a-match"),
    pytest.param({"repositories": API, "tags": [r"v1\.4\.0"]}, {"platform/api:v1.4.0"}, id="case-sensitive"),
    pytest.param(
        {"repositories": API, "tags": ["sha256-.*"]},
        {"platform/api:sha256-abc.sig"},
        id="digest-tags-are-set-aside-even-when-a-regex-matches-them",
    ),
    pytest.param(
        {"repositories": ["scratch"], "exclude_tags": [".*-.*"]},
        refs(["scratch"], ["v1.0.0", "v1.4.0", "v2.0.0", "latest", "stable", "20260115"]),
        id="exclude-tags-alone",
    ),
    # --- semver ----------------------------------------------------------------------------------------------------
    pytest.param(
        {"repositories": API, "semver": ">=1.4 <3"},
        refs(API, [*FROM_1_4_BELOW_2, *PRE_2, "v2.0.0", "v2.1.0-rc2", "v2.5.3", "v3.0.0-rc.1"]),
        id="range-includes-prereleases-below-the-bound",
    ),
    pytest.param(
        {"repositories": API, "semver": "^1.2"},
        refs(API, ["v1.3.9", *FROM_1_4_BELOW_2, *PRE_2]),
        id="caret",
    ),
    pytest.param(
        {"repositories": API, "semver": "~1.4"},
        refs(API, ["1.4", "v1.4.0", "v1.4.0+build.7", "v1.4.1", "v1.4.2-rc1"]),
        id="tilde",
    ),
    pytest.param(
        {"repositories": API, "semver": "~2"},
        refs(API, ["v2.0.0", "v2.1.0-rc2", "v2.5.3", "v3.0.0-rc.1"]),
        id="tilde-major-and-prereleases-of-the-lower-bound-are-below-it",
    ),
    pytest.param(
        {"repositories": API, "semver": ["^0.3", "^0.0.3"]}, refs(API, ["v0.3.1", "v0.0.3"]), id="caret-below-1"
    ),
    pytest.param(
        {"repositories": API, "semver": ["^1.4", ">=3"]},
        refs(API, [*FROM_1_4_BELOW_2, *PRE_2, "v3.0.0", "2026.01.15", "20260115"]),
        id="a-list-is-any-of-its-ranges-and-date-tags-are-versions",
    ),
    pytest.param(
        {"repositories": API, "semver": ">=2.0.0-alpha.1 <2.0.0"},
        refs(API, ["v2.0.0-alpha.1", "v2.0.0-beta", "v2.0.0-rc.1"]),
        id="prerelease-order",
    ),
    pytest.param(
        {"repositories": API, "semver": "v1.4"},
        refs(API, ["1.4", "v1.4.0", "v1.4.0+build.7"]),
        id="bare-version-is-equal-missing-parts-are-0-build-ignored",
    ),
    pytest.param({"repositories": API, "semver": ">20000000"}, {"platform/api:20260115"}, id="one-part-version"),
    # --- latest ----------------------------------------------------------------------------------------------------
    pytest.param(
        {"repositories": API, "tags": [V3], "latest": 3},
        refs(API, ["v3.0.0", "v2.5.3", "v2.0.0"]),
        id="latest-of-what-the-other-rules-kept",
    ),
    pytest.param(
        {"repositories": API, "tags": ["latest", r"v3\.0\.0", "latest-arm64"], "latest": 2},
        refs(API, ["latest", "latest-arm64"]),
        id="latest-ties-by-tag-name",
    ),
    pytest.param(
        {"repositories": ["base/os/alpine", "tools/**"], "latest": 2},
        refs(["base/os/alpine", "tools/debug", "tools/ci/runner"], ["stable", "20260115"]),
        id="latest-per-repository-and-newer-digest-tags-do-not-count",
    ),
    pytest.param({"repositories": API, "latest": 10000}, every_tag_of(API), id="latest-more-than-there-are"),
    # --- all at once -----------------------------------------------------------------------------------------------
    pytest.param(
        {
            "repositories": ["platform/*", "base/**"],
            "exclude_repositories": ["platform/legacy*"],
            "tags": [r"v\d+\.\d+\.\d+.*"],
            "exclude_tags": [r".*-rc\d+"],
            "semver": ">=1.4 <3",
            "latest": 2,
        },
        refs(["platform/api", "base/os/debian"], ["v3.0.0-rc.1", "v2.5.3"])
        | refs(
            ["platform/web", "platform/worker", "base", "base/os", "base/os/alpine", "base/python"],
            ["v2.0.0", "v2.0.0-rc.1"],
        ),
        id="every-rule",
    ),
]


@pytest.mark.parametrize(("rules", "expected"), CASES)
def test_selection_chooses_exactly(rules: dict[str, object], expected: set[str]) -> None:
    sel = Selection.model_validate(rules)
    chosen = select(sel, SOURCE)
    got = [t.reference for t in chosen.tags]
    assert set(got) == expected
    assert len(got) == len(set(got))
    assert [(t.repo, t.tag) for t in chosen.tags] == sorted((t.repo, t.tag) for t in chosen.tags)
    # everything else is excluded exactly once: a repository as itself, a tag of a selected one as repo:tag
    left_out = [e.what for e in chosen.excluded]
    assert len(left_out) == len(set(left_out))
    excluded_repos = {what for what in left_out if ":" not in what}
    tags_seen = set(got) | {what for what in left_out if ":" in what}
    assert tags_seen == {ref for ref in ALL if ref.rsplit(":", 1)[0] not in excluded_repos}
    assert excluded_repos.isdisjoint({t.repo for t in chosen.tags})


def test_reasons_name_the_rule_and_its_value() -> None:
    sel = Selection(repositories=["platform/*"], exclude_repositories=["platform/legacy*"])
    reasons = {e.what: e.rule for e in select(sel, SOURCE).excluded}
    assert reasons["base"] == "not matched by repositories ['platform/*']"
    assert reasons["platform/api/v2"] == "not matched by repositories ['platform/*']"
    assert reasons["platform/legacy-auth"] == "exclude_repositories 'platform/legacy*'"
    subject = digest("platform/api", "v2.0.0")
    hexes = subject.removeprefix("sha256:")
    assert reasons[f"platform/api:sha256-{hexes}.sig"] == f"referrer tag of {subject}"
    assert reasons[f"platform/api:sha256-{hexes}"] == f"referrer tag of {subject}"
    assert "platform/api:sha256-abc.sig" not in reasons  # an ordinary tag, selected


def test_each_tag_is_reported_with_the_first_rule_that_left_it_out() -> None:
    sel = Selection(
        repositories=["platform/api"],
        tags=[r"v\d+.*", "stable"],
        exclude_tags=[r".*-rc\d+"],
        semver=">=1.4 <3",
        latest=5,
    )
    kept, excluded = select_tags(sel, "platform/api", SOURCE["platform/api"])
    reasons = {e.what.split(":", 1)[1]: e.rule for e in excluded}
    assert reasons["latest"] == r"not matched by tags ['v\d+.*', 'stable']"
    assert reasons["v1.4.2-rc1"] == r"exclude_tags '.*-rc\d+'"
    assert reasons["stable"] == "not semver (semver '>=1.4 <3')"
    assert reasons["v1.0.0"] == reasons["v3.0.0"] == "outside semver '>=1.4 <3'"
    assert reasons["v2.0.0-alpha.1"] == reasons["v1.4.0"] == "older than the latest 5"
    assert [t.tag for t in kept] == ["v2.0.0", "v2.0.0-beta", "v2.0.0-rc.1", "v2.5.3", "v3.0.0-rc.1"]
    assert [e.what for e in excluded] == sorted(e.what for e in excluded)
    listed_semver = Selection(semver=[">=1.4 <2", ">=3"])
    assert pushed_excluded(listed_semver, "a", "v2.1") == "outside semver ['>=1.4 <2', '>=3']"


def test_a_repository_left_out_selects_nothing_and_is_reported_once() -> None:
    sel = Selection(repositories=["platform/**"], exclude_repositories=["platform/api/**"])
    assert repository_excluded(sel, "platform/api/v2") == "exclude_repositories 'platform/api/**'"
    assert repository_excluded(sel, "platform/web") is None
    assert repository_excluded(sel, "base") == "not matched by repositories ['platform/**']"
    kept, excluded = select_tags(sel, "platform/api", SOURCE["platform/api"])
    assert kept == [] and excluded == [Excluded("platform/api", "exclude_repositories 'platform/api/**'")]


def test_a_pushed_tag_meets_every_rule_but_latest() -> None:
    sel = Selection(repositories=["platform/*"], tags=[r"v.*"], exclude_tags=[".*-rc.*"], semver="^2", latest=1)
    assert pushed_excluded(sel, "platform/api", "v2.7.0") is None  # latest: 1 does not hold a push back
    assert pushed_excluded(sel, "platform/api", "v2.7.0-rc.1") == "exclude_tags '.*-rc.*'"
    assert pushed_excluded(sel, "platform/api", "v1.9.0") == "outside semver '^2'"
    assert pushed_excluded(sel, "platform/api", "latest") == "not matched by tags ['v.*']"
    assert pushed_excluded(sel, "base", "v2.7.0") == "not matched by repositories ['platform/*']"
    assert pushed_excluded(sel, "platform/api", "sha256-" + "0" * 64 + ".sig") == f"referrer tag of sha256:{'0' * 64}"


def test_an_empty_listing_selects_nothing() -> None:
    chosen = select(Selection(), {})
    assert chosen.tags == [] and chosen.excluded == []
    assert select(Selection(), {"empty": []}).tags == []


def test_twelve_thousand_tags_of_one_repository() -> None:
    many = [
        ListedTag("big", f"v1.{n // 100}.{n % 100}", "sha256:x", T0, T0 + timedelta(seconds=n)) for n in range(12_000)
    ]
    sel = Selection(tags=[r"v1\.\d+\.\d+"], exclude_tags=[r".*\.13"], semver=">=1.20 <1.110", latest=50)
    kept, excluded = select_tags(sel, "big", many)
    assert {t.tag for t in kept} == {f"v1.109.{n}" for n in range(50, 100)}
    assert len(kept) + len(excluded) == 12_000


# --- digest tags ----------------------------------------------------------------------------------------------------

HEX = "0123456789abcdef" * 4


@pytest.mark.parametrize(
    ("tag", "subject"),
    [
        (f"sha256-{HEX}", f"sha256:{HEX}"),
        (f"sha256-{HEX}.sig", f"sha256:{HEX}"),
        (f"sha256-{HEX}.att", f"sha256:{HEX}"),
        (f"sha256-{HEX}.sbom", f"sha256:{HEX}"),
        (f"sha256-{HEX}.txt", None),
        (f"sha256-{HEX[:-1]}.sig", None),
        (f"sha256-{HEX.upper()}", None),
        (f"sha512-{HEX}{HEX}", None),
        ("sha256-abc.sig", None),
        (f"x-sha256-{HEX}", None),
        ("latest", None),
    ],
)
def test_digest_tags(tag: str, subject: str | None) -> None:
    assert digest_tag_subject(tag) == subject
    assert is_digest_tag(tag) is (subject is not None)


# --- globs and regexes ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("glob", "matches", "does_not"),
    [
        ("base/**", ["base", "base/os", "base/os/debian"], ["basement", "base2/os", "xbase"]),
        ("**/debian", ["debian", "base/debian", "base/os/debian"], ["debian2", "base/debian/x", "base/xdebian"]),
        ("a/**/b", ["a/b", "a/x/b", "a/x/y/b"], ["a/bb", "ab", "a/x/b/c"]),
        ("a/**/**/b", ["a/b", "a/x/y/b"], ["a/x/y/c"]),
        ("**", ["a", "a/b/c"], []),
        ("*", ["a", "abc"], ["a/b"]),
        ("platform/*", ["platform/api"], ["platform", "platform/api/v2"]),
        ("p?/x", ["p1/x", "pa/x"], ["p/x", "p12/x", "p//x"]),
        ("[ab]-[0-9]", ["a-1", "b-9"], ["c-1", "a-x"]),
        ("x[!a-c]", ["xd", "x-"], ["xa", "x/"]),
        ("my.app", ["my.app"], ["myxapp"]),
    ],
)
def test_globs(glob: str, matches: list[str], does_not: list[str]) -> None:
    pattern = glob_pattern(glob)
    assert [r for r in matches if pattern.fullmatch(r)] == matches
    assert [r for r in does_not if pattern.fullmatch(r)] == []


@pytest.mark.parametrize(
    ("glob", "says"),
    [
        ("", "is empty"),
        ("a//b", "has an empty path segment"),
        ("/a", "has an empty path segment"),
        ("a/", "has an empty path segment"),
        ("a**", "has '**' inside a path segment"),
        ("a/**b", "has '**' inside a path segment"),
        ("Platform/*", "has 'P', which no repository name holds"),
        ("a\\*", "has '\\'"),
        ("a[bc", "'[' class that is not closed"),
        ("a[]", "'[' class that is empty"),
        ("a[!]", "'[' class that is empty"),
        ("[z-a]", "has a class that is not valid (bad character range z-a)"),
    ],
)
def test_bad_globs_say_what_is_wrong(glob: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        glob_pattern(glob)
    assert says in str(info.value)


def test_bad_regexes_say_what_is_wrong() -> None:
    with pytest.raises(ValueError) as info:
        tag_pattern(r"^v(\d+$")
    assert str(info.value).startswith("is not a valid regular expression: missing ), unterminated subpattern at")
    with pytest.raises(ValueError, match="is empty and matches no tag"):
        tag_pattern("")
    for hostile, says in (("a{4294967296}", "the repetition number is too large"), ("(" * 5000 + ")" * 5000, "nested")):
        with pytest.raises(ValueError, match=f"is not a valid regular expression: .*{says}"):
            tag_pattern(hostile)
    assert tag_pattern("(?i)latest").fullmatch("LATEST")  # inline flags at the start keep working


# --- semver ---------------------------------------------------------------------------------------------------------


def version(text: str) -> Version:
    parsed = parse_version(text)
    assert parsed is not None, text
    return parsed


@pytest.mark.parametrize(
    ("text", "parts", "pre"),
    [
        ("1", (1,), ()),
        ("v1.4", (1, 4), ()),
        ("1.4.0", (1, 4), ()),
        ("v1.4.2.7", (1, 4, 2, 7), ()),
        ("2026.01.15", (2026, 1, 15), ()),
        ("1.0.0-rc.1", (1,), ((1, "rc"), (0, 1))),
        ("1.0.0-alpha-2.x+build.5", (1,), ((1, "alpha-2"), (1, "x"))),
        ("0.0.0", (), ()),
    ],
)
def test_versions_parse(text: str, parts: tuple[int, ...], pre: tuple[tuple[int, object], ...]) -> None:
    version = parse_version(text)
    assert version is not None and version.text == text
    assert version.key == (parts, 0 if pre else 1, pre)


@pytest.mark.parametrize(
    "text",
    [
        "",
        "v",
        "latest",
        "V1.2.3",
        "1..2",
        "1.2.",
        ".1",
        "1.2-",
        "1.2+",
        "1.2-rc..1",
        "1.2_3",
        "1.2 ",
        "١.٢",
        "vv1",
        "x1",
    ],
)
def test_not_versions(text: str) -> None:
    assert parse_version(text) is None


def test_versions_order_as_semver_2_says() -> None:
    ordered = [
        "0.0.3", "0.3", "1.0.0-alpha", "1.0.0-alpha.1", "1.0.0-alpha.beta", "1.0.0-beta", "1.0.0-beta.2",
        "1.0.0-beta.11", "1.0.0-rc.1", "1.0.0", "1.0.1", "1.1", "1.9", "1.10", "1.10.0.1", "2", "v10",
    ]  # fmt: skip
    for low, high in itertools.pairwise(version(t) for t in ordered):
        assert low < high and high > low and low != high, (low.text, high.text)


def test_equal_versions() -> None:
    assert len({version(t) for t in ("1.4", "1.4.0", "v1.4.0", "1.4.0.0", "1.4.0+build.7", "01.004")}) == 1
    assert parse_version("1.4.0-rc.1") != parse_version("1.4.0")
    assert parse_version("1.0.0-01") == parse_version("1.0.0-1")  # numeric identifiers compare as numbers


@pytest.mark.parametrize(
    ("range_", "inside", "outside"),
    [
        (">=1.4 <3", ["1.4", "2.9.9", "3.0.0-rc.1"], ["1.3.9", "3", "3.0.0"]),
        (">1.4 <=2", ["1.4.0.1", "2.0.0"], ["1.4", "2.0.1"]),
        ("=1.4", ["1.4.0", "1.4.0+x"], ["1.4.1", "1.4.0-rc.1"]),
        ("1.4", ["v1.4.0"], ["1.4.1"]),
        ("^1.2.3", ["1.2.3", "1.99", "2.0.0-rc.1"], ["1.2.2", "2.0.0"]),
        ("^0.2.3", ["0.2.3", "0.2.9"], ["0.3.0", "0.2.2"]),
        ("^0.0.3", ["0.0.3"], ["0.0.4", "0.0.2"]),
        ("^0", ["0.0.1", "0.9"], ["1"]),
        ("^0.0", ["0.0.9"], ["0.1"]),
        ("~1.2.3", ["1.2.3", "1.2.9"], ["1.3.0", "1.2.2"]),
        ("~2.0", ["2.0", "2.0.9"], ["2.1", "1.9"]),
        ("~2", ["2", "2.9"], ["3"]),
        ("^v1.2", ["1.2"], ["1.1"]),
        (">=1.0.0-alpha <1.0.0-rc", ["1.0.0-alpha", "1.0.0-beta.11"], ["1.0.0-rc", "1.0.0", "0.9"]),
        ("  >=1   <2  ", ["1.5"], ["2"]),
    ],
)
def test_ranges(range_: str, inside: list[str], outside: list[str]) -> None:
    parsed = parse_range(range_)
    assert [t for t in inside if version(t) in parsed] == inside
    assert [t for t in outside if version(t) in parsed] == []


@pytest.mark.parametrize(
    ("range_", "says"),
    [
        (">=1.4 <<3", "'<<3' is not an operator (>= <= > < = ^ ~) followed by a version"),
        ("", "is empty"),
        ("   ", "is empty"),
        ("^1 || ^2", "'||' is not supported; give each alternative as its own list entry"),
        ("1.x", "'1.x' has a wildcard"),
        ("*", "'*' has a wildcard"),
        (">=1.2.X", "'>=1.2.X' has a wildcard"),
        (">= 1.4", "'>=' has no version after it (write '>=1.4', without a space)"),
        (">=1.4, <3", "'>=1.4,' ends with ','"),
        ("1.4 - 2.0", "'-' is not an operator"),
        ("latest", "'latest' is not an operator"),
    ],
)
def test_bad_ranges_say_what_is_wrong_and_what_to_write(range_: str, says: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_range(range_)
    message = str(info.value)
    assert says in message
    assert message.endswith("write terms like '>=1.4 <3', '^1.2', '~2.0'")


# --- the model's validation ----------------------------------------------------------------------------------------


def test_the_model_names_the_bad_value_and_what_is_wrong() -> None:
    with pytest.raises(ValidationError) as info:
        Selection(tags=[r"^v\d+$", r"^v(\d+$"])
    assert (
        r"tags[1] '^v(\d+$' is not a valid regular expression: missing ), unterminated subpattern at position 2"
        in str(info.value)
    )
    with pytest.raises(ValidationError) as info:
        Selection(semver=">=1.4 <<3")
    assert (
        "semver '>=1.4 <<3' is not a range: '<<3' is not an operator (>= <= > < = ^ ~) followed by a version; write "
        "terms like '>=1.4 <3', '^1.2', '~2.0'"
    ) in str(info.value)
    with pytest.raises(ValidationError, match=r"semver\[1\] 1.4 is a number in YAML; quote it"):
        Selection.model_validate({"semver": ["^1", 1.4]})
    with pytest.raises(ValidationError, match=r"repositories\[0\] 'Base/\*\*' has 'B'"):
        Selection(repositories=["Base/**"])
    with pytest.raises(ValidationError, match="repositories \\[\\] selects no repository"):
        Selection(repositories=[])
    with pytest.raises(ValidationError, match="greater than or equal to 1"):
        Selection(latest=0)
    with pytest.raises(ValidationError, match="less than or equal to 10000"):
        Selection(latest=10001)


def test_defaults_and_schema() -> None:
    sel = Selection()
    assert (sel.repositories, sel.exclude_repositories, sel.tags, sel.exclude_tags) == (["**"], [], [], [])
    assert (sel.semver, sel.latest, sel.referrers) == (None, None, True)
    schema = Selection.model_json_schema()
    assert all(field.get("description") for field in schema["properties"].values())
    assert schema["properties"]["repositories"]["default"] == ["**"]
