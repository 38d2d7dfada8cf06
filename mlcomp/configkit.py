"""One toolkit for nested config mappings, used by the runner's configs (``--key=value``
overrides, a train task's ``params``), the DAG spec (``--set``) and grid cells
(``Executor.apply_cell``), so they share one set of rules:

* :func:`deep_merge` merges mappings recursively; lists and scalars are replaced (Catalyst's
  ``merge_dicts``);
* :func:`set_path` sets a value at a dotted path: at each level the longest run of parts that
  names an existing key wins (a task named ``a.b`` is one key), a decimal part indexes an existing
  list (``grid.0.lr``), missing mappings are created, and a mapping set onto a mapping is
  deep-merged into it (MLComp's ``merge_dicts_smart``) while anything else replaces the value;
* :func:`expand_env` expands ``${VAR}`` references to environment variables in strings;
* :func:`set_by_path` and :func:`parse_overrides` are the override rules of a runner config
  (``--key=value`` of ``mlcomp run``, a train task's ``params``, a grid cell or search trial):
  a ``/`` path from the root, a dotted path from a top-level key, or a unique key suffix, and
  Catalyst's typed values (``--stages/state_params/num_epochs=1:int``).

Every dotted key is split by :func:`split_path`. Errors of the path functions are
:class:`PathError` (a ``ValueError``); each caller turns them into its own error with its file,
line and key. The override rules raise :class:`~mlcomp.errors.ConfigError`.
"""
from __future__ import annotations

import ast
import copy
import difflib
import itertools
import os
import re
from typing import Any, Iterable, Mapping, Sequence

from mlcomp.errors import ConfigError
from mlcomp.yamlfile import MAX_DEPTH, parse_yaml

__all__ = ["PathError", "deep_merge", "set_path", "split_path", "key_paths", "expand_env", "MAX_PARTS",
           "RUNNER_CONFIG_KEYS", "RUNNER_ARGS_KEYS", "set_by_path", "OVERRIDE_TYPES", "parse_overrides"]

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


# ---------------------------------------------------------------------------------------------
# the override rules of a runner config

RUNNER_CONFIG_KEYS = ("model_params", "args", "runner_params", "distributed_params", "experiment_params", "stages")
"""The top-level keys of a runner config (:data:`mlcomp.runner.config_schema.TOP_LEVEL_KEYS`): a dotted
override whose first part is one of them is a path from the root (:func:`set_by_path`)."""
RUNNER_ARGS_KEYS = ("expdir", "logdir", "baselogdir", "seed", "verbose", "check", "overfit", "timeit",
                    "resume", "autoresume", "deterministic", "benchmark", "out_dir", "out_prefix")
"""A runner config's ``args`` keys (Catalyst 20.x ``catalyst-dl run``'s; the runner's
:data:`mlcomp.runner.config_schema.ARGS_KEYS`): ``baselogdir`` gives a logdir under it when there is
none (see :func:`mlcomp.cli.catalyst.derived_logdir`); ``out_dir``/``out_prefix`` say where an
``InferCallback`` writes its ``.npy`` files, as Catalyst's run state handed them to it. A single
override name that matches no key of the config but is one of these is set under ``args``."""


def set_by_path(config: dict, key: str, value: Any) -> str:
    """Sets ``value`` in the runner config ``config`` (in place) at ``key`` and returns the full
    dotted path used.

    ``key`` is, in this order:

    - a ``/``-separated path from the root (``stages/state_params/num_epochs``, Catalyst 20.x's
      ``catalyst-dl run`` form): set there, missing mappings created, as Catalyst's
      ``parse_config_args`` did;
    - a dotted path from the root (``stages.main.optimizer_params.lr``) when its first part is a
      top-level key, set by :func:`set_path` (missing mappings created, a mapping deep-merged
      into a mapping);
    - otherwise a suffix of exactly one existing path (``lr``, ``main.optimizer_params.lr``), as a
      grid search cell uses it; a single name that matches no path but is an ``args`` key
      (:data:`RUNNER_ARGS_KEYS`, e.g. ``out_dir``) is set under ``args``.

    Raises:
        ConfigError: the suffix matches no path (close matches are listed) or several (all of
            them are listed), or a part of the path is not a mapping.
    """
    matches = []
    try:
        if "/" in key:
            return ".".join(set_path(config, tuple(key.strip("/").split("/")), value))
        parts = split_path(key)
        if parts[0] in config or parts[0] in RUNNER_CONFIG_KEYS:
            return ".".join(set_path(config, parts, value))
        matches = [p for p in key_paths(config) if p[-len(parts):] == parts]
        if len(matches) == 1:
            return ".".join(set_path(config, matches[0], value))
        if not matches and len(parts) == 1 and key in RUNNER_ARGS_KEYS:
            return ".".join(set_path(config, ("args", key), value))
    except PathError as e:
        raise ConfigError(f"override {key!r}: {e}") from None
    if matches:
        listed = ", ".join(".".join(p) for p in matches)
        raise ConfigError(f"override {key!r} is ambiguous: it matches {listed}; give a longer dotted path")
    every = [".".join(p) for p in key_paths(config)]
    close = difflib.get_close_matches(key, every, n=5, cutoff=0.5) or \
        difflib.get_close_matches(parts[-1], sorted({p[-1] for p in key_paths(config)}), n=5, cutoff=0.5)
    hint = f"; close matches: {', '.join(close)}" if close else f"; top-level keys: {', '.join(RUNNER_CONFIG_KEYS)}"
    raise ConfigError(f"override {key!r} matches no key of the config{hint}")


OVERRIDE_TYPES = {"int": int, "float": float, "bool": bool, "str": str, "list": list, "tuple": tuple, "dict": dict}
"""Type suffixes of Catalyst 20.x's typed overrides (``--key=value:int``) and their constructors."""
_TYPED = re.compile(rf"(?s)(.*):({'|'.join(OVERRIDE_TYPES)})")


def parse_overrides(tokens: Sequence[str]) -> list[tuple[str, Any]]:
    """``--key=value`` command-line tokens → ``(key, value)`` pairs for :func:`set_by_path`.

    Two forms are read (a token may also be ``--key value``):

    - **typed**, Catalyst 20.x's ``catalyst-dl run`` form (``parse_config_args`` of 20.02–20.12):
      a value ending in ``:int``, ``:float``, ``:bool``, ``:str``, ``:list``, ``:tuple`` or
      ``:dict``. The text before the suffix is a Python literal given to that type
      (``1e-3:float``, ``[1, 2]:list``, ``True:bool``; empty → the type's empty value), or, for
      ``str``, the text itself (``none`` → None in a ``/`` path, as in Catalyst). As in Catalyst,
      a key without ``/`` names an ``args`` key (``--out_dir=logs:str`` → ``args/out_dir``);
      Catalyst evaluated the text with ``eval``, this reads literals only.
    - **untyped**, mlcomp's: the value is a YAML scalar (``5`` → int, ``true`` → bool, ``null``
      → None, ``[1, 2]`` → list) and the key a dotted path, ``/`` path or unique key suffix.

    Raises:
        ConfigError: a token is not ``--key=value`` or ``--key value``, a value is bad YAML, or
            a typed value is not a literal of its type.
    """
    pairs, rest = [], list(tokens)
    while rest:
        token = rest.pop(0)
        if not token.startswith("--") or len(token) < 3:
            raise ConfigError(f"override {token!r}: expected --dotted.key=value or --a/b/c=value:type")
        key, eq, text = token[2:].partition("=")
        if not eq:
            if not rest or rest[0].startswith("--"):
                raise ConfigError(f"override --{key}: no value (use --{key}=VALUE)")
            text = rest.pop(0)
        pairs.append(_override(key, text))
    return pairs


def _override(key: str, text: str) -> tuple[str, Any]:
    """One ``--key=text`` token as a ``(key, value)`` pair (see :func:`parse_overrides`)."""
    typed = _TYPED.fullmatch(text)
    if typed is None:
        return key, parse_yaml(text, f"override --{key}", ConfigError).data if text else ""
    content, kind = typed.groups()
    path = "/" in key
    key = key if path else f"args/{key}"
    if kind == "str":
        return key, None if path and content.lower() == "none" else content
    return key, _typed_value(key, content, kind)


def _typed_value(key: str, content: str, kind: str) -> Any:
    """``content`` read as a Python literal and converted by ``kind`` (Catalyst's ``kind(content)``)."""
    try:
        return OVERRIDE_TYPES[kind](*([ast.literal_eval(content)] if content.strip() else []))
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError) as e:
        raise ConfigError(f"override --{key}: {content!r} is not a Python literal of type {kind} ({e}); "
                          f"e.g. 3:int, 1e-3:float, True:bool, [1, 2]:list, {{'a': 1}}:dict") from None
