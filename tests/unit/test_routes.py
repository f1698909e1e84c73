"""routes.yaml loading: version, defaults cascade, x- keys, env interpolation, secrets refusal, and messages that
name the key, its path and its line."""

from __future__ import annotations

import contextlib
import textwrap
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from acr_transfer.errors import ConfigError
from acr_transfer.routes import DEFAULT_ROUTES_FILE, RouteLimits, RoutesFile, load_routes, parse_routes, routes_path

ROOT = Path(__file__).resolve().parents[2]
SIDES = """\
defaults:
  source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}
  target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: importpipeline}
"""


def doc(text: str) -> str:
    return textwrap.dedent(text)


def line_of(text: str, needle: str, nth: int = 1) -> int:
    """1-based line of the nth line containing ``needle``."""
    hits = [i for i, line in enumerate(text.splitlines(), start=1) if needle in line]
    return hits[nth - 1]


def problems(text: str) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routes(text, source="routes.yaml")
    return info.value.message


def valid(routes: str, defaults: str = SIDES) -> str:
    return "version: 1\n" + defaults + "routes:\n" + textwrap.indent(textwrap.dedent(routes), "  ")


# --- the example file ---------------------------------------------------------------------------------------------


def test_example_file_loads_the_demo_and_half_routes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TARGET_VAULT_URL", "https://127.0.0.1:8443")
    routes = load_routes(ROOT / "routes.example.yaml")
    assert routes.version == 1
    assert routes.names() == ["demo", "direct", "triggered", "airgap-out", "airgap-in"]
    demo, direct, triggered, out, in_ = routes.select(None)
    # the halves of a disconnected transfer: `null` removes the side the defaults cascade in
    assert out.target is None and out.source is not None and out.source.export_pipeline == "exportpipeline"
    assert in_.source is None and in_.target is not None and in_.target.import_pipeline == "importpipeline"
    assert {r.source.export_pipeline for r in (demo, direct, triggered)} == {"exportpipeline"}
    assert (demo.target.import_pipeline, direct.target.import_pipeline, triggered.target.import_pipeline) == (
        "importpipeline",
        "directimport",
        "triggeredimport",
    )
    assert demo.bridge.secret_uri == "https://127.0.0.1:8443/secrets/acrbridgesas"
    assert triggered.bridge.secret_uri == "https://127.0.0.1:8443/secrets/acrbridgesas"
    assert direct.bridge.secret_uri is None
    assert demo.artifacts == ["demo/hello:v1", "demo/world:v1", "demo/multiarch:1.0"]
    for route in (demo, direct, triggered):
        assert route.source.registry.name == "sourceregistry"
        assert route.target.registry.name == "targetregistry"
        assert route.target.registry.resource_group == "transfer-rg"
        assert route.cleanup.delete_runs_after_days == 7
    assert (demo.timeout_minutes, triggered.timeout_minutes) == (30, 45)


def test_example_file_without_the_vault_url_names_the_variable_and_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TARGET_VAULT_URL", raising=False)
    text = (ROOT / "routes.example.yaml").read_text()
    with pytest.raises(ConfigError) as info:
        load_routes(ROOT / "routes.example.yaml")
    message = info.value.message
    assert "environment variable TARGET_VAULT_URL is not set" in message
    assert f"line {line_of(text, 'secret_uri: ${TARGET_VAULT_URL}')}: routes[0].bridge.secret_uri" in message
    assert f"line {line_of(text, 'secret_uri: ${TARGET_VAULT_URL}', 2)}: routes[2].bridge.secret_uri" in message
    assert "must look like" not in message  # the unresolved value is not reported a second time


# --- version and top level ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("version", "shown"), [("2", "version 2 is not supported"), ("'1'", "version '1'"), ("true", "version True")]
)
def test_only_version_1_is_read(version: str, shown: str) -> None:
    message = problems(f"# header\nversion: {version}\nroutes: []\n")
    assert shown in message
    assert "line 2" in message
    assert "reads version 1" in message


def test_version_is_required() -> None:
    assert "has no 'version'; add 'version: 1'" in problems("routes: []\n")


@pytest.mark.parametrize(("text", "expected"), [("", "is empty"), ("- a\n", "must be a mapping"), ("3\n", "mapping")])
def test_document_must_be_a_mapping(text: str, expected: str) -> None:
    assert expected in problems(text)


def test_unknown_top_level_key_names_key_and_line() -> None:
    text = valid("- {name: demo}\n") + "x-owner: me\nroute: []\n"
    message = problems(text)
    assert f"line {line_of(text, 'route: []')}: route: unknown key 'route'; did you mean 'routes'?" in message
    assert "x-owner" not in message


@pytest.mark.parametrize("routes", ["", "routes: []\n", "routes: {demo: {}}\n"])
def test_routes_must_be_a_non_empty_list(routes: str) -> None:
    assert "must be a list of routes" in problems("version: 1\n" + routes)


# --- unknown keys, anywhere ---------------------------------------------------------------------------------------


def test_unknown_nested_key_names_key_path_line_and_suggestion() -> None:
    text = doc("""\
        version: 1
        defaults:
          source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}
        routes:
          - name: demo
            target:
              registry:
                resource_group: transfer-rg
                nmae: targetregistry
              import_pipeline: importpipeline
        """)
    message = problems(text)
    assert f"line {line_of(text, 'nmae')}: routes[0].target.registry.nmae: unknown key 'nmae'" in message
    assert "did you mean 'name'?" in message


def test_unknown_keys_in_defaults_and_routes_are_all_reported_at_once() -> None:
    text = doc("""\
        version: 1
        defaults:
          timeout: 5
          cleanup: {delete_after: 3}
        routes:
          - name: demo
            sorce: {}
            bridge: {secret: x}
        """)
    message = problems(text)
    assert message.count("unknown key") == 4
    assert f"line {line_of(text, 'timeout')}: defaults.timeout: unknown key 'timeout'" in message
    assert f"line {line_of(text, 'delete_after')}: defaults.cleanup.delete_after: unknown key" in message
    assert f"line {line_of(text, 'sorce')}: routes[0].sorce: unknown key 'sorce'; did you mean 'source'?" in message
    assert f"line {line_of(text, 'secret: x')}: routes[0].bridge.secret: unknown key 'secret'" in message


def test_defaults_cannot_name_a_route() -> None:
    text = valid("- {name: demo}\n", SIDES + "  name: everything\n")
    assert f"line {line_of(text, 'name: everything')}: defaults.name: defaults cannot set 'name'" in problems(text)


def test_x_keys_are_ignored_everywhere_even_with_unset_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("NOT_SET_ANYWHERE", raising=False)
    text = doc("""\
        version: 1
        x-anchors: {whatever: [1, 2, {deep: true}]}
        defaults:
          x-why: shared by all routes
          source:
            registry: {resource_group: transfer-rg, name: sourceregistry, x-note: n}
            export_pipeline: exportpipeline
          target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: importpipeline}
        routes:
          - name: demo
            x-owner: team-a
            x-env: ${NOT_SET_ANYWHERE}
            target: {x-ticket: 42}
        """)
    route = parse_routes(text).get("demo")
    assert route.target.import_pipeline == "importpipeline"


# --- defaults cascade ---------------------------------------------------------------------------------------------


def test_defaults_deep_merge_route_keys_win_and_nested_mappings_merge_key_by_key() -> None:
    text = doc("""\
        version: 1
        defaults:
          source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}
          target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: importpipeline}
          timeout_minutes: 30
          artifacts: [a:1, b:1]
          cleanup: {delete_runs_after_days: 7, delete_export_blob: false}
        routes:
          - name: plain
          - name: custom
            target: {registry: {name: otherregistry}, import_pipeline: directimport}
            timeout_minutes: 5
            artifacts: [c:1]
            cleanup: {delete_runs_after_days: 1}
        """)
    plain, custom = parse_routes(text).select(["plain", "custom"])
    assert (plain.timeout_minutes, plain.artifacts, plain.cleanup.delete_runs_after_days) == (30, ["a:1", "b:1"], 7)
    assert custom.target.registry.name == "otherregistry"
    assert custom.target.registry.resource_group == "transfer-rg"  # merged from defaults, key by key
    assert custom.target.import_pipeline == "directimport"
    assert custom.timeout_minutes == 5
    assert custom.artifacts == ["c:1"]  # lists are replaced, not appended
    assert custom.cleanup.delete_runs_after_days == 1
    assert custom.cleanup.delete_export_blob is False
    assert plain.source == custom.source


def test_a_bad_default_is_reported_once_at_its_own_line() -> None:
    text = valid("- {name: one}\n- {name: two}\n", SIDES + "  batch_size: 80\n")
    message = problems(text)
    assert message.count("batch_size must be 1 to 50") == 1
    assert f"line {line_of(text, 'batch_size')}: defaults.batch_size: batch_size must be 1 to 50 (got 80)" in message


# --- validation messages ------------------------------------------------------------------------------------------


def test_every_validation_problem_names_route_path_line_and_what_to_do() -> None:
    text = doc("""\
        version: 1
        routes:
          - name: demo
            source:
              registry: {name: sourceregistry}
              export_pipeline: export-pipeline
            target:
              registry: {resource_group: rg, name: targetregistry}
            artifacts: [Hello, ok:v1]
            bridge: {secret_uri: http://vault/secrets/x}
        """)
    message = problems(text)
    route = "(route 'demo')"
    assert f"line {line_of(text, 'registry: {name')}: routes[0].source.registry {route}: name a registry by" in message
    assert (
        f"line {line_of(text, 'export_pipeline')}: routes[0].source.export_pipeline {route}: pipeline name" in message
    )
    assert f"line {line_of(text, 'target:')}: routes[0].target.import_pipeline {route}: required key" in message
    assert f"line {line_of(text, 'artifacts')}: routes[0].artifacts[0] {route}: artifact 'Hello'" in message
    assert f"line {line_of(text, 'bridge')}: routes[0].bridge.secret_uri {route}: bridge secret_uri" in message
    assert "has 5 problems" in message
    assert message.startswith("routes file routes.yaml")


def test_type_errors_say_what_was_given() -> None:
    message = problems(valid("- {name: demo, artifacts: [ok:v1, 3], batch_size: many}\n"))
    assert "routes[0].artifacts[1] (route 'demo'): should be a valid string (got 3)" in message
    assert "routes[0].batch_size (route 'demo'): should be a valid integer" in message


@pytest.mark.parametrize(
    ("setting", "expected"),
    [
        ("timeout_minutes: 0", "timeout_minutes must be 1 to 1440 minutes (got 0)"),
        ("timeout_minutes: 0.5", "timeout_minutes must be 1 to 1440 minutes (got 0.5)"),
        ("timeout_minutes: 5000", "timeout_minutes must be 1 to 1440 minutes (got 5000)"),
        ("batch_size: 51", "batch_size must be 1 to 50 (got 51): ACR takes at most 50 artifacts per pipeline run"),
        ("batch_size: 0", "batch_size must be 1 to 50 (got 0)"),
    ],
)
def test_safety_floors_are_enforced_at_load(setting: str, expected: str) -> None:
    text = valid(f"- name: demo\n  {setting}\n")
    assert f"line {line_of(text, setting)}: routes[0].{setting.split(':')[0]} (route 'demo'): {expected}" in problems(
        text
    )


def test_a_template_that_cannot_render_fails_at_load() -> None:
    message = problems(valid("- {name: demo, blob_name_template: '{route}/{transfer_id}{'}\n"))
    assert "routes[0].blob_name_template (route 'demo'): does not render a usable blob name" in message


def test_duplicate_route_names() -> None:
    text = valid("- name: demo\n- name: other\n- name: demo\n")
    message = problems(text)
    first, second = line_of(text, "name: demo"), line_of(text, "name: demo", 2)
    assert f"line {second}: routes[2].name: duplicate route name 'demo' (first at line {first})" in message


def test_duplicate_yaml_keys_are_errors_not_silently_last_wins() -> None:
    text = valid("- name: demo\n  timeout_minutes: 5\n  timeout_minutes: 6\n")
    message = problems(text)
    first, second = line_of(text, "timeout_minutes: 5"), line_of(text, "timeout_minutes: 6")
    assert (
        f"line {second}: routes[0].timeout_minutes: duplicate key 'timeout_minutes' (first at line {first})" in message
    )


def test_non_string_keys_are_named() -> None:
    assert "key True is not a string; quote it" in problems(valid("- name: demo\n  on: 1\n"))


# --- YAML syntax and structure ------------------------------------------------------------------------------------


def test_yaml_syntax_error_has_line_and_column_but_no_snippet_of_the_file() -> None:
    text = "version: 1\nroutes:\n  - name: demo\n    description: 'oops sig=SECRETSECRET\n"
    message = problems(text)
    assert "YAML syntax error at line" in message and "column" in message
    assert "SECRETSECRET" not in message


def test_tabs_are_reported_with_line_and_column() -> None:
    assert "YAML syntax error at line 3, column 1" in problems("version: 1\nroutes:\n\t- name: demo\n")


def test_merge_keys_and_anchors_work() -> None:
    text = doc("""\
        version: 1
        x-source: &source
          registry: {resource_group: transfer-rg, name: sourceregistry}
          export_pipeline: exportpipeline
        routes:
          - name: demo
            source: {<<: *source, export_pipeline: otherexport}
            target: {registry: {resource_group: transfer-rg, name: targetregistry}, import_pipeline: importpipeline}
        """)
    route = parse_routes(text).get("demo")
    assert (route.source.registry.name, route.source.export_pipeline) == ("sourceregistry", "otherexport")


def test_alias_bombs_and_self_references_are_refused() -> None:
    bomb = "a: &a [1, 1, 1, 1, 1, 1, 1, 1, 1, 1]\n" + "".join(
        f"{n}: &{n} [{', '.join([f'*{p}'] * 10)}]\n" for p, n in zip("abcde", "bcdef", strict=True)
    )
    assert "too large or too deeply nested" in problems(bomb)
    assert "refers to itself" in problems("&a [*a]\n")
    assert "nested too deeply" in problems("[" * 5000)


def test_defaults_and_routes_of_the_wrong_shape() -> None:
    message = problems("version: 1\ndefaults: [a]\nroutes:\n  - just-a-string\n")
    assert "line 2: defaults: must be a mapping of route keys" in message
    assert "line 4: routes[0]: a route must be a mapping (name:, source:, target:, …), not a string" in message


# --- secrets are never inline -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "key", ["sas", "sas_token", "token", "password", "key", "account_key", "connection_string", "Account-Key", "x-sas"]
)
def test_keys_named_like_secrets_are_refused_without_echoing_the_value(key: str) -> None:
    text = valid(f"- name: demo\n  bridge:\n    {key}: hunter2-very-secret\n")
    message = problems(text)
    assert f"line {line_of(text, key + ':')}: routes[0].bridge.{key}: '{key}' looks like an inline secret" in message
    assert "Key Vault" in message and "secret URI" in message
    assert "hunter2" not in message


@pytest.mark.parametrize("where", ["  description: 'see https://acct/c?sv=1&sig=", "  x-note: '?sv=1&SIG="])
def test_values_with_a_sas_signature_are_refused_anywhere_without_echoing_it(where: str) -> None:
    text = valid(f"- name: demo\n{where}AbC123secretsig%3D&sp=r'\n")
    message = problems(text)
    assert "holds a SAS signature ('sig=')" in message and "Key Vault" in message
    assert "AbC123secretsig" not in message


def test_a_sas_through_an_environment_variable_is_refused_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("BRIDGE_SAS", "sv=2026&sp=cw&sig=FromTheEnvironment")
    message = problems(valid("- name: demo\n  description: ${BRIDGE_SAS}\n"))
    assert "routes[0].description: this value holds a SAS signature" in message
    assert "FromTheEnvironment" not in message


def test_secrets_stop_the_load_before_other_problems_echo_values() -> None:
    message = problems(valid("- name: demo\n  password: p4ss\n  bridge: {secret_uri: 'not-a-uri-sig=zzz'}\n"))
    assert "p4ss" not in message and "zzz" not in message
    assert "bridge secret_uri" not in message  # validation never ran


# --- environment interpolation ------------------------------------------------------------------------------------


def test_environment_interpolation_in_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VAULT", "https://kv.vault.azure.net")
    monkeypatch.setenv("EMPTY", "")
    monkeypatch.setenv("MINUTES", "12")
    monkeypatch.delenv("UNSET", raising=False)
    text = valid(
        "- name: demo\n"
        "  bridge: {secret_uri: '${VAULT}/secrets/bridge'}\n"
        "  description: '${UNSET:-fallback} ${EMPTY:-used} [${EMPTY}] $${VAULT} $$ {x}'\n"
        "  timeout_minutes: ${MINUTES}\n"
    )
    route = parse_routes(text).get("demo")
    assert route.bridge.secret_uri == "https://kv.vault.azure.net/secrets/bridge"
    assert route.description == "fallback used [] ${VAULT} $$ {x}"
    assert route.timeout_minutes == 12


def test_unset_variable_names_the_variable_and_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TARGET_VAULT_URL", raising=False)
    text = valid("- name: demo\n  bridge:\n    secret_uri: ${TARGET_VAULT_URL}/secrets/acrbridgesas\n")
    message = problems(text)
    assert (
        f"line {line_of(text, 'secret_uri')}: routes[0].bridge.secret_uri: environment variable TARGET_VAULT_URL "
        "is not set; set it, or write ${TARGET_VAULT_URL:-DEFAULT}"
    ) in message


@pytest.mark.parametrize(("value", "expected"), [("${1X}", "not a variable name"), ("a ${B", "unclosed '${'")])
def test_malformed_references(value: str, expected: str) -> None:
    assert expected in problems(valid(f"- name: demo\n  description: '{value}'\n"))


def test_keys_are_never_interpolated(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("KEY", "description")
    assert "unknown key '${KEY}'" in problems(valid("- name: demo\n  ${KEY}: x\n"))


# --- the loaded file ----------------------------------------------------------------------------------------------


def test_get_select_and_names() -> None:
    routes = parse_routes(valid("- name: a\n- name: b\n- name: c\n"), source="my-routes.yaml")
    assert isinstance(routes, RoutesFile)
    assert routes.names() == ["a", "b", "c"]
    assert [r.name for r in routes.select(["c", "a", "c"])] == ["c", "a"]
    assert [r.name for r in routes.select([])] == ["a", "b", "c"]
    with pytest.raises(ConfigError, match=r"route 'z' is not in my-routes.yaml; known routes: a, b, c"):
        routes.get("z")
    with pytest.raises(ConfigError, match=r"route\(s\) 'y', 'z' not in my-routes.yaml; known routes: a, b, c"):
        routes.select(["a", "y", "z"])


def test_load_routes_errors_name_the_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"not found; copy routes\.example\.yaml"):
        load_routes(tmp_path / "missing.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"version: 1\ndescription: caf\xe9\n")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_routes(latin)
    good = tmp_path / "routes.yaml"
    good.write_text("\ufeff" + valid("- name: demo\n"), encoding="utf-8")
    assert load_routes(good).names() == ["demo"]
    good.write_text(valid("- name: demo\n  bogus: 1\n"))
    with pytest.raises(ConfigError, match=f"routes file {good}"):
        load_routes(good)


def test_routes_path_is_the_given_file_else_the_variable_else_routes_yaml(tmp_path: Path) -> None:
    env = {"ACR_TRANSFER_ROUTES": str(tmp_path / "from-env.yaml")}
    assert routes_path(tmp_path / "given.yaml", env) == tmp_path / "given.yaml"
    assert routes_path(str(tmp_path / "given.yaml"), env) == tmp_path / "given.yaml"
    assert routes_path(None, env) == tmp_path / "from-env.yaml"
    assert routes_path(None, {}) == DEFAULT_ROUTES_FILE == Path("routes.yaml")
    assert routes_path("", {"ACR_TRANSFER_ROUTES": ""}) == Path("routes.yaml")  # empty counts as not given


def test_routes_path_reads_the_process_environment_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACR_TRANSFER_ROUTES", "elsewhere/routes.yaml")
    assert routes_path(None) == Path("elsewhere/routes.yaml")
    monkeypatch.delenv("ACR_TRANSFER_ROUTES")
    assert routes_path(None) == Path("routes.yaml")


def test_interpolation_reads_the_environment_it_is_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MINUTES", "12")
    text = valid("- name: demo\n  timeout_minutes: ${MINUTES}\n")
    assert parse_routes(text, environ={"MINUTES": "7"}).get("demo").timeout_minutes == 7
    with pytest.raises(ConfigError, match="environment variable MINUTES is not set"):
        parse_routes(text, environ={})


SUB = "00000000-0000-0000-0000-000000000001"
OTHER_SUB = "00000000-0000-0000-0000-0000000000ff"


def other_subscription_routes() -> str:
    far = f"/subscriptions/{OTHER_SUB}/resourceGroups/rg/providers/Microsoft.ContainerRegistry/registries/farregistry"
    return valid(
        f"""\
        - name: by-id
          target: {{registry: {{resource_id: {far}}}, import_pipeline: importpipeline}}
        - name: by-subscription
          source:
            registry: {{subscription_id: {OTHER_SUB}, resource_group: rg, name: farsource}}
            export_pipeline: exportpipeline
        - name: default-subscription
          source: {{registry: {{resource_group: rg, name: nearsource}}, export_pipeline: exportpipeline}}
        - name: allowed
          source:
            registry: {{subscription_id: {SUB.upper()}, resource_group: rg, name: nearsource}}
            export_pipeline: exportpipeline
        """,
        defaults="",
    )


def test_a_registry_in_a_subscription_not_allowed_is_refused_at_load_with_its_line() -> None:
    text = other_subscription_routes()
    message = problems_with(text, RouteLimits(allowed_subscriptions=frozenset({SUB})))
    assert "has 2 problems" in message
    says = (
        f"is in subscription {OTHER_SUB}, which this deployment may not reach (allowed: {SUB}); add it to "
        "ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS if routes may use it, or fix the registry"
    )
    by_id = f"line {line_of(text, 'resource_id:')}: routes[0].target.registry.resource_id (route 'by-id'): "
    assert f"{by_id}registry 'farregistry' {says}" in message
    by_sub = f"line {line_of(text, OTHER_SUB, 2)}: routes[1].source.registry.subscription_id (route 'by-subscription')"
    assert f"{by_sub}: registry 'farsource' {says}" in message
    # a registry without a subscription of its own is left to context.address (it knows the default one)
    assert "route 'default-subscription'" not in message and "route 'allowed'" not in message


def test_subscriptions_are_checked_only_when_the_caller_names_them() -> None:
    text = other_subscription_routes()
    assert parse_routes(text).names() == ["by-id", "by-subscription", "default-subscription", "allowed"]
    limits = RouteLimits(allowed_subscriptions=frozenset({SUB, OTHER_SUB.upper()}))
    assert len(parse_routes(text, limits=limits).routes) == 4
    message = problems_with(text, RouteLimits(allowed_subscriptions=frozenset()))
    assert "(allowed: none: AZURE_SUBSCRIPTION_ID is not set either)" in message and "has 3 problems" in message


def test_a_disallowed_subscription_from_defaults_is_reported_once_at_the_defaults_line() -> None:
    far = f"{{subscription_id: {OTHER_SUB}, resource_group: rg, name: farsource}}"
    defaults = f"defaults:\n  source: {{registry: {far}, export_pipeline: exportpipeline}}\n"
    text = valid("- name: a\n- name: b\n", defaults=defaults)
    message = problems_with(text, RouteLimits(allowed_subscriptions=frozenset({SUB})))
    assert "has 1 problem;" in message
    assert f"line 3: defaults.source.registry.subscription_id: registry 'farsource' is in subscription {OTHER_SUB}" in (
        message
    )


def test_the_artifact_limit_is_the_callers() -> None:
    text = valid("- name: demo\n  artifacts: [demo/a:v1, demo/b:v1, demo/c:v1]\n")
    assert len(parse_routes(text).get("demo").artifacts) == 3
    message = problems_with(text, RouteLimits(max_artifacts=2))
    assert f"line {line_of(text, 'artifacts:')}: routes[0].artifacts (route 'demo'): 3 artifacts are more" in message


def problems_with(text: str, limits: RouteLimits) -> str:
    with pytest.raises(ConfigError) as info:
        parse_routes(text, source="routes.yaml", limits=limits)
    return info.value.message


def test_route_name_with_a_trailing_newline_is_refused() -> None:
    # (with the default template the load-time blob name check happens to catch it, as {route} is in the name)
    problems(valid('- {name: "demo\\n", blob_name_template: "{transfer_id}/b{batch}.tar"}\n'))


# --- nothing but ConfigError, whatever the input ------------------------------------------------------------------

ROUTE_KEYS = ["version", "defaults", "routes", "name", "source", "target", "registry", "resource_group", "bridge"]
MORE_KEYS = ["export_pipeline", "import_pipeline", "artifacts", "secret_uri", "timeout_minutes", "batch_size", "x-a"]
KEYS = st.sampled_from([*ROUTE_KEYS, *MORE_KEYS]) | st.text(max_size=8)
SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=16)
DOCUMENTS = st.recursive(SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(KEYS, inner, max_size=5))


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(DOCUMENTS, st.booleans())
def test_random_documents_raise_nothing_but_config_error(data: object, versioned: bool) -> None:
    if versioned and isinstance(data, dict):
        data = {"version": 1, **data}
    with contextlib.suppress(ConfigError):
        parse_routes(yaml.safe_dump(data))


@settings(max_examples=150, deadline=None)
@given(st.text(max_size=200))
def test_random_text_raises_nothing_but_config_error(text: str) -> None:
    with contextlib.suppress(ConfigError):
        parse_routes(text)


@settings(max_examples=150, deadline=None)
@given(st.text(min_size=0, max_size=70), st.lists(st.text(max_size=40), max_size=4))
def test_random_route_names_and_artifacts_load_or_fail_cleanly(name: str, artifacts: list[str]) -> None:
    text = valid(yaml.safe_dump([{"name": name, "artifacts": artifacts}]))
    try:
        route = parse_routes(text).get(name)
    except ConfigError:
        return
    assert route.name == name and route.artifacts == artifacts
