"""Mean average precision at k (MAP@k), the ranking metric of Kaggle's ``ml_metrics.mapk`` and
Catalyst 20.x's ``mean_average_accuracy``, vectorised on the device.

For one sample with relevant classes R and the classes ranked by score, AP@k is
``Σ_{i≤k} P(i)·rel(i) / min(|R|, k)``, with ``P(i)`` the share of relevant classes among the first
``i``. With one relevant class at rank ``r`` it is ``1/r`` when ``r ≤ k`` and 0 otherwise.
"""
from __future__ import annotations

from typing import Sequence

import torch

from mlcomp.runner.metrics.functional import check_topk

__all__ = ["average_precision_at_k", "mapk", "mean_average_accuracy"]


def _relevance(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``[N, C]`` 0/1 float matrix of relevant classes from class indices or a multi-hot matrix."""
    if outputs.dim() != 2:
        raise ValueError(f"mapk: outputs should be [N, C] scores, got shape {tuple(outputs.shape)}")
    if targets.dim() == 2 and targets.shape == outputs.shape:
        return targets.float()
    targets = targets.reshape(-1).long()
    if targets.shape[0] != outputs.shape[0]:
        raise ValueError(f"mapk: {outputs.shape[0]} rows of outputs for {targets.shape[0]} targets")
    relevant = torch.zeros_like(outputs, dtype=torch.float32)
    return relevant.scatter_(1, targets.view(-1, 1), 1.0)


def average_precision_at_k(outputs: torch.Tensor, targets: torch.Tensor, k: int = 10) -> torch.Tensor:
    """AP@k of every sample.

    Args:
        outputs: ``[N, C]`` scores; higher ranks first.
        targets: ``[N]`` class indices (one relevant class per sample) or an ``[N, C]`` 0/1 matrix
            (several); a sample without any relevant class scores 0.
        k: how many ranked classes count (a ``k`` above ``C`` means all of them).

    Returns:
        ``[N]`` float tensor on the device of ``outputs``.

    Raises:
        ValueError: ``k`` is not a positive int, or the shapes do not fit.
    """
    (k,) = check_topk([k])
    relevant = _relevance(outputs, targets)
    depth = min(k, outputs.shape[1])
    ranked = relevant.gather(1, outputs.topk(depth, dim=1, largest=True, sorted=True).indices)
    ranks = torch.arange(1, depth + 1, device=outputs.device, dtype=ranked.dtype)
    precision = ranked.cumsum(dim=1) / ranks
    denominator = relevant.sum(dim=1).clamp(max=k).clamp(min=1)
    return (precision * ranked).sum(dim=1) / denominator


def mapk(outputs: torch.Tensor, targets: torch.Tensor, k: int = 10) -> torch.Tensor:
    """MAP@k: the mean of :func:`average_precision_at_k` over the batch, a 0-dim tensor."""
    return average_precision_at_k(outputs, targets, k).mean()


def mean_average_accuracy(outputs: torch.Tensor, targets: torch.Tensor,
                          topk: Sequence[int] = (1,)) -> list[torch.Tensor]:
    """MAP@k for each ``k`` in ``topk`` (Catalyst 20.x name), each a 0-dim tensor.

    Raises:
        ValueError: see :func:`average_precision_at_k`.
    """
    return [mapk(outputs, targets, k) for k in check_topk(topk)]
