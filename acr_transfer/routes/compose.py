"""YAML text to plain data, recording the line of every key and list item in a :class:`Report`.

PyYAML composes the node tree and constructs each scalar (``SafeLoader``: no tags beyond YAML's own); the
tree is walked here rather than by ``construct_document`` so that

- an alias bomb ("billion laughs") or a pathological document stops at MAX_NODES nodes or MAX_DEPTH levels
  instead of eating the worker, and an alias that refers to itself is an error;
- ``<<: *anchor`` merge keys work, the mapping's own keys (and their lines) winning;
- a duplicate key is an error instead of silently last-wins, and a key that is not a string is named;
- a syntax error quotes no snippet of the file (which may hold a secret), only the problem and its position.
"""

from __future__ import annotations

from typing import Any

import yaml

from acr_transfer.errors import ConfigError, shown
from acr_transfer.routes.report import Loc, Report, show

MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_NODES = 100_000
MAX_DEPTH = 40


def compose(text: str, report: Report) -> Any:
    """The document as dicts, lists and scalars (``None`` when empty); lines go into ``report.lines``.

    Raises:
        ConfigError: a YAML syntax error (line and column, no snippet), a document too large or too deep, or an
            alias that refers to itself. Lesser problems (an impossible date, a duplicate key) go into ``report``.
    """
    loader: yaml.SafeLoader | None = None
    try:
        loader = yaml.SafeLoader(text)  # checks for unprintable characters already
        node = loader.get_single_node()
        return None if node is None else Builder(loader, report).build(node, ())
    except yaml.YAMLError as e:
        raise ConfigError(_syntax_error(e, text, report.source)) from None
    except RecursionError:
        raise ConfigError(f"routes file {report.source} is nested too deeply to be a routes file") from None
    finally:
        if loader is not None:
            loader.dispose()


def _syntax_error(e: yaml.YAMLError, text: str, source: str) -> str:
    # str(e) quotes a snippet of the file, which may hold a secret: keep only the problem and its position
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = mark.line + 1 if mark else text.count("\n", 0, getattr(e, "position", 0) or 0) + 1
    where = f"line {line}, column {mark.column + 1}" if mark else f"line {line}"
    problem = getattr(e, "problem", None) or getattr(e, "reason", None) or type(e).__name__
    started, context = getattr(e, "context_mark", None), getattr(e, "context", None)
    context = f" ({context} at line {started.line + 1})" if started and context else ""
    return (
        f"routes file {source}: YAML syntax error at {where}: {problem}{context}; "
        "check the indentation and quoting there"
    )


class Builder:
    """Plain data from a composed YAML node tree, recording the line of every key and list item."""

    def __init__(self, loader: yaml.SafeLoader, report: Report) -> None:
        self.loader, self.report = loader, report
        self.active: set[int] = set()  # nodes being built: meeting one again means an alias loops
        self.count = 0

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        """The value of ``node``, found at ``loc`` in the document.

        Raises:
            ConfigError: past MAX_NODES nodes or MAX_DEPTH levels, or an alias that refers to itself.
        """
        self.count += 1
        if self.count > MAX_NODES or len(loc) > MAX_DEPTH:
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
            self.report.add(loc, f"cannot read {show(node.value)} (an impossible date or number?); quote it", line=line)
            return node.value

    def _item(self, node: yaml.Node, loc: Loc) -> Any:
        self.report.lines[loc] = node.start_mark.line + 1
        return self.build(node, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        merged = self._merged(node, loc)
        own: dict[str, Any] = {}
        for key_node, value_node in node.value:
            key = None if key_node.tag == MERGE_TAG else self._key(key_node, loc)
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

    def _merged(self, node: yaml.MappingNode, loc: Loc) -> dict[str, Any]:
        """What the mapping's ``<<: *anchor`` merge keys bring in, built first so that its own keys win."""
        merged: dict[str, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag != MERGE_TAG:
                continue
            sources = value_node.value if isinstance(value_node, yaml.SequenceNode) else [value_node]
            for source in sources:
                built = self.build(source, loc)
                if not isinstance(built, dict):
                    self.report.add(loc, "'<<' can only merge mappings", line=key_node.start_mark.line + 1)
                    continue
                for key, value in built.items():
                    merged.setdefault(key, value)  # the earlier of several merged mappings wins (YAML spec)
        return merged

    def _key(self, node: yaml.Node, loc: Loc) -> str | None:
        value = self._scalar(node, loc) if isinstance(node, yaml.ScalarNode) else None
        if isinstance(value, str):
            return value
        described = show(value) if isinstance(node, yaml.ScalarNode) else "a list or mapping"
        self.report.add(
            loc,
            f"key {described} is not a string; quote it (YAML reads yes/no/on/off as true/false)",
            line=node.start_mark.line + 1,
        )
        return None
