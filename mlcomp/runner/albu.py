"""Catalyst's own transforms inside albumentations' ``Compose``, as Catalyst 20.x configs nest them
(``transform: A.Compose`` with ``transforms: [catalyst.TensorToImage, A.Normalize,
catalyst.ImageToTensor]``).

``A.Compose`` takes only albumentations transforms (it reads their ``available_keys``,
``targets``, random seeds...), so when albumentations imports, the ``Transform`` registry gives,
for ``catalyst.Name`` / ``C.Name`` of the sample-dict transforms of :mod:`mlcomp.runner.transforms`,
an albumentations transform class of the same name, signature and behaviour (it always applies,
whatever ``p``, as Catalyst's did in practice). Catalyst 20.02–20.10's experiment folders pass
MNIST's uint8 tensor as the ``image`` of an ``A.Compose`` whose first step is
``catalyst.TensorToImage``; albumentations 1.x+ refuses a non-numpy image before any step runs,
so the registry's ``Compose`` takes a torch tensor image as the numpy array of the same layout
(which ``TensorToImage`` accepts), and is albumentations' otherwise.
"""
from __future__ import annotations

import functools
import inspect
import types
from typing import Any, Sequence

import torch

from mlcomp.runner import transforms

__all__ = ["DICT_TRANSFORMS", "registry_entries"]

DICT_TRANSFORMS = ("ImageToTensor", "ToTensor", "TensorToImage")
"""The transforms of :mod:`mlcomp.runner.transforms` that take and return a sample dict."""


def _adapted(base: type, wrapped: type) -> type:
    """An albumentations transform class (subclass of ``base``) named and called like ``wrapped``."""
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.wrapped = wrapped(*args, **kwargs)  # first: albumentations' __init__ reads ``targets``
        base.__init__(self, p=1.0)

    def __call__(self, *args: Any, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        return self.wrapped(**data)

    namespace = {
        "__init__": __init__, "__call__": __call__, "__signature__": inspect.signature(wrapped),
        "__doc__": f"{wrapped.__doc__}\n\n    As an albumentations transform (see :mod:`{__name__}`).",
        "__module__": __name__,
        "targets": property(lambda self: {"image": self.wrapped, "mask": self.wrapped}),
        "get_transform_init_args_names": lambda self: (),
    }
    return types.new_class(wrapped.__name__, (base,), exec_body=lambda ns: ns.update(namespace))


def _tensor_tolerant(compose: type) -> type:
    """``compose`` taking a torch tensor ``image`` as the numpy array of the same layout."""
    def preprocess(self, data: Any) -> None:
        if isinstance(data.get("image"), torch.Tensor):
            data["image"] = data["image"].detach().cpu().numpy()
        compose.preprocess(self, data)

    return types.new_class(compose.__name__, (compose,),
                           exec_body=lambda ns: ns.update({"preprocess": preprocess, "__module__": __name__}))


@functools.lru_cache(maxsize=1)
def _classes() -> tuple[dict[str, type], type] | None:
    try:
        import albumentations
        from albumentations.core.transforms_interface import BasicTransform
    except ImportError:
        return None
    adapted = {name: _adapted(BasicTransform, getattr(transforms, name)) for name in DICT_TRANSFORMS}
    return adapted, _tensor_tolerant(albumentations.Compose)


def registry_entries(albumentations_prefixes: Sequence[str]) -> dict[str, type]:
    """``{registry name: class}`` that shadow the plain ones when albumentations imports:
    ``catalyst.Name`` and ``C.Name`` of :data:`DICT_TRANSFORMS` as albumentations transforms, and
    ``Compose`` under each of ``albumentations_prefixes`` (``A.``...) and bare, tolerant of a
    tensor image. Empty when albumentations does not import."""
    classes = _classes()
    if classes is None:
        return {}
    adapted, compose = classes
    entries = {prefix + name: cls for name, cls in adapted.items() for prefix in ("catalyst.", "C.")}
    entries.update({prefix + "Compose": compose for prefix in ("", *albumentations_prefixes)})
    return entries
