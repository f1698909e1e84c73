"""routes.yaml ``select:`` and ``skip:``: valid rules load (and cascade from defaults); every bad rule is reported at
the line of the item that is wrong, naming its value and what to write instead."""

from __future__ import annotations

import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acr_transfer.errors import ConfigError
from acr_transfer.listing import ListedTag
from acr_transfer.models import TransferRequest, parameter_size_problem
from acr_transfer.routes import parse_routes
from acr_transfer.selection import select

ROOT = Path(__file__).resolve().parents[2]
SIDES = """\
defaults:
  source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}
  target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: importpipeline}
"""


def valid(routes: str, defaults: str = SIDES) -> str:
    return "version: 1\n" + defaults + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  ")


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle``."""
    return [i for i, line in enumerate(text.splitlines(), start=1) if needle in line][nth - 1]


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routes(text, source="routes.yaml")
    return info.value.message


# --- valid routes -------------------------------------------------------------------------------------------------


def test_a_select_route_loads_with_every_rule() -> None:
    text = valid(r"""
        - name: platform-images
          select:
            repositories: ["platform/*", "base/**"]
            exclude_repositories: ["platform/legacy*"]
            tags: ['^v\d+\.\d+\.\d+$', "^stable$"]
            exclude_tags: ['.*-rc\d+']
            semver: ">=1.4 <3"
            latest: 5
            referrers: false
          skip: identical
        """)
    route = parse_routes(text).get("platform-images")
    assert route.select is not None
    assert route.select.repositories == ["platform/*", "base/**"]
    assert route.select.exclude_repositories == ["platform/legacy*"]
    assert route.select.tags == [r"^v\d+\.\d+\.\d+$", "^stable$"]
    assert route.select.exclude_tags == [r".*-rc\d+"]
    assert (route.select.semver, route.select.latest, route.select.referrers) == (">=1.4 <3", 5, False)
    assert (route.skip, route.effective_skip, route.artifacts) == ("identical", "identical", [])


def test_skip_defaults_to_identical_with_select_and_none_for_an_artifact_list() -> None:
    text = valid("""
        - name: selected
          select: {}
        - name: listed
          artifacts: [demo/hello:v1]
        - name: both
          artifacts: [demo/hello:v1]
          select: {repositories: [demo/*], semver: ['^1', '^2']}
        - name: resend
          select: {tags: [latest]}
          skip: none
        - name: listed-but-skipping
          artifacts: [demo/hello:v1]
          skip: identical
        """)
    routes = parse_routes(text)
    selected, listed, both, resend, listed_skipping = routes.select(None)
    assert selected.select is not None and selected.select.repositories == ["**"] and selected.select.referrers
    assert (selected.skip, selected.effective_skip) == (None, "identical")
    assert (listed.select, listed.skip, listed.effective_skip) == (None, None, "none")
    assert both.artifacts == ["demo/hello:v1"] and both.select is not None and both.select.semver == ["^1", "^2"]
    assert both.effective_skip == "identical"
    assert resend.effective_skip == "none"
    assert listed_skipping.effective_skip == "identical"


def test_routes_with_neither_artifacts_nor_select_load_as_before() -> None:
    # a route may leave its artifacts to the request (--artifact, a push event); an import-only route needs none
    text = valid("""
        - name: by-request
        - name: import-only
          source: null
        """)
    assert parse_routes(text).names() == ["by-request", "import-only"]


def test_select_cascades_from_defaults_key_by_key() -> None:
    defaults = SIDES + "  select: {repositories: ['platform/*'], latest: 3}\n"
    text = valid(
        """
        - name: inherits
        - name: narrows
          select: {tags: ['v.*'], latest: 1}
        """,
        defaults,
    )
    inherits, narrows = parse_routes(text).select(None)
    assert inherits.select is not None and narrows.select is not None
    assert (inherits.select.repositories, inherits.select.latest) == (["platform/*"], 3)
    assert (narrows.select.repositories, narrows.select.tags, narrows.select.latest) == (["platform/*"], ["v.*"], 1)


def test_the_commented_select_example_in_routes_example_yaml_loads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGET_VAULT_URL", "https://127.0.0.1:8443")
    lines = (ROOT / "routes.example.yaml").read_text().splitlines()
    start = lines.index("  # - name: platform-images")
    block = []
    for line in lines[start:]:
        if not line.startswith("  # "):
            break
        block.append("  " + line[4:])
    routes = parse_routes("\n".join([*lines, *block]) + "\n")
    assert routes.names()[-1] == "platform-images"
    route = routes.get("platform-images")
    assert route.select is not None
    assert route.select.repositories == ["platform/*", "base/**"]
    assert (route.select.semver, route.select.latest, route.effective_skip) == (">=1.4 <3", 5, "identical")
    assert route.artifacts == ["demo/hello:v1"]


def test_a_select_route_fits_a_flow_run_and_full_defaults_to_false() -> None:
    route = parse_routes(valid("- {name: demo, select: {repositories: ['a/**'], semver: '^1'}}\n")).get("demo")
    request = TransferRequest(route=route)
    assert request.full is False and TransferRequest(route=route, full=True).full is True
    assert parameter_size_problem(request) is None
    assert TransferRequest.model_validate_json(request.model_dump_json()) == request  # a flow parameter round trip


# --- bad rules, each at its line ----------------------------------------------------------------------------------


def test_each_bad_rule_is_reported_at_the_line_of_its_item_naming_the_value() -> None:
    text = valid(r"""
        - name: demo
          select:
            repositories:
              - platform/*
              - Platform/legacy
              - "base**"
            exclude_repositories: ["a//b"]
            tags:
              - '^v\d+$'
              - '^v(\d+$'
            exclude_tags:
              - ''
            semver:
              - '^1.2'
              - '>=1.4 <<3'
              - 1.4
        """)
    message = problems(text)
    route = "(route 'demo')"
    expected = [
        (
            "Platform/legacy",
            f"routes[0].select.repositories[1] {route}: 'Platform/legacy' has 'P', which no repository name holds",
        ),
        ('"base**"', f"routes[0].select.repositories[2] {route}: 'base**' has '**' inside a path segment"),
        ('["a//b"]', f"routes[0].select.exclude_repositories[0] {route}: 'a//b' has an empty path segment"),
        (
            r"'^v(\d+$'",
            rf"routes[0].select.tags[1] {route}: '^v(\d+$' is not a valid regular expression: missing ), "
            "unterminated subpattern at position 2; tags match it whole, as if it were written between ^ and $",
        ),
        ("- ''", f"routes[0].select.exclude_tags[0] {route}: '' is empty and matches no tag; remove it"),
        (
            "'>=1.4 <<3'",
            f"routes[0].select.semver[1] {route}: '>=1.4 <<3' is not a range: '<<3' is not an operator "
            "(>= <= > < = ^ ~) followed by a version; write terms like '>=1.4 <3', '^1.2', '~2.0'",
        ),
        ("- 1.4", f"routes[0].select.semver[2] {route}: 1.4 is a number in YAML; quote it ('1.4')"),
    ]
    for needle, says in expected:
        assert f"line {line_of(text, needle)}: {says}" in message, (needle, message)
    assert f"has {len(expected)} problems" in message


def test_a_single_semver_range_is_reported_at_its_line() -> None:
    text = valid("- name: demo\n  select:\n    tags: [latest]\n    semver: '^1 || ^2'\n")
    message = problems(text)
    assert (
        f"line {line_of(text, 'semver:')}: routes[0].select.semver (route 'demo'): '^1 || ^2' is not a range: '||' "
        "is not supported; give each alternative as its own list entry"
    ) in message


@pytest.mark.parametrize(
    ("setting", "says"),
    [
        ("latest: 0", "latest must be 1 to 10000 (got 0): how many of the most recently updated matching tags"),
        ("latest: 10001", "latest must be 1 to 10000 (got 10001)"),
        ("latest: many", "should be a valid integer"),
        ("semver: []", "[] selects no tag; leave it out, or give at least one range"),
        ("semver: {a: 1}", "{'a': 1} is not a range; write a range like '>=1.4 <3', or a list of them"),
        ("repositories: []", "[] selects no repository; leave it out for every one ('**')"),
        ("tags: latest", "should be a valid list (got 'latest')"),
        ("referrers: sometimes", "should be a valid boolean"),
    ],
)
def test_bad_values_under_select(setting: str, says: str) -> None:
    text = valid(f"- name: demo\n  select:\n    {setting}\n")
    key = setting.split(":")[0]
    assert f"line {line_of(text, setting)}: routes[0].select.{key} (route 'demo'): {says}" in problems(text)


def test_an_unknown_key_under_select_suggests_the_nearest() -> None:
    text = valid("- name: demo\n  select:\n    repositores: ['a/*']\n    tag: [latest]\n    x-note: mine\n")
    message = problems(text)
    assert (
        f"line {line_of(text, 'repositores:')}: routes[0].select.repositores: unknown key 'repositores'; did you "
        "mean 'repositories'?"
    ) in message
    assert f"line {line_of(text, 'tag:')}: routes[0].select.tag: unknown key 'tag'; did you mean 'tags'?" in message
    assert "allowed here: repositories, exclude_repositories, tags, exclude_tags, semver, latest, referrers" in message
    assert "x-note" not in message and "has 2 problems" in message


def test_skip_is_identical_or_none() -> None:
    text = valid("- name: demo\n  select: {}\n  skip: everything\n")
    assert (
        f"line {line_of(text, 'skip:')}: routes[0].skip (route 'demo'): skip must be 'identical' (leave out what the "
        "target already holds, digest-equal) or 'none' (send everything selected), not 'everything'"
    ) in problems(text)


def test_select_must_be_a_mapping() -> None:
    text = valid("- name: demo\n  select: [platform/*]\n")
    assert (
        f"line {line_of(text, 'select:')}: routes[0].select (route 'demo'): select must be a mapping of rules "
        "(repositories:, tags:, semver:, latest:, …), not a list"
    ) in problems(text)


def test_a_bad_rule_in_defaults_is_reported_once_at_the_defaults_line() -> None:
    text = valid("- name: one\n- name: two\n", SIDES + "  select:\n    tags: ['(']\n")
    message = problems(text)
    assert "has 1 problem;" in message
    assert f"line {line_of(text, 'tags:')}: defaults.select.tags[0]: '(' is not a valid regular expression" in message


# --- nothing but ConfigError, whatever the rules ------------------------------------------------------------------

RULE_KEYS = st.sampled_from(["repositories", "exclude_repositories", "tags", "exclude_tags", "semver", "latest"])
RULE_TEXT = st.text(alphabet="ab/*?[]!^-.\\()|{}<>=~v0123456789 xX,+", max_size=12) | st.text(max_size=12)
RULE_VALUES = RULE_TEXT | st.lists(RULE_TEXT | st.integers() | st.floats(allow_nan=False), max_size=4) | st.integers()


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(RULE_KEYS, RULE_VALUES | st.booleans() | st.none(), max_size=4))
def test_random_rules_load_or_fail_cleanly(rules: dict[str, object]) -> None:
    text = valid(yaml.safe_dump([{"name": "demo", "select": rules}]))
    try:
        route = parse_routes(text).get("demo")
    except ConfigError:
        return
    assert route.select is not None
    now = datetime(2026, 1, 1, tzinfo=UTC)
    tags = [ListedTag("a/b", tag, "sha256:x", now, now) for tag in ("v1.0", "latest", "2.0.0-rc.1", "sha256-ab")]
    select(route.select, {"a/b": tags, "ab": tags})  # what loaded also compiles and runs for selection
