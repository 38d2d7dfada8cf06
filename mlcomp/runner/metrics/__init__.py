"""Functional metrics of the runner: pure torch, computed on the tensors' device (Catalyst 20.x names).

One module per family: :mod:`.accuracy`, :mod:`.mapk`, :mod:`.segmentation` (Dice, IoU, F-beta
from additive statistics), :mod:`.auc`, :mod:`.confusion`, and :mod:`.functional` (activations,
default top-k). The callbacks that log them live in :mod:`mlcomp.runner.callbacks.metrics`.
"""
from mlcomp.runner.metrics.accuracy import accuracy, multi_label_accuracy
from mlcomp.runner.metrics.auc import auc, binary_auc
from mlcomp.runner.metrics.confusion import (
    class_statistics,
    confusion_matrix,
    normalize_confusion_matrix,
    precision_recall_fbeta,
)
from mlcomp.runner.metrics.functional import get_activation_fn, get_default_topk_args
from mlcomp.runner.metrics.mapk import average_precision_at_k, mapk, mean_average_accuracy
from mlcomp.runner.metrics.segmentation import (
    binary_statistics,
    dice,
    dice_from_statistics,
    f1_score,
    fbeta_from_statistics,
    fbeta_score,
    iou,
    iou_from_statistics,
    jaccard,
)

__all__ = [
    "accuracy",
    "auc",
    "average_precision_at_k",
    "binary_auc",
    "binary_statistics",
    "class_statistics",
    "confusion_matrix",
    "dice",
    "dice_from_statistics",
    "f1_score",
    "fbeta_from_statistics",
    "fbeta_score",
    "get_activation_fn",
    "get_default_topk_args",
    "iou",
    "iou_from_statistics",
    "jaccard",
    "mapk",
    "mean_average_accuracy",
    "multi_label_accuracy",
    "normalize_confusion_matrix",
    "precision_recall_fbeta",
]
