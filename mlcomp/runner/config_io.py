"""Reading and writing runner config files: YAML files deep-merged in order, with overrides
(:func:`load_config`), and the merged config written back (:func:`save_config`, the run's
``logdir/config.yml``). Merging and the override rules are :mod:`mlcomp.configkit`'s, as for the DAG
spec and grid cells; the YAML reader is :mod:`mlcomp.yamlfile`'s.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import yaml

from mlcomp.configkit import deep_merge, set_by_path
from mlcomp.errors import ConfigError
from mlcomp.yamlfile import read_yaml

__all__ = ["FOLDER_ARGS", "load_config", "save_config"]

FOLDER_ARGS = ("expdir", "out_dir")
"""``args`` keys that :func:`load_config` makes absolute against the working folder."""


def _read_yaml(path: Path) -> dict:
    """One config file's top-level mapping (``{}`` for an empty file)."""
    if not path.is_file():
        raise ConfigError(f"config {path}: no such file")
    data = read_yaml(path, ConfigError, "config").data
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config {path}: the top level must be a mapping, got {type(data).__name__}")
    return data


def load_config(*paths: str | os.PathLike, overrides: Sequence[tuple[str, Any]] = (),
                base: str | os.PathLike | None = None) -> dict:
    """Reads YAML configs, deep-merges them in order and applies ``overrides`` (key, value pairs,
    see :func:`set_by_path`). A relative ``args.expdir`` or ``args.out_dir`` (from a file or an
    override) is made absolute against ``base``, by default the working folder, as Catalyst's
    ``catalyst-dl run`` takes them (a DAG's train task passes its expdir, the folder MLComp runs
    the task in).

    Raises:
        ConfigError: no path, a missing file, a YAML syntax error (file, line and column), a
            top level that is not a mapping, or a bad override.
    """
    if not paths:
        raise ConfigError("no config file given")
    config: dict = {}
    for path in map(Path, paths):
        config = deep_merge(config, _read_yaml(path))
    for key, value in overrides:
        set_by_path(config, key, value)
    args = config.get("args") if isinstance(config.get("args"), dict) else {}
    for key in FOLDER_ARGS:
        if isinstance(args.get(key), (str, Path)) and not os.path.isabs(args[key]):
            args[key] = str((Path(base or os.getcwd()) / args[key]).resolve())
    return config


def save_config(config: Mapping, path: str | os.PathLike) -> Path:
    """Writes ``config`` as YAML (keys in their order) to ``path``, creating its folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(_plain(config), sort_keys=False), encoding="utf-8")
    return path


def _plain(node):
    """``node`` with mappings as dicts of string keys, tuples as lists and paths as strings."""
    if isinstance(node, Mapping):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return [_plain(v) for v in node]
    if isinstance(node, Path):
        return str(node)
    return node

