"""Losses that torch does not ship: focal losses and Dice/IoU losses (Catalyst 20.x names).

- Focal loss: Lin et al., "Focal Loss for Dense Object Detection", ICCV 2017
  (https://arxiv.org/abs/1708.02002): ``−α_t (1 − p_t)^γ log p_t``.
- Reduced focal loss: Sergievskiy and Ponamarev, "Reduced Focal Loss: 1st Place Solution to
  xView object detection in Satellite Imagery", 2019 (https://arxiv.org/abs/1903.01347): the
  focal factor ``((1 − p_t)/threshold)^γ`` applies only where ``p_t ≥ threshold``; below it the
  loss is plain cross-entropy.
- Dice and IoU losses: ``1 − dice`` and ``1 − iou`` of (soft) predictions, see
  :mod:`mlcomp.runner.metrics.segmentation`.
- Symmetric cross-entropy: Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy
  Labels", ICCV 2019 (https://arxiv.org/abs/1908.06112).
- Batch-hard triplet loss: Hermans et al., "In Defense of the Triplet Loss for Person
  Re-Identification", 2017 (https://arxiv.org/abs/1703.07737).

The ``Criterion`` registry (:mod:`mlcomp.runner.registry`) offers the names of ``__all__``.
"""
from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from mlcomp.runner.metrics.segmentation import dice, iou

__all__ = [
    "DiceLoss",
    "FocalLossBinary",
    "FocalLossMultiClass",
    "IoULoss",
    "JaccardLoss",
    "reduced_focal_loss",
    "sigmoid_focal_loss",
    "SymmetricCrossEntropyLoss",
    "TripletLoss",
]

_REDUCTIONS = ("none", "mean", "sum", "batchwise_mean")


def _reduce(loss: torch.Tensor, reduction: str) -> torch.Tensor:
    """Apply ``reduction``: ``none``, ``mean``, ``sum`` or ``batchwise_mean`` (sum over dim 0)."""
    if reduction == "mean":
        return loss.mean()
    if reduction == "sum":
        return loss.sum()
    if reduction == "batchwise_mean":
        return loss.sum(dim=0)
    if reduction == "none":
        return loss
    raise ValueError(f"reduction={reduction!r}; allowed: {', '.join(_REDUCTIONS)}")


def _log_pt(outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """``log p_t``: the log-probability the model gives to the true label of each element."""
    return -F.binary_cross_entropy_with_logits(outputs, targets.to(outputs.dtype), reduction="none")


def sigmoid_focal_loss(outputs: torch.Tensor, targets: torch.Tensor, gamma: float = 2.0,
                       alpha: float | None = 0.25, reduction: str = "mean") -> torch.Tensor:
    """Binary focal loss of logits (Lin et al. 2017; Catalyst 20.x signature).

    Args:
        outputs: logits of any shape.
        targets: 0/1 labels of the same shape.
        gamma: focusing parameter ``γ ≥ 0``; 0 gives (α-weighted) binary cross-entropy.
        alpha: weight of the positive class (``1 − alpha`` for negatives), or ``None`` for none.
        reduction: ``"none"`` (element-wise), ``"mean"``, ``"sum"`` or ``"batchwise_mean"``
            (sum over dim 0).

    Returns:
        The loss, reduced as asked.

    Raises:
        ValueError: an unknown ``reduction``.
    """
    log_pt = _log_pt(outputs, targets)
    loss = -((1 - log_pt.exp()) ** gamma) * log_pt
    if alpha is not None:
        targets = targets.to(outputs.dtype)
        loss = loss * (alpha * targets + (1 - alpha) * (1 - targets))
    return _reduce(loss, reduction)


def reduced_focal_loss(outputs: torch.Tensor, targets: torch.Tensor, threshold: float = 0.5,
                       gamma: float = 2.0, reduction: str = "mean") -> torch.Tensor:
    """Reduced focal loss of logits (Sergievskiy and Ponamarev 2019; Catalyst 20.x signature).

    Args:
        outputs: logits of any shape.
        targets: 0/1 labels of the same shape.
        threshold: ``p_t`` below which the loss is plain cross-entropy.
        gamma: focusing parameter above the threshold.
        reduction: see :func:`sigmoid_focal_loss`.

    Raises:
        ValueError: an unknown ``reduction``.
    """
    log_pt = _log_pt(outputs, targets)
    pt = log_pt.exp()
    factor = ((1.0 - pt) / threshold).pow(gamma)
    factor = torch.where(pt < threshold, torch.ones_like(factor), factor)
    return _reduce(-factor * log_pt, reduction)


class FocalLossBinary(nn.Module):
    """Focal loss of one logit per element against 0/1 targets (Catalyst 20.x ``FocalLossBinary``).

    Args:
        ignore: a target value whose elements are left out (e.g. 255 for "unknown" pixels).
        reduced: use :func:`reduced_focal_loss` instead of :func:`sigmoid_focal_loss`.
        gamma: focusing parameter.
        alpha: positive-class weight of the focal loss (unused when ``reduced``).
        threshold: threshold of the reduced focal loss (unused otherwise).
        reduction: ``"mean"``, ``"sum"``, ``"none"`` or ``"batchwise_mean"``.

    Shapes: ``forward(logits, targets)`` takes two tensors with the same number of elements
    (e.g. ``[N]``, ``[N, 1]`` or ``[N, 1, H, W]``); both are flattened.

    Raises:
        ValueError: an unknown ``reduction`` (at construction).
    """

    def __init__(self, ignore: int | None = None, reduced: bool = False, gamma: float = 2.0,
                 alpha: float | None = 0.25, threshold: float = 0.5, reduction: str = "mean"):
        super().__init__()
        if reduction not in _REDUCTIONS:
            raise ValueError(f"{type(self).__name__}: reduction={reduction!r}; allowed: {', '.join(_REDUCTIONS)}")
        self.ignore = ignore
        self.reduced = reduced
        self.gamma = gamma
        self.alpha = alpha
        self.threshold = threshold
        self.reduction = reduction

    def _loss(self, logits: torch.Tensor, targets: torch.Tensor, reduction: str) -> torch.Tensor:
        if self.reduced:
            return reduced_focal_loss(logits, targets, self.threshold, self.gamma, reduction)
        return sigmoid_focal_loss(logits, targets, self.gamma, self.alpha, reduction)

    def _masked(self, logits: torch.Tensor, targets: torch.Tensor, kept: torch.Tensor | None) -> torch.Tensor:
        """The loss of 1-D ``logits``/``targets`` over the elements where ``kept`` (all when None).

        Except for ``reduction="none"`` (which returns the kept elements only), left-out elements
        are masked rather than indexed away, so no device sync happens.
        """
        if kept is None:
            return self._loss(logits, targets, self.reduction)
        if self.reduction == "none":
            return self._loss(logits[kept], targets[kept], "none")
        loss = self._loss(logits, torch.where(kept, targets, torch.zeros_like(targets)), "none") * kept
        return loss.sum() / kept.sum() if self.reduction == "mean" else loss.sum()

    def _kept(self, targets: torch.Tensor) -> torch.Tensor | None:
        return None if self.ignore is None else targets != self.ignore

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of flattened ``logits`` against flattened ``targets``."""
        targets = targets.reshape(-1)
        return self._masked(logits.reshape(-1), targets, self._kept(targets))


class FocalLossMultiClass(FocalLossBinary):
    """Focal loss for ``C`` exclusive classes as ``C`` one-vs-rest binary focal losses, summed
    (Catalyst 20.x ``FocalLossMultiClass``; same arguments as :class:`FocalLossBinary`).

    Shapes: ``forward(logits, targets)`` takes ``[N, C]`` logits and ``[N]`` class indices; with
    ``ignore``, samples whose target is ``ignore`` are left out.
    """

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sum over classes of the binary focal loss of column ``c`` against ``targets == c``."""
        num_classes = logits.shape[1]
        logits, targets = logits.reshape(-1, num_classes), targets.reshape(-1)
        kept = self._kept(targets)
        return sum(self._masked(logits[:, c], (targets == c).to(logits.dtype), kept) for c in range(num_classes))


class DiceLoss(nn.Module):
    """``1 − dice(activation(logits), targets)``, soft unless ``threshold`` is set (then not
    differentiable); see :func:`mlcomp.runner.metrics.dice` for the arguments and shapes."""

    def __init__(self, eps: float = 1e-7, threshold: float | None = None, activation: str | None = "Sigmoid"):
        super().__init__()
        self.eps = eps
        self.threshold = threshold
        self.activation = activation

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """A 0-dim loss in [0, 1]."""
        return 1 - dice(logits, targets, self.eps, self.threshold, self.activation)


class IoULoss(DiceLoss):
    """``1 − iou(activation(logits), targets)`` (a soft Jaccard loss); arguments of :class:`DiceLoss`."""

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """A 0-dim loss in [0, 1]."""
        return 1 - iou(logits, targets, self.eps, self.threshold, self.activation)


JaccardLoss = IoULoss
"""Alias of :class:`IoULoss`."""


class SymmetricCrossEntropyLoss(nn.Module):
    """``α·CE + β·RCE`` of Wang et al., "Symmetric Cross Entropy for Robust Learning with Noisy
    Labels", ICCV 2019 (https://arxiv.org/abs/1908.06112), as Catalyst 20.x computes it: with
    ``p`` the predicted probabilities clamped to [1e-7, 1] and ``q`` the one-hot targets clamped
    to [1e-4, 1], ``CE = −Σ_c q_c log p_c`` and ``RCE = −Σ_c p_c log q_c``, each averaged over
    the batch. The clamp of ``q`` makes ``log 0`` the paper's ``A = log 1e-4``.

    Args:
        alpha: weight of CE (fits the clean labels; overfits noisy ones alone).
        beta: weight of RCE (robust to label noise).

    Inputs: ``probabilities`` float ``[batch, num_classes]`` (a softmax's output: as in
    Catalyst, no activation is applied, values are only clamped), ``targets`` int64 ``[batch]``.
    Returns a 0-dim loss.
    """

    def __init__(self, alpha: float = 1.0, beta: float = 1.0):
        super().__init__()
        self.alpha = alpha
        self.beta = beta

    def forward(self, probabilities: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss; raises ``RuntimeError`` for a target outside ``0..num_classes-1``."""
        p = probabilities.clamp(1e-7, 1.0)
        q = F.one_hot(targets.long(), p.shape[1]).to(p.dtype).clamp(1e-4, 1.0)
        cross_entropy = -(q * p.log()).sum(dim=1).mean()
        reverse_cross_entropy = -(p * q.log()).sum(dim=1).mean()
        return self.alpha * cross_entropy + self.beta * reverse_cross_entropy


class TripletLoss(nn.Module):
    """The batch-hard triplet loss of Hermans et al., "In Defense of the Triplet Loss for Person
    Re-Identification", 2017 (https://arxiv.org/abs/1703.07737), as Catalyst 20.x's
    ``TripletLoss``: for each anchor, its farthest same-label sample and its nearest other-label
    sample by squared Euclidean distance, ``mean(max(0, d(a, p) − d(a, n) + margin))``.

    Args:
        margin: the margin between the two distances.

    Inputs: ``embeddings`` float ``[batch, dim]``, ``targets`` int ``[batch]``. Returns a 0-dim
    loss (an anchor without a positive counts its positive distance as 0, without a negative as
    its farthest distance).
    """

    def __init__(self, margin: float = 0.3):
        super().__init__()
        self.margin = margin

    def forward(self, embeddings: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss."""
        norms = (embeddings * embeddings).sum(dim=1)
        distances = (norms[:, None] - 2 * embeddings @ embeddings.T + norms[None, :]).clamp(min=0)
        same = targets[:, None] == targets[None, :]
        positive = same & ~torch.eye(len(targets), dtype=torch.bool, device=targets.device)
        hardest_positive = (distances * positive).max(dim=1).values
        farthest = distances.max(dim=1, keepdim=True).values
        hardest_negative = (distances + farthest * same).min(dim=1).values
        return F.relu(hardest_positive - hardest_negative + self.margin).mean()
