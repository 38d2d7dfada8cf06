"""Derives Catalyst 20.x's public surface from its source, as data (``catalyst20.json``).

Run against a git checkout (or bare mirror) of https://github.com/catalyst-team/catalyst::

    python -m mlcomp.runner.compat.derive GIT_DIR [--tags v20.02 v20.05 ...] [--output FILE]

Nothing of Catalyst is imported: each tag's files are read with ``git show TAG:path`` and parsed
with :mod:`ast`. The output has three parts, each name with the tags it exists in:

``modules``
    Every public module path under ``catalyst/``: packages and modules, except tests
    (``tests/`` folders, ``test_*.py``), reinforcement learning (``catalyst.rl*``, dropped by
    20.05 and not part of the supervised runner), scripts and entry points (``scripts/``,
    ``__main__``) and private modules (a ``_`` prefix). A module's public names are its
    ``__all__`` when that is a literal list (or a sum of literal lists); otherwise the classes,
    functions and assignments it defines plus the names it imports from ``catalyst`` itself
    (third-party imports such as ``typing.List`` are not part of its surface), with
    ``from x import *`` followed through ``catalyst`` modules. Top-level ``if`` / ``try`` bodies
    count; function bodies do not.
``registries``
    The names each registry kind holds (``callback``, ``criterion``, ``model``, ``module``,
    ``optimizer``, ``scheduler``, ``transform``, ``sampler``, ``experiment``, ``runner``,
    ``func`` for grad clippers), found the way Catalyst fills them: the ``*_loader`` functions of
    its ``registry.py`` / ``registries.py`` files passed to ``REGISTRY.late_add``, whose
    ``r.add_from_module(m, prefix=...)`` calls add a module's ``__all__`` (here: its public
    names) under each prefix, and whose ``r.add(Name)`` calls add one class. Modules outside
    ``catalyst`` (albumentations, kornia, torch's samplers, segmentation_models_pytorch) are
    listed under ``external`` as ``{"module prefix,prefix": tags}``, not expanded.
``config_names``
    Per registry kind, the registered names that Catalyst's own YAML configs (examples and CI
    configs) use, i.e. what real configs need.

Names are grouped by the set of tags they exist in: ``{"v20.02 v20.05": ["A", "B"], ...}``.
"""
from __future__ import annotations

import argparse
import ast
import functools
import json
import re
import subprocess
from collections import defaultdict
from pathlib import Path

import yaml

__all__ = ["TAGS", "Tag", "derive", "main"]

TAGS = ("v20.02", "v20.05", "v20.08", "v20.10", "v20.12")
"""The Catalyst releases read by default (one per minor line of 20.x that had CI configs)."""

_EXCLUDED_PARTS = {"tests", "scripts", "__main__"}
_CONFIG_KEYS = {"callback", "criterion", "optimizer", "scheduler", "transform", "sampler", "model",
                "experiment", "runner"}
"""The config keys that name a registry entry; each is also the registry's kind."""


def _is_public_module(path: str) -> bool:
    """Whether ``catalyst/...py`` is part of the public surface (see the module docstring)."""
    parts = path[:-3].split("/")
    if parts[-1] == "__init__":
        parts = parts[:-1]
    if len(parts) > 1 and parts[1].startswith("rl"):
        return False
    return not any(p in _EXCLUDED_PARTS or p.startswith("test_") or (p.startswith("_") and p != "__init__")
                   for p in parts)


def _module_name(path: str) -> str:
    name = path[:-3].replace("/", ".")
    return name[: -len(".__init__")] if name.endswith(".__init__") else name


class Tag:
    """One Catalyst tag's source read from a git directory.

    Args:
        git_dir: a git directory (``.git`` of a checkout, or a bare mirror).
        tag: the tag, e.g. ``"v20.05"``.

    Raises:
        subprocess.CalledProcessError: the tag or a file does not exist.
    """

    def __init__(self, git_dir: str | Path, tag: str):
        self.git_dir, self.tag = str(git_dir), tag
        files = self._git("ls-tree", "-r", "--name-only", tag).splitlines()
        self.files = [f for f in files if f.startswith("catalyst/") and f.endswith(".py")]
        self.yaml_files = [f for f in files if f.endswith((".yml", ".yaml"))]
        self.paths = {_module_name(f): f for f in self.files if _is_public_module(f)}
        packages = {name.rsplit(".", i)[0] for name in self.paths for i in range(name.count(".") + 1)}
        self.modules = sorted(packages | set(self.paths))

    def _git(self, *args: str) -> str:
        return subprocess.run(["git", "--git-dir", self.git_dir, *args], check=True,
                              capture_output=True, text=True).stdout

    def source(self, path: str) -> str:
        """The text of ``path`` at this tag."""
        return self._git("show", f"{self.tag}:{path}")

    @functools.lru_cache(maxsize=None)
    def tree(self, module: str) -> ast.Module | None:
        """The parsed module (None for a folder without ``__init__.py`` or outside catalyst)."""
        path = self.paths.get(module) or next((f for f in self.files if _module_name(f) == module), None)
        return ast.parse(self.source(path)) if path else None

    def is_package(self, module: str) -> bool:
        """Whether ``module`` has submodules at this tag."""
        return any(other.startswith(module + ".") for other in self.modules)

    def resolve(self, module: str, level: int, target: str | None) -> str:
        """The absolute name of ``from {'.' * level}{target} import ...`` written in ``module``."""
        if not level:
            return target or ""
        base = module.split(".")
        base = base[: len(base) - level + (1 if self.is_package(module) else 0)]
        return ".".join(base + ([target] if target else []))

    @functools.lru_cache(maxsize=None)
    def exports(self, module: str, factories: bool = False) -> frozenset[str]:
        """The public names of ``module`` (see the module docstring for the rule); with
        ``factories``, a module without ``__all__`` gives only what Catalyst's
        ``Registry.add_from_module`` takes from it: classes and functions, no assignments."""
        tree = self.tree(module)
        if tree is None:
            return frozenset()
        declared = _literal_all(tree)
        if declared is not None:
            return frozenset(declared)
        names: set[str] = set()
        for node in _top_level(tree):
            names |= self._bound_names(module, node, factories)
        return frozenset(n for n in names if not n.startswith("_"))

    def _bound_names(self, module: str, node: ast.stmt, factories: bool) -> set[str]:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            return {node.name}
        if isinstance(node, (ast.Assign, ast.AnnAssign)) and not factories:
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            return {n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name)}
        if isinstance(node, ast.ImportFrom):
            source = self.resolve(module, node.level, node.module)
            if source.split(".")[0] != "catalyst" or source == module:
                return set()
            if node.names[0].name == "*":
                return set(self.exports(source, factories))
            return {alias.asname or alias.name for alias in node.names
                    if not (factories and f"{source}.{alias.name}" in self.modules)}
        return set()


def _top_level(tree: ast.Module):
    """The module's statements, with the bodies of top-level ``if`` / ``try`` blocks."""
    pending = list(tree.body)
    while pending:
        node = pending.pop(0)
        if isinstance(node, ast.If):
            pending[:0] = node.body + node.orelse
        elif isinstance(node, ast.Try):
            pending[:0] = node.body + [s for h in node.handlers for s in h.body] + node.orelse + node.finalbody
        else:
            yield node


def _literal_all(tree: ast.Module) -> list[str] | None:
    """``__all__`` when it is a literal list of strings (or a sum of such lists), else None."""
    for node in _top_level(tree):
        if isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "__all__"
                                                for t in node.targets):
            try:
                return [str(n) for n in _literal_sum(node.value)]
            except ValueError:
                return None
    return None


def _literal_sum(node: ast.expr) -> list:
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _literal_sum(node.left) + _literal_sum(node.right)
    value = ast.literal_eval(node)
    if not isinstance(value, (list, tuple)):
        raise ValueError(value)
    return list(value)


# -- registries --------------------------------------------------------------------------------


def _registry_trees(tag: Tag) -> list[tuple[str, ast.Module]]:
    paths = [f for f in tag.files if f.rsplit("/", 1)[-1] in ("registry.py", "registries.py")
             and _is_public_module(f)]
    return [(_module_name(f), ast.parse(tag.source(f))) for f in paths]


def _registry_kinds(trees) -> dict[str, str]:
    """``{registry variable: kind}`` over every registry file (``X = Registry("kind")`` and
    aliases such as ``CALLBACKS = CALLBACK``)."""
    kinds: dict[str, str] = {}
    for _, tree in trees:
        for node in _top_level(tree):
            if not (isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name)):
                continue
            value = node.value
            if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "Registry":
                kinds[node.targets[0].id] = ast.literal_eval(value.args[0])
            elif isinstance(value, ast.Name) and value.id in kinds:
                kinds[node.targets[0].id] = kinds[value.id]
    return kinds


def _loader_sources(tag: Tag, module: str, function: ast.FunctionDef):
    """``(module, prefixes, names)`` added by one ``*_loader`` function, in source order (a
    loader may rebind one alias to several modules): ``names`` is None for a whole module
    (``add_from_module``), else the classes ``r.add(Name)`` adds."""
    aliases: dict[str, str] = {}
    for node in sorted((n for n in ast.walk(function) if isinstance(n, (ast.Import, ast.ImportFrom, ast.Call))),
                       key=lambda n: (n.lineno, n.col_offset)):
        if isinstance(node, ast.Import):
            aliases.update({a.asname or a.name: a.name for a in node.names})
        elif isinstance(node, ast.ImportFrom):
            aliases.update(_from_aliases(tag, module, node))
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "add_from_module":
            prefix = next((ast.literal_eval(k.value) for k in node.keywords if k.arg == "prefix"),
                          ast.literal_eval(node.args[1]) if len(node.args) > 1 else "")
            yield aliases[node.args[0].id], [prefix] if isinstance(prefix, str) else prefix, None
        elif isinstance(node.func, ast.Attribute) and node.func.attr == "add":
            for arg in node.args:
                source, _, name = aliases.get(arg.id, f"{module}:{arg.id}").partition(":")
                yield source, [""], [name]
            if any(k.arg is None for k in node.keywords):  # r.add(**factories) over an imported module
                yield next(m for m in reversed(aliases.values()) if ":" not in m), [""], None


def _from_aliases(tag: Tag, module: str, node: ast.ImportFrom) -> dict[str, str]:
    """``{alias: "package.module"}`` for imported modules, ``{alias: "module:Name"}`` for names."""
    source = tag.resolve(module, node.level, node.module)
    aliases = {}
    for a in node.names:
        child = f"{source}.{a.name}"
        is_module = child in tag.modules if source.startswith("catalyst") else a.name.islower()
        aliases[a.asname or a.name] = child if is_module else f"{source}:{a.name}"
    return aliases


def registered(tag: Tag) -> tuple[dict[str, set[str]], dict[str, set[tuple[str, tuple[str, ...]]]]]:
    """``(names, external)`` of every registry kind at ``tag``: Catalyst names with their
    prefixes, and ``(module, prefixes)`` of modules outside catalyst."""
    trees = _registry_trees(tag)
    kinds = _registry_kinds(trees)
    names: dict[str, set[str]] = defaultdict(set)
    external: dict[str, set] = defaultdict(set)
    for module, tree in trees:
        functions = {n.name: n for n in tree.body if isinstance(n, ast.FunctionDef)}
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and getattr(node.func, "attr", None) == "late_add"):
                continue
            kind = kinds[node.func.value.id]
            for source, prefixes, added in _loader_sources(tag, module, functions[node.args[0].id]):
                if source.split(".")[0] != "catalyst":
                    external[kind].add((source, tuple(prefixes)))
                    continue
                members = added if added is not None else _factories(tag, source)
                names[kind] |= {p + n for p in prefixes for n in members}
    return names, external


def _factories(tag: Tag, module: str) -> set[str]:
    """The names ``add_from_module`` takes from a catalyst module, less submodules and
    upper-case names (constants and settings objects re-exported without ``__all__``)."""
    return {n for n in tag.exports(module, factories=True)
            if f"{module}.{n}" not in tag.modules and not n.isupper()}


# -- configs ----------------------------------------------------------------------------------


def config_names(tag: Tag) -> dict[str, set[str]]:
    """Names under the registry keys (``callback:``, ``criterion:``, ...) of the tag's YAML
    files; unreadable files (templated ones) are skipped."""
    found: dict[str, set[str]] = defaultdict(set)
    for path in tag.yaml_files:
        try:
            document = yaml.safe_load(tag.source(path))
        except yaml.YAMLError:
            continue
        for key, value in _key_values(document):
            if key in _CONFIG_KEYS and isinstance(value, str):
                found[key].add(value)
    return found


def _key_values(node):
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            yield from _key_values(value)
    elif isinstance(node, list):
        for item in node:
            yield from _key_values(item)


# -- output -----------------------------------------------------------------------------------


def _by_tags(presence: dict[str, list[str]]) -> dict[str, list[str]]:
    """``{name: tags}`` regrouped as ``{"tag tag": sorted names}``."""
    groups: dict[str, list[str]] = defaultdict(list)
    for name, tags in sorted(presence.items()):
        groups[" ".join(tags)].append(name)
    return dict(sorted(groups.items()))


def derive(git_dir: str | Path, tags=TAGS) -> dict:
    """The surface of Catalyst at ``tags`` (see the module docstring for its three parts).

    Raises:
        subprocess.CalledProcessError: ``git_dir`` is not a git directory or lacks a tag.
    """
    modules: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    module_tags: dict[str, list[str]] = defaultdict(list)
    names: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    external: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    used: dict[str, set[str]] = defaultdict(set)
    for tag_name in tags:
        tag = Tag(git_dir, tag_name)
        for module in tag.modules:
            module_tags[module].append(tag_name)
            for name in tag.exports(module):
                modules[module][name].append(tag_name)
        tag_names, tag_external = registered(tag)
        for kind, members in tag_names.items():
            for name in members:
                names[kind][name].append(tag_name)
        for kind, sources in tag_external.items():
            for source, prefixes in sources:
                external[kind][f"{source} {','.join(prefixes)}"].append(tag_name)
        for kind, members in config_names(tag).items():
            used[kind] |= members
    return {
        "source": {"repository": "https://github.com/catalyst-team/catalyst", "tags": list(tags),
                   "derived_by": "mlcomp.runner.compat.derive"},
        "modules": {m: {"tags": module_tags[m], "names": _by_tags(modules[m])} for m in sorted(module_tags)},
        "registries": {k: {"names": _by_tags(names[k]),
                           "external": {src: tags_ for src, tags_ in sorted(external[k].items())}}
                       for k in sorted(set(names) | set(external))},
        "config_names": {k: sorted(used[k] & set(names.get(k, ()))) for k in sorted(used)},
    }


def main(argv: list[str] | None = None) -> None:
    """Command line: writes :func:`derive`'s result as JSON (default: next to this module)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("git_dir", help="git directory of a catalyst checkout or mirror")
    parser.add_argument("--tags", nargs="+", default=list(TAGS))
    parser.add_argument("--output", default=str(Path(__file__).with_name("catalyst20.json")))
    args = parser.parse_args(argv)
    data = derive(args.git_dir, args.tags)
    text = json.dumps(data, indent=1, sort_keys=False)
    Path(args.output).write_text(re.sub(r'\[\s+([^\[\]{}]*?)\s+\]', _one_line, text) + "\n")


def _one_line(match: re.Match) -> str:
    return "[" + " ".join(match.group(1).split()) + "]"


if __name__ == "__main__":
    main()
