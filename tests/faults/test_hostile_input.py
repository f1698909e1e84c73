"""Hostile input: routes.yaml documents, request values and event deliveries that try to break things.

What must hold, whatever the input:

- the routes loader returns routes or raises ConfigError (never another exception), and its message never
  echoes an inline secret;
- request values (artifact refs, transfer ids, blob names, registries, other subscriptions, 10 000-item lists)
  end in a pydantic ValidationError or one of our errors naming the bad value, and what is accepted is safe:
  every ARM path segment and blob name is one that cannot walk up a path;
- through the flows users start, invalid input never reaches ARM (the stand-in's request log stays empty);
- the event receiver, as a real process over real HTTP, answers 4xx to malformed, oversized and unkeyed
  bodies, never 5xx or a dropped connection, and still takes a valid delivery afterwards.
"""

from __future__ import annotations

import json
import posixpath
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from acr_transfer.context import address, resolve
from acr_transfer.errors import AcrTransferError, ConfigError, shown
from acr_transfer.models import (
    ACR_NAME,
    REGISTRY_ID,
    ImportRequest,
    RegistryRef,
    TransferRequest,
    TransferRoute,
    blob_path_problem,
    resource_group_problem,
    subscription_problem,
)
from acr_transfer.naming import BLOB_CHARS, MAX_ARTIFACTS, blob_name, normalise_artifact
from acr_transfer.routes import load_routes, parse_routes
from acr_transfer.settings import Settings, load_settings
from tests.support.receiver import start_receiver

pytestmark = pytest.mark.faults

ROOT = Path(__file__).resolve().parents[2]
SUB = "00000000-0000-4000-8000-000000000001"  # the stand-in's subscription (emulator/topology.py)
OTHER_SUB = "11111111-2222-4333-8444-555555555555"
ALLOWED = frozenset({SUB})
PROVIDER = "providers/Microsoft.ContainerRegistry/registries"
CANARY = "CANARYc2VjcmV0"  # an inline secret that no message may echo
FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# --- values people (or attackers) write ----------------------------------------------------------------------

TRICKS = [
    "",
    " ",
    ".",
    "..",
    "../..",
    "/",
    "//",
    "/etc/passwd",
    "a/../b",
    "a/./b",
    "a//b",
    "..\\..\\x",
    "\\",
    "a\x00b",
    "x\ny",
    "x\r\n",
    "\t",
    "\u202egnp.exe",  # right-to-left override
    "\u2028",
    "\ufeff",
    "\u200b",
    "ｒｅｇｉｓｔｒｙ",  # fullwidth
    "Ünïcødé",
    "%2e%2e",
    "%2F",
    "?x=1",
    "#frag",
    "a" * 91,
    "a" * 1025,
    "${HOME}",
    "{route}",
    "sourceregistry",
    "transfer-rg",
    "(rg)",
    "rg.",
    "-rg_1.(x)",
]
ODD = st.sampled_from(TRICKS) | st.text(max_size=40) | st.text(alphabet="a./\\:@-_ \x00é", max_size=20)
ARTIFACTS = (
    st.sampled_from(
        [
            "demo/hello",
            "demo/hello:v1",
            "demo/app@sha256:" + "a" * 64,
            "demo/app@sha256:" + "A" * 64,
            "demo/../etc:v1",
            "../../etc/passwd",
            "registry.example.com/demo/x:v1",
            "localhost/x",
            "demo/hello:",
            "demo/hello:-bad",
            "demo//hello",
            "Demo/Hello",
            "demo/hello@sha256:short",
            "demo/hello:v1@sha256:" + "b" * 64,
            " demo/hello:v1 ",
            "démo/hello",
            "x" * 600,
            "a/" * 200 + "b",
            "demo/hello:" + "t" * 129,
        ]
    )
    | ODD
    | st.builds(
        lambda repo, tag: f"{repo}:{tag}", st.from_regex(r"[a-z0-9]{1,8}(/[a-z0-9._-]{1,8}){0,3}", fullmatch=True), ODD
    )
)
GUIDS = st.sampled_from([SUB, SUB.upper(), OTHER_SUB]) | st.uuids().map(str)


def registry_id(sub: str, rg: str, name: str) -> str:
    return f"/subscriptions/{sub}/resourceGroups/{rg}/{PROVIDER}/{name}"


def base_route(**overrides: Any) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "name": "hostile",
        "source": {
            "registry": {"resource_group": "transfer-rg", "name": "sourceregistry"},
            "export_pipeline": "exportpipeline",
        },
        "target": {
            "registry": {"resource_group": "transfer-rg", "name": "targetregistry"},
            "import_pipeline": "importpipeline",
        },
    }
    doc.update(overrides)
    return doc


def escaped(value: str, chars: int = 10) -> str:
    """How a message quotes the start of ``value`` (see ``errors.shown``)."""
    return shown(value[:chars], chars)


def assert_safe_arm_id(arm_id: str) -> None:
    """An ARM path that no client or proxy can read as another path."""
    assert posixpath.normpath(arm_id) == arm_id, arm_id
    segments = arm_id.split("/")[1:]
    assert all(s and s not in (".", "..") and not s.endswith(".") for s in segments), arm_id
    assert all(ch.isprintable() and ch not in "\\?#%" for ch in arm_id), arm_id


# --- routes.yaml documents -----------------------------------------------------------------------------------


def registry_doc() -> st.SearchStrategy[dict[str, Any]]:
    by_name = st.fixed_dictionaries(
        {"resource_group": ODD | st.just("transfer-rg"), "name": ODD | st.just("sourceregistry")},
        optional={"subscription_id": GUIDS | ODD},
    )
    by_id = st.fixed_dictionaries(
        {"resource_id": st.builds(registry_id, GUIDS | ODD, ODD | st.just("transfer-rg"), ODD | st.just("sourcereg"))}
    )
    return by_name | by_id | st.fixed_dictionaries({"resource_id": ODD})


SCALARS = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | ODD
ROUTE_DOC = st.fixed_dictionaries(
    {"name": st.sampled_from(["demo", "a", "r-1"]) | ODD},
    optional={
        "source": st.fixed_dictionaries(
            {"registry": registry_doc(), "export_pipeline": ODD | st.just("exportpipeline")}
        ),
        "target": st.fixed_dictionaries(
            {"registry": registry_doc(), "import_pipeline": ODD | st.just("importpipeline")}
        ),
        "artifacts": st.lists(ARTIFACTS, max_size=8) | SCALARS,
        "blob_name_template": st.sampled_from(
            [
                "{route}/{transfer_id}/batch{batch}.tar",
                "../{transfer_id}",
                "/{transfer_id}",
                "{route}//{transfer_id}",
                "{route}\\{transfer_id}",
                "{transfer_id}/..",
                "{transfer_id}.",
                "x/{transfer_id}/\x00",
                "é/{transfer_id}",
                "{transfer_id!r}",
                "{transfer_id:>9999999}",
                "{{transfer_id}}",
                "{0}{transfer_id}",
            ]
        )
        | ODD,
        "timeout_minutes": SCALARS,
        "batch_size": SCALARS,
        "bridge": st.fixed_dictionaries({"secret_uri": ODD | st.just("https://v.vault.azure.net/secrets/s")}),
        "x-note": ODD,
        "descripton": ODD,  # a typo of a known key
    },
)
SECRETS = st.sampled_from(
    [
        {"sas": CANARY},
        {"sas_token": CANARY},
        {"password": CANARY},
        {"account-key": CANARY},
        {"connection_string": f"AccountKey={CANARY}"},
        {"description": f"https://a.blob.core.windows.net/c?sv=2024&sp=rl&sig={CANARY}"},
        {"x-token": CANARY},
    ]
)


@st.composite
def routes_documents(draw: st.DrawFn) -> tuple[str, bool]:
    """A plausible routes.yaml with hostile values; sometimes a secret written inline. Returns (text, secret?)."""
    routes: list[dict[str, Any]] = draw(st.lists(ROUTE_DOC, max_size=3))
    doc: dict[str, Any] = {"version": draw(st.sampled_from([1, 1, 1, 2, "1", None, 1.0]))}
    if draw(st.booleans()):
        doc["defaults"] = draw(st.sampled_from([{}, {"timeout_minutes": 5}, [], "x"]) | ROUTE_DOC)
    empty_list = draw(st.booleans())
    doc["routes"] = routes if routes or empty_list else draw(SCALARS)
    secret = draw(st.booleans())
    if secret:
        where = draw(st.sampled_from(["top", "route", "defaults", "registry"]))
        extra = draw(SECRETS)
        if where == "route" and routes:
            routes[0].update(extra)
        elif where == "registry" and routes and "source" in routes[0]:
            routes[0]["source"]["registry"].update(extra)
        elif where == "defaults" and isinstance(doc.get("defaults"), dict):
            doc["defaults"].update(extra)
        else:
            doc.update({f"x-{k}" if not k.startswith("x-") else k: v for k, v in extra.items()})
    return yaml.safe_dump(doc, allow_unicode=True, sort_keys=False), secret


def check_loaded_or_config_error(text: str) -> ConfigError | None:
    try:
        loaded = parse_routes(text, source="routes.yaml")
    except ConfigError as e:
        assert len(e.message) < 20_000, "a problem list is capped, not megabytes"
        return e
    for rt in loaded.routes.values():  # what loads is safe to use
        for side in (rt.source, rt.target):
            if side is not None:
                sub, rg, name = side.registry.parts(SUB)
                assert subscription_problem(sub) is None and resource_group_problem(rg) is None
                assert_safe_arm_id(registry_id(sub, rg, name))
        rendered = blob_name(rt.blob_name_template, route=rt.name, transfer_id="abc123def456", batch=7)
        assert BLOB_CHARS.match(rendered) and blob_path_problem(rendered) is None
    return None


@FAST
@given(document=routes_documents())
def test_generated_routes_documents_load_or_raise_config_error_without_echoing_secrets(
    document: tuple[str, bool],
) -> None:
    text, secret = document
    error = check_loaded_or_config_error(text)
    if secret:
        assert error is not None, "an inline secret must stop the load"
        assert CANARY not in error.message


YAML_PIECES = st.sampled_from(
    [
        "version: 1\n",
        "routes:\n",
        "- name: demo\n",
        "  source: {registry: {resource_group: transfer-rg, name: sourceregistry}, export_pipeline: exportpipeline}\n",
        "  target:\n    registry: {resource_id: /subscriptions/x/resourceGroups/../providers/a/b}\n",
        "  artifacts: [a, '../b', ~, 1, {x: y}]\n",
        "defaults: &d {timeout_minutes: 5}\n",
        "  <<: *d\n",
        "  <<: [*d, *d]\n",
        "a: &a [*a]\n",
        "  blob_name_template: '../{transfer_id}'\n",
        "? [a, b]\n: c\n",
        "!!python/object:os.system\n",
        "--- \n",
        "...\n",
        "%YAML 1.1\n",
        "\t- tab\n",
        f"  password: {CANARY}\n",
        f"  description: 'x?sig={CANARY}'\n",
        f'  sas: "{CANARY}\n',  # an unclosed quote: the syntax error must not quote the line
        "  timeout_minutes: 2026-13-01\n",
        "  batch_size: 0x\n",
        "\ufeff",
        "\x85",
        "  name: ${UNSET_VARIABLE_FOR_FUZZ}\n",
        "  name: ${\n",
    ]
)


@FAST
@given(pieces=st.lists(YAML_PIECES | st.text(max_size=30), max_size=12), raw=st.text(max_size=200))
def test_arbitrary_text_loads_or_raises_config_error_without_echoing_secrets(pieces: list[str], raw: str) -> None:
    for text in ("".join(pieces), raw):
        error = check_loaded_or_config_error(text)
        if CANARY in text:
            assert error is not None and CANARY not in error.message


@settings(max_examples=60, deadline=None)
@given(data=st.binary(max_size=300))
def test_files_of_any_bytes_load_or_raise_config_error(data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "routes.yaml"
        path.write_bytes(data)
        try:
            load_routes(path)
        except ConfigError as e:
            assert str(path) in e.message


def test_a_routes_file_with_ten_thousand_artifacts_or_routes_fails_fast_and_briefly() -> None:
    head = "version: 1\nroutes:\n- name: big\n  source: {registry: {resource_group: rg, name: sourceregistry}, "
    head += "export_pipeline: exportpipeline}\n  artifacts:\n"
    for text, says in (
        (head + "".join(f"  - demo/app{i}:v1\n" for i in range(10_000)), "10000 artifacts are more than one transfer"),
        (head + "".join(f"  - BAD/{i}/..\n" for i in range(10_000)), "10000 artifacts are more than one transfer"),
        ("version: 1\nroutes:\n" + "- 1\n" * 10_000, "has 10000 problems"),
    ):
        started = time.perf_counter()
        with pytest.raises(ConfigError, match=says) as raised:
            parse_routes(text, source="routes.yaml")
        assert time.perf_counter() - started < 5
        assert len(raised.value.message) < 20_000


def test_a_resource_group_of_dots_never_loads() -> None:
    for rg in ("..", ".", "rg."):
        text = (
            "version: 1\nroutes:\n- name: demo\n"
            f"  source: {{registry: {{resource_group: '{rg}', name: sourceregistry}}, export_pipeline: exp0rt}}\n"
        )
        with pytest.raises(ConfigError, match=rf"line 4: routes\[0\]\.source\.registry.*resource group '{rg}'"):
            parse_routes(text, source="routes.yaml")
    via_id = registry_id(SUB, "..", "sourceregistry")
    with pytest.raises(ValidationError, match=r"resource group '\.\.' is not a resource group name"):
        RegistryRef(resource_id=via_id)


# --- request values ----------------------------------------------------------------------------------------


ROUTE = TransferRoute.model_validate(base_route())


def plan(request: TransferRequest, transfer_id: str = "abc123def456", allowed: frozenset[str] = ALLOWED) -> Any:
    return resolve(request, transfer_id, SUB, allowed_subscriptions=allowed, max_artifacts=MAX_ARTIFACTS)


def first_bad(refs: list[str]) -> str | None:
    for ref in refs:
        try:
            normalise_artifact(ref)
        except ConfigError:
            return ref
    return None


@FAST
@given(refs=st.lists(ARTIFACTS, min_size=1, max_size=30))
def test_artifact_refs_plan_or_raise_config_error_naming_the_first_bad_one(refs: list[str]) -> None:
    bad = first_bad(refs)
    try:
        ctx = plan(TransferRequest(route=ROUTE, artifacts=refs))
    except ConfigError as e:
        assert bad is not None, e.message
        assert escaped(bad.strip()) in e.message or ("is empty" in e.message and not bad.strip())
        assert len(e.message) < 3000 and "\n\n" not in e.message
        return
    assert bad is None
    for batch in ctx.plan.batches:
        assert BLOB_CHARS.match(batch.blob_name) and blob_path_problem(batch.blob_name) is None
        assert all(".." not in a.split("@")[0].split(":")[0].split("/") for a in batch.artifacts)


@FAST
@given(transfer_id=ODD | st.from_regex(r"[a-z0-9]{6,20}", fullmatch=True))
def test_transfer_ids_are_validated_before_anything_is_named(transfer_id: str) -> None:
    try:
        request = TransferRequest(route=ROUTE, artifacts=["demo/hello:v1"], transfer_id=transfer_id)
    except ValidationError as e:
        assert "transfer_id" in str(e)
        with pytest.raises(ConfigError, match="must be 6-20 lowercase letters or digits") as raised:
            plan(TransferRequest(route=ROUTE, artifacts=["demo/hello:v1"]), transfer_id=transfer_id)
        assert escaped(transfer_id) in raised.value.message
        return
    ctx = plan(request, transfer_id=transfer_id)
    assert all(b.export_run(transfer_id, 1).isalnum() for b in ctx.plan.batches)


@FAST
@given(sub=GUIDS | ODD, rg=ODD | st.just("transfer-rg"), name=ODD | st.just("sourceregistry"), how=st.integers(0, 2))
def test_registries_refuse_unsafe_parts_and_other_subscriptions(sub: str, rg: str, name: str, how: int) -> None:
    fields: dict[str, Any] = (
        {"resource_id": registry_id(sub, rg, name)}
        if how == 0
        else {"subscription_id": sub, "resource_group": rg, "name": name}
        if how == 1
        else {"resource_group": rg, "name": name}
    )
    try:
        ref = RegistryRef(**fields)
    except ValidationError as e:
        assert expected_problem(sub, rg, name, how) in str(e)
        return
    assert expected_problem(sub, rg, name, how) == ""
    try:
        found = address(ref, SUB, ALLOWED)
    except ConfigError as e:
        assert sub.lower() != SUB and how != 2
        assert sub in e.message and "ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS" in e.message
        assert f"registry '{ref.parts(SUB)[2]}'" in e.message
        return
    assert found.subscription.lower() == SUB
    assert_safe_arm_id(found.id)
    assert_safe_arm_id(found.child("pipelineRuns", "x1b001a1"))


def expected_problem(sub: str, rg: str, name: str, how: int) -> str:
    """What RegistryRef must say about these parts ('' when they are fine)."""
    if how == 0:
        match = REGISTRY_ID.match(registry_id(sub, rg, name))
        if not match:
            return "is not a registry id"
        sub, rg, name = match.group("sub", "rg", "name")  # a trailing '/' is allowed after the name
    if how != 0 and not (rg and name):
        return "name a registry by resource_id, or by resource_group and name"
    problems = [subscription_problem(sub) if how != 2 else None, resource_group_problem(rg)]
    problems.append(None if ACR_NAME.match(name) else f"registry name '{shown(name)}' must be 5-50 letters or digits")
    return next((p for p in problems if p), "")


def test_another_subscription_is_refused_by_plan_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    other = registry_id(OTHER_SUB, "transfer-rg", "targetregistry")
    route = TransferRoute.model_validate(
        base_route(target={"registry": {"resource_id": other}, "import_pipeline": "importpipeline"})
    )
    request = TransferRequest(route=route, artifacts=["demo/hello:v1"])
    with pytest.raises(ConfigError) as raised:
        plan(request)
    assert raised.value.message == (
        f"route 'hostile': registry 'targetregistry' is in subscription {OTHER_SUB}, which this deployment may not "
        f"reach (allowed: {SUB}); add it to ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS if routes may use it, or fix the "
        "registry"
    )
    monkeypatch.setenv("AZURE_SUBSCRIPTION_ID", SUB)
    for value in (f"{SUB},{OTHER_SUB}", f' ["{SUB}", "{OTHER_SUB.upper()}"] '):
        monkeypatch.setenv("ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS", value)
        permitted = Settings().permitted_subscriptions()
        assert permitted == {SUB, OTHER_SUB}
        assert plan(request, allowed=permitted).target is not None
    monkeypatch.delenv("ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS")
    assert Settings().permitted_subscriptions() == {SUB}
    monkeypatch.setenv("ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS", "not-a-guid")
    with pytest.raises(ValidationError, match=r"not subscription ids \(GUIDs\): 'not-a-guid'"):
        Settings()


def test_invalid_settings_are_one_config_error_naming_each_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS", f"{SUB},../other")
    monkeypatch.setenv("ACR_TRANSFER_MAX_ARTIFACTS", "0")
    with pytest.raises(ConfigError) as raised:
        load_settings()
    assert raised.value.message == (
        "invalid settings: ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS: not subscription ids (GUIDs): '../other'; list "
        "subscription ids separated by commas, or as a JSON list; ACR_TRANSFER_MAX_ARTIFACTS: Input should be "
        "greater than or equal to 1"
    )


def test_a_default_subscription_that_is_no_guid_is_refused() -> None:
    ref = RegistryRef(resource_group="transfer-rg", name="sourceregistry")
    with pytest.raises(ConfigError, match=r"subscription '\.\./x' is not a subscription id .*AZURE_SUBSCRIPTION_ID"):
        address(ref, "../x", frozenset())


@pytest.mark.parametrize("count", [MAX_ARTIFACTS + 1, 10_000, 100_000])
def test_huge_artifact_lists_fail_fast_with_one_message(count: int) -> None:
    refs = [f"demo/app{i}:v1" for i in range(count)]
    started = time.perf_counter()
    request = TransferRequest(route=ROUTE, artifacts=refs)
    with pytest.raises(ConfigError) as raised:
        plan(request)
    assert time.perf_counter() - started < 3
    assert raised.value.message.startswith(f"{count} artifacts are more than one transfer takes (2500, 50 runs of 50)")
    assert "ACR_TRANSFER_MAX_ARTIFACTS" in raised.value.message
    assert len(plan(TransferRequest(route=ROUTE, artifacts=refs[:MAX_ARTIFACTS])).plan.batches) == 50


BLOBS = ODD | st.sampled_from(["demo/x1b001.tar", "a/b/c.tar", "ünï/cødé.tar", "x" * 1024, "a?b#c%d.tar"])


@FAST
@given(blob=BLOBS, transfer_id=st.none() | ODD, digest=st.none() | ODD)
def test_import_requests_refuse_traversal_and_invisible_characters(
    blob: str, transfer_id: str | None, digest: str | None
) -> None:
    try:
        request = ImportRequest(route=ROUTE, blob=blob, transfer_id=transfer_id, catalog_digest=digest)
    except ValidationError as e:
        fields = {str(err["loc"][0]) for err in e.errors()}
        assert fields <= {"blob", "transfer_id", "catalog_digest"}
        if "blob" in fields:
            assert escaped(blob) in str(e) or "1-1024" in str(e)
        return
    segments = request.blob.split("/")
    assert all(s not in ("", ".", "..") for s in segments) and not request.blob.endswith(".")
    assert "\\" not in request.blob and request.blob.isprintable()


TEMPLATES = ODD | st.sampled_from(["{route}/{transfer_id}", "../{transfer_id}", "{transfer_id}/{date}.tar"])
ROUTE_NAMES = st.from_regex(r"[a-z0-9][a-z0-9-]{0,62}", fullmatch=True)


@FAST
@given(template=TEMPLATES, prefix=ODD, route_name=ROUTE_NAMES)
def test_blob_name_templates_are_refused_or_render_safe_names(template: str, prefix: str, route_name: str) -> None:
    for candidate in (template, prefix + template, template + prefix, prefix + "{transfer_id}"):
        try:
            route = TransferRoute.model_validate(base_route(name=route_name, blob_name_template=candidate))
        except ValidationError as e:
            assert "blob_name_template" in str(e)
            continue
        for batch in (1, 2, 123):
            try:
                rendered = blob_name(route.blob_name_template, route=route.name, transfer_id="z" * 20, batch=batch)
            except ConfigError as e:  # only a length limit the sample could not see
                assert "is not a safe blob path" in e.message and len(candidate) > 900
                continue
            assert BLOB_CHARS.match(rendered) and blob_path_problem(rendered) is None


# --- through the flows users start: nothing invalid reaches ARM ----------------------------------------------


def routes_file(tmp_path: Path, routes: list[dict[str, Any]]) -> str:
    path = tmp_path / "routes.yaml"
    path.write_text(yaml.safe_dump({"version": 1, "routes": routes}, allow_unicode=True), encoding="utf-8")
    return str(path)


def side(kind: str, registry: dict[str, str]) -> dict[str, Any]:
    pipeline = "export" if kind == "source" else "import"
    return {kind: {"registry": registry, f"{pipeline}_pipeline": f"{pipeline}pipeline"}}


TEN_THOUSAND = [f"demo/a{i}:v1" for i in range(10_000)]
RG_DOTS = "resource group '..' is not a resource group name"
FLOW_CASES: dict[str, tuple[dict[str, Any], dict[str, Any], type[Exception], str]] = {
    "resource group '..'": (
        side("source", {"resource_group": "..", "name": "sourceregistry"}),
        {},
        ConfigError,
        RG_DOTS,
    ),
    "resource id with '..'": (
        side("target", {"resource_id": registry_id(SUB, "..", "targetregistry")}),
        {},
        ConfigError,
        RG_DOTS,
    ),
    "another subscription": (
        side("target", {"resource_id": registry_id(OTHER_SUB, "transfer-rg", "targetregistry")}),
        {},
        ConfigError,
        f"is in subscription {OTHER_SUB}, which this deployment may not reach",
    ),
    "traversal in the blob template": (
        {"blob_name_template": "../{transfer_id}"},
        {},
        ConfigError,
        "blob name '../a1b2c3d4e5f6'",
    ),
    "traversal in an artifact": (
        {},
        {"artifacts": ["demo/hello:v1", "../../etc/passwd"]},
        ConfigError,
        "artifact '../../etc/passwd'",
    ),
    "unicode artifact": ({}, {"artifacts": ["démo/\u202ehello"]}, ConfigError, "artifact 'démo/\\u202ehello'"),
    "10 000 artifacts": ({}, {"artifacts": TEN_THOUSAND}, ConfigError, "10000 artifacts are more"),
    "transfer id": ({}, {"artifacts": ["x:v1"], "transfer_id": "../abc"}, ValidationError, "transfer_id '../abc'"),
    "unknown route": ({}, {"route": "../../etc"}, ConfigError, "route '../../etc' is not in"),
}


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
@pytest.mark.parametrize("case", list(FLOW_CASES))
def test_invalid_input_through_the_transfer_flow_never_reaches_arm(standin: Any, tmp_path: Path, case: str) -> None:
    from flows.routes import transfer_route

    overrides, params, error, says = FLOW_CASES[case]
    path = routes_file(tmp_path, [base_route(name="hostile", timeout_minutes=2, **overrides)])
    standin.clear_requests()
    with pytest.raises(error) as raised:
        transfer_route(**{"route": "hostile", "routes_file": path, "dry_run": False, **params})
    message = str(raised.value)
    assert says in message and len(message) < 2000
    assert standin.requests("arm") == []


@pytest.mark.integration
@pytest.mark.usefixtures("prefect_server")
def test_invalid_requests_through_the_half_flows_never_reach_arm(standin: Any, tmp_path: Path) -> None:
    from prefect.exceptions import ParameterTypeError

    from flows.routes import import_route_blob
    from flows.transfer import registry_transfer

    path = routes_file(tmp_path, [base_route(name="hostile", timeout_minutes=2)])
    standin.clear_requests()
    for blob, says in (("../outside.tar", "'..' segment"), ("/abs.tar", "empty"), ("a\\b.tar", "holds '\\\\'")):
        with pytest.raises(ValidationError) as raised:
            import_route_blob(route="hostile", blob=blob, routes_file=path)
        assert "blob" in str(raised.value) and says in str(raised.value), str(raised.value)
    # a request as the Prefect UI sends it: parameters validated against the model, the field named
    dots = side("source", {"resource_group": "..", "name": "sourceregistry"})
    form: Any = {"route": base_route(**dots), "artifacts": ["demo/hello:v1"]}
    with pytest.raises(ParameterTypeError) as typed:
        registry_transfer(request=form)
    assert "resource group '..'" in str(typed.value) and "registry" in str(typed.value)
    assert standin.requests("arm") == []


# --- the event receiver as a real process ------------------------------------------------------------------

SECRET = "hostile-input-events-key-7c1d4a"
MAX_BODY = 1_048_576


Receiver = tuple[str, "subprocess.Popen[bytes]"]


@pytest.fixture(scope="module")
def receiver(prefect_server: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Receiver]:
    """``acr-transfer events serve`` on a free port, emitting to the test Prefect server."""
    log = tmp_path_factory.mktemp("receiver") / "receiver.log"
    base, proc = start_receiver(SECRET, log, via_cli=True)
    try:
        yield base, proc
        assert proc.poll() is None, log.read_text()
        assert "Traceback" not in log.read_text() and SECRET not in log.read_text()
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


def post(base: str, path: str, body: bytes, headers: dict[str, str] | None = None, **params: str) -> httpx.Response:
    with httpx.Client(base_url=base, timeout=30) as client:
        return client.post(path, content=body, headers=headers or {}, params=params)


def raw_exchange(base: str, request: bytes) -> bytes:
    """Send bytes as they are (headers httpx would never write) and read the answer up to the server's close."""
    host, port = base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(request)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := s.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def status_of(answer: bytes) -> int:
    assert answer.startswith(b"HTTP/1.1 "), answer[:200]
    return int(answer.split(b" ", 2)[1])


def not_json(body: bytes) -> bool:
    try:
        json.loads(body)
    except ValueError:
        return True
    return False


# httpx resolves '..' segments before sending: raw '..' paths are sent byte for byte further down
NO_ENDPOINT = "/acr/a%2Fb"  # the router decodes %2F: /acr/a/b is no endpoint, 404 before any key check
PATHS = st.sampled_from(["/eventgrid", "/acr/sourceregistry", "/acr/%2e%2e", "/acr/é", "/acr/%00", NO_ENDPOINT])
CONTENT_TYPES = st.sampled_from(
    [
        "application/json",
        "application/cloudevents+json",
        "application/cloudevents-batch+json",
        "text/plain",
        "",
        "application/json; charset=utf-16",
        "multipart/form-data; boundary=x",
        "\x7f",
    ]
)
WIRE = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.mark.integration
@WIRE
@given(body=st.binary(max_size=4000) | st.text(max_size=400).map(str.encode), path=PATHS, content_type=CONTENT_TYPES)
def test_malformed_keyed_bodies_get_400(receiver: Receiver, body: bytes, path: str, content_type: str) -> None:
    assume(not_json(body))
    headers = {"x-events-key": SECRET}
    if content_type.isprintable():
        headers["content-type"] = content_type
    answer = post(receiver[0], path, body, headers)
    if path == NO_ENDPOINT:
        assert answer.status_code == 404
        return
    assert answer.status_code == 400, answer.text
    assert "error" in answer.json() and SECRET not in answer.text


JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | ODD,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(ODD, children, max_size=4),
    max_leaves=15,
)
KEYS = st.sampled_from([None, "", SECRET[:-1], SECRET + "x", SECRET.upper(), "wrong"]) | st.text(
    alphabet="abcdef-0123456789", max_size=40
)


@pytest.mark.integration
@WIRE
@given(doc=JSON_VALUES, path=PATHS, key=KEYS, via=st.sampled_from(["code", "header"]))
def test_unkeyed_and_wrong_key_requests_get_401(
    receiver: Receiver, doc: Any, path: str, key: str | None, via: str
) -> None:
    assume(key != SECRET)
    headers = {"x-events-key": key} if via == "header" and key is not None and key.isprintable() else {}
    params = {"code": key} if via == "code" and key is not None else {}
    answer = post(receiver[0], path, json.dumps(doc).encode(), headers, **params)
    assert answer.status_code == (404 if path == NO_ENDPOINT else 401) and SECRET not in answer.text


@pytest.mark.integration
@WIRE
@given(doc=JSON_VALUES, path=PATHS, content_type=CONTENT_TYPES)
def test_keyed_json_of_any_shape_is_never_a_server_error(
    receiver: Receiver, doc: Any, path: str, content_type: str
) -> None:
    headers = {"x-events-key": SECRET, **({"content-type": content_type} if content_type.isprintable() else {})}
    answer = post(receiver[0], path, json.dumps(doc).encode(), headers)
    # 200: a delivery of nothing this receiver handles, acknowledged
    assert answer.status_code in ((404,) if path == NO_ENDPOINT else (200, 400)), answer.text


@pytest.mark.integration
def test_oversized_bodies_bad_framing_paths_and_methods_get_4xx(receiver: Receiver) -> None:
    base, _ = receiver
    big = b"[" + b" " * MAX_BODY + b"]"
    assert post(base, "/eventgrid", big, code=SECRET).status_code == 413
    assert post(base, "/acr/sourceregistry", big, code=SECRET).status_code == 413

    def chunks() -> Iterator[bytes]:  # no Content-Length: the receiver must count
        for _ in range(MAX_BODY // 65536 + 2):
            yield b" " * 65536

    with httpx.Client(base_url=base, timeout=30) as client:
        assert client.post("/eventgrid", content=chunks(), params={"code": SECRET}).status_code == 413
        assert client.post("/eventgrid", content=big).status_code == 401  # unkeyed: refused before the body
        for method, path in (("GET", "/eventgrid"), ("PUT", "/acr/sourceregistry"), ("DELETE", "/eventgrid")):
            assert client.request(method, path, params={"code": SECRET}).status_code == 405
        for path in ("/", "/eventgrid/x", "/acr", "/acr/a/b", "/../eventgrid", "/%2e%2e/eventgrid", "/healthz/.."):
            assert 400 <= client.post(path, content=b"{}", params={"code": SECRET}).status_code < 500, path
        headers = {"x-events-key": SECRET}
        assert client.options("/eventgrid", headers=headers).status_code == 400  # no WebHook-Request-Origin
        assert client.options("/eventgrid", headers={**headers, "WebHook-Request-Origin": "o" * 300}).status_code == 400

    keyed = f"POST /eventgrid HTTP/1.1\r\nHost: x\r\nx-events-key: {SECRET}\r\n".encode()
    framing = [
        keyed + b"Content-Length: 99999999999\r\n\r\n",
        keyed + f"Content-Length: {MAX_BODY * 4}\r\n\r\n".encode(),
        keyed + b"Content-Length: -1\r\n\r\n",
        keyed + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
        keyed + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n[]",
        b"GARBAGE\r\n\r\n",
        b"POST /eventgrid HTTP/1.1\r\nHost: x\r\nBad Header\r\n\r\n",
        *(
            f"POST {path}?code={SECRET} HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\n{{}}".encode()
            for path in ("/acr/..", "/acr/../eventgrid", "/eventgrid/..", "/acr/.", "//eventgrid", "/acr/a/../b")
        ),
    ]
    for request in framing:
        assert 400 <= status_of(raw_exchange(base, request)) < 500, request[:120]


@pytest.mark.integration
def test_zz_after_the_barrage_the_receiver_still_takes_a_valid_delivery(receiver: Receiver) -> None:
    base, proc = receiver
    assert proc.poll() is None
    delivery = {
        "id": f"hostile-{uuid.uuid4().hex[:8]}",
        "timestamp": "2026-01-01T00:00:00Z",
        "action": "push",
        "target": {"repository": "demo/after-barrage", "tag": "v1", "digest": "sha256:" + "c" * 64},
        "request": {"host": "sourceregistry.azurecr.io"},
    }
    body = json.dumps(delivery).encode()
    answer = post(base, "/acr/sourceregistry", body, {"content-type": "application/json"}, code=SECRET)
    assert answer.status_code == 200 and answer.json() == {"emitted": 1, "duplicates": 0, "ignored": 0}
    assert httpx.get(f"{base}/healthz", timeout=5).status_code == 200


def test_messages_quote_values_safely() -> None:
    assert shown("a\x1b[31mred\n" + "x" * 200, 20) == "a\\x1b[31mred\\nxxxxxxxxxx…"
    assert shown("\u202e") == "\\u202e" and shown(12) == "12"
    with pytest.raises(AcrTransferError):
        normalise_artifact("\x1b[2J")
