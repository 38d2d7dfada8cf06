"""Import a config's experiment folder (``args.expdir``) as a Python package (Catalyst 20.x
``import_experiment_and_runner``).

The expdir's ``__init__.py`` registers its models, callbacks and datasets in
:mod:`mlcomp.runner.registry` and may export ``Experiment`` (a ``ConfigExperiment`` subclass,
typically overriding ``get_datasets``) and ``Runner``. The package is imported under its own
name (:func:`package_name`: the folder's name made an identifier, ``digit-recognizer`` →
``digit_recognizer``, prefixed with ``mlcomp_expdir_`` when that name is taken by another
module), so its modules can use relative imports (``from .model import Net``) and no folder of
the user's (``executors/``, ``ui/``...) can shadow one of mlcomp's packages. The folder is put at
the end of ``sys.path``, so flat imports (``import model``) of names nothing else takes work too.
Catalyst 20.x imports (``from catalyst.dl import registry``) resolve to mlcomp while the package
loads (:mod:`mlcomp.runner.compat.catalyst`).
"""
from __future__ import annotations

import importlib.machinery
import importlib.util
import re
import sys
from pathlib import Path
from types import ModuleType

from mlcomp.errors import ConfigError
from mlcomp.pinning import pin_own_packages
from mlcomp.runner.compat.catalyst import catalyst_imports
from mlcomp.runner.experiment import Experiment
from mlcomp.runner.registry import LOADED_EXPDIRS

__all__ = ["import_expdir", "experiment_and_runner", "package_name"]

PREFIX = "mlcomp_expdir_"


def _same_location(module: ModuleType, init: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve() == init


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def package_name(folder: Path) -> str:
    """The module name the expdir ``folder`` is imported under: its name with every character
    that cannot be in an identifier replaced by ``_`` (and ``_`` before a leading digit), or
    ``mlcomp_expdir_<that>`` when another module (mlcomp's ``executors``, the standard
    library's ``json``...) already has it."""
    name = re.sub(r"\W", "_", folder.name)
    name = f"_{name}" if name[:1].isdigit() else name
    init = folder / "__init__.py"
    current = sys.modules.get(name)
    if current is not None:
        return name if _same_location(current, init) or name.startswith(PREFIX) else PREFIX + name
    other = importlib.machinery.PathFinder.find_spec(name)
    if name in sys.builtin_module_names or (other is not None and Path(other.origin or "").resolve() != init):
        return PREFIX + name
    return name


def import_expdir(expdir: str | Path) -> ModuleType:
    """Imports the folder ``expdir`` as a package (see :func:`package_name`) and returns it.

    Importing the same folder twice returns the module already imported (its registrations run
    once). Another folder of the same name replaces the earlier package in ``sys.modules``.

    Raises:
        ConfigError: the folder or its ``__init__.py`` is missing, or importing it raises (the
            message names the folder and the error).
        ImportError: a user's folder already replaced one of mlcomp's packages
            (:func:`mlcomp.pinning.pin_own_packages`, called before the folder joins ``sys.path``).
    """
    folder = Path(expdir).resolve()
    init = folder / "__init__.py"
    if not folder.is_dir():
        raise ConfigError(f"args.expdir: {folder} is not a folder")
    if not init.is_file():
        raise ConfigError(f"args.expdir: {folder} has no __init__.py; an expdir is a Python package")
    name = package_name(folder)
    current = sys.modules.get(name)
    if current is not None and _same_location(current, init):
        return current
    _forget(name)
    pin_own_packages()  # the folder may hold executors/ or ui/: see mlcomp.pinning
    if str(folder) not in sys.path:
        sys.path.append(str(folder))
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        with catalyst_imports():
            spec.loader.exec_module(module)
    except Exception as e:
        _forget(name)
        raise ConfigError(f"args.expdir: importing {folder} failed: {type(e).__name__}: {e}") from e
    if str(folder) not in LOADED_EXPDIRS:
        LOADED_EXPDIRS.append(str(folder))
    return module


def experiment_and_runner(module: ModuleType | None):
    """The ``Experiment`` and ``Runner`` classes an expdir exports, each ``None`` when absent.

    Raises:
        ConfigError: an export is not a class of the right kind (``Experiment`` must subclass
            :class:`mlcomp.runner.experiment.Experiment`, ``Runner`` must have ``run_experiment``).
    """
    if module is None:
        return None, None
    experiment = getattr(module, "Experiment", None)
    runner = getattr(module, "Runner", None)
    if experiment is not None and not (isinstance(experiment, type) and issubclass(experiment, Experiment)):
        raise ConfigError(f"args.expdir: {module.__name__}.Experiment must be a subclass of "
                          f"mlcomp.runner.ConfigExperiment, got {experiment!r}")
    if runner is not None and not (isinstance(runner, type) and hasattr(runner, "run_experiment")):
        raise ConfigError(f"args.expdir: {module.__name__}.Runner must be a Runner subclass, got {runner!r}")
    return experiment, runner
