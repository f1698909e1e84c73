"""YAML text to plain data, recording the line of every key and list item in a :class:`Report`.

libyaml (PyYAML's C parser, when installed) parses; the node tree is composed here (PyYAML's ``Composer``), so
that the composing can stop early, and then walked here rather than by ``construct_document``
(``SafeConstructor``: no tags beyond YAML's own) so that

- a pathological document stops at MAX_NODES nodes or MAX_DEPTH levels while it is composed, and a routes list
  at ``max_routes`` items, before the rest of it costs memory; an alias bomb ("billion laughs") stops at
  MAX_NODES values built, and an alias that refers to itself is an error;
- ``<<: *anchor`` merge keys work, the mapping's own keys (and their lines) winning;
- a duplicate key is an error instead of silently last-wins, and a key that is not a string is named;
- a syntax error quotes no snippet of the file (which may hold a secret), only the problem and its position.

An alias is built again at each reference, but its scalars are constructed once (the constructor keeps them by
node): the same ``str`` object appears wherever the alias does, so later stages scan each one once.
"""

from __future__ import annotations

from typing import Any

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import Resolver
from yaml.scanner import Scanner

from acr_transfer.errors import ConfigError, shown
from acr_transfer.routes.limits import MAX_ROUTES
from acr_transfer.routes.report import Loc, Report, show

MERGE_TAG = "tag:yaml.org,2002:merge"
MAX_NODES = 100_000
MAX_DEPTH = 40
# libyaml scans and parses ~10x faster than PyYAML's pure-Python reader (the same events, the same YAML 1.1)
_PARSER: tuple[type, ...]
try:
    from yaml._yaml import CParser

    _PARSER = (CParser,)
except ImportError:  # PyYAML built without libyaml
    _PARSER = (Reader, Scanner, Parser)


def compose(text: str, report: Report, max_routes: int = MAX_ROUTES) -> Any:
    """The document as dicts, lists and scalars (``None`` when empty); lines go into ``report.lines``.

    Raises:
        ConfigError: a YAML syntax error (line and column, no snippet), a document too large or too deep, more
            than ``max_routes`` routes, or an alias that refers to itself. Lesser problems (an impossible date, a
            duplicate key) go into ``report``.
    """
    loader: BoundedLoader | None = None
    try:
        loader = BoundedLoader(text, report.source, max_routes)  # refuses unprintable characters already
        node = loader.get_single_node()
        if node is None:
            return None
        _count_routes(node, report.source, max_routes)  # a routes list that is an alias was not counted yet
        return Builder(loader, report).build(node, ())
    except yaml.YAMLError as e:
        if "maximum nesting depth" in str(getattr(e, "problem", "")):  # libyaml's own cap (1000 levels)
            raise ConfigError(f"routes file {report.source} is nested too deeply to be a routes file") from None
        raise ConfigError(_syntax_error(e, text, report.source)) from None
    except UnicodeError:  # a lone surrogate in the text: libyaml takes UTF-8 only
        raise ConfigError(f"routes file {report.source} is not UTF-8 text; check its encoding") from None
    except RecursionError:
        raise ConfigError(f"routes file {report.source} is nested too deeply to be a routes file") from None
    finally:
        if loader is not None:
            loader.dispose()


class BoundedLoader(Composer, *_PARSER, SafeConstructor, Resolver):  # type: ignore[misc]
    """PyYAML's safe loader (libyaml's parser when there is one) that stops composing a document as soon as it
    has too many nodes, is too deep, or its ``routes:`` list has more than ``max_routes`` routes (mappings: an
    item of another kind is no route, and is reported as such later).

    ``Composer`` comes first so that its ``get_single_node`` (and this class's ``compose_node``) compose, not
    libyaml's, which would build the whole tree before anything could be counted.
    """

    def __init__(self, text: str, source: str, max_routes: int) -> None:
        reader, *rest = _PARSER  # libyaml's parser reads the text itself; PyYAML's Reader does for its Scanner
        reader.__init__(self, text)  # type: ignore[misc]
        for base in rest:
            base.__init__(self)  # type: ignore[misc]
        Composer.__init__(self)
        SafeConstructor.__init__(self)
        Resolver.__init__(self)
        self.source, self.max_routes = source, max_routes
        self.composed = 0  # values composed (an alias counts once here, and its whole value in Builder)
        self.depth = 0
        self.in_routes = False
        self.routes = 0  # mappings in the routes list so far

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        """Compose one node (PyYAML's), counting it; refuse at MAX_NODES, MAX_DEPTH or too many routes."""
        self.composed += index is not None or parent is None  # values, as Builder counts them (not keys)
        if self.composed > MAX_NODES:
            raise ConfigError(
                f"routes file {self.source} has more than {MAX_NODES:,} YAML values (near line {self._line()}); "
                "a routes file needs far fewer: is it a routes file?"
            )
        if self.depth > MAX_DEPTH:
            raise ConfigError(f"routes file {self.source} is nested too deeply to be a routes file")
        routes_list = self.depth == 1 and isinstance(index, yaml.ScalarNode) and index.value == "routes"
        route_item = self.in_routes and self.depth == 2 and isinstance(index, int)
        line = self._line() if route_item else 0  # where the item is written (an alias's node is elsewhere)
        self.depth += 1
        self.in_routes = self.in_routes or routes_list
        try:
            node = super().compose_node(parent, index)
        finally:
            self.depth -= 1
            self.in_routes = self.in_routes and not routes_list
        if route_item and isinstance(node, yaml.MappingNode):  # an item of another kind is reported, not counted
            self.routes += 1
            if self.routes > self.max_routes:
                raise ConfigError(too_many_routes(self.source, self.max_routes, line))
        return node

    def _line(self) -> int:
        return int(self.peek_event().start_mark.line) + 1


def too_many_routes(source: str, limit: int, line: int) -> str:
    """The message for a routes file whose routes list goes past ``limit`` routes (the next one at ``line``)."""
    return (
        f"routes file {source} has more than {limit:,} routes (route {limit + 1:,} starts at line {line}); "
        "split them into several routes files (each worker reads the one its routes_file or ACR_TRANSFER_ROUTES names)"
    )


def _count_routes(root: yaml.Node, source: str, limit: int) -> None:
    if not isinstance(root, yaml.MappingNode):
        return
    for key, value in root.value:
        if isinstance(key, yaml.ScalarNode) and key.value == "routes" and isinstance(value, yaml.SequenceNode):
            routes = [item for item in value.value if isinstance(item, yaml.MappingNode)]
            if len(routes) > limit:
                raise ConfigError(too_many_routes(source, limit, routes[limit].start_mark.line + 1))


def _syntax_error(e: yaml.YAMLError, text: str, source: str) -> str:
    # str(e) quotes a snippet of the file, which may hold a secret: keep only the problem and its position
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    line = mark.line + 1 if mark else text.count("\n", 0, getattr(e, "position", 0) or 0) + 1
    where = f"line {line}, column {mark.column + 1}" if mark else f"line {line}"
    # PyYAML's problem may quote an anchor, a tag or a character of the file: clipped, escaped
    problem = shown(getattr(e, "problem", None) or getattr(e, "reason", None) or type(e).__name__, 160)
    started, context = getattr(e, "context_mark", None), getattr(e, "context", None)
    context = f" ({shown(context, 80)} at line {started.line + 1})" if started and context else ""
    return (
        f"routes file {source}: YAML syntax error at {where}: {problem}{context}; "
        "check the indentation and quoting there"
    )


class Builder:
    """Plain data from a composed YAML node tree, recording the line of every key and list item."""

    def __init__(self, loader: BoundedLoader, report: Report) -> None:
        self.loader, self.report = loader, report
        self.active: set[int] = set()  # nodes being built: meeting one again means an alias loops
        self.count = 0

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        """The value of ``node``, found at ``loc`` in the document.

        Raises:
            ConfigError: past MAX_NODES nodes or MAX_DEPTH levels, or an alias that refers to itself.
        """
        self.count += 1
        if self.count > MAX_NODES or len(loc) > MAX_DEPTH:  # the composer counted nodes: aliases expand here
            raise ConfigError(
                f"routes file {self.report.source} is too large or too deeply nested once its YAML aliases are "
                f"expanded (more than {MAX_NODES:,} values or {MAX_DEPTH} levels, near line "
                f"{node.start_mark.line + 1}); a routes file needs neither"
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
