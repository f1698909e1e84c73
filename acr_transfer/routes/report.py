"""What loading one routes document reports: every problem with its line and path, and how values are quoted.

A :class:`Report` collects problems instead of raising at the first one, so a user fixes a whole file in one
pass; it also holds the line of every key and list item the composer saw, so a problem found much later (in
pydantic's validation of a merged route) still names the line it came from.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from acr_transfer.errors import ConfigError, shown

Loc = tuple[str | int, ...]
SHOWN_PROBLEMS = 100  # a file with thousands of problems gets the first of them and a count, not megabytes
PROBLEM_CHARS = 400  # one problem's line, path included
PATH_CHARS = 120  # a path 40 long keys deep is user input too
MESSAGE_CHARS = 10_000  # all the lines listed: the message reaches terminals, logs and Prefect's UI


@dataclass
class Report:
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
        """Record a problem at ``loc`` (its line unless ``line`` is given); the same problem twice counts once."""
        entry = (line or self.line(loc), f"{dotted(loc)}{note}: {message}")
        if entry not in self._seen:  # a set: a document with 10 000 bad items must not take quadratic time
            self._seen.add(entry)
            self.problems.append(entry)

    def raise_if_any(self) -> None:
        """Raise the problems found so far, by line, as one ConfigError.

        Raises:
            ConfigError: when there is at least one problem; the first ones by line are listed (at most
                SHOWN_PROBLEMS, each clipped to PROBLEM_CHARS, MESSAGE_CHARS in all), then a count of the rest.
        """
        if not self.problems:
            return
        ordered = sorted(self.problems, key=lambda problem: problem[0])
        count = f"{len(ordered)} problem" + ("s" if len(ordered) > 1 else "")
        lines: list[str] = []
        used = 0
        for line, text in ordered[:SHOWN_PROBLEMS]:
            entry = shown(f"  line {line}: {text}", PROBLEM_CHARS)
            if used + len(entry) > MESSAGE_CHARS:
                break
            lines.append(entry)
            used += len(entry) + 1
        if len(ordered) > len(lines):
            lines.append(f"  … and {len(ordered) - len(lines)} more")
        body = "\n".join(lines)
        raise ConfigError(f"routes file {self.source} has {count}; fix and load it again:\n{body}")


def dotted(loc: Loc) -> str:
    """``routes[0].target.registry`` for a location (key names clipped and escaped; a path longer than
    PATH_CHARS keeps its start and its end, where the key the message is about is)."""
    text = ""
    for part in loc:
        name = shown(part, 40) if isinstance(part, str) else part
        text += f"[{part}]" if isinstance(part, int) else (f".{name}" if text else str(name))
    if len(text) > PATH_CHARS:
        text = f"{text[: PATH_CHARS // 3]}…{text[-(PATH_CHARS - PATH_CHARS // 3) :]}"
    return text or "(top level)"


def kind(value: Any) -> str:
    """What a value is, in words a message can use ('a mapping', 'a list', …, else its short repr)."""
    return {dict: "a mapping", list: "a list", str: "a string", type(None): "empty"}.get(type(value), show(value))


def show(value: Any) -> str:
    """A short repr of a value for a message (at most 60 characters)."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "…"
