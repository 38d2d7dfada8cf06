"""Image ↔ tensor conversions of Catalyst 20.05–20.12's ``catalyst.contrib.utils.cv.tensor``
(also exported by ``catalyst.utils``), written with torch and numpy only; the transforms of
:mod:`mlcomp.runner.transforms` are built on them.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

__all__ = ["IMAGENET_MEAN", "IMAGENET_STD", "channels_first", "tensor_from_rgb_image", "tensor_to_ndimage"]

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def channels_first(image: np.ndarray) -> np.ndarray:
    """An H×W×C (or H×W) array as C×H×W (a view, no copy).

    Raises:
        ValueError: the image is not 2- or 3-dimensional.
    """
    image = np.asarray(image)
    if image.ndim == 2:
        image = image[:, :, None]
    if image.ndim != 3:
        raise ValueError(f"expected an H×W or H×W×C image, got shape {image.shape}")
    return image.transpose(2, 0, 1)


def tensor_from_rgb_image(image: np.ndarray) -> torch.Tensor:
    """An H×W×C (or H×W) image as a C×H×W tensor of the same dtype (Catalyst's
    ``tensor_from_rgb_image``; an H×W image gains one channel).

    Raises:
        ValueError: the image is not 2- or 3-dimensional.
    """
    return torch.from_numpy(np.ascontiguousarray(channels_first(image)))


def tensor_to_ndimage(images: torch.Tensor, denormalize: bool = True, mean: Sequence[float] = IMAGENET_MEAN,
                      std: Sequence[float] = IMAGENET_STD, move_channels_dim: bool = True,
                      dtype: type = np.float32) -> np.ndarray:
    """Normalised image tensor(s) [B]×C×H×W → numpy [B]×H×W×C in [0, 1] (float32) or [0, 255]
    (uint8), as Catalyst 20.05–20.12's ``tensor_to_ndimage``.

    Args:
        images: C×H×W or B×C×H×W tensor (any device).
        denormalize: first multiply by ``std`` and add ``mean`` per channel (ImageNet's by default).
        move_channels_dim: False keeps the channels first.
        dtype: ``np.float32`` (values clamped to [0, 1]) or ``np.uint8`` (scaled by 255, rounded).

    Raises:
        ValueError: another ``dtype``.
    """
    if dtype not in (np.float32, np.uint8):
        raise ValueError(f"tensor_to_ndimage: dtype {dtype} is not supported; use np.float32 or np.uint8")
    images = images.detach().cpu()
    if denormalize:
        images = images * images.new_tensor(std).view(-1, 1, 1) + images.new_tensor(mean).view(-1, 1, 1)
    array = images.clamp(0, 1).numpy()
    if move_channels_dim:
        array = np.moveaxis(array, -3, -1)
    if dtype == np.uint8:
        return np.ascontiguousarray((array * 255.0).round(), dtype=np.uint8)
    return np.ascontiguousarray(array, dtype=np.float32)
