"""Finding a DAG's own executor types in its folder without importing what does not define them.

This is MLComp's rule (``Storage.import_executor``): every module of the DAG's folder and of its
direct sub-folders is read as source (MLComp used ``pyclbr``; here :mod:`ast`), and only the module
that declares the type asked for is imported, so a broken or heavy module elsewhere in the folder
neither breaks nor slows the DAG. A class declares a type

* with a string ``type_name = "..."`` in its body (this package's API), or
* by being decorated with ``register`` (``@Executor.register`` of MLComp's API), under MLComp's
  names for it: the class name, its lower case and its snake case (:func:`mlcomp_names`).

MLComp matched any class by name and checked the registration after the import; asking for the
declaration up front keeps a same-named model or dataset class from being taken for an executor.

A module is imported under a package named after its folder (``mlcomp_dag_<hash>.executors.infer``),
whose own ``__init__.py`` is not run unless it is the module asked for, so relative imports work
and no user module can take the name of one of mlcomp's (``executors``, ``ui``). The folder is
appended to ``sys.path`` (never prepended) while the module loads, for flat imports
(``from dataset import MnistDataset``), and every module loaded from it is then forgotten, so two
DAGs' helper modules of one name do not mix.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import hashlib
import importlib
import importlib.machinery
import importlib.util
import os
import re
import sys
import threading
from pathlib import Path
from types import ModuleType

from mlcomp.errors import ExecutorError

__all__ = ["Declaration", "mlcomp_names", "to_snake", "declarations", "modules", "import_module"]

SKIPPED = frozenset({"data", "models", "logs", "runs", "__pycache__", "node_modules"})
"""Sub-folders never searched: the project's data and models links, outputs, caches."""

_FIRST_CAP = re.compile(r"(.)([A-Z][a-z]+)")
_ALL_CAP = re.compile(r"([a-z0-9])([A-Z])")
_parsed: dict[tuple, "dict[str, list[Declaration]] | str"] = {}
_lock = threading.Lock()


@dataclasses.dataclass(frozen=True)
class Declaration:
    """A class that declares an executor type: its module's file, its name and line."""

    path: Path
    cls: str
    line: int

    def __str__(self) -> str:
        return f"{self.path}:{self.line} (class {self.cls})"


def to_snake(name: str) -> str:
    """MLComp's ``to_snake``: ``InferMnist`` → ``infer_mnist``, ``InferMNIST`` → ``infer_mnist``."""
    return _ALL_CAP.sub(r"\1_\2", _FIRST_CAP.sub(r"\1_\2", name)).lower()


def mlcomp_names(class_name: str) -> tuple[str, ...]:
    """The type names MLComp's ``Executor.register`` gives a class: its name, lower case and
    snake case, without repeats (``Step`` → ``Step``, ``step``)."""
    return tuple(dict.fromkeys((class_name, class_name.lower(), to_snake(class_name))))


def modules(folder: Path) -> list[Path]:
    """The ``.py`` files of ``folder`` and of its direct sub-folders (hidden folders and
    :data:`SKIPPED` ones left out), sorted; none when ``folder`` is not a folder."""
    if not folder.is_dir():
        return []
    found = sorted(folder.glob("*.py"))
    for sub in sorted(p for p in folder.iterdir() if p.is_dir() and not _skipped(p.name)):
        found += sorted(sub.glob("*.py"))
    return [path for path in found if path.is_file()]


def declarations(folder: Path) -> tuple[dict[str, list[Declaration]], list[str]]:
    """Every type declared in ``folder``'s modules (see the module docstring), by type name, and
    the modules that could not be read (``"path: SyntaxError …"``). Each file is parsed again
    only when it changes (size and mtime); nothing is imported."""
    found: dict[str, list[Declaration]] = {}
    unreadable = []
    for path in modules(folder):
        parsed = _declared_in(path)
        if isinstance(parsed, str):
            unreadable.append(parsed)
            continue
        for name, places in parsed.items():
            found.setdefault(name, []).extend(places)
    return found, unreadable


def import_module(folder: Path, path: Path) -> ModuleType:
    """Imports the module ``path`` of the DAG folder ``folder`` (see the module docstring) with
    Catalyst 20.x imports resolving to mlcomp (:mod:`mlcomp.runner.compat.catalyst`) when a
    module of the folder mentions ``catalyst`` (the hook imports torch, seconds on a busy machine).

    Raises:
        ExecutorError: the module (or what it imports) raises; the message names the file.
    """
    package = "mlcomp_dag_" + hashlib.sha1(str(folder).encode()).hexdigest()[:12]
    relative = path.relative_to(folder).with_suffix("").parts
    relative = relative[:-1] if relative[-1] == "__init__" else relative
    before = set(sys.modules)
    appended = str(folder) not in sys.path
    if appended:
        sys.path.append(str(folder))
    try:
        with _catalyst_hook(folder):
            root = _package(package, folder, run_init=not relative)
            return importlib.import_module(".".join((package, *relative))) if relative else root
    except Exception as e:
        raise ExecutorError(f"{path}: importing the user's executors failed: {type(e).__name__}: {e}") from e
    finally:
        if appended:
            sys.path.remove(str(folder))
        _forget(set(sys.modules) - before, package, folder)


def _catalyst_hook(folder: Path) -> contextlib.AbstractContextManager:
    if not any(b"catalyst" in path.read_bytes() for path in modules(folder)):
        return contextlib.nullcontext()
    from mlcomp.runner.compat.catalyst import catalyst_imports

    return catalyst_imports()


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in SKIPPED


def _declared_in(path: Path) -> "dict[str, list[Declaration]] | str":
    stat = path.stat()
    key = (str(path), stat.st_mtime_ns, stat.st_size)
    with _lock:
        if key not in _parsed:
            _parsed[key] = _parse(path)
        return _parsed[key]


def _parse(path: Path) -> "dict[str, list[Declaration]] | str":
    try:
        tree = ast.parse(path.read_bytes(), filename=str(path))
    except (SyntaxError, ValueError, OSError) as e:
        return f"{path}: {type(e).__name__}: {e}"
    found: dict[str, list[Declaration]] = {}
    for node in tree.body:
        if isinstance(node, ast.ClassDef):
            for name in _declared_names(node):
                found.setdefault(name, []).append(Declaration(path, node.name, node.lineno))
    return found


def _declared_names(node: ast.ClassDef) -> tuple[str, ...]:
    literal = _type_name_literal(node)
    if literal is not None:
        return (literal,)
    if any(_is_register(decorator) for decorator in node.decorator_list):
        return mlcomp_names(node.name)
    return ()


def _type_name_literal(node: ast.ClassDef) -> str | None:
    """The string assigned to ``type_name`` in the class body, if any."""
    for statement in node.body:
        targets = statement.targets if isinstance(statement, ast.Assign) else \
            [statement.target] if isinstance(statement, ast.AnnAssign) else []
        value = getattr(statement, "value", None)
        if any(isinstance(t, ast.Name) and t.id == "type_name" for t in targets) \
                and isinstance(value, ast.Constant) and isinstance(value.value, str):
            return value.value
    return None


def _is_register(decorator: ast.expr) -> bool:
    return (isinstance(decorator, ast.Name) and decorator.id == "register") or \
        (isinstance(decorator, ast.Attribute) and decorator.attr == "register")


def _package(name: str, folder: Path, run_init: bool) -> ModuleType:
    """The package ``name`` over ``folder``; its ``__init__.py`` is run only with ``run_init``."""
    if run_init:
        spec = importlib.util.spec_from_file_location(name, folder / "__init__.py",
                                                      submodule_search_locations=[str(folder)])
    else:
        spec = importlib.machinery.ModuleSpec(name, None, is_package=True)
        spec.submodule_search_locations = [str(folder)]
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    if run_init:
        spec.loader.exec_module(module)
    return module


def _forget(names: set[str], package: str, folder: Path) -> None:
    inside = str(folder) + os.sep
    for name in names:
        file = str(getattr(sys.modules[name], "__file__", None) or "")
        if name == package or name.startswith(package + ".") or file.startswith(inside):
            del sys.modules[name]
