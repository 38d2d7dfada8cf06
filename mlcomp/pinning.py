"""Keep a user's folders from shadowing mlcomp's own top-level packages.

mlcomp installs three top-level packages, :data:`OWN_PACKAGES`: ``mlcomp``, ``executors`` and
``ui``. A DAG's folder often has an ``executors/`` package of its own (MLComp's examples do), and
the expdir a run imports is put on ``sys.path``. Which ``executors`` an ``import executors`` then
finds depends on how mlcomp was installed: a wheel or a "compat" editable install puts mlcomp's
folder on ``sys.path`` before any folder appended later, but setuptools' default editable install
maps the names with a finder on ``sys.meta_path`` that comes *after* the ``PathFinder``, so any
folder on ``sys.path`` that holds ``executors/`` wins. A process started with ``spawn`` (a rank of
:func:`mlcomp.runner.distributed.launch`) inherits the parent's ``sys.path``, user folders
included, and imports everything afresh.

:func:`pin_own_packages` puts a finder first on ``sys.meta_path`` that resolves exactly these
names to the folders installed beside this package (siblings in a wheel, in the source tree of an
editable install and in its link tree alike), whatever ``sys.path`` holds. Submodules
(``executors.train``) are found through the pinned package's ``__path__``, so they follow. The
processes mlcomp starts call it before anything imports user code: the task's child
(:mod:`mlcomp.worker.child`) and each rank of ``launch``.
"""
from __future__ import annotations

import importlib.abc
import importlib.util
import sys
from pathlib import Path

__all__ = ["OWN_PACKAGES", "pin_own_packages", "OwnPackagesFinder"]

OWN_PACKAGES = ("mlcomp", "executors", "ui")
"""The top-level packages of the mlcomp distribution (``setup.py``'s ``packages``)."""

_ROOT = Path(__file__).parent.parent


class OwnPackagesFinder(importlib.abc.MetaPathFinder):
    """Finds :data:`OWN_PACKAGES` in the folder ``root`` (their installed parent) and nothing else."""

    def __init__(self, root: Path = _ROOT):
        self.root = root

    def find_spec(self, fullname, path=None, target=None):
        """The spec of ``root/fullname/__init__.py`` for a top-level name of :data:`OWN_PACKAGES`;
        None for any other name (the next finder looks)."""
        if path is not None or fullname not in OWN_PACKAGES:
            return None
        folder = self.root / fullname
        return importlib.util.spec_from_file_location(fullname, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])


def pin_own_packages() -> None:
    """Make ``import mlcomp|executors|ui`` resolve to mlcomp's installed packages in this process
    from now on, by putting an :class:`OwnPackagesFinder` first on ``sys.meta_path`` (once; a
    second call does nothing).

    Raises:
        ImportError: one of these packages was already imported from another folder (a user's
            folder shadowed it before the call); the message names both folders.
    """
    for name in OWN_PACKAGES:
        module = sys.modules.get(name)
        file = getattr(module, "__file__", None)
        expected = _ROOT / name / "__init__.py"
        if module is not None and (file is None or Path(file).resolve() != expected.resolve()):
            raise ImportError(f"the module {name!r} was imported from {file or 'a namespace package'}, which "
                              f"shadows mlcomp's package at {expected.parent}; rename that folder of yours "
                              f"or keep it off sys.path", name=name)
    if not any(isinstance(finder, OwnPackagesFinder) for finder in sys.meta_path):
        sys.meta_path.insert(0, OwnPackagesFinder())
