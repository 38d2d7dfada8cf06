"""MLComp's ``Infer`` executor: predictions of a model over the data a subclass provides, saved
where MLComp saved them so a later task (a submission, an ensemble's ``load``) finds them::

    from mlcomp.worker.executors import Executor
    from mlcomp.worker.executors.infer import Infer

    @Executor.register
    class InferMnist(Infer):
        def count(self): ...
        def adjust_part(self, part): ...          # sets self.x
        def save(self, preds, folder): ...        # optional, see below
        def save_final(self, folder): ...

For each part (:class:`~mlcomp.worker.executors.equation.Equation`) the predictions ``[n, C]``
go to ``save(preds, "data/pred")``, to ``submit(preds)`` when the task says
``prepare_submit: true`` (MLComp 19.9's infer), and to ``plot(preds)`` when there is a
``layout``; then ``save_final("data/pred")`` and ``submit_final("data/submissions")``. By default
``save``/``save_final`` write all rows as ``data/pred/<name>_<suffix>.npy``; ``submit`` and
``submit_final`` have no default. The task's result holds the row count and the reports of its
builders (:mod:`mlcomp.worker.reports`).
"""
from __future__ import annotations

import os
from pathlib import Path

from mlcomp.worker.executors.equation import PRED_FOLDER, Equation

__all__ = ["Infer", "SUBMIT_FOLDER"]

SUBMIT_FOLDER = "data/submissions"
"""Where MLComp's infer wrote submission files, read by ``type: submit`` (:mod:`executors.submit`)."""


class Infer(Equation):
    """Predicts part by part and saves the predictions (see the module docstring).

    Args:
        test: whether the data is the test set (read by the subclass).
        prepare_submit: also call ``submit`` and ``submit_final``.
        layout: MLComp's report layout; with one, ``plot(preds)`` runs for each part.
        plot_count: how many rows the report keeps (read by the subclass's builder).
        kwargs: as :class:`~mlcomp.worker.executors.equation.Equation`.
    """

    def __init__(self, test: bool = False, prepare_submit: bool = False, layout: str | None = None,
                 plot_count: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.test, self.prepare_submit, self.layout, self.plot_count = test, prepare_submit, layout, plot_count
        self._saved: list = []

    def plot(self, preds) -> None:
        """Adds a part's predictions to the report (MLComp's hook); the default does nothing."""

    def save(self, preds, folder: str) -> None:
        """Keeps a part's predictions for :meth:`save_final`."""
        self._saved.append(preds)

    def save_final(self, folder: str) -> None:
        """Writes every part's predictions as ``<folder>/<name>_<suffix>.npy`` (nothing when
        there were no rows)."""
        import numpy as np

        if self._saved:
            np.save(Path(folder) / f"{self.name}_{self.suffix}.npy", np.concatenate(self._saved))

    def submit(self, preds) -> None:
        """Adds a part's predictions to the submission; a subclass with ``prepare_submit`` must say how.

        Raises:
            NotImplementedError: always, here.
        """
        raise NotImplementedError(f"{type(self).__name__}.submit: prepare_submit needs submit() and submit_final()")

    def submit_final(self, folder: str) -> None:
        """Writes the submission file into ``folder``.

        Raises:
            NotImplementedError: always, here.
        """
        raise NotImplementedError(f"{type(self).__name__}.submit_final: prepare_submit needs submit() and "
                                  f"submit_final()")

    def work(self) -> dict:
        """Predicts, saves (and prepares the submission); returns ``{rows, reports}``."""
        os.makedirs(PRED_FOLDER, exist_ok=True)
        if self.prepare_submit:
            os.makedirs(SUBMIT_FOLDER, exist_ok=True)
        self.create_base()
        rows = self.count()
        for preds in self.solve(self.key(), self.generate_parts(rows)):
            self.save(preds, PRED_FOLDER)
            if self.prepare_submit:
                self.submit(preds)
            if self.layout:
                self.plot(preds)
        self.save_final(PRED_FOLDER)
        if self.prepare_submit:
            self.submit_final(SUBMIT_FOLDER)
        return {"rows": rows, "reports": self.session.summaries()}
