"""Confusion matrices and the per-class statistics read from them, on the device.

Convention of scikit-learn: rows are true classes, columns predicted classes, so ``cm[i, j]``
counts samples of class ``i`` predicted as ``j``. A matrix is additive over batches: summing the
batches' matrices gives the loader's exactly.
"""
from __future__ import annotations

import torch

__all__ = ["class_statistics", "confusion_matrix", "normalize_confusion_matrix", "precision_recall_fbeta"]


def confusion_matrix(outputs: torch.Tensor, targets: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """``[C, C]`` int64 confusion matrix of predictions against targets (no device sync; an index
    outside ``[0, C)`` is an error: a device-side assert on CUDA, a ``RuntimeError`` on the CPU).

    Args:
        outputs: ``[N, C]`` scores (the prediction is the arg-max) or ``[N]`` class indices.
        targets: ``[N]`` class indices in ``[0, C)``.
        num_classes: ``C``; defaults to the number of columns of ``outputs``.

    Returns:
        int64 tensor on the device of ``outputs``.

    Raises:
        ValueError: ``num_classes`` is missing for index outputs, or the sizes differ.
    """
    if outputs.dim() == 2:
        num_classes = num_classes or outputs.shape[1]
        predictions = outputs.argmax(dim=1)
    elif num_classes is None:
        raise ValueError("confusion_matrix: num_classes is required when outputs are class indices")
    else:
        predictions = outputs.long()
    targets = targets.reshape(-1).long()
    if predictions.shape != targets.shape:
        raise ValueError(f"confusion_matrix: {predictions.numel()} predictions for {targets.numel()} targets")
    flat = targets * num_classes + predictions
    counts = torch.zeros(num_classes ** 2, dtype=torch.int64, device=flat.device)
    # scatter_add rather than bincount: bincount reads the maximum back to size its output (a sync on CUDA)
    return counts.scatter_add_(0, flat, torch.ones_like(flat)).view(num_classes, num_classes)


def normalize_confusion_matrix(matrix: torch.Tensor, over: str = "true") -> torch.Tensor:
    """Shares instead of counts: ``over="true"`` divides rows (recall on the diagonal),
    ``"pred"`` columns (precision), ``"all"`` the total. Empty rows/columns stay 0.

    Raises:
        ValueError: ``over`` is not one of ``true``, ``pred``, ``all``.
    """
    matrix = matrix.to(torch.float64)
    if over == "true":
        total = matrix.sum(dim=1, keepdim=True)
    elif over == "pred":
        total = matrix.sum(dim=0, keepdim=True)
    elif over == "all":
        total = matrix.sum()
    else:
        raise ValueError(f"normalize_confusion_matrix: over={over!r}; allowed: 'true', 'pred', 'all'")
    return matrix / total.clamp(min=1)


def class_statistics(matrix: torch.Tensor) -> torch.Tensor:
    """``[4, C]`` float64 tensor of true positives, false positives, false negatives and support."""
    matrix = matrix.to(torch.float64)
    tp = matrix.diagonal()
    support = matrix.sum(dim=1)
    return torch.stack([tp, matrix.sum(dim=0) - tp, support - tp, support])


def precision_recall_fbeta(matrix: torch.Tensor, beta: float = 1.0) -> torch.Tensor:
    """``[3, C]`` float64 tensor of per-class precision, recall and F-beta; 0 where undefined
    (scikit-learn's ``zero_division=0``)."""
    tp, fp, fn, _ = class_statistics(matrix)
    precision = tp / (tp + fp).clamp(min=1)
    recall = tp / (tp + fn).clamp(min=1)
    weight = 1 + beta ** 2
    denominator = beta ** 2 * precision + recall
    fbeta = torch.where(denominator > 0, weight * precision * recall / denominator.clamp(min=1e-300),
                        torch.zeros_like(denominator))
    return torch.stack([precision, recall, fbeta])
