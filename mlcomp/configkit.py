"""One toolkit for nested config mappings, used by the runner's configs (``--key=value``
overrides, a train task's ``params``), the DAG spec (``--set``) and grid cells
(``Executor.apply_cell``), so they share one set of rules:

* :func:`deep_merge` merges mappings recursively; lists and scalars are replaced (Catalyst's
  ``merge_dicts``);
* :func:`set_path` sets a value at a dotted path: at each level the longest run of parts that
  names an existing key wins (a task named ``a.b`` is one key), a decimal part indexes an existing
  list (``grid.0.lr``), missing mappings are created, and a mapping set onto a mapping is
  deep-merged into it (MLComp's ``merge_dicts_smart``) while anything else replaces the value;
* :func:`expand_env` expands ``${VAR}`` references to environment variables in strings.

Errors are :class:`PathError` (a ``ValueError``); each caller turns them into its own error
with its file, line and key.
"""
from __future__ import annotations

import copy
import itertools
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from mlcomp.errors import ConfigError
from mlcomp.yamlfile import MAX_DEPTH

__all__ = ["PathError", "deep_merge", "set_path", "split_path", "key_paths", "expand_env", "MAX_PARTS"]

MAX_PARTS = MAX_DEPTH
"""The most parts of a dotted path (:func:`split_path`): the YAML reader's depth limit."""


class PathError(ValueError):
    """A dotted path that cannot be set (the message says why)."""


def deep_merge(base: Mapping, override: Mapping) -> dict:
    """A new dict: ``base`` with ``override`` merged in recursively; ``override`` wins, lists and
    scalars are replaced, not concatenated (Catalyst's ``merge_dicts``)."""
    merged = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def split_path(key: str | Sequence[str]) -> tuple[str, ...]:
    """``"a.b.c"`` → ``("a", "b", "c")``; a sequence is taken as the parts. Linear in the key's
    length; at most :data:`MAX_PARTS` parts (the YAML reader's depth limit), so no later step
    (:func:`set_path`, deep copies, JSON) meets a path deep enough to be slow or to recurse too far.

    Raises:
        PathError: an empty part (``"a..b"``, ``""``), or more than :data:`MAX_PARTS` parts.
    """
    if isinstance(key, str):
        if key.count(".") >= MAX_PARTS:
            raise PathError(f"{_short(key)}: {key.count('.') + 1} parts in the dotted path; allowed: at most "
                            f"{MAX_PARTS} (the deepest nesting of a YAML file)")
        parts = tuple(key.split("."))
    else:
        parts = tuple(map(str, itertools.islice(key, MAX_PARTS + 1)))
        if len(parts) > MAX_PARTS:
            raise PathError(f"{_short('.'.join(parts))}: more than {MAX_PARTS} parts in the path; allowed: at "
                            f"most {MAX_PARTS} (the deepest nesting of a YAML file)")
    if not parts or not all(parts):
        raise PathError(f"{_short(key if isinstance(key, str) else '.'.join(parts))}: empty part in the dotted path")
    return parts


def _short(key: str, limit: int = 80) -> str:
    """``key`` for a message: its repr, cut to about ``limit`` characters."""
    return repr(key) if len(key) <= limit else repr(key[:limit]) + f"… ({len(key)} characters)"


def set_path(node: dict, key: str | Sequence[str], value: Any) -> tuple[str, ...]:
    """Sets ``value`` (a deep copy) in ``node`` (in place) at the dotted path ``key`` by the rules
    of the module docstring; returns the keys used (a dotted task name counts as one).

    Raises:
        PathError: an empty part, or the path goes through a value that is not a mapping (nor a
            list indexed by position).
    """
    parts, used, value = split_path(key), [], copy.deepcopy(value)
    while True:
        if isinstance(node, list) and parts[0].isdigit() and int(parts[0]) < len(node):
            index, parts = int(parts[0]), parts[1:]
            used.append(str(index))
            if not parts:
                node[index] = value
                return tuple(used)
            node = node[index]
            continue
        if not isinstance(node, dict):
            raise PathError(f"cannot set {'.'.join(parts)!r} inside {type(node).__name__} {node!r} "
                            f"(at {'.'.join(used) or 'the top'}); only mappings have keys")
        size = _longest_key(node, parts)
        name, parts = ".".join(parts[:size]), parts[size:]
        used.append(name)
        if not parts:
            current = node.get(name)
            node[name] = deep_merge(current, value) if isinstance(current, Mapping) and isinstance(value, Mapping) \
                else value
            return tuple(used)
        if node.get(name) is None:
            node[name] = {}
        node = node[name]


def _longest_key(node: dict, parts: tuple[str, ...]) -> int:
    """How many leading ``parts``, joined by dots, make the longest key of ``node`` (1 when none
    does); only prefixes as long as one of ``node``'s keys are joined and looked up, so a level
    costs about the path's length, not its square."""
    lengths = {len(key) for key in node if isinstance(key, str)}
    size, length, longest = 1, -1, max(lengths, default=0)
    for n, part in enumerate(parts, 1):
        length += len(part) + 1
        if length > longest:
            break
        if length in lengths and ".".join(parts[:n]) in node:
            size = n
    return size


def key_paths(node: Any, prefix: tuple = ()) -> Iterable[tuple[str, ...]]:
    """Every key path of nested mappings (inner nodes and leaves), depth first."""
    if isinstance(node, Mapping):
        for key, value in node.items():
            path = (*prefix, str(key))
            yield path
            yield from key_paths(value, path)


_UNSET_VAR = re.compile(r"\$\{(\w+)\}")


def expand_env(node: Any, where: str = "") -> Any:
    """``node`` with ``$VAR`` and ``${VAR}`` environment references expanded in every string
    (``os.path.expandvars``), e.g. ``path: ${MLCOMP_DATA_DIR}/train.npz``; mappings and lists are
    copied, other values kept. A ``$VAR`` of an unset variable stays as written (a ``$`` may
    mean something else, e.g. in a regular expression); a ``${VAR}`` of an unset one is an error.

    Args:
        node: a config or a part of it.
        where: the dotted key path of ``node``, for messages.

    Raises:
        ConfigError: a string refers to ``${VAR}`` and ``VAR`` is not set (the message names the
            key and the variable).
    """
    if isinstance(node, str):
        expanded = os.path.expandvars(node)
        unset = _UNSET_VAR.search(expanded)
        if unset:
            raise ConfigError(f"{where or 'config'}: {node!r} refers to the environment variable "
                              f"{unset.group(1)}, which is not set; set it or write the value")
        return expanded
    if isinstance(node, Mapping):
        return {key: expand_env(value, f"{where}.{key}" if where else str(key)) for key, value in node.items()}
    if isinstance(node, list):
        return [expand_env(value, f"{where}[{index}]") for index, value in enumerate(node)]
    return node
