"""What a document's values mean once the user's parts are set aside: ``x-`` keys dropped, ``${VAR}`` expanded.

``${VAR}`` and ``${VAR:-default}`` read the environment given to the loader, like a shell (an empty value counts
as unset); ``$${`` is a literal ``${``. Only string values are expanded, never keys. A reference that cannot be
expanded is reported, and its location remembered in ``report.unresolved`` so that validating the value
does not report it a second time.

Each string is expanded once however often an alias repeats it (it is the same object at every reference): the
expansion and its problems are kept by the string's ``id`` and given again at each further location.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from acr_transfer.errors import shown
from acr_transfer.routes.report import Loc, Report

Expanded = dict[int, tuple[str, list[str]]]  # id of a string → its expansion and the problems found in it

_ENV_REF = re.compile(r"(?P<escape>\$\$\{)|\$\{(?P<body>[^}]*)\}|(?P<open>\$\{)")
_ENV_BODY = re.compile(r"(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>.*))?", re.DOTALL)


def is_x(key: Any) -> bool:
    """An ``x-`` key: the user's own (notes, owners, YAML anchors), ignored by the loader."""
    return isinstance(key, str) and key.startswith("x-")


def without_x_keys(value: Any) -> Any:
    """``value`` with every ``x-`` key dropped, at any depth."""
    if isinstance(value, dict):
        return {k: without_x_keys(v) for k, v in value.items() if not is_x(k)}
    if isinstance(value, list):
        return [without_x_keys(v) for v in value]
    return value


def interpolate(
    value: Any, loc: Loc, report: Report, environ: Mapping[str, str], expanded: Expanded | None = None
) -> Any:
    """``value`` (found at ``loc``) with ``${VAR}`` and ``${VAR:-default}`` in its strings read from ``environ``.

    Unset variables without a default and malformed references are reported to ``report``, and left as written.
    ``expanded`` is the memo of strings already expanded (a new one when None).
    """
    memo: Expanded = {} if expanded is None else expanded
    if isinstance(value, dict):
        return {k: interpolate(v, (*loc, k), report, environ, memo) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, (*loc, i), report, environ, memo) for i, v in enumerate(value)]
    if not isinstance(value, str):
        return value
    if id(value) not in memo:
        problems: list[str] = []
        text = _ENV_REF.sub(lambda match: _expand(match, problems, environ), value) if "${" in value else value
        memo[id(value)] = (text, problems)
    text, problems = memo[id(value)]
    for problem in problems:
        report.add(loc, problem)
    if problems:
        report.unresolved.add(loc)
    return text


def _expand(match: re.Match[str], problems: list[str], environ: Mapping[str, str]) -> str:
    if match["escape"]:
        return "${"
    body = _ENV_BODY.fullmatch(match["body"] or "")
    if body is None:
        problem = (
            "has an unclosed '${'" if match["open"] else f"has '${{{shown(match['body'], 60)}}}', not a variable name"
        )
        problems.append(f"{problem}; write ${{VAR}} or ${{VAR:-default}} (or $${{ for a literal ${{)")
    else:
        given = environ.get(body["name"])
        if given:
            return given
        if body["default"] is not None:
            return body["default"]
        if given is not None:
            return given
        name = shown(body["name"], 60)
        problems.append(f"environment variable {name} is not set; set it, or write ${{{name}:-DEFAULT}}")
    return match[0]
