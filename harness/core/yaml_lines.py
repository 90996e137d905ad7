"""YAML loading that remembers the line of every key and list item, within bounds.

PyYAML's ``safe_load`` drops positions; suite errors must name the line. This loader builds
plain dicts and lists (subclasses carrying a ``lines`` map) with the same safety as safe_load,
and only the plain YAML types (no ``!!binary``, ``!!set``, ``!!omap``, ``!!pairs``; dates stay
strings). Suites come from others (docs/security.md): a document deeper than
:data:`~harness.core.limits.YAML_DEPTH` or with more values than
:data:`~harness.core.limits.YAML_NODES`, every expansion of an alias counted again, is refused
before a single value is built.
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

import yaml

from harness.core.errors import SuiteError
from harness.core.limits import YAML_DEPTH, YAML_NODES

_REFUSED_TAGS = ("binary", "set", "omap", "pairs")
_TAG = "tag:yaml.org,2002:"
_SCALAR_ERRORS = (ValueError, TypeError, OverflowError, KeyError, IndexError, AttributeError)


class LineDict(dict):
    """A dict with ``lines[key]`` = 1-based line of that key."""

    lines: dict[Any, int]


class LineList(list):
    """A list with ``lines[i]`` = 1-based line of item i."""

    lines: dict[int, int]


_KINDS = {LineList: "a list", LineDict: "a mapping"}


class _LineLoader(yaml.SafeLoader):
    """A SafeLoader that counts nesting while it composes (PyYAML's composer recurses)."""

    def __init__(self, text: str, max_depth: int, max_nodes: int) -> None:
        super().__init__(text)
        self.depth, self.max_depth = 0, max_depth
        self.nodes, self.max_nodes = 0, max_nodes

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except _SCALAR_ERRORS:  # a scalar its tag's constructor cannot read: !!bool x
            tag = str(node.tag).replace(_TAG, "!!")
            raise SuiteError(
                f"cannot read {str(node.value)[:40]!r} as {tag}", line=node.start_mark.line + 1
            ) from None

    def compose_node(self, parent: Any, index: Any) -> Any:
        self.depth += 1
        self.nodes += 1
        try:
            if self.depth > self.max_depth:
                raise SuiteError(
                    f"nested more than {self.max_depth} levels deep "
                    f"(${YAML_DEPTH.env} raises the limit)",
                    line=self.peek_event().start_mark.line + 1,
                )
            if self.nodes > self.max_nodes:
                raise _too_many(self.max_nodes, self.peek_event().start_mark.line + 1)
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _too_many(budget: int, line: int) -> SuiteError:
    return SuiteError(
        f"more than {budget:,} values once aliases are expanded "
        f"(${YAML_NODES.env} raises the limit)",
        line=line,
    )


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, str):
            shown = repr(key) if isinstance(key, Hashable) else _KINDS.get(type(key), "a value")
            raise SuiteError(f"a key must be a string, got {shown}; quote it", line=line)
        if key in result:
            raise SuiteError(f"duplicate key {key!r}", line=line)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = line
    result.lines.setdefault("__self__", node.start_mark.line + 1)
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.lines = {i: child.start_mark.line + 1 for i, child in enumerate(node.value)}
    return result


def _refuse_tag(loader: _LineLoader, node: yaml.Node) -> Any:
    raise SuiteError(
        f"the tag {node.tag.replace('tag:yaml.org,2002:', '!!')} is not allowed in a suite",
        line=node.start_mark.line + 1,
    )


def _as_string(loader: _LineLoader, node: yaml.ScalarNode) -> str:
    return str(loader.construct_scalar(node))


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_LineLoader.add_constructor(_TAG + "timestamp", _as_string)
for _tag in _REFUSED_TAGS:
    _LineLoader.add_constructor(_TAG + _tag, _refuse_tag)
_LineLoader.add_constructor(None, _refuse_tag)  # any tag PyYAML does not know


def _count(node: yaml.Node, budget: int) -> int:
    """The number of values ``node`` stands for, each alias counted as often as it is used;
    SuiteError as soon as it passes ``budget``. Nodes an alias shares are counted once and
    their count reused, so a billion-value alias bomb costs a few hundred steps."""
    counts: dict[int, int] = {}
    open_nodes: set[int] = set()

    def size(n: yaml.Node) -> int:
        if id(n) in counts:
            return counts[id(n)]
        if id(n) in open_nodes:
            raise SuiteError("an alias refers to a value that holds it", line=n.start_mark.line + 1)
        open_nodes.add(id(n))
        total = 1
        if isinstance(n, yaml.SequenceNode):
            total += sum(size(child) for child in n.value)
        elif isinstance(n, yaml.MappingNode):
            total += sum(size(k) + size(v) for k, v in n.value)
        if total > budget:
            raise _too_many(budget, n.start_mark.line + 1)
        counts[id(n)] = total
        return total

    return size(node)


def load_yaml(text: str, path: str) -> Any:
    """Parse ``text``; a syntax error, a document past the depth or value limits, a key that
    is not a string or a refused tag becomes a SuiteError with the file and line."""
    try:
        budget = YAML_NODES.value()
        loader = _LineLoader(text, YAML_DEPTH.value(), budget)  # a SafeLoader: no Python objects
        try:
            node = loader.get_single_node()
            if node is None:
                return None
            _count(node, budget)
            return loader.construct_document(node)
        finally:
            loader.dispose()
    except SuiteError as exc:
        raise SuiteError(exc.message, path=path, line=exc.line) from None
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc
        if isinstance(exc, yaml.reader.ReaderError):
            problem = f"{exc.reason} (code point {exc.character!r}); a suite is text"
        raise SuiteError(
            f"not valid YAML: {problem}",
            path=path,
            line=_error_line(exc, text),
        ) from None
    except (ValueError, TypeError, OverflowError) as exc:  # a scalar its constructor rejects
        raise SuiteError(f"not valid YAML: {exc}", path=path) from None
    except RecursionError:  # a depth limit raised past what this Python's stack holds
        raise SuiteError(
            f"nested deeper than this Python can parse; lower ${YAML_DEPTH.env} (default "
            f"{YAML_DEPTH.default}) or flatten the suite",
            path=path,
        ) from None


def _error_line(exc: yaml.YAMLError, text: str) -> int | None:
    """The 1-based line a YAML error points at (a reader error gives a character offset)."""
    mark = getattr(exc, "problem_mark", None)
    if mark is not None:
        return int(mark.line) + 1
    position = getattr(exc, "position", None)
    if isinstance(position, int):
        return text.count("\n", 0, position) + 1
    return None


def line_of(container: Any, key: Any, default: int | None = None) -> int | None:
    """The remembered line of ``key`` in a LineDict/LineList, else ``default``."""
    lines = getattr(container, "lines", None)
    if lines is None:
        return default
    return lines.get(key, default)
