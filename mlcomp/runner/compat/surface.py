"""Catalyst 20.02–20.12's public surface, read from ``catalyst20.json`` (written by
:mod:`mlcomp.runner.compat.derive` from Catalyst's source): its module paths with their public
names, the names its registries hold, and the registered names its own configs use.
"""
from __future__ import annotations

import functools
import importlib.resources
import json

__all__ = ["source", "modules", "names", "registered", "external", "config_names", "tags_text", "SOURCE_TAGS"]


@functools.lru_cache(maxsize=1)
def _data() -> dict:
    return json.loads(importlib.resources.files(__package__).joinpath("catalyst20.json").read_text("utf-8"))


def _expand(groups: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{"tag tag": names}`` → ``{name: tags}``."""
    return {name: tags.split() for tags, members in groups.items() for name in members}


SOURCE_TAGS: tuple[str, ...] = ("v20.02", "v20.05", "v20.08", "v20.10", "v20.12")
"""The Catalyst tags the data was derived from (also recorded in the file)."""


def source() -> dict:
    """Where the data comes from: ``{"repository", "tags", "derived_by"}``."""
    return _data()["source"]


@functools.lru_cache(maxsize=1)
def modules() -> dict[str, list[str]]:
    """``{module path: tags}`` of every public Catalyst module (``catalyst.contrib.data``...)."""
    return {name: entry["tags"] for name, entry in _data()["modules"].items()}


@functools.lru_cache(maxsize=None)
def names(module: str) -> dict[str, list[str]]:
    """``{public name: tags}`` of a Catalyst module; empty for an unknown module."""
    entry = _data()["modules"].get(module)
    return _expand(entry["names"]) if entry else {}


@functools.lru_cache(maxsize=None)
def registered(kind: str) -> dict[str, list[str]]:
    """``{name: tags}`` registered in Catalyst's ``kind`` registry (``"callback"``, ``"model"``,
    ``"module"``, ``"transform"``...); prefixed names (``catalyst.ToTensor``) included."""
    entry = _data()["registries"].get(kind)
    return _expand(entry["names"]) if entry else {}


def external(kind: str) -> list[tuple[str, list[str], list[str]]]:
    """``[(module, prefixes, tags)]``: the modules outside catalyst whose names Catalyst's
    ``kind`` registry took under ``prefixes`` (``("albumentations", ["A.", ...], tags)``)."""
    entry = _data()["registries"].get(kind, {})
    return [(source.split(" ")[0], source.split(" ")[1].split(","), tags)
            for source, tags in entry.get("external", {}).items()]


def config_names() -> dict[str, list[str]]:
    """``{kind: names}``: registered names that Catalyst's own YAML configs use."""
    return _data()["config_names"]


def tags_text(tags: list[str]) -> str:
    """Tags for messages: a run of :data:`SOURCE_TAGS` as a range (``"20.05–20.12"``), one tag
    alone (``"20.10"``), others listed (``"20.02, 20.08"``)."""
    versions = [tag.lstrip("v") for tag in tags]
    start = SOURCE_TAGS.index(tags[0]) if tags[0] in SOURCE_TAGS else -1
    if len(tags) > 1 and list(SOURCE_TAGS[start:start + len(tags)]) == list(tags) and start >= 0:
        return f"{versions[0]}–{versions[-1]}"
    return ", ".join(versions)
