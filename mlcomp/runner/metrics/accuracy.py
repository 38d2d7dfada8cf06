"""Accuracy metrics: top-k multi-class accuracy and multi-label accuracy (Catalyst 20.x).

Every function works on the tensors' device and returns 0-dim tensors: no ``.item()``, no sync.
"""
from __future__ import annotations

from typing import Sequence

import torch

from mlcomp.runner.metrics.functional import check_topk, get_activation_fn

__all__ = ["accuracy", "multi_label_accuracy"]


def _binary_predictions(outputs: torch.Tensor, threshold: float, activation: str | None) -> torch.Tensor:
    """Class 0/1 from one score per sample; a one-logit ``Softmax`` is the softmax of [0, x]."""
    if activation is not None and str(activation).lower().startswith("softmax"):
        activation = "Sigmoid"  # softmax([0, x])[1] == sigmoid(x)
    return (get_activation_fn(activation)(outputs.float()) > threshold).long()


def accuracy(outputs: torch.Tensor, targets: torch.Tensor, topk: Sequence[int] = (1,),
             activation: str | None = None, threshold: float = 0.5) -> list[torch.Tensor]:
    """Share of samples whose target is among the ``k`` highest scores, for each ``k`` in ``topk``.

    Args:
        outputs: ``[N, C]`` scores (logits or probabilities; the ranking is what counts), or
            ``[N]``/``[N, 1]`` for a binary problem, where the prediction is
            ``activation(outputs) > threshold`` (a lone logit under ``"Softmax"`` is read as the
            two logits ``[0, x]``, i.e. a sigmoid).
        targets: ``[N]`` (or ``[N, 1]``) class indices.
        topk: the ``k`` values; a ``k`` above ``C`` counts every sample as correct.
        activation: see :func:`mlcomp.runner.metrics.get_activation_fn`; it does not change a
            top-k ranking, so it matters only in the binary case.
        threshold: the binary decision threshold, after the activation.

    Returns:
        One 0-dim float tensor in [0, 1] per ``k``, on the device of ``outputs``.

    Raises:
        ValueError: ``topk`` has a non-positive or non-int value, or the batch sizes differ.
    """
    topk = check_topk(topk)
    targets = targets.reshape(-1).long()
    if outputs.dim() == 1 or (outputs.dim() == 2 and outputs.shape[1] == 1):
        correct = _binary_predictions(outputs.reshape(-1), threshold, activation).eq(targets).float()
        if correct.numel() != targets.numel():
            raise ValueError(f"accuracy: {correct.numel()} outputs for {targets.numel()} targets")
        return [correct.mean() for _ in topk]
    if outputs.shape[0] != targets.shape[0]:
        raise ValueError(f"accuracy: outputs have {outputs.shape[0]} rows, targets {targets.shape[0]}")
    max_k = min(max(topk), outputs.shape[1])
    top = outputs.topk(max_k, dim=1, largest=True, sorted=True).indices
    hits = top.eq(targets.view(-1, 1)).float()  # [N, max_k], at most one 1 per row
    cumulative = hits.cumsum(dim=1).mean(dim=0)  # accuracy@1..max_k
    return [cumulative[min(k, max_k) - 1] for k in topk]


def multi_label_accuracy(outputs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5,
                         activation: str | None = "Sigmoid") -> torch.Tensor:
    """Share of (sample, label) pairs predicted right: ``activation(outputs) > threshold`` vs targets.

    Args:
        outputs: ``[N, C]`` (any shape) logits.
        targets: binary tensor of the same shape.
        threshold: decision threshold after the activation.
        activation: see :func:`mlcomp.runner.metrics.get_activation_fn`.

    Returns:
        A 0-dim float tensor in [0, 1].

    Raises:
        ValueError: the shapes differ.
    """
    if outputs.shape != targets.shape:
        raise ValueError(f"multi_label_accuracy: outputs {tuple(outputs.shape)} and targets "
                         f"{tuple(targets.shape)} should have the same shape")
    predictions = get_activation_fn(activation)(outputs.float()) > threshold
    return predictions.eq(targets.bool()).float().mean()
