"""YAML with line numbers: which line each key path was written on, for error messages."""

from __future__ import annotations

from typing import Any

import yaml

Path_ = tuple[Any, ...]


def key_lines(text: str) -> dict[Path_, int]:
    """Map every key path (and list index) in a YAML document to its 1-based line."""
    root = yaml.compose(text, Loader=yaml.SafeLoader)
    lines: dict[Path_, int] = {}

    def walk(node: yaml.Node, path: Path_) -> None:
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                lines[path + (key,)] = key_node.start_mark.line + 1
                walk(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                walk(item, path + (i,))

    if root is not None:
        walk(root, ())
    return lines


def locate(lines: dict[Path_, int], *candidates: Path_) -> tuple[Path_, int | None]:
    """The first candidate path written in the file and its line; else the first candidate with
    the line of its longest written prefix (a missing key is reported where its parent is)."""
    for path in candidates:
        if path in lines:
            return path, lines[path]
    for path in candidates:
        for cut in range(len(path) - 1, 0, -1):
            if path[:cut] in lines:
                return path, lines[path[:cut]]
    return (candidates[0] if candidates else ()), None


def line_of(lines: dict[Path_, int], *candidates: Path_) -> int | None:
    return locate(lines, *candidates)[1]
