"""Type name → :class:`~executors.base.Executor` class: built-ins, registered classes, and the
user's executors found in a DAG's folder (:mod:`executors.discovery`, MLComp's rule).

Built-ins are named by module and imported on first use, so resolving ``bash`` never imports
torch. :func:`known_types` lists every built-in name whether or not its module imports (a type
whose module is missing fails in :func:`get_executor` with the import error): checking them all
would import torch and the runner on every submission. A type is looked up in this order: a
built-in's own name, a registered class, the DAG folder's executors, then a built-in under
MLComp's class-name form (``type: Submit`` is ``submit``, as MLComp registered its ``Submit``).

The composite task kinds (``grid_search``, ``search``: :class:`mlcomp.kinds.TaskKind`) are no
executors: their parents run no process and the supervisor drives them
(:mod:`mlcomp.search.drivers`). Their names are kept: no executor may take one, :func:`get_executor`
refuses them, and :func:`known_types` lists them among the ``type:`` values a DAG file may use.
"""
from __future__ import annotations

import importlib
import inspect
import threading
from pathlib import Path
from types import ModuleType

from executors import discovery
from executors.base import Executor
from mlcomp.errors import ExecutorError
from mlcomp.kinds import COMPOSITE_KINDS

__all__ = ["BUILTINS", "register", "get_executor", "known_types"]

# type name -> module defining an Executor subclass with that type_name
BUILTINS = {
    "bash": "executors.bash",
    "python": "executors.python",
    "train": "executors.train",
    "catalyst": "executors.catalyst",
    "infer": "executors.infer",
    "trace": "executors.trace",
    "click": "executors.click",
    "download": "executors.download",
    "split": "executors.split",
    "submit": "executors.submit",
}

_registered: dict[str, type[Executor]] = {}
_user_cache: dict[tuple, dict[str, type[Executor]]] = {}
_lock = threading.Lock()


def register(cls: type[Executor]) -> type[Executor]:
    """Class decorator: makes ``cls`` the executor of ``cls.type_name``.

    Raises:
        ExecutorError: ``cls`` is not an Executor subclass, has no string ``type_name``, the
            name is taken by another class or is a composite kind (:data:`mlcomp.kinds.COMPOSITE_KINDS`).
    """
    name = _type_name(cls, where=f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__name__', cls)}")
    if name in COMPOSITE_KINDS:
        raise ExecutorError(f"executor type {name!r} is a composite task kind, which has no executor; rename it")
    other = _registered.get(name)
    if other is not None and _where(other) != _where(cls):
        raise ExecutorError(f"executor type {name!r} is registered twice: {_where(other)} and {_where(cls)}")
    _registered[name] = cls
    return cls


def get_executor(type_name: str, expdir: str | Path | None = None) -> type[Executor]:
    """The Executor class for ``type_name``: a built-in, a registered class, an Executor
    subclass declaring that type in a module of ``expdir`` or of its direct sub-folders
    (:mod:`executors.discovery`; only that module is imported), or a built-in named the way
    MLComp named its classes (``Submit``).

    Raises:
        ExecutorError: the type is unknown (the message lists the known types and any module
            that could not be read), declared in two modules (both named), a built-in's module
            cannot be imported, or the user's module fails to import; ``type_name`` is a composite
            kind (:data:`mlcomp.kinds.COMPOSITE_KINDS`), which has no executor.
    """
    if type_name in COMPOSITE_KINDS:
        raise ExecutorError(f"task type {type_name!r} is a composite kind (the parent of a grid search's cells or "
                            f"a search's trials): it runs no process and has no executor")
    if type_name in BUILTINS:
        return _builtin(type_name)
    if type_name in _registered:
        return _registered[type_name]
    folder = Path(expdir).resolve() if expdir is not None else None
    found, unreadable = discovery.declarations(folder) if folder is not None else ({}, [])
    if type_name in found:
        return _user_executor(type_name, found[type_name], folder)
    if discovery.to_snake(type_name) in BUILTINS:
        return _builtin(discovery.to_snake(type_name))
    known = ", ".join(known_types(expdir))
    unread = f"; modules that could not be read: {'; '.join(unreadable)}" if unreadable else ""
    raise ExecutorError(f"unknown executor type {type_name!r}; known types: {known}{unread}")


def known_types(expdir: str | Path | None = None) -> list[str]:
    """Sorted ``type:`` values a DAG file may use: the names of the built-in, registered and (with
    ``expdir``) user executor types, and the composite kinds (:data:`mlcomp.kinds.COMPOSITE_KINDS`,
    which have no executor); the user's are read from source
    (:func:`executors.discovery.declarations`), nothing is imported."""
    names = set(BUILTINS) | set(_registered) | COMPOSITE_KINDS
    if expdir is not None:
        names |= set(discovery.declarations(Path(expdir).resolve())[0])
    return sorted(names)


def _user_executor(type_name: str, places: list[discovery.Declaration], folder: Path) -> type[Executor]:
    """Imports the one module of the DAG folder ``folder`` declaring ``type_name`` (again only
    when it changed) and returns its class for the type."""
    files = list(dict.fromkeys(place.path for place in places))
    if len(files) > 1:
        raise ExecutorError(f"executor type {type_name!r} is declared in {len(files)} modules: "
                            f"{' and '.join(map(str, places))}; rename one of the classes")
    path = files[0]
    stat = path.stat()
    key = (str(folder), str(path), stat.st_mtime_ns, stat.st_size)
    with _lock:
        if key not in _user_cache:
            _user_cache[key] = _classes_in(discovery.import_module(folder, path), path)
    classes = _user_cache[key]
    if type_name not in classes:
        raise ExecutorError(f"{places[0]} declares executor type {type_name!r}, but importing {path.name} "
                            f"gives no Executor subclass of that type (subclass executors.Executor or "
                            f"mlcomp.worker.executors.Executor)")
    return classes[type_name]


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


def _classes_in(module: ModuleType, path: Path) -> dict[str, type[Executor]]:
    """The executor classes defined in ``module`` (not imported into it), by type name.

    Raises:
        ExecutorError: a class has no usable ``type_name``, takes a built-in's, or shares one.
    """
    found: dict[str, type[Executor]] = {}
    for cls in _subclasses(module):
        if cls.__module__ != module.__name__ or "type_name" not in vars(cls):
            continue  # imported from elsewhere, or an abstract intermediate class
        name = _type_name(cls, where=f"{path}: class {cls.__name__}")
        if name in BUILTINS or name in COMPOSITE_KINDS:
            raise ExecutorError(f"{path}: class {cls.__name__} uses the built-in type name {name!r}; "
                                f"rename it (built-ins: {', '.join(sorted(set(BUILTINS) | COMPOSITE_KINDS))})")
        if name in found:
            raise ExecutorError(f"{path}: classes {found[name].__name__} and {cls.__name__} both have "
                                f"type_name {name!r}")
        found[name] = cls
    return found


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
