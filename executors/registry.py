"""Type name → :class:`~executors.base.Executor` class: built-ins, registered classes, and the
user's executors found in a DAG's expdir (MLComp finds them by ``type_name`` the same way).

Built-ins are named by module and imported on first use, so resolving ``bash`` never imports
torch. :func:`known_types` lists every built-in name whether or not its module imports (a type
whose module is missing fails in :func:`get_executor` with the import error): checking them all
would import torch and the runner on every submission.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import inspect
import sys
import threading
from pathlib import Path
from types import ModuleType

from executors.base import Executor
from mlcomp.errors import ExecutorError

__all__ = ["BUILTINS", "register", "get_executor", "known_types", "user_executors"]

# type name -> module defining an Executor subclass with that type_name
BUILTINS = {
    "bash": "executors.bash",
    "python": "executors.python",
    "train": "executors.train",
    "catalyst": "executors.catalyst",
    "infer": "executors.infer",
    "trace": "executors.trace",
    "grid_search": "executors.grid_search",
    "search": "executors.search",
}
USER_FILES = ("executors.py", "executors/__init__.py", "__init__.py")

_registered: dict[str, type[Executor]] = {}
_user_cache: dict[tuple, dict[str, type[Executor]]] = {}
_lock = threading.Lock()


def register(cls: type[Executor]) -> type[Executor]:
    """Class decorator: makes ``cls`` the executor of ``cls.type_name``.

    Raises:
        ExecutorError: ``cls`` is not an Executor subclass, has no string ``type_name``, or the
            name is taken by another class.
    """
    name = _type_name(cls, where=f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)}")
    other = _registered.get(name)
    if other is not None and _where(other) != _where(cls):
        raise ExecutorError(f"executor type {name!r} is registered twice: {_where(other)} and {_where(cls)}")
    _registered[name] = cls
    return cls


def get_executor(type_name: str, expdir: str | Path | None = None) -> type[Executor]:
    """The Executor class for ``type_name``: a built-in, a registered class, or an Executor
    subclass with that ``type_name`` in ``expdir``'s ``executors.py`` or ``__init__.py``.

    Raises:
        ExecutorError: the type is unknown (the message lists the known types), a built-in's
            module cannot be imported, or the user's file fails to import.
    """
    if type_name in BUILTINS:
        return _builtin(type_name)
    if type_name in _registered:
        return _registered[type_name]
    found = user_executors(expdir) if expdir is not None else {}
    if type_name in found:
        return found[type_name]
    known = ", ".join(known_types(expdir))
    raise ExecutorError(f"unknown executor type {type_name!r}; known types: {known}")


def known_types(expdir: str | Path | None = None) -> list[str]:
    """Sorted names of the built-in, registered and (with ``expdir``) user executor types."""
    names = set(BUILTINS) | set(_registered)
    if expdir is not None:
        names |= set(user_executors(expdir))
    return sorted(names)


def user_executors(expdir: str | Path) -> dict[str, type[Executor]]:
    """The Executor subclasses defined in ``expdir/executors.py``, ``expdir/executors/__init__.py``
    (MLComp's layout, a package whose modules it imports relatively) and ``expdir/__init__.py``,
    by type name. A file is imported again only when it changes (size and mtime). Catalyst 20.x
    imports resolve to mlcomp while they load (:mod:`mlcomp.runner.compat.catalyst`).

    Raises:
        ExecutorError: a file fails to import, a class uses a built-in type name, or two classes
            share one.
    """
    found: dict[str, type[Executor]] = {}
    for path in (Path(expdir).resolve() / name for name in USER_FILES):
        if not path.is_file():
            continue
        stat = path.stat()
        key = (str(path), stat.st_mtime_ns, stat.st_size)
        with _lock:
            if key not in _user_cache:
                _user_cache[key] = _classes_in(_import_file(path), path)
        for name, cls in _user_cache[key].items():
            if name in found and found[name] is not cls:
                raise ExecutorError(f"{path}: executor type {name!r} is also defined by {_where(found[name])}")
            found[name] = cls
    return found


def _builtin(type_name: str) -> type[Executor]:
    module_name = BUILTINS[type_name]
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ExecutorError(f"executor type {type_name!r} needs module {module_name}, which cannot be "
                            f"imported: {e}") from e
    if type_name in _registered:
        return _registered[type_name]
    for cls in _subclasses(module):
        if getattr(cls, "type_name", None) == type_name:
            return cls
    raise ExecutorError(f"module {module_name} defines no Executor subclass with type_name {type_name!r}")


def _import_file(path: Path) -> ModuleType:
    """Imports ``path`` as a uniquely named module (a package for an ``__init__.py``) with its
    folder on ``sys.path``; modules it pulls in from that folder are dropped from ``sys.modules``
    afterwards so two DAGs' helper modules of the same name do not collide."""
    from mlcomp.runner.compat.catalyst import catalyst_imports

    folder = str(path.parent)
    name = "mlcomp_user_executors_" + hashlib.sha1(str(path).encode()).hexdigest()[:12]
    package = [folder] if path.name == "__init__.py" else None
    spec = importlib.util.spec_from_file_location(name, path, submodule_search_locations=package)
    module = importlib.util.module_from_spec(spec)
    before = set(sys.modules)
    sys.path.insert(0, folder)
    sys.modules[name] = module
    try:
        with catalyst_imports():
            spec.loader.exec_module(module)
    except Exception as e:
        raise ExecutorError(f"{path}: importing the user's executors failed: {type(e).__name__}: {e}") from e
    finally:
        sys.path.remove(folder)
        for added in set(sys.modules) - before:
            if str(getattr(sys.modules[added], "__file__", None) or "").startswith(folder):
                del sys.modules[added]
    return module


def _own_modules(module: ModuleType) -> list[ModuleType]:
    """``module`` and, for a package, its submodules imported with it (``executors/prep.py``)."""
    found = [module]
    for value in vars(module).values():
        if isinstance(value, ModuleType) and value.__name__.startswith(module.__name__ + "."):
            found += _own_modules(value)
    return found


def _classes_in(package: ModuleType, path: Path) -> dict[str, type[Executor]]:
    found: dict[str, type[Executor]] = {}
    for module in _own_modules(package):
        _add_classes_of(module, path, found)
    return found


def _add_classes_of(module: ModuleType, path: Path, found: dict[str, type[Executor]]) -> None:
    """Adds the executor classes defined in ``module`` to ``found``, by type name."""
    for cls in _subclasses(module):
        if cls.__module__ != module.__name__ or "type_name" not in vars(cls):
            continue  # imported from elsewhere, or an abstract intermediate class
        name = _type_name(cls, where=f"{path}: class {cls.__name__}")
        if name in BUILTINS:
            raise ExecutorError(f"{path}: class {cls.__name__} uses the built-in type name {name!r}; "
                                f"rename it (built-ins: {', '.join(sorted(BUILTINS))})")
        if name in found:
            raise ExecutorError(f"{path}: classes {found[name].__name__} and {cls.__name__} both have "
                                f"type_name {name!r}")
        found[name] = cls


def _subclasses(module: ModuleType) -> list[type[Executor]]:
    return [value for value in vars(module).values()
            if inspect.isclass(value) and issubclass(value, Executor) and value is not Executor]


def _type_name(cls, where: str) -> str:
    if not (inspect.isclass(cls) and issubclass(cls, Executor)):
        raise ExecutorError(f"{where}: an executor must subclass executors.base.Executor")
    name = getattr(cls, "type_name", None)
    if not isinstance(name, str) or not name.strip():
        raise ExecutorError(f"{where}: type_name must be a non-empty string, got {name!r}")
    return name


def _where(cls) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
