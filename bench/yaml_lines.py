"""YAML read defensively, with line numbers: which line each key path was written on.

Suite files and ``-o`` values come from people and from tools we do not control, so this is the
one place they are parsed, and it refuses what a plain ``yaml.safe_load`` would let through:

- anchors and aliases (``&a`` / ``*a``): a 610-byte "billion laughs" file expands to gigabytes in
  anything that walks or copies the result; suites have ``defaults:`` and ``methods:`` for
  sharing values, so aliases are refused altogether (simpler to explain than a size bound);
- duplicate keys: YAML keeps the last one silently (``method: [sft]`` then ``method: [grpo_rm]``
  would compare nothing);
- keys that are not strings (``1:``, ``yes:``, ``null:``, ``[a]:``) and merge keys (``<<``);
- explicit tags (``!!python/...``, ``!!str``, ``!custom``): the schema decides types, not the file;
- nesting deeper than :data:`MAX_DEPTH`, refused while composing, long before Python's recursion
  limit (20,000 brackets otherwise end in a RecursionError);
- text that is not UTF-8 (the byte offset and line are named), NUL bytes (binary or UTF-16/32
  files), and control characters or lone surrogates inside values (a NUL in a path crashes
  ``Path.resolve``);
- numbers Python cannot read (integers beyond 4,300 digits);
- scalars longer than :data:`MAX_SCALAR` and keys longer than :data:`MAX_KEY` characters, named
  with their first 40 characters only (a 1 MB description used to reach rich's highlighter, which
  is quadratic).

Dates are read as text (YAML 1.1 would build ``datetime`` objects, which nothing in a suite
expects and some invalid ones, such as 2020-02-30, crash the constructor).

The document is composed once; the node tree is checked, its key lines recorded, and then the
same tree is constructed, so nothing is parsed twice.
"""

from __future__ import annotations

import unicodedata
from typing import Any

import yaml

Path_ = tuple[Any, ...]

MAX_DEPTH = 50
"""Deepest nesting of mappings/lists a suite may use (real suites use 5)."""

MAX_BYTES = 1 << 20
"""Largest suite file read (real suites are under 4 KB)."""

MAX_SCALAR = 10_000
"""Longest scalar read (:data:`bench.bounds.MAX_DESCRIPTION`); the schema bounds names and paths further."""

MAX_KEY = 256
"""Longest mapping key: keys are field names, method, profile and dotted matrix paths."""

_STR = "tag:yaml.org,2002:str"
_MERGE = "tag:yaml.org,2002:merge"
_TIMESTAMP = "tag:yaml.org,2002:timestamp"
_ALLOWED_CONTROLS = "\t\n\r"


class Refused(Exception):
    """A YAML text that will not be read; ``line`` is 1-based. Not a ValueError on purpose: the
    constructor wraps ValueErrors it meets, and must not wrap this one again."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"{line}: {reason}")
        self.line = line
        self.reason = reason


def _line(node_or_event: Any) -> int:
    mark = getattr(node_or_event, "start_mark", None)
    return mark.line + 1 if mark is not None else 1


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses, while composing, what :mod:`bench.yaml_lines` documents."""

    # dates stay text: copy the resolver table without the timestamp rule
    yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != _TIMESTAMP]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0

    def compose_node(self, parent: Any, index: Any) -> yaml.Node:
        event = self.peek_event()
        line = _line(event)
        if isinstance(event, yaml.AliasEvent):
            raise Refused(line, f"alias *{event.anchor}: anchors and aliases are not allowed in suite files (a few bytes of them can "
                                "expand to gigabytes); write the value out, or share it through defaults: or methods:")
        if getattr(event, "anchor", None) is not None:
            raise Refused(line, f"anchor &{event.anchor}: anchors and aliases are not allowed in suite files; write the value out, "
                                "or share it through defaults: or methods:")
        if getattr(event, "tag", None) is not None:
            raise Refused(line, f"explicit tag {event.tag}: tags are not allowed in suite files (the schema decides each value's type); "
                                "remove it, and quote the value if it must be text")
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise Refused(line, f"nested deeper than {MAX_DEPTH} levels; suites need a handful")
            node = super().compose_node(parent, index)
        finally:
            self._depth -= 1
        if isinstance(node, yaml.ScalarNode):
            _check_text(node)
        elif isinstance(node, yaml.MappingNode):
            _check_keys(node)
        return node

    def construct_object(self, node: yaml.Node, deep: bool = False) -> Any:
        try:
            return super().construct_object(node, deep)
        except (ValueError, OverflowError) as exc:  # e.g. an integer of more than 4,300 digits
            shown = node.value if isinstance(node.value, str) else ""
            shown = shown if len(shown) <= 40 else shown[:37] + "..."
            raise Refused(_line(node), f"cannot read the value {shown!r}: {str(exc).split(';')[0]}") from None


def _check_text(node: yaml.ScalarNode) -> None:
    if len(node.value) > MAX_SCALAR:  # before anything walks, compares or prints it
        raise Refused(_line(node), f"a value of {len(node.value):,} characters ({node.value[:40]!r}…); suite values are at most "
                                   f"{MAX_SCALAR:,} characters (a description), names and paths far less")
    for ch in node.value:
        category = unicodedata.category(ch)
        if (category == "Cc" and ch not in _ALLOWED_CONTROLS) or category == "Cs":
            kind = "a NUL character" if ch == "\0" else ("a lone surrogate" if category == "Cs" else "a control character")
            raise Refused(_line(node), f"{kind} (U+{ord(ch):04X}) in the value {node.value[:40]!r}; suite values are printable text")


def _check_keys(node: yaml.MappingNode) -> None:
    seen: dict[str, int] = {}
    for key_node, _ in node.value:
        line = _line(key_node)
        if key_node.tag == _MERGE:
            raise Refused(line, "merge key <<: merge keys are not allowed in suite files; write the keys out")
        if not isinstance(key_node, yaml.ScalarNode):
            kind = "a list" if isinstance(key_node, yaml.SequenceNode) else "a mapping"
            raise Refused(line, f"a key must be a string, not {kind}")
        if key_node.tag != _STR:
            kind = key_node.tag.rsplit(":", 1)[-1]
            raise Refused(line, f"key {key_node.value!r} is read as {kind}, not a string; quote it ('{key_node.value}':) if it is meant as text")
        key = key_node.value
        if len(key) > MAX_KEY:
            raise Refused(line, f"a key of {len(key):,} characters ({key[:40]!r}…); keys are at most {MAX_KEY} characters")
        if key in seen:
            raise Refused(line, f"duplicate key {key!r} (first on line {seen[key]}, again on line {line}); YAML would silently keep "
                                "the last one: keep one of them")
        seen[key] = line


def decode(data: bytes) -> str:
    """UTF-8 text of a file's bytes, or :class:`Refused` naming where it is not."""
    for bom, name in ((b"\x00\x00\xfe\xff", "UTF-32"), (b"\xff\xfe\x00\x00", "UTF-32"), (b"\xff\xfe", "UTF-16"), (b"\xfe\xff", "UTF-16")):
        if data.startswith(bom):
            raise Refused(1, f"the file is {name} text (byte-order mark); save it as UTF-8")
    nul = data.find(b"\0")
    if nul >= 0:
        raise Refused(data.count(b"\n", 0, nul) + 1, f"NUL byte at offset {nul}: a binary file, or UTF-16/32 text; suite files are UTF-8 text")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Refused(data.count(b"\n", 0, exc.start) + 1,
                      f"not UTF-8: byte 0x{data[exc.start]:02x} at offset {exc.start}; save the file as UTF-8") from None


def load(text: str) -> tuple[Any, dict[Path_, int]]:
    """The document and the line of every key path (see :func:`key_lines`); :class:`Refused` for
    anything this module refuses, invalid YAML included."""
    loader: _Loader | None = None
    try:
        loader = _Loader(text)  # the reader checks every character here
        node = loader.get_single_node()
        if node is None:
            return None, {}
        lines = _walk(node)
        return loader.construct_document(node), lines
    except yaml.reader.ReaderError as exc:  # a character YAML does not allow, e.g. a raw control byte
        where = text.count("\n", 0, exc.position) + 1 if isinstance(exc.position, int) else 1
        raise Refused(where, f"not valid YAML: character U+{exc.character if isinstance(exc.character, int) else ord(exc.character):04X} "
                             "is not allowed in YAML text") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        said = ", ".join(str(part) for part in (getattr(exc, "context", None), getattr(exc, "problem", None)) if part) or str(exc)
        raise Refused(mark.line + 1 if mark else 1, f"not valid YAML: {said}") from None
    except RecursionError:  # defence in depth: MAX_DEPTH stops composition long before this
        raise Refused(1, f"nested deeper than {MAX_DEPTH} levels; suites need a handful") from None
    finally:
        if loader is not None:
            loader.dispose()


def _walk(root: yaml.Node) -> dict[Path_, int]:
    """Key path → line over a composed tree. The tree has no aliases (they are refused), and the
    walk visits each node once regardless, so it never expands a shared node."""
    lines: dict[Path_, int] = {}
    seen: set[int] = set()
    stack: list[tuple[yaml.Node, Path_]] = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key_node, value_node in node.value:
                key = key_node.value
                lines[path + (key,)] = key_node.start_mark.line + 1
                stack.append((value_node, path + (key,)))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                lines[path + (i,)] = item.start_mark.line + 1
                stack.append((item, path + (i,)))
    return lines


def key_lines(text: str) -> dict[Path_, int]:
    """Map every key path (and list index) in a YAML document to its 1-based line."""
    return load(text)[1]


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
