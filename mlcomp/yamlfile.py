"""mlcomp's one YAML reader: safe, bounded, and with the line of every key.

DAG files (:mod:`mlcomp.dag.spec`), grid files, runner configs (:mod:`mlcomp.runner.config_io`) and
the settings file are all read here. Parsing is PyYAML's safe loader (libyaml's ``CSafeLoader``
when PyYAML was built with it), with dates kept as strings (configs are stored as JSON). The
composed node tree is checked before any Python object is built, so hostile input costs little:

* the file is at most :data:`MAX_BYTES` long;
* the document has at most :data:`MAX_NODES` nodes *with aliases expanded* (the "billion laughs"
  attack: a few lines of nested aliases that would expand to 10⁹ nodes) and is at most
  :data:`MAX_DEPTH` levels deep; an alias that refers to its own parent is refused;
* a key appears once per mapping;
* integers fit in 64 bits and floats are finite (they end up in database columns and JSON).

Every error is raised as the caller's error class (``DagError`` for DAG files, ``ConfigError``
for configs) with a message starting ``FILE:LINE:`` and naming the key (and the alias) at fault.
"""
from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import yaml

from mlcomp.errors import MlcompError

__all__ = ["Loader", "LineMap", "YamlDocument", "read_yaml", "parse_yaml", "MAX_BYTES", "MAX_NODES",
           "MAX_DEPTH"]

MAX_BYTES = 1 << 20
"""The largest YAML file read (bytes)."""
MAX_NODES = 100_000
"""The most nodes (scalars, sequences, mappings) a document may hold once aliases are expanded."""
MAX_DEPTH = 64
"""The deepest nesting of sequences and mappings, aliases expanded."""
INT_MIN, INT_MAX = -2 ** 63, 2 ** 63 - 1

_INT_TAG, _FLOAT_TAG = "tag:yaml.org,2002:int", "tag:yaml.org,2002:float"
_ANCHOR = re.compile(r"&([^\s,\[\]{}]+)")


class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):
    """SafeLoader that keeps dates as strings (the store keeps configs as JSON); libyaml's
    CSafeLoader when PyYAML was built with it (its nodes and errors carry the same line marks)."""


Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


@dataclasses.dataclass(frozen=True)
class LineMap:
    """Key path of a YAML document → 1-based line; a path missing from the file (added by
    ``--set``) gets the line of its nearest ancestor, the document's first line at worst."""

    lines: Mapping[tuple, int]

    def __call__(self, path: Sequence) -> int:
        path = tuple(str(part) for part in path)
        while path and path not in self.lines:
            path = path[:-1]
        return self.lines.get(path, 1)


@dataclasses.dataclass(frozen=True)
class YamlDocument:
    """A checked YAML document: its ``text``, its ``data`` (plain dicts, lists and scalars;
    None for an empty document) and the ``lines`` of its keys."""

    text: str
    data: Any
    lines: LineMap


ErrorClass = Callable[[str], MlcompError]


def read_yaml(path: str | Path, error: ErrorClass, what: str = "YAML file") -> YamlDocument:
    """Reads and checks the YAML file ``path`` (see the module docstring for the bounds).

    Args:
        error: the exception class raised (e.g. ``DagError``), built from one message.
        what: how messages call the file ("DAG file", "config").

    Raises:
        error: the file is missing, unreadable, not UTF-8, larger than :data:`MAX_BYTES`, not
            valid YAML (with line and column), too large or deep once aliases are expanded,
            recursive, repeats a key, or holds a number out of range.
    """
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(MAX_BYTES + 1)
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as e:
        raise error(f"{path}:1: cannot read the {what}: {e}") from None
    if len(raw) > MAX_BYTES:
        raise error(f"{path}:1: the {what} is larger than {MAX_BYTES} bytes; allowed: at most {MAX_BYTES}")
    return parse_yaml(text, str(path), error)


def parse_yaml(text: str, source: str, error: ErrorClass) -> YamlDocument:
    """Parses and checks YAML ``text``; ``source`` names it in messages (a file, ``--set a=1``).

    Raises:
        error: as :func:`read_yaml`, for text.
    """
    loader = Loader(text)
    try:
        node = loader.get_single_node()
        lines: dict[tuple, int] = {(): 1}
        if node is not None:
            _Checker(source, text, error, lines, loader).walk(node, ())
        data = loader.construct_document(node) if node is not None else None
    except yaml.MarkedYAMLError as e:
        mark = e.problem_mark or e.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        problem = " ".join(filter(None, [e.context, e.problem]))
        raise error(f"{source}:{line}:{col}: YAML syntax error: {problem}") from None
    except yaml.YAMLError as e:
        raise error(f"{source}:1: YAML error: {e}") from None
    except RecursionError:  # the pure-Python composer on a document nested thousands deep
        raise error(f"{source}:1: the YAML nests deeper than {MAX_DEPTH} levels") from None
    finally:
        loader.dispose()
    return YamlDocument(text, data, LineMap(lines))


class _TooDeep(Exception):
    pass


class _Recursive(Exception):
    pass


@dataclasses.dataclass
class _Checker:
    """One pass over the composed node graph (aliases are shared nodes in it) recording lines
    and enforcing the bounds; subtree sizes are memoised, so a billion laughs is measured, not
    walked."""

    source: str
    text: str
    error: ErrorClass
    lines: dict
    loader: Any
    visited: int = 0
    sizes: dict = dataclasses.field(default_factory=dict)

    def fail(self, path: tuple, node, message: str) -> MlcompError:
        key = f"key {'.'.join(path)!r}: " if path else ""
        return self.error(f"{self.source}:{self._line(path, node)}: {key}{message}")

    def _line(self, path: tuple, node) -> int:
        return self.lines.get(path) or node.start_mark.line + 1

    def size(self, node, depth: int = 0, stack: frozenset = frozenset()) -> tuple[int, int]:
        """(nodes, depth) of ``node``'s subtree with aliases expanded; memoised by identity."""
        if id(node) in self.sizes:
            return self.sizes[id(node)]
        if id(node) in stack:
            raise _Recursive
        if depth > MAX_DEPTH:
            raise _TooDeep
        children = _children(node)
        stack = stack | {id(node)}
        nodes, deepest = 1, 0
        for child in children:
            n, d = self.size(child, depth + 1, stack)
            nodes, deepest = nodes + n, max(deepest, d + 1)
        self.sizes[id(node)] = (nodes, deepest)
        return nodes, deepest

    def shape(self, node, depth: int) -> str | None:
        """What is wrong with ``node``'s subtree at ``depth``: "deep", "recursive", "big" or None."""
        try:
            nodes, deep = self.size(node, depth)
        except _TooDeep:
            return "deep"
        except _Recursive:
            return "recursive"
        if depth + deep > MAX_DEPTH:
            return "deep"
        return "big" if self.visited + nodes > MAX_NODES else None

    def walk(self, node, path: tuple, depth: int = 0) -> None:
        """Records lines and checks ``node``; a problem is reported at the innermost key (or, for
        size, collection) that holds it."""
        problem = self.shape(node, depth)
        if problem == "big":
            budget = MAX_NODES - self.visited - 1
            if not any(self.size(child, depth + 1)[0] > budget for child in _children(node)):
                raise self.fail(path, node, f"the document expands to more than {MAX_NODES} YAML nodes with "
                                            f"aliases expanded{self._aliases(node, path)}; allowed: at most "
                                            f"{MAX_NODES}")
        elif problem is not None and not (isinstance(node, yaml.MappingNode) and any(
                self.shape(value, depth + 1) == problem for _, value in node.value
                if value.start_mark.index > node.start_mark.index)):  # inside it, not an alias back
            message = (f"the YAML nests deeper than {MAX_DEPTH} levels" if problem == "deep" else
                       "an alias refers to a node that contains it (recursive)")
            raise self.fail(path, node, message + self._aliases(node, path))
        self.visited += 1
        if isinstance(node, yaml.ScalarNode):
            self._check_number(node, path)
        elif isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                key = str(key_node.value)
                if key in seen and key != "<<":
                    raise self.error(f"{self.source}:{key_node.start_mark.line + 1}: duplicate key {key!r}"
                                     f"{' in ' + '.'.join(path) if path else ''}")
                seen.add(key)
                self.lines[path + (key,)] = key_node.start_mark.line + 1
                self.visited += 1
                self.walk(value_node, path + (key,), depth + 1)
        else:
            for i, item in enumerate(node.value):
                self.lines.setdefault(path + (str(i),), item.start_mark.line + 1)
                self.walk(item, path + (str(i),), depth + 1)

    def _check_number(self, node, path: tuple) -> None:
        if node.tag == _INT_TAG:
            value = self.loader.construct_yaml_int(node)
            if not INT_MIN <= value <= INT_MAX:
                raise self.fail(path, node, f"the integer {node.value} is out of range; allowed: "
                                            f"{INT_MIN} to {INT_MAX}")
        elif node.tag == _FLOAT_TAG and not math.isfinite(self.loader.construct_yaml_float(node)):
            raise self.fail(path, node, f"the number {node.value} is out of range; allowed: a finite number")

    def _aliases(self, node, path: tuple) -> str:
        """`` (through alias *a, *b)``: the anchored nodes ``node`` is or reuses (an alias is a
        node that starts before the key or collection that uses it)."""
        names = []
        used = [node] if node.start_mark.line + 1 < self.lines.get(path, 0) else []
        used += [child for child in _children(node) if child.start_mark.index <= node.start_mark.index]
        for child in used:
            match = _ANCHOR.match(self.text, child.start_mark.index)
            if match and f"*{match[1]}" not in names:
                names.append(f"*{match[1]}")
        return f" (through alias {', '.join(names)})" if names else ""


def _children(node) -> list:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []
