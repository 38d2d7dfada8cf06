"""The shipped metric callbacks, with Catalyst 20.x names, arguments, defaults and metric keys.

======================  ====================================  =====================================
callback                keys written                          how
======================  ====================================  =====================================
AccuracyCallback        ``accuracy01``, ``accuracy03``, ...   batch mean (exact per loader)
MultiLabelAccuracy...   ``multi_label_accuracy``              batch mean (exact per loader)
MapKCallback            ``map01``, ``map03``, ``map05``       batch mean (exact per loader)
DiceCallback            ``dice``                              loader value from summed tp/fp/fn
IouCallback             ``iou``                               loader value from summed tp/fp/fn
F1ScoreCallback         ``f1_score``                          loader value from summed tp/fp/fn
AUCCallback             ``auc/class_00``..., ``auc/mean``     loader end, on every sample
ConfusionMatrixCallback (files, and ``matrices`` attribute)   loader end, summed matrices
======================  ====================================  =====================================

Departures from Catalyst 20.x, each because the Catalyst behaviour is a known weakness:
Dice/IoU/F1 loader values are computed from the loader's summed statistics instead of averaging
batch values; ``AUCCallback`` with ``class_args`` names keys ``auc/<name>`` (Catalyst glues the
name to the prefix); the AUC mean ignores classes with no AUC (``nan``: a class absent from the
loader); ``ConfusionMatrixCallback`` writes ``.csv``/``.npy`` files instead of a TensorBoard image.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from mlcomp.errors import ConfigError
from mlcomp.runner.callbacks.metric import BatchMetricCallback, LoaderMetricCallback, StatisticsMetricCallback
from mlcomp.runner.metrics.accuracy import accuracy, multi_label_accuracy
from mlcomp.runner.metrics.auc import auc
from mlcomp.runner.metrics.confusion import confusion_matrix
from mlcomp.runner.metrics.functional import check_topk, get_activation_fn, get_default_topk_args
from mlcomp.runner.metrics.mapk import mean_average_accuracy
from mlcomp.runner.metrics.segmentation import (
    binary_statistics,
    dice_from_statistics,
    fbeta_from_statistics,
    iou_from_statistics,
)

__all__ = [
    "AccuracyCallback",
    "AUCCallback",
    "ConfusionMatrixCallback",
    "DiceCallback",
    "F1ScoreCallback",
    "IouCallback",
    "JaccardCallback",
    "MapKCallback",
    "MultiLabelAccuracyCallback",
]


def _topk_args(owner: str, *candidates, default: Sequence[int]) -> list[int]:
    """The first non-empty of ``candidates`` (or ``default``) as a checked list of ks."""
    topk = next((c for c in candidates if c), default)
    try:
        return check_topk(topk)
    except ValueError as e:
        raise ConfigError(f"{owner}: {e}") from None


def _topk_metric(metric_fn, topk: list[int], **kwargs):
    """``metric_fn(outputs, targets, topk)`` (a list) as a dict ``{"01": v, "03": v}``."""

    names = [f"{k:02}" for k in topk]

    def named(outputs, targets):
        return dict(zip(names, metric_fn(outputs, targets, topk, **kwargs)))

    return named


class AccuracyCallback(BatchMetricCallback):
    """Multi-class accuracy@k for each ``k`` (Catalyst 20.x), keys ``{prefix}{k:02}``.

    Args:
        input_key: targets, ``[N]`` class indices.
        output_key: scores, ``[N, C]`` (or ``[N]``/``[N, 1]`` binary logits).
        prefix: key prefix (``accuracy`` → ``accuracy01``).
        multiplier: scale of the logged values.
        topk_args: the ``k`` values; default ``accuracy_args``, else from ``num_classes``
            (``[1]``, ``[1, 3]`` above 3 classes, ``[1, 3, 5]`` above 5).
        num_classes: the number of classes, for the default ``topk_args``.
        accuracy_args: older name of ``topk_args``.
        activation: applied before a binary decision (``"Softmax"`` of one logit = sigmoid);
            top-k rankings do not depend on it. See :func:`mlcomp.runner.metrics.get_activation_fn`.

    Raises:
        ConfigError: bad ``topk_args`` or ``activation``.
    """

    @property
    def metric_names(self) -> tuple[str, ...]:
        """``{prefix}{k:02}`` for each ``k`` of ``topk_args``."""
        return tuple(f"{self.prefix}{k:02}" for k in self.topk_args)

    def __init__(self, input_key: str = "targets", output_key: str = "logits", prefix: str = "accuracy",
                 multiplier: float = 1.0, topk_args: Sequence[int] | None = None, num_classes: int | None = None,
                 accuracy_args: Sequence[int] | None = None, activation: str | None = "Softmax"):
        get_activation_fn(activation)
        topk = _topk_args(type(self).__name__, topk_args, accuracy_args, default=get_default_topk_args(num_classes))
        super().__init__(prefix, _topk_metric(accuracy, topk, activation=activation), input_key, output_key, multiplier)
        self.topk_args = topk


class MultiLabelAccuracyCallback(BatchMetricCallback):
    """Share of (sample, label) pairs right, ``activation(outputs) > threshold`` (Catalyst 20.x).

    Args: keys and ``prefix`` as in :class:`AccuracyCallback`; ``threshold`` (default 0.5) after
    ``activation`` (default ``"Sigmoid"``).

    Raises:
        ConfigError: bad ``activation``.
    """

    def __init__(self, input_key: str = "targets", output_key: str = "logits", prefix: str = "multi_label_accuracy",
                 threshold: float | None = None, activation: str | None = "Sigmoid", multiplier: float = 1.0):
        get_activation_fn(activation)
        super().__init__(prefix, multi_label_accuracy, input_key, output_key, multiplier,
                         threshold=0.5 if threshold is None else threshold, activation=activation)


class MapKCallback(BatchMetricCallback):
    """Mean average precision at k, keys ``{prefix}{k:02}`` (Catalyst 20.x ``MapKCallback``).

    Args:
        input_key: ``[N]`` class indices, or an ``[N, C]`` 0/1 matrix of relevant classes.
        output_key: ``[N, C]`` scores.
        prefix: key prefix (``map`` → ``map01``, ``map03``, ``map05``).
        topk_args: the ``k`` values; default ``map_args``, else from ``num_classes``, else
            ``(1, 3, 5)``.
        num_classes: the number of classes, for the default ``topk_args``.
        map_args: older name of ``topk_args``.
        multiplier: scale of the logged values.

    Raises:
        ConfigError: bad ``topk_args``.
    """

    def __init__(self, input_key: str = "targets", output_key: str = "logits", prefix: str = "map",
                 topk_args: Sequence[int] | None = None, num_classes: int | None = None,
                 map_args: Sequence[int] | None = None, multiplier: float = 1.0):
        default = get_default_topk_args(num_classes) if num_classes else (1, 3, 5)
        topk = _topk_args(type(self).__name__, topk_args, map_args, default=default)
        super().__init__(prefix, _topk_metric(mean_average_accuracy, topk), input_key, output_key, multiplier)
        self.topk_args = topk


class _OverlapCallback(StatisticsMetricCallback):
    """Dice/IoU/F-beta: per-batch tp/fp/fn of ``activation(outputs)`` (thresholded or soft).

    Subclasses set ``default_prefix`` and ``from_statistics`` (``(statistics, eps) -> value``).
    """

    default_prefix = ""
    from_statistics = staticmethod(dice_from_statistics)

    def __init__(self, input_key: str = "targets", output_key: str = "logits", prefix: str | None = None,
                 eps: float = 1e-7, threshold: float | None = None, activation: str | None = "Sigmoid",
                 multiplier: float = 1.0):
        get_activation_fn(activation)
        super().__init__(self.default_prefix if prefix is None else prefix, input_key, output_key, multiplier)
        self.eps, self.threshold, self.activation = eps, threshold, activation

    def statistics(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """``[3]`` tensor (tp, fp, fn) of the batch."""
        return binary_statistics(outputs, targets, self.threshold, self.activation)

    def metrics(self, statistics: torch.Tensor) -> torch.Tensor:
        """The metric of ``(tp, fp, fn)``."""
        return self.from_statistics(statistics, self.eps)


class DiceCallback(_OverlapCallback):
    """Dice coefficient (Catalyst 20.x ``DiceCallback``); the loader value is the Dice of the
    loader's summed statistics. See :mod:`mlcomp.runner.metrics.segmentation`.

    Args:
        input_key: 0/1 targets, same shape as the outputs (e.g. ``[N, 1, H, W]`` masks).
        output_key: logits.
        prefix: metric name (default ``dice``).
        eps: avoids 0/0.
        threshold: binarise ``activation(outputs)`` at it; ``None`` gives a soft Dice.
        activation: ``"Sigmoid"`` (default), ``"Softmax"``, ``"Softmax2d"`` or ``"none"``.
        multiplier: scale of the logged value.

    Raises:
        ConfigError: bad ``activation`` (at construction), missing keys (per batch).
    """

    default_prefix = "dice"
    from_statistics = staticmethod(dice_from_statistics)


class IouCallback(_OverlapCallback):
    """Intersection over union / Jaccard index (Catalyst 20.x ``IouCallback``); arguments of
    :class:`DiceCallback`, default prefix ``iou``."""

    default_prefix = "iou"
    from_statistics = staticmethod(iou_from_statistics)


JaccardCallback = IouCallback
"""Alias of :class:`IouCallback` (Catalyst 20.x)."""


class F1ScoreCallback(_OverlapCallback):
    """F-beta score of binary/multi-label predictions (Catalyst 20.x ``F1ScoreCallback``), micro
    over all elements; with ``threshold=0.5`` it equals scikit-learn's ``fbeta_score`` on the loader.

    Args: those of :class:`DiceCallback`, default prefix ``f1_score``, plus ``beta`` (recall is
    weighed ``beta`` times as much as precision).
    """

    default_prefix = "f1_score"

    def __init__(self, input_key: str = "targets", output_key: str = "logits", prefix: str = "f1_score",
                 beta: float = 1.0, eps: float = 1e-7, threshold: float | None = None,
                 activation: str | None = "Sigmoid", multiplier: float = 1.0):
        super().__init__(input_key, output_key, prefix, eps, threshold, activation, multiplier)
        self.beta = beta

    def metrics(self, statistics: torch.Tensor) -> torch.Tensor:
        """F-beta of ``(tp, fp, fn)``."""
        return fbeta_from_statistics(statistics, self.beta, self.eps)


class AUCCallback(LoaderMetricCallback):
    """ROC AUC per class on the loader's samples, and their mean (Catalyst 20.x ``AUCCallback``).

    Keys: ``{prefix}/class_00``, ``{prefix}/class_01``, ... (or ``{prefix}/{name}`` for the names
    in ``class_args``) and ``{prefix}/mean`` (the mean over classes that have an AUC).

    Args:
        input_key: ``[N]`` 0/1 labels, ``[N, C]`` 0/1 labels, or ``[N]`` class indices for
            ``[N, C]`` outputs (one-vs-rest).
        output_key: ``[N]`` or ``[N, C]`` logits.
        prefix: key prefix.
        activation: applied to the outputs at loader end (``"Sigmoid"`` by default).
        class_args: names of the classes, for the keys.
        multiplier: scale of the logged values.

    Raises:
        ConfigError: bad ``activation``.
    """

    def __init__(self, input_key: str = "targets", output_key: str = "logits", prefix: str = "auc",
                 activation: str | None = "Sigmoid", class_args: Sequence[str] | None = None,
                 multiplier: float = 1.0):
        self.activation_fn = get_activation_fn(activation)
        self.class_args = list(class_args) if class_args else None
        super().__init__(prefix, self._per_class_auc, input_key, output_key, multiplier)

    def _per_class_auc(self, outputs: torch.Tensor, targets: torch.Tensor) -> dict[str, torch.Tensor]:
        values = auc(self.activation_fn(outputs.float()), targets)
        names = self.class_args or [f"class_{i:02}" for i in range(len(values))]
        if len(names) != len(values):
            raise ConfigError(f"AUCCallback: class_args has {len(names)} names for {len(values)} classes")
        result = {f"/{name}": value for name, value in zip(names, values)}
        result["/mean"] = values.nanmean()
        return result


class ConfusionMatrixCallback(StatisticsMetricCallback):
    """The loader's confusion matrix: rows true classes, columns predicted (Catalyst 20.x name).

    Each batch adds its matrix (``torch.bincount`` on the device) to a running sum; at loader end
    the matrix (all ranks summed) is kept in ``self.matrices[loader_name]`` (a numpy int64
    array) and, with a logdir, written to ``{logdir}/{prefix}/{stage}.{epoch}.{loader}.csv``
    (header: the class names) and ``.npy``. Nothing is plotted.

    Args:
        input_key: ``[N]`` class indices.
        output_key: ``[N, C]`` scores (arg-max is the prediction) or ``[N]`` class indices.
        prefix: folder name under the logdir.
        class_names: the classes' names (their number is ``num_classes``).
        num_classes: needed when ``class_names`` is not given.
        plot_params, tensorboard_callback_name, version: accepted for Catalyst 20.x configs;
            no effect (nothing is plotted, the counts are exact).

    Raises:
        ConfigError: neither ``num_classes`` nor ``class_names``, or both disagreeing.
    """

    def __init__(self, input_key: str = "targets", output_key: str = "logits", prefix: str = "confusion_matrix",
                 class_names: Sequence[str] | None = None, num_classes: int | None = None,
                 plot_params: dict | None = None, tensorboard_callback_name: str | None = None,
                 version: str | None = None):
        if class_names is None and not num_classes:
            raise ConfigError("ConfusionMatrixCallback: give num_classes or class_names")
        if class_names is not None and num_classes and len(class_names) != num_classes:
            raise ConfigError(f"ConfusionMatrixCallback: {len(class_names)} class_names for num_classes={num_classes}")
        super().__init__(prefix, input_key, output_key)
        self.num_classes = len(class_names) if class_names is not None else int(num_classes)
        self.class_names = list(class_names) if class_names is not None else [str(i) for i in range(self.num_classes)]
        self.matrices: dict[str, np.ndarray] = {}

    def statistics(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The batch's ``[C, C]`` matrix."""
        return confusion_matrix(outputs, targets, self.num_classes)

    def on_batch_end(self, runner) -> None:
        """Add the batch's matrix (no metric per batch, no device sync)."""
        pair = self._pair(runner)
        if pair is not None:
            self._add(self.statistics(*pair))

    def on_loader_end(self, runner) -> None:
        """Keep the loader's matrix and write it under the logdir (master only)."""
        statistics = self.loader_statistics()
        self._total = None
        if statistics is None:
            return
        matrix = statistics.round().to(torch.int64).numpy()
        self.matrices[runner.loader_name] = matrix
        if runner.logdir is not None and runner.is_master:
            name = f"{runner.stage_name}.{runner.epoch}.{runner.loader_name}"
            self._save(matrix, Path(runner.logdir) / self.prefix / name)

    def _save(self, matrix: np.ndarray, stem: Path) -> None:
        stem.parent.mkdir(parents=True, exist_ok=True)
        np.save(stem.parent / f"{stem.name}.npy", matrix)
        np.savetxt(stem.parent / f"{stem.name}.csv", matrix, fmt="%d", delimiter=",", header=",".join(self.class_names),
                   comments="")

    def metrics(self, statistics: torch.Tensor) -> dict[str, Any]:
        """No scalar metrics: the matrix is the artefact."""
        return {}
