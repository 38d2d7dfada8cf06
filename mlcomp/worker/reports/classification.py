"""MLComp's ``ClassificationReportBuilder``: the report of a classifier's predictions.

MLComp's builder stored the first ``plot_count`` images with their predicted class, label and
score, a confusion matrix and the named scores as report rows. This one keeps numbers only, summed
over every call of :meth:`ClassificationReportBuilder.process_pred`: how many rows were predicted
per class and, with labels, the confusion matrix, the accuracy and each class's precision, recall,
F1 and support (:func:`classification_summary`); the first ``plot_count`` rows are kept as samples
(predicted class, label, score, the caller's attributes) without their images.
"""
from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np

__all__ = ["ClassificationReportBuilder", "classification_summary"]


def classification_summary(confusion: np.ndarray) -> dict[str, Any]:
    """Metrics of a confusion matrix ``[C, C]`` (rows: labels, columns: predicted classes):
    ``accuracy``, ``macro_f1`` and per class ``{precision, recall, f1, support}`` (0 where a
    class was never predicted or never present), as sklearn's ``classification_report`` computes
    them."""
    confusion = np.asarray(confusion, dtype=np.int64)
    hits = np.diag(confusion).astype(np.float64)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)
    precision = np.divide(hits, predicted, out=np.zeros_like(hits), where=predicted > 0)
    recall = np.divide(hits, support, out=np.zeros_like(hits), where=support > 0)
    both = precision + recall
    f1 = np.divide(2 * precision * recall, both, out=np.zeros_like(hits), where=both > 0)
    total = int(confusion.sum())
    return {"accuracy": float(hits.sum() / total) if total else 0.0,
            "macro_f1": float(f1.mean()) if len(f1) else 0.0,
            "classes": {str(c): {"precision": float(precision[c]), "recall": float(recall[c]),
                                 "f1": float(f1[c]), "support": int(support[c])} for c in range(len(hits))}}


def _grow(matrix: np.ndarray, size: int) -> np.ndarray:
    """``matrix`` (1-d or square) padded with zeros to ``size`` classes."""
    if matrix.shape[0] >= size:
        return matrix
    grown = np.zeros((size,) * matrix.ndim, dtype=matrix.dtype)
    grown[tuple(slice(0, n) for n in matrix.shape)] = matrix
    return grown


class ClassificationReportBuilder:
    """Sums a classifier's predictions into a report (MLComp's builder of the same name; see the
    module docstring).

    Args:
        session: the executor's :class:`~mlcomp.worker.reports.ReportSession` (``self.session``),
            which :meth:`create_base` joins; None keeps the report to :meth:`summary` alone.
        task: the executor's ``self.task`` (:class:`executors.base.TaskContext`); its reporter,
            when it has one, receives the named scores as metrics.
        layout: MLComp's report layout name (kept in the summary).
        part: the data's part (``valid``), the metrics' loader.
        name: the report's name (the model's name in MLComp's examples).
        max_img_size: accepted for MLComp's signature; no images are kept.
        main_metric: the score of each sample kept (``scores[main_metric][i]``).
        plot_count: how many rows to keep as samples.
    """

    def __init__(self, session=None, task=None, layout: str | None = None, part: str = "valid",
                 name: str | None = "img_classify", max_img_size: tuple[int, int] | None = None,
                 main_metric: str = "accuracy", plot_count: int = 0):
        self.session, self.task, self.layout, self.part = session, task, layout, part
        self.name = name or "img_classify"
        self.max_img_size, self.main_metric, self.plot_count = max_img_size, main_metric, plot_count
        self.predicted = np.zeros(0, dtype=np.int64)
        self.confusion: np.ndarray | None = None
        self.scores: dict[str, float] = {}
        self.samples: list[dict[str, Any]] = []
        self.rows = 0

    def create_base(self) -> None:
        """Starts the report: joins the session, so the executor's result holds it."""
        if self.session is not None:
            self.session.add(self)

    def process_pred(self, imgs: Sequence | None, preds, targets=None, attrs: Sequence[Mapping] | None = None,
                     scores: Mapping[str, Sequence[float]] | None = None) -> None:
        """Adds one part's predictions.

        Args:
            imgs: the rows' images (MLComp's gallery; not kept).
            preds: class scores ``[N, C]`` (or predicted classes ``[N]``).
            targets: labels ``[N]``, or None for unlabelled data.
            attrs: per row, extra attributes kept with the samples.
            scores: per metric name, a score per row; ``main_metric``'s is kept with the samples.

        Raises:
            ValueError: ``targets`` is not as long as ``preds``.
        """
        preds = np.asarray(preds)
        classes = preds.shape[1] if preds.ndim == 2 else 0
        predicted = (preds.argmax(axis=1) if preds.ndim == 2 else preds.reshape(-1)).astype(np.int64)
        labels = None if targets is None else np.asarray(targets).reshape(-1).astype(np.int64)
        if labels is not None and len(labels) != len(predicted):
            raise ValueError(f"{len(labels)} targets for {len(predicted)} predictions")
        size = max([classes, len(self.predicted), int(predicted.max(initial=-1)) + 1]
                   + ([int(labels.max(initial=-1)) + 1] if labels is not None else []))
        self.predicted = _grow(self.predicted, size) + np.bincount(predicted, minlength=size)
        if labels is not None:
            confusion = np.bincount(labels * size + predicted, minlength=size * size).reshape(size, size)
            self.confusion = confusion if self.confusion is None else _grow(self.confusion, size) + confusion
        self._keep_samples(predicted, labels, attrs, (scores or {}).get(self.main_metric))
        self.rows += len(predicted)

    def _keep_samples(self, predicted: np.ndarray, labels, attrs, scores) -> None:
        """Keeps the first rows, up to ``plot_count`` in all, as samples."""
        for i in range(min(len(predicted), self.plot_count - len(self.samples))):
            sample = {"row": self.rows + i, "y_pred": int(predicted[i])}
            if labels is not None:
                sample["y"] = int(labels[i])
            if scores is not None:
                sample["score"] = float(scores[i])
            row_attrs = attrs[i] if attrs else {}
            sample.update({k: v.item() if isinstance(v, np.generic) else v for k, v in row_attrs.items()})
            self.samples.append(sample)

    def process_scores(self, scores: Mapping[str, float]) -> None:
        """Records named scores (``{"accuracy": 0.98}``) and reports each as a metric of the task
        (loader ``part``, step 0)."""
        for name, value in scores.items():
            self.scores[name] = float(value)
            reporter = getattr(self.task, "reporter", None)
            if reporter is not None:
                reporter.metric(name, float(value), loader=self.part, step=0)

    def summary(self) -> dict[str, Any]:
        """The report: ``{layout, part, rows, predicted (count per class), scores, samples}`` and,
        with labels, ``confusion`` (a list of rows) and the :func:`classification_summary`."""
        report: dict[str, Any] = {"layout": self.layout, "part": self.part, "rows": self.rows,
                                  "predicted": {str(c): int(n) for c, n in enumerate(self.predicted)},
                                  "scores": dict(self.scores), "samples": list(self.samples)}
        if self.confusion is not None:
            report["confusion"] = self.confusion.tolist()
            report.update(classification_summary(self.confusion))
        return report
