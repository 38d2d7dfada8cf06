"""Overlap metrics from additive statistics: Dice, IoU (Jaccard) and F-beta (Catalyst 20.x).

Each metric is a function of three sums, true positives ``tp = Σ o·t``, false positives
``fp = Σ o − tp`` and false negatives ``fn = Σ t − tp``, where ``o`` are the outputs after the
activation (binarised when a threshold is given; soft otherwise) and ``t`` the 0/1 targets.
Because the sums add up over batches, a loader-level value computed from summed statistics is
exact, not a mean of batch values. Formulas, with ``eps`` avoiding 0/0 (an empty prediction of an
empty target scores 1 for Dice and IoU, as in Catalyst):

- Dice ``(2tp + eps·[2tp+fp+fn = 0]) / (2tp + fp + fn + eps)``
- IoU ``(tp + eps·[tp+fp+fn = 0]) / (tp + fp + fn + eps)``
- F-beta ``((1+β²)tp + eps) / ((1+β²)tp + β²fn + fp + eps)``
"""
from __future__ import annotations

import torch

from mlcomp.runner.metrics.functional import threshold_outputs

__all__ = [
    "binary_statistics",
    "dice",
    "dice_from_statistics",
    "f1_score",
    "fbeta_from_statistics",
    "fbeta_score",
    "iou",
    "iou_from_statistics",
    "jaccard",
]


def binary_statistics(outputs: torch.Tensor, targets: torch.Tensor, threshold: float | None = None,
                      activation: str | None = "Sigmoid", per_class: bool = False) -> torch.Tensor:
    """``[3]`` tensor ``(tp, fp, fn)`` summed over every element, or ``[3, C]`` with ``per_class``.

    Args:
        outputs: logits of any shape, e.g. ``[N, C, H, W]`` masks or ``[N, C]`` labels.
        targets: 0/1 tensor of the same shape.
        threshold: binarise ``activation(outputs)`` at it; ``None`` keeps soft values.
        activation: see :func:`mlcomp.runner.metrics.get_activation_fn`.
        per_class: keep dim 1 (the class/channel axis) and sum over the others.

    Returns:
        A float tensor on the device of ``outputs``.

    Raises:
        ValueError: the shapes differ.
    """
    if outputs.shape != targets.shape:
        raise ValueError(f"outputs {tuple(outputs.shape)} and targets {tuple(targets.shape)} "
                         "should have the same shape")
    outputs = threshold_outputs(outputs, threshold, activation)
    targets = targets.float()
    dims = [d for d in range(outputs.dim()) if not (per_class and d == 1)]
    tp = (outputs * targets).sum(dim=dims)
    return torch.stack([tp, outputs.sum(dim=dims) - tp, targets.sum(dim=dims) - tp])


def dice_from_statistics(statistics: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """Dice from ``(tp, fp, fn)`` along dim 0 (see the module docstring)."""
    tp, fp, fn = statistics
    union = 2 * tp + fp + fn
    return (2 * tp + eps * (union == 0)) / (union + eps)


def iou_from_statistics(statistics: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    """IoU (Jaccard index) from ``(tp, fp, fn)`` along dim 0 (see the module docstring)."""
    tp, fp, fn = statistics
    union = tp + fp + fn
    return (tp + eps * (union == 0)) / (union + eps)


def fbeta_from_statistics(statistics: torch.Tensor, beta: float = 1.0, eps: float = 1e-7) -> torch.Tensor:
    """F-beta from ``(tp, fp, fn)`` along dim 0 (see the module docstring)."""
    tp, fp, fn = statistics
    weight = 1 + beta ** 2
    return (weight * tp + eps) / (weight * tp + beta ** 2 * fn + fp + eps)


def dice(outputs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-7, threshold: float | None = None,
         activation: str | None = "Sigmoid", per_class: bool = False) -> torch.Tensor:
    """Dice coefficient of ``activation(outputs)`` and ``targets``: 0-dim, or ``[C]`` with ``per_class``.

    Args: see :func:`binary_statistics`; ``eps`` avoids 0/0.

    Raises:
        ValueError: the shapes differ.
    """
    return dice_from_statistics(binary_statistics(outputs, targets, threshold, activation, per_class), eps)


def iou(outputs: torch.Tensor, targets: torch.Tensor, eps: float = 1e-7, threshold: float | None = None,
        activation: str | None = "Sigmoid", per_class: bool = False) -> torch.Tensor:
    """Intersection over union (Jaccard index): 0-dim, or ``[C]`` with ``per_class``.

    Args: see :func:`binary_statistics`; ``eps`` avoids 0/0.

    Raises:
        ValueError: the shapes differ.
    """
    return iou_from_statistics(binary_statistics(outputs, targets, threshold, activation, per_class), eps)


jaccard = iou
"""Alias of :func:`iou` (Catalyst 20.x name)."""


def fbeta_score(outputs: torch.Tensor, targets: torch.Tensor, beta: float = 1.0, eps: float = 1e-7,
                threshold: float | None = None, activation: str | None = "Sigmoid",
                per_class: bool = False) -> torch.Tensor:
    """F-beta score of binary/multi-label predictions: 0-dim (micro over all elements) or ``[C]``.

    With ``threshold=0.5`` and binary targets it equals scikit-learn's ``fbeta_score``
    (``average="binary"``, or ``"micro"`` over multi-label columns) up to ``eps``.

    Args: see :func:`binary_statistics`; ``beta`` weighs recall ``beta`` times as much as precision.

    Raises:
        ValueError: the shapes differ.
    """
    statistics = binary_statistics(outputs, targets, threshold, activation, per_class)
    return fbeta_from_statistics(statistics, beta, eps)


f1_score = fbeta_score
"""Alias of :func:`fbeta_score` (Catalyst 20.x name; ``beta`` defaults to 1)."""
