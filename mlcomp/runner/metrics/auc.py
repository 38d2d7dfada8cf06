"""ROC AUC per class, from ranks (the Mann–Whitney U statistic), on the device.

``AUC = (Σ ranks of positives − P(P+1)/2) / (P·N)`` with ranks of tied scores averaged, which is
the area under the ROC curve with ties counted as one half (the value scikit-learn's
``roc_auc_score`` returns). A class with no positive or no negative sample has no AUC: ``nan``.
"""
from __future__ import annotations

import torch
from torch.nn import functional as F

__all__ = ["auc", "binary_auc"]


def _average_ranks(values: torch.Tensor) -> torch.Tensor:
    """1-based ranks of a 1-D tensor in ascending order, ties given their mean rank (float64)."""
    _, inverse, counts = torch.unique(values, sorted=True, return_inverse=True, return_counts=True)
    last = counts.cumsum(0).to(torch.float64)
    return (last - (counts.to(torch.float64) - 1) / 2)[inverse]


def binary_auc(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ROC AUC of one score per sample against 0/1 targets.

    Args:
        scores: ``[N]`` scores (any monotonic transform gives the same AUC).
        targets: ``[N]`` 0/1 labels.

    Returns:
        A 0-dim float64 tensor; ``nan`` when the targets hold a single class.
    """
    positive = targets.reshape(-1).bool()
    ranks = _average_ranks(scores.reshape(-1))
    n_pos = positive.sum().to(torch.float64)
    n_neg = positive.numel() - n_pos
    return (ranks[positive].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def auc(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """ROC AUC of each class (binary, multi-label, or one-vs-rest multi-class), Catalyst 20.x.

    Args:
        outputs: ``[N]`` or ``[N, C]`` scores (apply the activation first if it is not monotonic
            per column, e.g. a softmax).
        targets: ``[N]`` 0/1 labels (binary), ``[N, C]`` 0/1 labels (multi-label), or ``[N]``
            class indices when ``outputs`` has ``C > 1`` columns (one-vs-rest).

    Returns:
        ``[C]`` float64 tensor (``[1]`` for the binary case); ``nan`` for a class whose targets
        are all 0 or all 1.

    Raises:
        ValueError: the shapes do not fit.
    """
    outputs = outputs.reshape(-1, 1) if outputs.dim() == 1 else outputs
    if outputs.dim() != 2:
        raise ValueError(f"auc: outputs should be [N] or [N, C], got shape {tuple(outputs.shape)}")
    if targets.dim() == 1 and outputs.shape[1] > 1:
        targets = F.one_hot(targets.long(), outputs.shape[1])
    targets = targets.reshape(outputs.shape[0], -1)
    if targets.shape != outputs.shape:
        raise ValueError(f"auc: targets {tuple(targets.shape)} do not fit outputs {tuple(outputs.shape)}")
    return torch.stack([binary_auc(outputs[:, i], targets[:, i]) for i in range(outputs.shape[1])])
