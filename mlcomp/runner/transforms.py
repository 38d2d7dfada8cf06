"""Image ↔ tensor transforms of Catalyst 20.x configs (``catalyst.ToTensor``, ``catalyst.ImageToTensor``,
``catalyst.TensorToImage``, also as ``C.Name``), written with torch and numpy only.

They follow albumentations' calling convention, so they work in ``transform_params`` on their own
(mlcomp calls ``transform(**sample)``) and inside ``A.Compose``: called with keyword arguments
(``image=``, ``mask=``, other keys passed through) they return the updated dict. As in Catalyst
(``catalyst/contrib/data/cv/transforms``, albumentations' ``ToTensorV2``), an image is moved from
H×W×C to C×H×W (a H×W image gains one channel) without rescaling; a mask becomes float32.

``ToTensor`` called with one positional picture behaves like Catalyst 20.08+'s torch-only
``ToTensor`` (torchvision's): an ``uint8`` H×W×C array becomes a C×H×W float tensor in [0, 1].
:class:`Compose` and :class:`Normalize` are the other two of those torch-only transforms (as in
``MNIST(root, transform=Compose([ToTensor(), Normalize((0.1307,), (0.3081,))]))``): they take
and return one picture, not a sample dict. The conversions themselves are functions of
:mod:`mlcomp.runner.imagetensor`.
"""
from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import torch

from mlcomp.runner.imagetensor import IMAGENET_MEAN, IMAGENET_STD, channels_first, tensor_to_ndimage

__all__ = ["Compose", "ImageToTensor", "Normalize", "TensorToImage", "ToTensor"]


class ImageToTensor:
    """Sample ``image`` (H×W×C numpy) → C×H×W ``torch.Tensor`` of the same dtype; ``mask``
    (H×W×C) → C×H×W float32 (Catalyst 20.08+'s ``ImageToTensor``).

    Args:
        move_channels_dim: False keeps the array's layout (only converts to a tensor).
        always_apply, p: albumentations' arguments, accepted for configs; the cast always runs.
    """

    def __init__(self, move_channels_dim: bool = True, always_apply: bool = False, p: float = 1.0):
        self.move_channels_dim = move_channels_dim

    def __call__(self, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        if "image" in data:
            image = np.asarray(data["image"])
            data["image"] = torch.from_numpy(np.ascontiguousarray(
                channels_first(image) if self.move_channels_dim else image))
        if data.get("mask") is not None:
            mask = np.asarray(data["mask"], dtype=np.float32)
            if self.move_channels_dim:
                mask = channels_first(mask)
            data["mask"] = torch.from_numpy(np.ascontiguousarray(mask))
        return data


class ToTensor(ImageToTensor):
    """Catalyst's ``ToTensor``: with keywords, :class:`ImageToTensor` (Catalyst 20.02–20.05's
    albumentations transform); with one positional picture, torchvision's ``ToTensor`` (Catalyst
    20.08+'s torch transform): H×W×C → C×H×W float tensor, ``uint8`` scaled to [0, 1]."""

    def __call__(self, pic: Any = None, force_apply: bool = False, **data: Any):
        if pic is None:
            return super().__call__(force_apply, **data)
        tensor = torch.from_numpy(np.ascontiguousarray(channels_first(np.asarray(pic))))
        return tensor.float().div(255) if tensor.dtype == torch.uint8 else tensor


class TensorToImage:
    """Sample ``image`` (C×H×W or H×W tensor) → H×W×C float32 numpy array clamped to [0, 1]
    (Catalyst's ``TensorToImage``, through :func:`tensor_to_ndimage`).

    Args:
        denormalize: multiply by ``std`` and add ``mean`` per channel first (ImageNet's
            statistics by default, as in Catalyst).
        move_channels_dim: False keeps C×H×W.
        mean, std: the per-channel statistics used by ``denormalize``.
        always_apply, p: albumentations' arguments, accepted for configs.
    """

    def __init__(self, denormalize: bool = False, move_channels_dim: bool = True, always_apply: bool = False,
                 p: float = 1.0, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD):
        self.denormalize, self.move_channels_dim = denormalize, move_channels_dim
        self.mean, self.std = mean, std

    def __call__(self, force_apply: bool = False, **data: Any) -> dict[str, Any]:
        image = torch.as_tensor(data["image"]).float()
        if image.ndim == 2:
            image = image.unsqueeze(0)
        data["image"] = tensor_to_ndimage(image, self.denormalize, self.mean, self.std, self.move_channels_dim)
        return data


class Compose:
    """Applies ``transforms`` in order to one picture (torchvision's and Catalyst 20.08+'s
    ``Compose``)."""

    def __init__(self, transforms: Sequence):
        self.transforms = list(transforms)

    def __call__(self, picture):
        for transform in self.transforms:
            picture = transform(picture)
        return picture


class Normalize:
    """``(tensor − mean) / std`` per channel of a C×H×W float tensor (torchvision's and Catalyst
    20.08+'s ``Normalize``).

    Args:
        mean, std: one value per channel (or one for all).
        inplace: change the given tensor instead of a copy.

    Raises:
        ValueError: a ``std`` of zero.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], inplace: bool = False):
        if any(value == 0 for value in std):
            raise ValueError(f"Normalize: std {list(std)} has a zero, which would divide by zero")
        self.mean, self.std, self.inplace = mean, std, inplace

    def __call__(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor if self.inplace else tensor.clone()
        mean = torch.as_tensor(self.mean, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        std = torch.as_tensor(self.std, dtype=tensor.dtype, device=tensor.device).view(-1, 1, 1)
        return tensor.sub_(mean).div_(std)
