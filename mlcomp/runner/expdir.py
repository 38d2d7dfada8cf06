"""Import a config's experiment folder (``args.expdir``) as a Python package (Catalyst 20.x
``import_experiment_and_runner``).

The expdir's ``__init__.py`` registers its models, callbacks and datasets in
:mod:`mlcomp.runner.registry` and may export ``Experiment`` (a ``ConfigExperiment`` subclass,
typically overriding ``get_datasets``) and ``Runner``. The package is imported under the folder's
name, so its modules can use relative imports (``from .model import Net``); the folder and its
parent are put on ``sys.path`` so flat (``import model``) and package imports work too.
"""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

from mlcomp.errors import ConfigError

__all__ = ["import_expdir", "experiment_and_runner"]


def _same_location(module: ModuleType, init: Path) -> bool:
    file = getattr(module, "__file__", None)
    return file is not None and Path(file).resolve() == init


def _forget(name: str) -> None:
    for key in [k for k in sys.modules if k == name or k.startswith(name + ".")]:
        del sys.modules[key]


def import_expdir(expdir: str | Path) -> ModuleType:
    """Imports the folder ``expdir`` as a package named after it and returns the module.

    Importing the same folder twice returns the module already imported (its registrations run
    once). Another folder of the same name replaces the earlier package in ``sys.modules``.

    Raises:
        ConfigError: the folder or its ``__init__.py`` is missing, its name is not a Python
            identifier, or importing it raises (the message names the folder and the error).
    """
    folder = Path(expdir).resolve()
    init = folder / "__init__.py"
    if not folder.is_dir():
        raise ConfigError(f"args.expdir: {folder} is not a folder")
    if not init.is_file():
        raise ConfigError(f"args.expdir: {folder} has no __init__.py; an expdir is a Python package")
    name = folder.name
    if not name.isidentifier():
        raise ConfigError(f"args.expdir: folder name {name!r} is not a Python identifier")
    current = sys.modules.get(name)
    if current is not None and _same_location(current, init):
        return current
    _forget(name)
    for entry in (str(folder.parent), str(folder)):
        if entry not in sys.path:
            sys.path.insert(0, entry)
    spec = importlib.util.spec_from_file_location(name, init, submodule_search_locations=[str(folder)])
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:
        _forget(name)
        raise ConfigError(f"args.expdir: importing {folder} failed: {type(e).__name__}: {e}") from e
    return module


def experiment_and_runner(module: ModuleType | None):
    """The ``Experiment`` and ``Runner`` classes an expdir exports, each ``None`` when absent.

    Raises:
        ConfigError: an export is not a class of the right kind (``Experiment`` must subclass
            :class:`mlcomp.runner.experiment.Experiment`, ``Runner`` must have ``run_experiment``).
    """
    if module is None:
        return None, None
    from mlcomp.runner.experiment import Experiment

    experiment = getattr(module, "Experiment", None)
    runner = getattr(module, "Runner", None)
    if experiment is not None and not (isinstance(experiment, type) and issubclass(experiment, Experiment)):
        raise ConfigError(f"args.expdir: {module.__name__}.Experiment must be a subclass of "
                          f"mlcomp.runner.ConfigExperiment, got {experiment!r}")
    if runner is not None and not (isinstance(runner, type) and hasattr(runner, "run_experiment")):
        raise ConfigError(f"args.expdir: {module.__name__}.Runner must be a Runner subclass, got {runner!r}")
    return experiment, runner
