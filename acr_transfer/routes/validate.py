"""What a routes document must be: its shape and version, known keys, and routes that are valid and safe.

Modelled on regsync's config (regclient ``cmd/regsync/config.go``): an unknown version or key is an error with
its line (and the nearest allowed key), and safety floors are enforced at load rather than discovered at run
time: timeout_minutes and batch_size within bounds, at most ``RouteLimits.max_artifacts`` artifacts, artifact
references and the blob name template usable, every ``select:`` rule compiled (globs, regexes and semver
ranges, each bad one at the line of its list item; ``latest`` 1-10000; ``skip`` identical or none), and (when
the caller names them) registries only in allowed subscriptions, and a route whose request would be larger
than a Prefect flow run's parameters may be (``RouteLimits.max_parameter_bytes``). Each route is validated as
pydantic's ``TransferRoute``, its messages reworded to say what to do (and clipped: they may quote a value).
Inline secrets are refused earlier, by ``inline_secrets``; the number of routes is counted while the file is
composed.
"""

from __future__ import annotations

import difflib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, get_args

from pydantic import BaseModel, ValidationError

from acr_transfer.errors import ConfigError, shown
from acr_transfer.models import JsonSizes, TransferRequest, TransferRoute, parameter_size_problem
from acr_transfer.naming import blob_name, normalise_artifact, too_many_artifacts
from acr_transfer.patterns import SelectionRuleError
from acr_transfer.routes.compose import too_many_routes
from acr_transfer.routes.interpolate import is_x
from acr_transfer.routes.limits import RouteLimits
from acr_transfer.routes.merge import merge, origin
from acr_transfer.routes.report import Loc, Report, kind, show

SUPPORTED_VERSION = 1
TOP_LEVEL_KEYS = ("version", "defaults", "routes")

_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_FLOORS: dict[Loc, str] = {
    ("timeout_minutes",): "timeout_minutes must be 1 to 1440 minutes (got {value}): a run needs at least a minute, "
    "and one that runs longer than a day is stuck",
    ("batch_size",): "batch_size must be 1 to 50 (got {value}): ACR takes at most 50 artifacts per pipeline run",
    ("select", "latest"): "latest must be 1 to 10000 (got {value}): how many of the most recently updated "
    "matching tags to keep per repository; leave it out to keep every matching tag",
}
_CHOICES: dict[Loc, str] = {
    ("skip",): "skip must be 'identical' (leave out what the target already holds, digest-equal) or 'none' "
    "(send everything selected), not {value}",
}

Problem = Callable[[Loc, str], None]  # report a problem at a path of the merged route


@dataclass
class Checked:
    """What one load found out once and reuses for every route: a value many routes share (from ``defaults`` or
    an alias) is the same object in each, so its checks are kept by ``id`` (each keeps its object alive)."""

    artifacts: dict[int, tuple[list[Any], list[tuple[Loc, str]]]] = field(default_factory=dict)
    sizes: JsonSizes = field(default_factory=dict)


def check_top_level(data: Any, report: Report) -> None:
    """The document's shape and version; anything else wrong here makes the rest meaningless, so raise.

    Raises:
        ConfigError: an empty document, not a mapping, or no or another version. Unknown top-level keys are
            reported to ``report``.
    """
    where = f"routes file {report.source}"
    if data is None:
        raise ConfigError(f"{where} is empty; start from routes.example.yaml (version: 1, routes: [...])")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping with version, defaults and routes, not {kind(data)}")
    if "version" not in data:
        raise ConfigError(f"{where} has no 'version'; add 'version: {SUPPORTED_VERSION}' at the top")
    version = data["version"]
    if type(version) is not int or version != SUPPORTED_VERSION:
        raise ConfigError(
            f"{where} line {report.line(('version',))}: version {show(version)} is not supported; this "
            f"acr-transfer reads version {SUPPORTED_VERSION} (write 'version: {SUPPORTED_VERSION}', a number)"
        )
    for key in data:
        if key not in TOP_LEVEL_KEYS and not is_x(key):
            report.add((key,), _unknown_key(key, TOP_LEVEL_KEYS))


def defaults_of(data: dict[str, Any], report: Report) -> dict[str, Any]:
    """The ``defaults:`` mapping without ``name`` (``{}`` when absent); its problems go to ``report``."""
    defaults = data.get("defaults")
    if defaults is None:
        return {}
    if not isinstance(defaults, dict):
        report.add(
            ("defaults",), f"must be a mapping of route keys (source:, timeout_minutes:, …), not {kind(defaults)}"
        )
        return {}
    if "name" in defaults:
        report.add(("defaults", "name"), "defaults cannot set 'name': every route names itself")
    _unknown_keys(defaults, TransferRoute, ("defaults",), report)
    return {k: v for k, v in defaults.items() if k != "name"}


def routes_of(
    data: dict[str, Any], defaults: dict[str, Any], limits: RouteLimits, report: Report
) -> dict[str, TransferRoute]:
    """Every valid route by name, in file order; invalid and duplicate routes are reported to ``report``."""
    routes: dict[str, TransferRoute] = {}
    first_line: dict[str, int] = {}
    checked = Checked()
    for index, raw in enumerate(_route_list(data, limits.max_routes, report)):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name in first_line:
            report.add(
                ("routes", index, "name"), f"duplicate route name '{shown(name)}' (first at line {first_line[name]})"
            )
            continue
        if isinstance(name, str):
            first_line[name] = report.line(("routes", index, "name"))
        route = _route(index, raw, defaults, limits, report, checked)
        if route is not None:
            routes[route.name] = route
    return routes


def _route_list(data: dict[str, Any], limit: int, report: Report) -> list[Any]:
    """The routes list; more than ``limit`` routes raise at once (the composer counted those it saw written out;
    this catches a list brought in by a ``<<`` merge)."""
    routes = data.get("routes")
    if not isinstance(routes, list) or not routes:
        what = "is missing" if routes is None else ("is empty" if routes == [] else f"is {kind(routes)}")
        report.add(("routes",), f"{what}; it must be a list of routes, each starting with '- name: …'")
        return []
    mappings = [index for index, route in enumerate(routes) if isinstance(route, dict)]
    if len(mappings) > limit:
        raise ConfigError(too_many_routes(report.source, limit, report.line(("routes", mappings[limit]))))
    return routes


def _route(
    index: int,
    raw: Any,
    defaults: dict[str, Any],
    limits: RouteLimits,
    report: Report,
    checked: Checked,
) -> TransferRoute | None:
    loc: Loc = ("routes", index)
    if not isinstance(raw, dict):
        report.add(loc, f"a route must be a mapping (name:, source:, target:, …), not {kind(raw)}")
        return None
    label = f" (route '{shown(raw['name'])}')" if isinstance(raw.get("name"), str) else ""
    _unknown_keys(raw, TransferRoute, loc, report)
    origins: dict[Loc, Loc] = {}
    merged = merge(defaults, raw, ("defaults",), loc, (), origins)

    def problem(rel: Loc, message: str) -> None:
        where = origin(rel, origins, loc)
        if where not in report.unresolved:  # its ${VAR} problem already says what is wrong
            report.add(where, message, note=label if where[:2] == loc else "")

    count = len(report.problems)
    _check_artifacts(merged.get("artifacts"), limits.max_artifacts, problem, checked)
    try:
        route = TransferRoute.model_validate(merged)
    except ValidationError as e:
        for error in e.errors(include_url=False):
            if error["type"] == "extra_forbidden":  # _unknown_keys reported it, with a suggestion
                continue
            rules = error.get("ctx", {}).get("error")
            if isinstance(rules, SelectionRuleError):  # each bad rule at the line of its own list item
                for rule in rules.problems:
                    at = () if rule.index is None else (rule.index,)
                    problem((*error["loc"], *at), shown(rule.text, 300))
                continue
            problem(tuple(error["loc"]), _pydantic_message(error))
        return None
    _check_floors(route, problem)
    if limits.allowed_subscriptions is not None:
        _check_subscriptions(route, limits.allowed_subscriptions, problem)
    if len(report.problems) == count:  # the request sync-routes would send for it must fit a flow run
        too_large = parameter_size_problem(TransferRequest(route=route), limits.max_parameter_bytes, checked.sizes)
        if too_large:
            problem((), too_large)
    return route if len(report.problems) == count else None


def _check_artifacts(artifacts: Any, limit: int, problem: Problem, checked: Checked) -> None:
    if not isinstance(artifacts, list):
        return
    known = checked.artifacts.get(id(artifacts))
    if known is None or known[0] is not artifacts:
        known = checked.artifacts[id(artifacts)] = (artifacts, _artifact_problems(artifacts, limit))
    for rel, message in known[1]:
        problem(rel, message)


def _artifact_problems(artifacts: list[Any], limit: int) -> list[tuple[Loc, str]]:
    if len(artifacts) > limit:
        return [(("artifacts",), too_many_artifacts(len(artifacts), limit))]  # one problem, not one per item
    found: list[tuple[Loc, str]] = []
    for i, ref in enumerate(artifacts):
        try:  # a bad reference fails here, with its line, rather than when a transfer is planned
            if isinstance(ref, str):
                normalise_artifact(ref)
        except ConfigError as e:
            found.append((("artifacts", i), e.message))
    return found


def _check_floors(route: TransferRoute, problem: Problem) -> None:
    if route.timeout_minutes < 1:
        problem(("timeout_minutes",), _FLOORS[("timeout_minutes",)].format(value=route.timeout_minutes))
    try:  # render one name now, so a bad template fails at load and not in the middle of a transfer
        blob_name(route.blob_name_template, route=route.name, transfer_id="a1b2c3d4e5f6", batch=1)
    except (ConfigError, ValueError, IndexError, KeyError) as e:
        problem(("blob_name_template",), f"does not render a usable blob name: {shown(str(e), 300)}")


def _check_subscriptions(route: TransferRoute, allowed: frozenset[str], problem: Problem) -> None:
    """A registry whose subscription the file spells out must be in an allowed one (as ``context.address`` says)."""
    permitted = {sub.lower() for sub in allowed}
    for side_key, side in (("source", route.source), ("target", route.target)):
        if side is None:
            continue
        ref = side.registry
        key = "resource_id" if ref.resource_id else "subscription_id" if ref.subscription_id else None
        if key is None:
            continue  # no subscription in the file: the default one applies, checked when the transfer resolves
        subscription, _, name = ref.parts(None)
        if subscription.lower() not in permitted:
            listed = ", ".join(sorted(permitted)) or "none: AZURE_SUBSCRIPTION_ID is not set either"
            problem(
                (side_key, "registry", key),
                f"registry '{name}' is in subscription {subscription}, which this deployment may not reach (allowed: "
                f"{listed}); add it to ACR_TRANSFER_ALLOWED_SUBSCRIPTIONS if routes may use it, or fix the registry",
            )


def _unknown_keys(data: dict[str, Any], model: type[BaseModel], loc: Loc, report: Report) -> None:
    fields = model.model_fields
    for key, value in data.items():
        if key not in fields:
            report.add((*loc, key), _unknown_key(key, tuple(fields)))
            continue
        nested = _model_of(fields[key].annotation)
        if nested is not None and isinstance(value, dict):
            _unknown_keys(value, nested, (*loc, key), report)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    close = difflib.get_close_matches(key, allowed, n=1)
    hint = f"did you mean '{close[0]}'? " if close else ""
    return f"unknown key '{shown(key)}'; {hint}allowed here: {', '.join(allowed)} (keys starting with x- are yours)"


def _pydantic_message(error: Any) -> str:
    """pydantic's message for ``error``, reworded, and clipped: a validator's message may quote the value."""
    return shown(_reworded(error), 300)


def _reworded(error: Any) -> str:
    loc, kind_ = tuple(error["loc"]), error["type"]
    if loc in _FLOORS and kind_ in _BOUND_ERRORS:
        return _FLOORS[loc].format(value=show(error["input"]))
    if loc in _CHOICES and kind_ == "literal_error":
        return _CHOICES[loc].format(value=show(error["input"]))
    if loc == ("select",) and kind_ == "model_type":
        return (
            f"select must be a mapping of rules (repositories:, tags:, semver:, latest:, …), not {kind(error['input'])}"
        )
    if kind_ == "missing":
        return f"required key '{loc[-1]}' is missing; add it here or under defaults"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind_ == "value_error":
        return message
    return f"{message.removeprefix('Input ')} (got {show(error['input'])})"
