"""mlcomp's equivalents of Catalyst 20.x's public names, matched by name.

A Catalyst name (``catalyst.dl.SupervisedRunner``, ``catalyst.utils.set_global_seed``,
``catalyst.contrib.datasets.MNIST``) stands for the mlcomp object of the same name, looked up in
this order (the first source that has the name wins):

1. in a registry module (``catalyst.registry``, ``catalyst.dl.registry``, ...,
   ``catalyst.registry.registries``): :mod:`mlcomp.runner.registry`'s registries (``MODELS``,
   ``Callback``...), so ``Model`` there is the registry, not a class;
2. :data:`ALIASES`: Catalyst's interface names for mlcomp's base classes (``IRunner`` → ``Runner``);
3. the ``catalyst.utils`` helpers of :func:`utils` and :class:`ListDataset`;
4. ``mlcomp.runner``'s public names (runners, experiments, callbacks) and the callback registry;
5. the ``__all__`` of ``mlcomp.runner``'s datasets, augmentor, optimizers, schedulers, samplers,
   losses and metrics modules, and, in a ``data`` module only (``catalyst.data.cv``,
   ``catalyst.contrib.data.cv.transforms.torch``), of its transforms module (so
   ``catalyst.contrib.nn.modules.Normalize``, a layer, is not the image transform), and in an
   ``nn`` module only (``catalyst.contrib.nn.modules.common``), of ``mlcomp.runner.layers``;
6. the default entries of the criterion, optimizer, scheduler, sampler and model registries
   (torch's classes among them: ``catalyst.contrib.nn.Flatten`` is ``torch.nn.Flatten``).

A Catalyst name with no equivalent is "not provided": :func:`resolve` raises
:class:`NotProvidedError`.
"""
from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

from torch.utils.data import Dataset

from mlcomp.runner import distributed, registry
from mlcomp.runner.checkpoint import load_checkpoint, save_checkpoint
from mlcomp.runner.compat import surface
from mlcomp.runner.config_io import load_config
from mlcomp.runner.imagetensor import tensor_from_rgb_image, tensor_to_ndimage
from mlcomp.runner.runner import to_device
from mlcomp.runner.seed import set_global_seed

__all__ = ["ALIASES", "ListDataset", "NotProvidedError", "UTILS", "is_registry_module", "resolve", "utils"]

ALIASES = {"IRunner": "Runner", "IStageBasedRunner": "Runner", "IExperiment": "Experiment"}
"""Catalyst 20.08+'s interface names and the mlcomp names that play their part."""


class NotProvidedError(ImportError):
    """A public Catalyst 20.x name that mlcomp does not provide. An ``ImportError`` (not an
    ``AttributeError``), so that ``from catalyst.x import Name`` shows this message rather than
    Python's generic "cannot import name"."""


def _public(module_name: str) -> dict[str, Any]:
    module = importlib.import_module(module_name)
    names = getattr(module, "__all__", None) or [n for n in vars(module) if not n.startswith("_")]
    return {name: getattr(module, name) for name in names}


def _get_device():
    """The device this process trains on (``torch.device``): its rank's GPU, else the CPU."""
    return distributed.device()


def _any2device(value, device):
    """``value`` (a tensor, or a dict/list/tuple of them) moved to ``device`` (Catalyst's ``any2device``)."""
    import torch

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
    return distributed.rank() if distributed.is_distributed() else -1


def _load_config(path: str):
    """A YAML config as a dict (``mlcomp.runner.config_io.load_config``)."""
    return load_config(path)


def _set_requires_grad(model, requires_grad) -> None:
    """Sets ``requires_grad`` of every parameter of ``model``: one bool for all, or a dict from
    every parameter's name to its bool (Catalyst's ``set_requires_grad``).

    Raises:
        ValueError: the dict lacks a parameter's name.
    """
    if isinstance(requires_grad, dict):
        for name, parameter in model.named_parameters():
            if name not in requires_grad:
                raise ValueError(f"set_requires_grad: parameter {name!r} is not in requires_grad")
            parameter.requires_grad = bool(requires_grad[name])
        return
    for parameter in model.parameters():
        parameter.requires_grad = bool(requires_grad)


UTILS = ("set_global_seed", "get_device", "any2device", "prepare_cudnn", "get_rank", "load_config",
         "load_checkpoint", "save_checkpoint", "tensor_to_ndimage", "tensor_from_rgb_image", "set_requires_grad")
"""The ``catalyst.utils`` (and ``catalyst.contrib.utils``) helpers provided."""


def utils() -> dict[str, Any]:
    """The ``catalyst.utils`` helpers of :data:`UTILS` by name."""
    return {"set_global_seed": set_global_seed, "get_device": _get_device, "any2device": _any2device,
            "prepare_cudnn": _prepare_cudnn, "get_rank": _get_rank, "load_config": _load_config,
            "load_checkpoint": load_checkpoint, "save_checkpoint": save_checkpoint,
            "tensor_to_ndimage": tensor_to_ndimage, "tensor_from_rgb_image": tensor_from_rgb_image,
            "set_requires_grad": _set_requires_grad}


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


_MODULES = ("mlcomp.runner.metrics", "mlcomp.runner.losses", "mlcomp.runner.samplers", "mlcomp.runner.schedulers",
            "mlcomp.runner.optimizers", "mlcomp.runner.datasets", "mlcomp.runner.augmentor")


@functools.lru_cache(maxsize=1)
def _by_name() -> dict[str, Any]:
    """Every equivalent by name (sources 3–6 of the module docstring; later updates win)."""
    pool: dict[str, Any] = {}
    for kind in ("Model", "Sampler", "Scheduler", "Optimizer", "Criterion"):
        pool.update(registry.REGISTRIES[kind].defaults())
    for module in _MODULES:
        pool.update(_public(module))
    pool.update(registry.Callback.defaults())
    pool.update(_public("mlcomp.runner"))  # ConfigExperiment and registry among them (PEP 562 attributes)
    pool.update(utils())
    pool["ListDataset"] = ListDataset
    pool.update({alias: pool[name] for alias, name in ALIASES.items()})
    return pool


@functools.lru_cache(maxsize=1)
def _transforms() -> dict[str, Any]:
    return _public("mlcomp.runner.transforms")


@functools.lru_cache(maxsize=1)
def _layers() -> dict[str, Any]:
    return _public("mlcomp.runner.layers")


@functools.lru_cache(maxsize=1)
def _registry_namespace() -> dict[str, Any]:
    return {name: value for name, value in vars(registry).items() if not name.startswith("_")}


def is_registry_module(module: str) -> bool:
    """Whether ``module`` is one of Catalyst's registry modules (``catalyst.registry``,
    ``catalyst.dl.registry``, ``catalyst.registry.registries``...)."""
    return module.rsplit(".", 1)[-1] in ("registry", "registries")


def resolve(module: str, name: str):
    """mlcomp's equivalent of Catalyst's ``module.name`` (see the module docstring).

    Raises:
        NotProvidedError: mlcomp has no equivalent; the message names the Catalyst module.
    """
    if is_registry_module(module) and name in _registry_namespace():
        return _registry_namespace()[name]
    if "data" in module.split(".") and name in _transforms():
        return _transforms()[name]
    if "nn" in module.split(".") and name in _layers():
        return _layers()[name]
    pool = _by_name()
    if name in pool:
        return pool[name]
    tags = surface.names(module).get(name)
    release = f"Catalyst {surface.tags_text(tags)}'s" if tags else "a Catalyst"
    raise NotProvidedError(f"{module}.{name} ({release} name) is not provided by mlcomp's Catalyst compatibility "
                           f"layer: mlcomp has no equivalent of it (install catalyst to use it)", name=module)
