"""MLComp's ``Equation``: the base of its ``Infer`` and ``Valid`` executors, which compute
predictions part by part from an equation of the task's spec.

```yaml
infer:
  type: infer_mnist                               # a subclass of Infer in the DAG's folder
  y: torch(x, file='net.pth', batch_size=128)     # optional; see below
  part_size: 1000                                 # rows per part; default: all at once
  suffix: test
  depends: train
```

The subclass says how many rows there are (``count()``) and sets ``self.x`` (a Dataset of
``{"features": ..., "targets": ...}`` rows) for each part in ``adjust_part((start, stop))``. The
task's key ``y`` (:meth:`Equation.key`) is an expression (:mod:`~mlcomp.worker.executors.expression`)
whose names are the executor's attributes (a string attribute from the spec is itself an
expression; one named in ``cache_names`` is computed once per part; an unknown name stands for
its text, as in MLComp) and whose functions are its methods:

- ``torch(x, file=None, batch_size=1, activation=None, num_workers=0)``: a TorchScript model from
  the project's ``models/`` folder (``file``, default ``<name>.pth``; a train task's ``trace:``
  writes one), run over ``x``;
- ``predict(x, batch_size=128, activation=None)``: the model the task is given
  (``TaskContext.model``: the registered model of a DAG started through a pipe, else the best
  checkpoint of the train task it depends on), rebuilt from its run's config;
- ``load(file=None)``: earlier predictions ``data/pred/<file>`` (default ``<name>_<suffix>``;
  ``.npy``, else MLComp's pickle), this part's rows.

Without ``y`` the predictions are ``predict(x)``, so a pipe's ``valid``/``infer`` task runs the
model it is started for; a task with ``y`` is given a model only when its spec names a
``checkpoint``. ``activation`` is ``softmax``, ``sigmoid`` or None (the raw outputs). Both model
paths run the runner's inference stage (:func:`executors.infer.predict`). Not provided:
MLComp's ``tta`` (test-time augmentation through albumentations).
"""
from __future__ import annotations

import pickle
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Iterator, Sequence

from mlcomp.errors import ExecutorError
from mlcomp.worker.executors import Executor
from mlcomp.worker.executors.expression import evaluate
from mlcomp.worker.reports.session import ReportSession

__all__ = ["Equation", "PRED_FOLDER", "ACTIVATIONS"]

PRED_FOLDER = "data/pred"
"""Where MLComp's infer executors wrote predictions, relative to the task's working folder (the
project's data folder, linked into the task's code copy)."""
ACTIVATIONS = ("softmax", "sigmoid")


def _activate(outputs, activation: str | None):
    """``outputs`` (a numpy array ``[N, C, ...]``) through ``activation`` (over axis 1).

    Raises:
        ExecutorError: an unknown activation.
    """
    if activation is None:
        return outputs
    if activation not in ACTIVATIONS:
        raise ExecutorError(f"activation {activation!r}: allowed: {', '.join(ACTIVATIONS)} or None")
    import torch

    tensor = torch.from_numpy(outputs)
    return (torch.softmax(tensor, 1) if activation == "softmax" else torch.sigmoid(tensor)).numpy()


class Equation(Executor, ABC):
    """Predictions part by part from the spec's equation (see the module docstring).

    Args:
        model_id: the registered model's id (given by a pipe's start).
        suffix: the predictions' file suffix (``<name>_<suffix>``).
        max_count: at most this many rows (read by the subclass's dataset).
        part_size: rows per part; None: all rows in one part.
        cache_names: names whose value is computed once per part.
        kwargs: every other key of the task's spec, set as attributes (``y``, ``model_name``,
            ``name``, ``batch_size``...).

    Attributes:
        part: the current part ``(start, stop)``.
        name: ``name`` of the spec, else ``model_name``.
        session: the :class:`~mlcomp.worker.reports.ReportSession` report builders join.
    """

    def __init__(self, model_id: int | None = None, suffix: str = "", max_count: int | None = None,
                 part_size: int | None = None, cache_names: Sequence[str] = (), **kwargs):
        self.kwargs = kwargs
        self.__dict__.update(kwargs)
        self.model_id, self.suffix, self.max_count, self.part_size = model_id, suffix, max_count, part_size
        self.cache_names = list(cache_names)
        self.cache: dict[str, Any] = {}
        self.part: tuple[int, int] | None = None
        self.model_name = kwargs.get("model_name")
        self.name = kwargs.get("name") or self.model_name
        self.session = ReportSession()
        self._solving: set[str] = set()
        self._model = None

    @classmethod
    def _from_config(cls, executor: dict, config: dict, additional_info: dict) -> "Equation":
        """``cls(**executor)``: every key of the spec is a keyword argument (MLComp's rule)."""
        return cls(**executor)

    @classmethod
    def _model_checkpoint(cls, executor: dict) -> str | None:
        """The spec's ``checkpoint``; without one, ``best`` when the spec has no equation ``y``
        (the predictions then come from the task's model), else none."""
        return executor.get("checkpoint", None if "y" in executor else "best")

    @abstractmethod
    def count(self) -> int:
        """How many rows to predict."""

    @abstractmethod
    def adjust_part(self, part: tuple[int, int]) -> None:
        """Sets ``self.x`` to rows ``part[0]:part[1]``."""

    def key(self) -> str:
        """The attribute holding the equation of the predictions."""
        return "y"

    def create_base(self) -> None:
        """Creates the report builders (MLComp's hook); the default creates none."""

    def generate_parts(self, count: int) -> list[tuple[int, int]]:
        """``[(start, stop), ...]`` covering ``count`` rows, ``part_size`` at a time."""
        size = self.part_size or count
        return [(start, min(count, start + size)) for start in range(0, count, max(1, size))]

    def solve(self, name: str, parts: Sequence[tuple[int, int]]) -> Iterator[Any]:
        """For each part: ``adjust_part``, then the value of the equation in attribute ``name``
        (``predict(x)`` when there is none).

        Raises:
            ExecutorError: as :func:`~mlcomp.worker.executors.expression.evaluate`, or a function fails.
        """
        equation = getattr(self, name, None)
        for part in parts:
            self.cache, self.part = {}, part
            self.adjust_part(part)
            value = self.predict(self.x) if equation is None else self._solve(str(equation))
            if name in self.cache_names:
                self.cache[name] = value
            yield value

    def _solve(self, equation: str) -> Any:
        """The value of expression ``equation`` over this executor."""
        return evaluate(equation, self._name, self._function)

    def _name(self, name: str) -> Any:
        """A name's value: cached this part, an equation of the spec (solved), an attribute, or
        the name's text."""
        if name in self.cache:
            return self.cache[name]
        value = getattr(self, name, None)
        if value is None:
            return name
        if isinstance(value, str) and name in self.kwargs:
            if name in self._solving:
                raise ExecutorError(f"equation {name!r} refers to itself")
            self._solving.add(name)
            try:
                value = self._solve(value)
            finally:
                self._solving.discard(name)
            if name in self.cache_names:
                self.cache[name] = value
        return value

    def _function(self, name: str):
        """The method an equation calls.

        Raises:
            ExecutorError: no public method of that name.
        """
        function = None if name.startswith("_") else getattr(self, name, None)
        if not callable(function):
            raise ExecutorError(f"equation: {type(self).__name__} has no function {name!r}; "
                                f"use torch(...), predict(...), load(...) or a method of the executor")
        return function

    def torch(self, x, file: str | None = None, batch_size: int = 1, activation: str | None = None,
              num_workers: int = 0):
        """The outputs ``[N, ...]`` (numpy) of the TorchScript model ``models/<file>`` over ``x``
        (``file`` default ``<name>.pth``; ``.pth`` is added when missing), as MLComp's ``torch``.

        Raises:
            ExecutorError: the file is missing.
        """
        from mlcomp.runner.trace import load_traced

        path = Path("models") / (file or str(self.name))
        path = path if path.suffix == ".pth" else path.with_name(path.name + ".pth")
        if not path.is_file():
            raise ExecutorError(f"torch(): no model file {path} in the task's folder (a train task's "
                                f"'trace: models/NAME.pth' writes one)")
        return self._run(load_traced(path, map_location="cpu"), x, batch_size, activation, num_workers)

    def predict(self, x, batch_size: int | None = None, activation: str | None = None):
        """The outputs ``[N, ...]`` (numpy) of the task's model (``TaskContext.model``) over ``x``;
        ``batch_size`` default: the spec's ``batch_size``, else 128.

        Raises:
            ExecutorError: the task is given no model.
        """
        from executors.infer import rebuild_model

        if self.task is None or self.task.model is None:
            raise ExecutorError(f"{type(self).__name__}: no model to predict with: start the DAG for a registered "
                                f"model (mlcomp model start), or make the task depend on a train task")
        if self._model is None:
            self._model = rebuild_model(self.task.model)
        experiment, runner, stage, model = self._model
        return self._run(model, x, batch_size or self.kwargs.get("batch_size", 128), activation, 0,
                         runner, experiment, stage)

    def _run(self, model, x, batch_size: int, activation: str | None, num_workers: int, runner=None,
             experiment=None, stage: str | None = None):
        """``model``'s outputs over dataset ``x`` in the runner's inference stage."""
        from torch.utils.data import DataLoader

        from executors.infer import predict

        loader = DataLoader(x, batch_size=batch_size, shuffle=False, num_workers=num_workers)
        (outputs, _), = predict(self.task, {"infer": loader}, model, runner, experiment, stage).values()
        return _activate(outputs, activation)

    def load(self, file: str | None = None):
        """This part's rows of earlier predictions ``data/pred/<file>`` (default
        ``<name>_<suffix>``, with ``.npy`` or MLComp's ``.p`` when the name has no suffix).

        Raises:
            ExecutorError: no such file.
        """
        import numpy as np

        path = Path(PRED_FOLDER) / (file or f"{self.name}_{self.suffix}")
        if not path.suffix:
            path = next((p for p in (path.with_suffix(".npy"), path.with_suffix(".p")) if p.is_file()), path)
        if not path.is_file():
            raise ExecutorError(f"load(): no predictions file {path}")
        if path.suffix == ".npy":
            data = np.load(path, allow_pickle=False)
        else:
            with open(path, "rb") as f:
                data = pickle.load(f)  # MLComp's format, written by the project's own tasks
        return np.asarray(data)[slice(*self.part) if self.part else slice(None)]
