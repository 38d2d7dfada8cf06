"""Catalyst 20.x imports for experiment folders, when the real ``catalyst`` is not installed.

While an expdir (or a DAG's user executors) is imported, :func:`catalyst_imports` puts a
:class:`importlib.abc.MetaPathFinder` on ``sys.meta_path`` that answers the ``catalyst`` modules
experiments use with mlcomp's equivalents (PEP 451 finders and loaders):

==============================================  ===============================================
``catalyst.dl``                                 ``mlcomp.runner`` (runners, experiments, callbacks)
``catalyst.registry``, ``catalyst.dl.registry``,  ``mlcomp.runner.registry`` (the same registries,
``catalyst.contrib.registry``                   upper-case names included)
``catalyst.dl.callbacks``                       ``mlcomp.runner.callbacks``
``catalyst.utils``                              :data:`UTILS` (``set_global_seed``, ``get_device``,
                                                ``any2device``, ``prepare_cudnn``, ...)
``catalyst.data``                               samplers and datasets (``BalanceClassSampler``,
                                                ``MiniEpochSampler``, ``ListDataset``, ...)
``catalyst.contrib.nn``, ``….optimizers``,      ``Lamb``, ``RAdam``, ``Lookahead``, ``Ralamb``,
``….schedulers``                                ``OneCycleLRWithWarmup``
==============================================  ===============================================

A name these modules lack fails as an ``ImportError`` naming this module's file (an
``AttributeError`` saying it is not provided, for ``catalyst.data.Name``); another
``catalyst.*`` module fails with a ``ModuleNotFoundError`` listing the ones provided. When the
real package is installed, nothing is hooked and it is used as it is.
"""
from __future__ import annotations

import contextlib
import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import threading
from types import ModuleType
from typing import Any, Callable, Iterator

from torch.utils.data import Dataset

__all__ = ["catalyst_imports", "CatalystFinder", "MODULES", "UTILS", "ListDataset"]


def _public(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return {name: getattr(module, name) for name in names}


def _registry() -> dict[str, Any]:
    return {name: value for name, value in vars(importlib.import_module("mlcomp.runner.registry")).items()
            if not name.startswith("_")}


def _get_device():
    """The device this process trains on (``torch.device``): its rank's GPU, else the CPU."""
    from mlcomp.runner.distributed import device

    return device()


def _any2device(value, device):
    """``value`` (a tensor, or a dict/list/tuple of them) moved to ``device`` (Catalyst's ``any2device``)."""
    import torch

    from mlcomp.runner.runner import to_device

    return to_device(value, torch.device(device))


def _prepare_cudnn(deterministic: bool | None = None, benchmark: bool | None = None) -> None:
    """Sets cuDNN's ``deterministic`` and ``benchmark`` flags (those given)."""
    import torch

    if deterministic is not None:
        torch.backends.cudnn.deterministic = bool(deterministic)
    if benchmark is not None:
        torch.backends.cudnn.benchmark = bool(benchmark)


def _get_rank() -> int:
    """This process's rank in a distributed run, -1 outside one (Catalyst's convention)."""
    from mlcomp.runner import distributed

    return distributed.rank() if distributed.is_distributed() else -1


def _load_config(path: str):
    """A YAML config as a dict (``mlcomp.runner.config.load_config``)."""
    from mlcomp.runner.config import load_config

    return load_config(path)


def _utils() -> dict[str, Any]:
    from mlcomp.runner.checkpoint import load_checkpoint, save_checkpoint
    from mlcomp.runner.seed import set_global_seed

    return {"set_global_seed": set_global_seed, "get_device": _get_device, "any2device": _any2device,
            "prepare_cudnn": _prepare_cudnn, "get_rank": _get_rank, "load_config": _load_config,
            "load_checkpoint": load_checkpoint, "save_checkpoint": save_checkpoint}


UTILS = ("set_global_seed", "get_device", "any2device", "prepare_cudnn", "get_rank", "load_config",
         "load_checkpoint", "save_checkpoint")
"""The ``catalyst.utils`` helpers provided."""


class ListDataset(Dataset):
    """A dataset over a list of rows, each turned into a sample by ``open_fn`` and then
    ``dict_transform`` (Catalyst's ``catalyst.data.ListDataset``)."""

    def __init__(self, list_data: list, open_fn: Callable[[Any], dict], dict_transform: Callable | None = None):
        self.data, self.open_fn, self.dict_transform = list_data, open_fn, dict_transform

    def __getitem__(self, index: int) -> dict:
        sample = self.open_fn(self.data[index])
        return self.dict_transform(sample) if self.dict_transform is not None else sample

    def __len__(self) -> int:
        return len(self.data)


def _data() -> dict[str, Any]:
    return {**_public("mlcomp.runner.samplers"), **_public("mlcomp.runner.datasets"), "ListDataset": ListDataset}


def _contrib_optimizers() -> dict[str, Any]:
    from mlcomp.runner import registry

    return {name: registry.Optimizer.get(name) for name in ("Lamb", "RAdam", "Lookahead", "Ralamb")}


def _contrib_nn() -> dict[str, Any]:
    return {**_contrib_optimizers(), **_public("mlcomp.runner.schedulers")}


def _dl() -> dict[str, Any]:
    from mlcomp.runner.config import ConfigExperiment

    return {**_public("mlcomp.runner"), "ConfigExperiment": ConfigExperiment}


MODULES: dict[str, Callable[[], dict[str, Any]]] = {
    "catalyst": dict,
    "catalyst.dl": _dl,
    "catalyst.dl.registry": _registry,
    "catalyst.dl.callbacks": lambda: _public("mlcomp.runner.callbacks"),
    "catalyst.registry": _registry,
    "catalyst.contrib": dict,
    "catalyst.contrib.registry": _registry,
    "catalyst.contrib.nn": _contrib_nn,
    "catalyst.contrib.nn.optimizers": _contrib_optimizers,
    "catalyst.contrib.nn.schedulers": lambda: _public("mlcomp.runner.schedulers"),
    "catalyst.utils": _utils,
    "catalyst.data": _data,
}
"""Each provided module and the function giving its namespace."""


class _Loader(importlib.abc.Loader):
    def create_module(self, spec):
        return None  # the default module object

    def exec_module(self, module: ModuleType) -> None:
        module.__dict__.update(MODULES[module.__name__]())
        module.__getattr__ = _missing(module.__name__)


def _missing(name: str):
    def __getattr__(attribute: str):
        if attribute.startswith("__"):
            raise AttributeError(attribute)
        raise AttributeError(f"{name}.{attribute} is not provided by mlcomp's Catalyst compatibility layer "
                             f"({__name__}); install catalyst, or use mlcomp's equivalent")
    return __getattr__


class CatalystFinder(importlib.abc.MetaPathFinder):
    """Finds the ``catalyst`` modules of :data:`MODULES` (and refuses other ``catalyst.*`` ones
    with a message listing what is provided)."""

    def find_spec(self, fullname: str, path=None, target=None):
        """A spec for a provided module, None for a name outside ``catalyst``.

        Raises:
            ModuleNotFoundError: a ``catalyst.*`` module mlcomp does not provide.
        """
        if fullname != "catalyst" and not fullname.startswith("catalyst."):
            return None
        if fullname not in MODULES:
            raise ModuleNotFoundError(
                f"No module named {fullname!r}: catalyst is not installed and mlcomp's compatibility layer "
                f"provides only {', '.join(sorted(MODULES))}", name=fullname)
        is_package = any(other.startswith(fullname + ".") for other in MODULES)
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
