"""Small ``torch.nn`` layers of Catalyst 20.x's ``catalyst.contrib.nn.modules`` that experiment
folders build their models with (``from catalyst.contrib.nn.modules.common import Normalize``);
Catalyst's ``Flatten`` is ``torch.nn.Flatten``.

They answer Catalyst's ``nn`` module paths only, so ``catalyst.data.cv.Normalize`` stays the image
transform of :mod:`mlcomp.runner.transforms`.
"""
from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn
from torch.nn import functional as F

__all__ = ["Lambda", "Normalize"]


class Lambda(nn.Module):
    """A layer computing ``lambda_fn(x)`` (no parameters)."""

    def __init__(self, lambda_fn: Callable[[torch.Tensor], torch.Tensor]):
        super().__init__()
        self.lambda_fn = lambda_fn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``lambda_fn(x)``."""
        return self.lambda_fn(x)


class Normalize(nn.Module):
    """L_p normalisation of the input along a dimension: ``torch.nn.functional.normalize(x,
    **normalize_kwargs)`` (``p=2``, ``dim=1`` by default), shape kept."""

    def __init__(self, **normalize_kwargs: Any):
        super().__init__()
        self.normalize_kwargs = normalize_kwargs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` scaled to unit p-norm along ``dim``."""
        return F.normalize(x, **self.normalize_kwargs)
