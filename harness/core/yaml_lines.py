"""YAML loading that remembers the line of every key and list item.

PyYAML's ``safe_load`` drops positions; suite errors must name the line. This loader builds
plain dicts and lists (subclasses carrying a ``lines`` map) with the same safety as safe_load.
"""

from __future__ import annotations

from typing import Any

import yaml

from harness.core.errors import SuiteError


class LineDict(dict):
    """A dict with ``lines[key]`` = 1-based line of that key."""

    lines: dict[Any, int]


class LineList(list):
    """A list with ``lines[i]`` = 1-based line of item i."""

    lines: dict[int, int]


class _LineLoader(yaml.SafeLoader):
    pass


def _construct_mapping(loader: _LineLoader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    result = LineDict()
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise SuiteError(f"duplicate key {key!r}", line=key_node.start_mark.line + 1)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    result.lines.setdefault("__self__", node.start_mark.line + 1)
    return result


def _construct_sequence(loader: _LineLoader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.lines = {i: child.start_mark.line + 1 for i, child in enumerate(node.value)}
    return result


_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_LineLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


def load_yaml(text: str, path: str) -> Any:
    """Parse ``text``; a syntax error becomes a SuiteError with the file and line."""
    try:
        loader = _LineLoader(text)  # a SafeLoader subclass: no arbitrary Python objects
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except SuiteError as exc:
        raise SuiteError(exc.message, path=path, line=exc.line) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        problem = getattr(exc, "problem", None) or str(exc)
        raise SuiteError(f"not valid YAML: {problem}", path=path, line=line) from None


def line_of(container: Any, key: Any, default: int | None = None) -> int | None:
    """The remembered line of ``key`` in a LineDict/LineList, else ``default``."""
    lines = getattr(container, "lines", None)
    if lines is None:
        return default
    return lines.get(key, default)
