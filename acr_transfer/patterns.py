"""The languages a route's ``select:`` is written in: repository globs, anchored tag regexes, semver ranges.

Compiled here both by the model's validators (so a bad rule fails when routes.yaml loads) and by ``selection``
(once per selection, which it then applies to 10 000+ tags). A rule that does not compile raises ``ValueError``
whose message says what is wrong and what to write instead, worded to follow the quoted value
(``'^v(\\d+$' is not a valid regular expression: …``).

Semver is regsync's (regclient ``internal/semver``): a leading ``v`` is stripped, any number of numeric parts
(``1``, ``1.4``, ``1.4.2.7``; missing parts count as 0, so ``1.4`` equals ``1.4.0``), an optional
``-prerelease`` and ``+build``. Prereleases order as semver 2.0 says (``1.0.0-alpha < 1.0.0-alpha.1 <
1.0.0-beta < 1.0.0-rc.1 < 1.0.0``), build metadata is ignored. A range is space-separated terms, all of which
must hold; OR is a list of ranges. No ``||``, no ``x``/``*`` wildcards.

The model's validators collect every rule of a field that does not compile, as :class:`RuleProblem` values in
one :class:`SelectionRuleError` (a ``ValueError``), so the routes loader reports each at the line of its list
item. No I/O here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from acr_transfer.errors import shown

MAX_VERSION = 128  # an OCI tag is at most 128 characters: a longer text is no tag's version

# --- repository globs ---------------------------------------------------------------------------------------------

_REPO_CHAR = re.compile(r"[a-z0-9._-]")
_GLOB_HELP = "write lowercase path segments with * (within a segment), ** (any segments), ? and [...]"


def glob_pattern(glob: str) -> re.Pattern[str]:
    """A repository glob as a regex that must match the whole repository path.

    ``*`` is any characters within one path segment, ``**`` (a whole segment) any number of segments, none
    included (``base/**`` matches ``base`` and ``base/os/debian``), ``?`` one character, ``[a-z]`` / ``[!a-z]``
    a class; every other character stands for itself.

    Raises:
        ValueError: the glob is empty, has an empty segment, ``**`` inside a segment, an unclosed class, or a
            character no repository name has (they are lowercase letters, digits, ``. _ -`` and ``/``).
    """
    if not glob:
        raise ValueError(f"is empty; {_GLOB_HELP}")
    segments = glob.split("/")
    if "" in segments:
        raise ValueError(f"has an empty path segment (a leading, trailing or doubled '/'); {_GLOB_HELP}")
    tokens = [seg for i, seg in enumerate(segments) if not (seg == "**" and i and segments[i - 1] == "**")]
    if tokens == ["**"]:
        return re.compile(r".+")
    out, after_segment = "", False  # after_segment: a '/' must come before the next segment
    for seg in tokens:
        if seg == "**":
            out += r"(?:/[^/]+)*" if after_segment else r"(?:[^/]+/)*"
            continue
        out += ("/" if after_segment else "") + _segment(seg)
        after_segment = True
    try:
        return re.compile(out)
    except re.error as e:  # only a class can get here, e.g. [z-a]
        raise ValueError(f"has a class that is not valid ({e.msg}); {_GLOB_HELP}") from None


def _segment(seg: str) -> str:
    if "**" in seg:
        raise ValueError(
            "has '**' inside a path segment; '**' stands alone ('base/**', '**/debian'), '*' is within one"
        )
    out, i = "", 0
    while i < len(seg):
        ch = seg[i]
        if ch == "*":
            out += r"[^/]*"
        elif ch == "?":
            out += r"[^/]"
        elif ch == "[":
            end = seg.find("]", i + 1)
            body = seg[i + 1 : end] if end > 0 else ""
            negate = body[:1] in ("!", "^")
            body = body[1:] if negate else body
            if end < 0 or not body:
                raise ValueError(f"has a '[' class that is {'empty' if end > 0 else 'not closed'}; {_GLOB_HELP}")
            _literal_chars(body.replace("-", ""))
            out += f"[{'^/' if negate else ''}{body}]"
            i = end
        else:
            _literal_chars(ch)
            out += re.escape(ch)
        i += 1
    return out


def _literal_chars(text: str) -> None:
    for ch in text:
        if not _REPO_CHAR.fullmatch(ch):
            raise ValueError(
                f"has '{shown(ch)}', which no repository name holds (lowercase letters, digits, '.', '_', '-' and "
                "'/'), so it would never match"
            )


# --- tag regexes --------------------------------------------------------------------------------------------------


def tag_pattern(pattern: str) -> re.Pattern[str]:
    """A tag regex, to be used with ``fullmatch``: it must match the whole tag, ``^``/``$`` written or not.

    Raises:
        ValueError: the pattern is empty or not a valid Python regular expression (``re``'s reason given).
    """
    if not pattern:
        raise ValueError("is empty and matches no tag; remove it, or write '.*' for every tag")
    try:
        return re.compile(pattern)
    except (re.error, OverflowError, RecursionError) as e:
        reason = "nested too deeply" if isinstance(e, RecursionError) else str(e)
        raise ValueError(
            f"is not a valid regular expression: {reason}; tags match it whole, as if it were written between ^ and $"
        ) from None


# --- semver -------------------------------------------------------------------------------------------------------

_IDS = r"[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*"
_VERSION = re.compile(rf"v?(?P<parts>[0-9]+(?:\.[0-9]+)*)(?:-(?P<pre>{_IDS}))?(?:\+(?P<build>{_IDS}))?")
_OPERATORS = (">=", "<=", ">", "<", "=", "^", "~")
_RANGE_HELP = "write terms like '>=1.4 <3', '^1.2', '~2.0'"


@dataclass(frozen=True, order=True)
class Version:
    """A parsed version, ordered (and equal) as semver 2.0 says: by ``key``; build metadata is not in it."""

    key: tuple[tuple[int, ...], int, tuple[tuple[int, int | str], ...]]
    text: str = field(default="", compare=False)

    @classmethod
    def of(cls, parts: tuple[int, ...], pre: str | None = None, text: str = "") -> Version:
        """The version with these numeric parts and prerelease identifiers (``rc.1``)."""
        while parts and parts[-1] == 0:  # 1.4 == 1.4.0: comparing zero-stripped tuples pads the shorter with 0
            parts = parts[:-1]
        ids = tuple((0, int(i)) if i.isdigit() else (1, i) for i in pre.split(".")) if pre else ()
        return cls((parts, 0 if pre else 1, ids), text)  # a prerelease sorts before its release


def parse_version(text: str) -> Version | None:
    """The version a tag names (``v1.4.2``, ``1.4``, ``2.0.0-rc.1+build5``), or None when it names none."""
    m = _VERSION.fullmatch(text) if len(text) <= MAX_VERSION else None
    if m is None:
        return None
    return Version.of(tuple(int(p) for p in m["parts"].split(".")), m["pre"], text)


@dataclass(frozen=True)
class Range:
    """Terms that must all hold: ``(operator, version)`` with operators ``>= <= > < =``."""

    text: str
    terms: tuple[tuple[str, Version], ...]

    def __contains__(self, version: Version) -> bool:
        return all(_HOLDS[op](version, bound) for op, bound in self.terms)


_HOLDS: dict[str, Callable[[Version, Version], bool]] = {
    ">=": lambda v, b: v >= b,
    "<=": lambda v, b: v <= b,
    ">": lambda v, b: v > b,
    "<": lambda v, b: v < b,
    "=": lambda v, b: v == b,
}


def parse_range(text: str) -> Range:
    """A semver range: space-separated terms, each ``>=V``, ``<=V``, ``>V``, ``<V``, ``=V`` or ``V`` (equal),
    ``^V`` (same leftmost non-zero part: ``^1.2`` = ``>=1.2 <2``, ``^0.3`` = ``>=0.3 <0.4``) or ``~V`` (same
    minor: ``~2.0`` = ``>=2.0 <2.1``; ``~2`` = ``>=2 <3``).

    Raises:
        ValueError: the range is empty, uses ``||`` or a wildcard, or a term is not an operator and a version.
    """
    words = text.split()
    if not words:
        raise ValueError(f"is empty; {_RANGE_HELP}")
    terms: list[tuple[str, Version]] = []
    for word in words:
        terms.extend(_term(word))
    return Range(text, tuple(terms))


def _term(word: str) -> list[tuple[str, Version]]:
    op = next((o for o in _OPERATORS if word.startswith(o)), "")
    rest = word[len(op) :]
    version = parse_version(rest)
    if version is None:
        raise ValueError(f"is not a range: {_why_not(word, op, rest)}; {_RANGE_HELP}")
    if op not in ("^", "~"):
        return [(op or "=", version)]
    m = _VERSION.fullmatch(rest)
    assert m is not None
    parts = [int(p) for p in m["parts"].split(".")]
    # ^ bumps the leftmost non-zero part (the last given when all are zero); ~ the minor when given, else the major
    caret = next((i for i, p in enumerate(parts) if p), len(parts) - 1)
    at = caret if op == "^" else min(1, len(parts) - 1)
    upper = (*parts[:at], parts[at] + 1)
    return [(">=", version), ("<", Version.of(upper))]


def _why_not(word: str, op: str, rest: str) -> str:
    if word == "||" or "||" in word:
        return "'||' is not supported; give each alternative as its own list entry (semver: ['^1.2', '>=3'])"
    if re.search(r"(^|\.)[xX*](\.|$)", rest):
        return f"'{shown(word)}' has a wildcard, which is not supported (write '~1.2' or '>=1.2 <1.3' for 1.2.x)"
    if op and not rest:
        return f"'{shown(word)}' has no version after it (write '{op}1.4', without a space)"
    if word.endswith(","):
        return f"'{shown(word)}' ends with ','; terms are separated by spaces only"
    return f"'{shown(word)}' is not an operator (>= <= > < = ^ ~) followed by a version"


# --- problems, as the model's validators raise them ----------------------------------------------------------


@dataclass(frozen=True)
class RuleProblem:
    """One rule of a selection that does not compile: its field, its index in a list (None: the field itself)
    and what is wrong, beginning with the quoted value."""

    field: str
    index: int | None
    text: str

    def __str__(self) -> str:
        return f"{self.field}{'' if self.index is None else f'[{self.index}]'} {self.text}"


class SelectionRuleError(ValueError):
    """The rules of one field of a :class:`Selection` that do not compile, every one of them (the routes loader
    reports each at the line of its list item)."""

    def __init__(self, problems: list[RuleProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


def check_each(field: str, values: list[Any], compile_rule: Callable[[Any], object]) -> list[Any]:
    """``values`` when every one compiles with ``compile_rule``, else SelectionRuleError naming each that does
    not, by its index in the list ``field``."""
    problems = [p for i, v in enumerate(values) if (p := rule_problem(field, i, v, compile_rule))]
    if problems:
        raise SelectionRuleError(problems)
    return values


def rule_problem(
    field: str, index: int | None, value: Any, compile_rule: Callable[[Any], object]
) -> RuleProblem | None:
    """What is wrong with ``value`` (at ``index`` of ``field``, None: the field itself), or None."""
    try:
        compile_rule(value)
    except ValueError as e:
        return RuleProblem(field, index, f"{_quoted(value)} {e}")
    return None


def _quoted(value: object) -> str:
    return f"'{shown(value)}'" if isinstance(value, str) else shown(value)


def semver_rule(value: object) -> Range:
    """The range a ``semver:`` entry gives; as :func:`parse_range`, and a YAML number is told to be quoted."""
    if isinstance(value, str):
        return parse_range(value)
    if isinstance(value, int | float) and not isinstance(value, bool):
        raise ValueError(f"is a number in YAML; quote it ('{value}') to mean that version")
    raise ValueError("is not a range; write a range like '>=1.4 <3', or a list of them")
