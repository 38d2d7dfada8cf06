"""MLComp's ``Valid`` executor: scores a model's predictions over labelled data a subclass
provides::

    from mlcomp.worker.executors import Executor
    from mlcomp.worker.executors.valid import Valid

    @Executor.register
    class ValidMnist(Valid):
        def count(self): ...
        def adjust_part(self, part): ...          # sets self.x
        def score(self, preds): ...               # a score per row of the part
        def score_final(self): ...                # optional: default the mean of those

For each part (:class:`~mlcomp.worker.executors.equation.Equation`) the predictions go to
``score(preds)`` and, with a ``layout`` and ``plot_count > 0``, to ``plot(preds, scores)``; then
``score_final()`` gives the task's score (NaN becomes -1, as in MLComp) and, with a layout,
``plot_final(score)`` runs. The task's result holds ``score`` and the reports of its builders
(:mod:`mlcomp.worker.reports`); the score is also reported as the task's metric ``score``.
MLComp's copy of the score onto the registered model (``score_local``) is not kept.
"""
from __future__ import annotations

import math
from abc import abstractmethod

from mlcomp.worker.executors.equation import Equation

__all__ = ["Valid"]


class Valid(Equation):
    """Scores predictions part by part (see the module docstring).

    Args:
        layout: MLComp's report layout; with one, ``plot``/``plot_final`` run.
        fold_number: the validation fold (read by the subclass).
        plot_count: how many rows the report keeps; ``plot`` runs only when it is above 0.
        kwargs: as :class:`~mlcomp.worker.executors.equation.Equation`.
    """

    def __init__(self, layout: str | None = None, fold_number: int = 0, plot_count: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.layout, self.fold_number, self.plot_count = layout, fold_number, plot_count
        self._scores: list = []

    @abstractmethod
    def score(self, preds):
        """The score of each row of the current part, from its predictions."""

    def score_final(self) -> float:
        """The task's score: the mean of every row's score (NaN when there are none)."""
        import numpy as np

        if not self._scores:
            return math.nan
        return float(np.mean(np.concatenate([np.asarray(s, dtype=np.float64).reshape(-1) for s in self._scores])))

    def plot(self, preds, scores) -> None:
        """Adds a part's predictions and scores to the report (MLComp's hook); the default does nothing."""

    def plot_final(self, score: float) -> None:
        """Adds the final score to the report (MLComp's hook); the default does nothing."""

    def work(self) -> dict:
        """Scores every part; returns ``{score, reports}``."""
        self.create_base()
        for preds in self.solve(self.key(), self.generate_parts(self.count())):
            scores = self.score(preds)
            self._scores.append(scores)
            if self.layout and self.plot_count > 0:
                self.plot(preds, scores)
        score = float(self.score_final())
        score = -1.0 if math.isnan(score) else score
        if self.layout:
            self.plot_final(score)
        if self.task is not None and self.task.reporter is not None:
            self.task.reporter.metric("score", score, loader="valid", step=0)
        return {"score": score, "reports": self.session.summaries()}
