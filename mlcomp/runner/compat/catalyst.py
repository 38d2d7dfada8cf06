"""Catalyst 20.x imports for experiment folders, when the real ``catalyst`` is not installed.

While an expdir (or a DAG's user executors) is imported, :func:`catalyst_imports` puts a
:class:`importlib.abc.MetaPathFinder` on ``sys.meta_path`` (PEP 451 finders and loaders) that
answers every public module path of Catalyst 20.02–20.12 (``catalyst.dl``,
``catalyst.contrib.data``, ``catalyst.contrib.datasets``, ``catalyst.dl.experiment``,
``catalyst.core``, ...; the list is data, :mod:`mlcomp.runner.compat.surface`) with a module
whose names are mlcomp's equivalents of that Catalyst module's public names
(:mod:`mlcomp.runner.compat.equivalents`): the registries, runners, experiments, callbacks,
metrics, losses, samplers, datasets, transforms and ``catalyst.utils`` helpers.

A public Catalyst name mlcomp has no equivalent of raises
:class:`~mlcomp.runner.compat.equivalents.NotProvidedError` (an ``ImportError``) naming the
Catalyst module and saying it is not provided, on attribute access and on
``from catalyst.x import Name``; ``from catalyst.x import *`` takes the provided names. A name
Catalyst never had is an ``AttributeError``; a ``catalyst.*`` module outside Catalyst
20.02–20.12's public modules is a ``ModuleNotFoundError``. When the real package is installed,
nothing is hooked and it is used as it is.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import sys
import threading
from types import ModuleType
from typing import Iterator

from mlcomp.runner.compat import equivalents, surface
from mlcomp.runner.compat.equivalents import NotProvidedError

__all__ = ["catalyst_imports", "CatalystFinder", "provided", "NotProvidedError"]


def provided(module: str) -> dict:
    """``{name: mlcomp object}`` for the public names of Catalyst's ``module`` that mlcomp
    provides (submodules excluded: they are imported on access)."""
    result = {}
    for name in surface.names(module):
        if f"{module}.{name}" in surface.modules():
            continue
        try:
            result[name] = equivalents.resolve(module, name)
        except NotProvidedError:
            pass
    return result


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        names = provided(module.__name__)
        module.__dict__.update(names)
        module.__all__ = sorted(names)
        module.__getattr__ = _missing(module.__name__)


def _missing(name: str):
    def __getattr__(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        if f"{name}.{attribute}" in surface.modules():
            return importlib.import_module(f"{name}.{attribute}")
        if attribute in surface.names(name):
            return equivalents.resolve(name, attribute)  # raises NotProvidedError
        raise AttributeError(f"module {name!r} has no attribute {attribute!r}: it is not a public name of "
                             f"Catalyst {surface.tags_text(list(surface.SOURCE_TAGS))}'s {name}")
    return __getattr__


class CatalystFinder(importlib.abc.MetaPathFinder):
    """Finds Catalyst 20.02–20.12's public modules (:func:`mlcomp.runner.compat.surface.modules`)
    and refuses other ``catalyst.*`` modules."""

    def find_spec(self, fullname: str, path=None, target=None):
        """A spec for a Catalyst module, None for a name outside ``catalyst``.

        Raises:
            ModuleNotFoundError: a ``catalyst.*`` module that is not one of Catalyst 20.x's
                public modules.
        """
        if fullname != "catalyst" and not fullname.startswith("catalyst."):
            return None
        modules = surface.modules()
        if fullname not in modules:
            parent = fullname.rsplit(".", 1)[0]
            siblings = sorted(m for m in modules if m != parent and m.rsplit(".", 1)[0] == parent)
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: catalyst is not installed, and it is not one of Catalyst "
                f"{surface.tags_text(list(surface.SOURCE_TAGS))}'s public modules that mlcomp's compatibility "
                f"layer provides (under {parent}: {', '.join(siblings) or 'none'})", name=fullname)
        is_package = any(other.startswith(fullname + ".") for other in modules)
        spec = importlib.machinery.ModuleSpec(fullname, _Loader(), origin=__file__, is_package=is_package)
        spec.has_location = True  # __file__ names this module in "cannot import name" errors
        return spec


_FINDER = CatalystFinder()
_lock = threading.RLock()


def _real_catalyst_installed() -> bool:
    module = sys.modules.get("catalyst")
    if module is not None:
        return not isinstance(getattr(module, "__loader__", None), _Loader)
    return importlib.machinery.PathFinder.find_spec("catalyst") is not None


@contextlib.contextmanager
def catalyst_imports() -> Iterator[bool]:
    """Within the block, ``catalyst…`` imports resolve to mlcomp (see the module docstring)
    unless the real catalyst is installed; yields whether the hook is active. Modules imported
    in the block stay in ``sys.modules``, so code that imported them keeps working after it."""
    with _lock:
        if _real_catalyst_installed() or _FINDER in sys.meta_path:
            yield False
            return
        sys.meta_path.insert(0, _FINDER)
        try:
            yield True
        finally:
            sys.meta_path.remove(_FINDER)
