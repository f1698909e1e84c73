"""What a document's values mean once the user's parts are set aside: ``x-`` keys dropped, ``${VAR}`` expanded.

``${VAR}`` and ``${VAR:-default}`` read the environment given to the loader, like a shell (an empty value counts
as unset); ``$${`` is a literal ``${``. Only string values are expanded, never keys. A reference that cannot be
expanded is reported, and its location remembered in ``report.unresolved`` so that validating the value
does not report it a second time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from acr_transfer.routes.report import Loc, Report

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


def interpolate(value: Any, loc: Loc, report: Report, environ: Mapping[str, str]) -> Any:
    """``value`` (found at ``loc``) with ``${VAR}`` and ``${VAR:-default}`` in its strings read from ``environ``.

    Unset variables without a default and malformed references are reported to ``report``, and left as written.
    """
    if isinstance(value, dict):
        return {k: interpolate(v, (*loc, k), report, environ) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, (*loc, i), report, environ) for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value
    return _ENV_REF.sub(lambda match: _expand(match, loc, report, environ), value)


def _expand(match: re.Match[str], loc: Loc, report: Report, environ: Mapping[str, str]) -> str:
    if match["escape"]:
        return "${"
    body = _ENV_BODY.fullmatch(match["body"] or "")
    if body is None:
        problem = "has an unclosed '${'" if match["open"] else f"has '${{{match['body']}}}', not a variable name"
        report.add(loc, f"{problem}; write ${{VAR}} or ${{VAR:-default}} (or $${{ for a literal ${{)")
    else:
        given = environ.get(body["name"])
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
