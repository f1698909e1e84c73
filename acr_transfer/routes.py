"""The routes file: one versioned YAML document, loaded and validated in one place.

    version: 1          required; this release reads version 1 and refuses any other
    defaults: {…}       any route key except ``name``; deep-merged into every route (the route's own keys win)
    routes: [{…}, …]    one TransferRoute per source → target path

Modelled on regsync's config (regclient ``cmd/regsync/config.go``): an unknown version or key is an error
with its line, ``x-`` keys anywhere are left to users, secrets are only ever referenced (a Key Vault secret
URI), never written inline, and safety floors are enforced here rather than discovered at run time. String
values may read the environment with ``${VAR}`` or ``${VAR:-default}`` (``$${`` is a literal ``${``).

Every problem in a file is collected and reported in one ConfigError, each with its line and its path
(``routes[0].target.registry.nmae``), so a user fixes the whole file in one pass.
"""

from __future__ import annotations

import difflib
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, get_args

import yaml
from pydantic import BaseModel, ValidationError

from acr_transfer.errors import ConfigError, shown
from acr_transfer.models import TransferRoute
from acr_transfer.naming import blob_name, normalise_artifact, too_many_artifacts
from acr_transfer.settings import get_settings

SUPPORTED_VERSION = 1
TOP_LEVEL_KEYS = ("version", "defaults", "routes")
Loc = tuple[str | int, ...]

# key names that can only mean a secret; compared after lower-casing and '-' → '_'
_SECRET_KEY = re.compile(r"^(?:.*_)?(?:sas|sas_?token|token|password|passwd|key|account_?key|connection_?string)$")
_ENV_REF = re.compile(r"(?P<escape>\$\$\{)|\$\{(?P<body>[^}]*)\}|(?P<open>\$\{)")
_ENV_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)
_MERGE_TAG = "tag:yaml.org,2002:merge"
# an alias bomb ("billion laughs") or a pathological document stops here instead of eating the worker
_MAX_NODES = 100_000
_MAX_DEPTH = 40
_SHOWN_PROBLEMS = 100  # a file with thousands of problems gets the first of them and a count, not megabytes
_BOUND_ERRORS = {"greater_than", "greater_than_equal", "less_than", "less_than_equal"}
_FLOORS = {
    "timeout_minutes": "timeout_minutes must be 1 to 1440 minutes (got {value}): a run needs at least a minute, "
    "and one that runs longer than a day is stuck",
    "batch_size": "batch_size must be 1 to 50 (got {value}): ACR takes at most 50 artifacts per pipeline run",
}
_SECRET_ADVICE = (
    "put SAS tokens in Key Vault and reference them by secret URI (bridge: {secret_uri: "
    "https://VAULT.vault.azure.net/secrets/NAME}); a secret written here ends up in git, Prefect parameters and logs"
)


@dataclass(frozen=True)
class RoutesFile:
    """A loaded, valid routes file: its routes by name, in file order."""

    version: int
    routes: dict[str, TransferRoute]
    source: str = "<string>"

    def names(self) -> list[str]:
        """Route names in file order."""
        return list(self.routes)

    def get(self, name: str) -> TransferRoute:
        """The route called ``name``.

        Raises:
            ConfigError: no such route; the message names the file and every known route.
        """
        if name in self.routes:
            return self.routes[name]
        known = ", ".join(self.routes) or "(none)"
        raise ConfigError(f"route '{shown(name)}' is not in {self.source}; known routes: {known}")

    def select(self, names: list[str] | None) -> list[TransferRoute]:
        """The named routes in the order given (duplicates dropped); ``None`` or ``[]`` selects every route.

        Raises:
            ConfigError: naming every unknown route at once, and the known ones.
        """
        if not names:
            return list(self.routes.values())
        wanted = list(dict.fromkeys(names))
        unknown = [name for name in wanted if name not in self.routes]
        if unknown:
            named = ", ".join(f"'{shown(name)}'" for name in unknown[:20]) + (" …" if len(unknown) > 20 else "")
            raise ConfigError(
                f"route(s) {named} not in {self.source}; known routes: {', '.join(self.routes) or '(none)'}"
            )
        return [self.routes[name] for name in wanted]


def load_routes(path: Path) -> RoutesFile:
    """Read and validate a routes file.

    Args:
        path: the YAML file (UTF-8).

    Raises:
        ConfigError: the file cannot be read, or has problems; every problem is listed with its line.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise ConfigError(f"routes file '{path}' not found; copy routes.example.yaml to start one") from None
    except (OSError, UnicodeDecodeError) as e:
        reason = "it is not UTF-8 text" if isinstance(e, UnicodeDecodeError) else e.strerror
        raise ConfigError(f"routes file '{path}' cannot be read ({reason}); check the path and encoding") from None
    return parse_routes(text, source=str(path))


def parse_routes(text: str, source: str = "<string>") -> RoutesFile:
    """Validate the text of a routes file.

    Args:
        text: the YAML document.
        source: how messages name the document (usually its path).

    Raises:
        ConfigError: YAML syntax (with line and column), an unsupported version, unknown keys, inline
            secrets, unset environment variables, invalid or duplicate routes: all listed in one message.
    """
    report = _Report(source)
    data = _compose(text, report)
    _check_top_level(data, report)
    _stop_at_inline_secrets(data, report)
    data = _interpolate(_without_x_keys(data), (), report)
    _stop_at_inline_secrets(data, report)  # a ${VAR} must not smuggle a SAS in either
    defaults = _defaults(data, report)
    routes: dict[str, TransferRoute] = {}
    first_line: dict[str, int] = {}
    for index, raw in enumerate(_route_list(data, report)):
        name = raw.get("name") if isinstance(raw, dict) else None
        if isinstance(name, str) and name in first_line:
            report.add(
                ("routes", index, "name"), f"duplicate route name '{shown(name)}' (first at line {first_line[name]})"
            )
            continue
        if isinstance(name, str):
            first_line[name] = report.line(("routes", index, "name"))
        route = _route(index, raw, defaults, report)
        if route is not None:
            routes[route.name] = route
    report.raise_if_any()
    return RoutesFile(version=SUPPORTED_VERSION, routes=routes, source=source)


@dataclass
class _Report:
    """Every problem found in one document, and the line of every key and list item in it."""

    source: str
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[tuple[int, str]] = field(default_factory=list)
    unresolved: set[Loc] = field(default_factory=set)
    _seen: set[tuple[int, str]] = field(default_factory=set)

    def line(self, loc: Loc) -> int:
        """The line of ``loc``, or of its nearest ancestor when it is not in the file (a missing key)."""
        while loc and loc not in self.lines:
            loc = loc[:-1]
        return self.lines.get(loc, 1)

    def add(self, loc: Loc, message: str, *, note: str = "", line: int | None = None) -> None:
        entry = (line or self.line(loc), f"{_dotted(loc)}{note}: {message}")
        if entry not in self._seen:  # a set: a document with 10 000 bad items must not take quadratic time
            self._seen.add(entry)
            self.problems.append(entry)

    def raise_if_any(self) -> None:
        if not self.problems:
            return
        ordered = sorted(self.problems, key=lambda problem: problem[0])
        count = f"{len(ordered)} problem" + ("s" if len(ordered) > 1 else "")
        body = "\n".join(f"  line {line}: {text}" for line, text in ordered[:_SHOWN_PROBLEMS])
        if len(ordered) > _SHOWN_PROBLEMS:
            body += f"\n  … and {len(ordered) - _SHOWN_PROBLEMS} more"
        raise ConfigError(f"routes file {self.source} has {count}; fix and load it again:\n{body}")


def _compose(text: str, report: _Report) -> Any:
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
        node = loader.get_single_node()
        return None if node is None else _Builder(loader, report).build(node, ())
    except yaml.YAMLError as e:
        # str(e) quotes a snippet of the file, which may hold a secret: keep only the problem and its position
        mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
        line = mark.line + 1 if mark else text.count("\n", 0, getattr(e, "position", 0) or 0) + 1
        where = f"line {line}, column {mark.column + 1}" if mark else f"line {line}"
        problem = getattr(e, "problem", None) or getattr(e, "reason", None) or type(e).__name__
        started, context = getattr(e, "context_mark", None), getattr(e, "context", None)
        context = f" ({context} at line {started.line + 1})" if started and context else ""
        raise ConfigError(
            f"routes file {report.source}: YAML syntax error at {where}: {problem}{context}; "
            "check the indentation and quoting there"
        ) from None
    except RecursionError:
        raise ConfigError(f"routes file {report.source} is nested too deeply to be a routes file") from None
    finally:
        if loader is not None:
            loader.dispose()


class _Builder:
    """Plain data from a composed YAML node tree, recording the line of every key and list item."""

    def __init__(self, loader: yaml.SafeLoader, report: _Report) -> None:
        self.loader, self.report = loader, report
        self.active: set[int] = set()  # nodes being built: meeting one again means an alias loops
        self.count = 0

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        self.count += 1
        if self.count > _MAX_NODES or len(loc) > _MAX_DEPTH:
            raise ConfigError(
                f"routes file {self.report.source} is too large or too deeply nested (near line "
                f"{node.start_mark.line + 1}); a routes file needs neither (YAML aliases expanding?)"
            )
        if isinstance(node, yaml.ScalarNode):
            return self._scalar(node, loc)
        if id(node) in self.active:
            raise ConfigError(
                f"routes file {self.report.source} line {node.start_mark.line + 1}: a YAML alias refers to itself"
            )
        self.active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            return [self._item(item, (*loc, i)) for i, item in enumerate(node.value)]
        finally:
            self.active.discard(id(node))

    def _scalar(self, node: yaml.ScalarNode, loc: Loc) -> Any:
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, OverflowError):  # e.g. 2026-13-01 resolves as a date that does not exist
            line = node.start_mark.line + 1
            self.report.add(
                loc, f"cannot read {_show(node.value)} (an impossible date or number?); quote it", line=line
            )
            return node.value

    def _item(self, node: yaml.Node, loc: Loc) -> Any:
        self.report.lines[loc] = node.start_mark.line + 1
        return self.build(node, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        merged: dict[str, Any] = {}
        # '<<: *anchor' merge keys first, so that this mapping's own keys (and their lines) win
        for key_node, value_node in node.value:
            if key_node.tag == _MERGE_TAG:
                sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
                for source in sources:
                    built = self.build(source, loc)
                    if not isinstance(built, dict):
                        self.report.add(loc, "'<<' can only merge mappings", line=key_node.start_mark.line + 1)
                        continue
                    for key, value in built.items():
                        merged.setdefault(key, value)  # the earlier of several merged mappings wins (YAML spec)
        own: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = None if key_node.tag == _MERGE_TAG else self._key(key_node, loc)
            if key is None:
                continue
            line = key_node.start_mark.line + 1
            if key in own:
                first = self.report.lines[(*loc, key)]
                self.report.add((*loc, key), f"duplicate key '{shown(key)}' (first at line {first})", line=line)
                continue
            self.report.lines[(*loc, key)] = line
            own[key] = self.build(value_node, (*loc, key))
        return {**{k: v for k, v in merged.items() if k not in own}, **own}

    def _key(self, node: yaml.Node, loc: Loc) -> str | None:
        value = self._scalar(node, loc) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, str):
            return value
        described = _show(value) if isinstance(node, yaml.ScalarNode) else "a list or mapping"
        self.report.add(
            loc,
            f"key {described} is not a string; quote it (YAML reads yes/no/on/off as true/false)",
            line=node.start_mark.line + 1,
        )
        return None


def _check_top_level(data: Any, report: _Report) -> None:
    """The document's shape and version; anything else wrong here makes the rest meaningless, so raise."""
    where = f"routes file {report.source}"
    if data is None:
        raise ConfigError(f"{where} is empty; start from routes.example.yaml (version: 1, routes: [...])")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping with version, defaults and routes, not {_kind(data)}")
    if "version" not in data:
        raise ConfigError(f"{where} has no 'version'; add 'version: {SUPPORTED_VERSION}' at the top")
    version = data["version"]
    if type(version) is not int or version != SUPPORTED_VERSION:
        raise ConfigError(
            f"{where} line {report.line(('version',))}: version {_show(version)} is not supported; this "
            f"acr-transfer reads version {SUPPORTED_VERSION} (write 'version: {SUPPORTED_VERSION}', a number)"
        )
    for key in data:
        if key not in TOP_LEVEL_KEYS and not _is_x(key):
            report.add((key,), _unknown_key(key, TOP_LEVEL_KEYS))


def _stop_at_inline_secrets(data: Any, report: _Report) -> None:
    """Raise when the document holds a secret, before any value is validated or echoed in a message."""
    before = len(report.problems)
    _refuse_inline_secrets(data, (), report)
    if len(report.problems) > before:
        report.raise_if_any()


def _refuse_inline_secrets(value: Any, loc: Loc, report: _Report) -> None:
    """Report every key named like a secret and every value holding a SAS signature (never the value itself)."""
    if isinstance(value, dict):
        for key, item in value.items():
            if _SECRET_KEY.match(key.lower().replace("-", "_")):
                report.add((*loc, key), f"'{shown(key)}' looks like an inline secret; {_SECRET_ADVICE}")
            else:
                _refuse_inline_secrets(item, (*loc, key), report)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _refuse_inline_secrets(item, (*loc, index), report)
    elif isinstance(value, str) and "sig=" in value.lower():
        report.add(loc, f"this value holds a SAS signature ('sig='); {_SECRET_ADVICE}")


def _without_x_keys(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_x_keys(v) for k, v in value.items() if not _is_x(k)}
    if isinstance(value, list):
        return [_without_x_keys(v) for v in value]
    return value


def _interpolate(value: Any, loc: Loc, report: _Report) -> Any:
    """``${VAR}`` and ``${VAR:-default}`` in string values (never in keys), like a shell: empty counts as unset."""
    if isinstance(value, dict):
        return {k: _interpolate(v, (*loc, k), report) for k, v in value.items()}
    if isinstance(value, list):
        return [_interpolate(v, (*loc, i), report) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def expand(match: re.Match[str]) -> str:
        if match["escape"]:
            return "${"
        body = _ENV_BODY.fullmatch(match["body"] or "")
        if body is None:
            problem = "has an unclosed '${'" if match["open"] else f"has '${{{match['body']}}}', not a variable name"
            report.add(loc, f"{problem}; write ${{VAR}} or ${{VAR:-default}} (or $${{ for a literal ${{)")
        else:
            given = os.environ.get(body["name"])
            if given:
                return given
            if body["default"] is not None:
                return body["default"]
            if given is not None:
                return given
            report.add(
                loc, f"environment variable {body['name']} is not set; set it, or write ${{{body['name']}:-DEFAULT}}"
            )
        report.unresolved.add(loc)
        return match[0]

    return _ENV_REF.sub(expand, value)


def _defaults(data: dict[str, Any], report: _Report) -> dict[str, Any]:
    defaults = data.get("defaults")
    if defaults is None:
        return {}
    if not isinstance(defaults, dict):
        report.add(
            ("defaults",), f"must be a mapping of route keys (source:, timeout_minutes:, …), not {_kind(defaults)}"
        )
        return {}
    if "name" in defaults:
        report.add(("defaults", "name"), "defaults cannot set 'name': every route names itself")
    _unknown_keys(defaults, TransferRoute, ("defaults",), report)
    return {k: v for k, v in defaults.items() if k != "name"}


def _route_list(data: dict[str, Any], report: _Report) -> list[Any]:
    routes = data.get("routes")
    if not isinstance(routes, list) or not routes:
        shown = "is missing" if routes is None else ("is empty" if routes == [] else f"is {_kind(routes)}")
        report.add(("routes",), f"{shown}; it must be a list of routes, each starting with '- name: …'")
        return []
    return routes


def _route(index: int, raw: Any, defaults: dict[str, Any], report: _Report) -> TransferRoute | None:
    loc: Loc = ("routes", index)
    if not isinstance(raw, dict):
        report.add(loc, f"a route must be a mapping (name:, source:, target:, …), not {_kind(raw)}")
        return None
    label = f" (route '{shown(raw['name'])}')" if isinstance(raw.get("name"), str) else ""
    _unknown_keys(raw, TransferRoute, loc, report)
    origins: dict[Loc, Loc] = {}
    merged = _merge(defaults, raw, ("defaults",), loc, (), origins)

    def problem(rel: Loc, message: str) -> None:
        where = _origin(rel, origins, loc)
        if where not in report.unresolved:  # its ${VAR} problem already says what is wrong
            report.add(where, message, note=label if where[:2] == loc else "")

    count = len(report.problems)
    artifacts = merged.get("artifacts")
    limit = get_settings().max_artifacts
    if isinstance(artifacts, list) and len(artifacts) > limit:
        problem(("artifacts",), too_many_artifacts(len(artifacts), limit))
        artifacts = None  # one problem, not one per item
    for i, ref in enumerate(artifacts if isinstance(artifacts, list) else []):
        try:  # a bad reference fails here, with its line, rather than when a transfer is planned
            if isinstance(ref, str):
                normalise_artifact(ref)
        except ConfigError as e:
            problem(("artifacts", i), e.message)
    try:
        route = TransferRoute.model_validate(merged)
    except ValidationError as e:
        for error in e.errors(include_url=False):
            if error["type"] != "extra_forbidden":  # _unknown_keys reported it, with a suggestion
                problem(tuple(error["loc"]), _pydantic_message(error))
        return None
    if route.timeout_minutes < 1:
        problem(("timeout_minutes",), _FLOORS["timeout_minutes"].format(value=route.timeout_minutes))
    try:  # render one name now, so a bad template fails at load and not in the middle of a transfer
        blob_name(route.blob_name_template, route=route.name, transfer_id="a1b2c3d4e5f6", batch=1)
    except (ConfigError, ValueError, IndexError, KeyError) as e:
        problem(("blob_name_template",), f"does not render a usable blob name: {shown(str(e), 300)}")
    return route if len(report.problems) == count else None


def _merge(
    base: dict[str, Any], over: dict[str, Any], base_loc: Loc, over_loc: Loc, rel: Loc, origins: dict[Loc, Loc]
) -> dict[str, Any]:
    """Deep merge (keys of ``over`` win, nested mappings merge key by key); ``origins`` records where each came from."""
    out: dict[str, Any] = {}
    for key in [*base, *(k for k in over if k not in base)]:
        if isinstance(base.get(key), dict) and isinstance(over.get(key), dict):
            out[key] = _merge(base[key], over[key], (*base_loc, key), (*over_loc, key), (*rel, key), origins)
        else:
            where, side = (over_loc, over) if key in over else (base_loc, base)
            out[key] = side[key]
            origins[(*rel, key)] = (*where, key)
    return out


def _origin(rel: Loc, origins: dict[Loc, Loc], route_loc: Loc) -> Loc:
    """Where in the file a path of the merged route was written: the route itself or ``defaults``."""
    for cut in range(len(rel), 0, -1):
        if rel[:cut] in origins:
            return origins[rel[:cut]] + rel[cut:]
    return route_loc + rel


def _unknown_keys(data: dict[str, Any], model: type[BaseModel], loc: Loc, report: _Report) -> None:
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
    loc, kind = tuple(error["loc"]), error["type"]
    if len(loc) == 1 and loc[0] in _FLOORS and kind in _BOUND_ERRORS:
        return _FLOORS[str(loc[0])].format(value=_show(error["input"]))
    if kind == "missing":
        return f"required key '{loc[-1]}' is missing; add it here or under defaults"
    message = str(error["msg"]).removeprefix("Value error, ")
    if kind == "value_error":
        return message
    return f"{message.removeprefix('Input ')} (got {_show(error['input'])})"


def _dotted(loc: Loc) -> str:
    text = ""
    for part in loc:
        name = shown(part, 40) if isinstance(part, str) else part
        text += f"[{part}]" if isinstance(part, int) else (f".{name}" if text else str(name))
    return text or "(top level)"


def _is_x(key: Any) -> bool:
    return isinstance(key, str) and key.startswith("x-")


def _kind(value: Any) -> str:
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "empty"}.get(type(value), _show(value))


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"
