"""MLComp's executor API, so a DAG's executors written for MLComp run unchanged::

    from mlcomp.worker.executors import Executor

    @Executor.register
    class Preprocess(Executor):
        def __init__(self, size: int = 10):
            self.size = size

        @classmethod
        def _from_config(cls, executor: dict, config: dict, additional_info: dict):
            return cls(size=executor.get("size", 10))

        def work(self):
            self.info(f"preparing {self.size} rows")
            return {"rows": self.size}

``Executor.register`` makes the class a task type under MLComp's names for it: the class name,
its lower case and its snake case (``Preprocess`` → ``preprocess``; ``DigitPrep`` →
``DigitPrep``, ``digitprep``, ``digit_prep``), except names of built-in types. For each it puts a
:class:`executors.base.Executor` subclass in the defining module, where the DAG's executor
registry finds it (:mod:`executors.discovery`); on the worker that class builds the
user's executor with ``_from_config(executor, config, additional_info)`` and calls ``work()``,
whose dict return value becomes the task's result. ``executor`` is the task's spec (its keys
other than the service keys), ``config`` is ``{"executors": {task name: executor}}`` and
``additional_info`` holds ``grid_cell``. ``self.task`` is the
:class:`executors.base.TaskContext`; ``info``/``debug``/``warning``/``error`` write to the task's
log, ``self.step.start(level, name)``/``self.step.end(level)`` log MLComp's step marks and
``self.tqdm(items)`` draws a bar that reports the task's progress.
"""
from __future__ import annotations

import sys
from typing import Any

from executors import base
from executors.discovery import mlcomp_names, to_snake as snake_case
from executors.progress import ReportingTqdm
from executors.registry import BUILTINS
from mlcomp.kinds import COMPOSITE_KINDS

__all__ = ["Executor", "snake_case"]


class _Step:
    """MLComp's step marks, written to the task's log."""

    def start(self, level: int, name: str = "", index: int | None = None) -> None:
        """Logs the start of step ``name`` at nesting ``level``."""
        print(f"mlcomp step {'  ' * max(0, level - 1)}start: {name}", flush=True)

    def end(self, level: int) -> None:
        """Logs the end of the current step at ``level``."""
        print(f"mlcomp step {'  ' * max(0, level - 1)}end", flush=True)


class Executor:
    """Base class of an executor written against MLComp's API (see the module docstring)."""

    task: base.TaskContext | None = None
    step = _Step()

    @classmethod
    def _from_config(cls, executor: dict, config: dict, additional_info: dict) -> "Executor":
        """The executor of a task whose spec is ``executor``; the default calls ``cls()``."""
        return cls()

    @classmethod
    def _model_checkpoint(cls, executor: dict) -> str | None:
        """Which checkpoint of the task's model (``TaskContext.model``) a task of spec ``executor``
        needs, as :meth:`executors.base.Executor.model_checkpoint`; the default: none."""
        return None

    def work(self) -> dict | None:
        """Does the task's work; a dict returned becomes the task's result."""
        raise NotImplementedError(f"{type(self).__name__}.work")

    def tqdm(self, iterable=None, desc: str = "progress", interval: float = 10, **kwargs):
        """A tqdm bar over ``iterable`` that also reports its progress to the task every
        ``interval`` seconds (MLComp's ``Executor.tqdm``)."""
        return ReportingTqdm(iterable, desc=desc, interval=interval,
                             reporter=self.task.reporter if self.task else None, **kwargs)

    def debug(self, message: str) -> None:
        """Writes ``message`` to the task's log."""
        print(f"DEBUG {message}", flush=True)

    def info(self, message: str) -> None:
        """Writes ``message`` to the task's log."""
        print(message, flush=True)

    def warning(self, message: str) -> None:
        """Writes ``message`` to the task's log (stderr)."""
        print(f"WARNING {message}", file=sys.stderr, flush=True)

    def error(self, message: str) -> None:
        """Writes ``message`` to the task's log (stderr)."""
        print(f"ERROR {message}", file=sys.stderr, flush=True)

    @staticmethod
    def register(cls: type) -> type:
        """Class decorator: makes ``cls`` a task type under MLComp's names for it.

        Raises:
            TypeError: ``cls`` is not a subclass of this Executor, or all its names are built-in types.
        """
        if not (isinstance(cls, type) and issubclass(cls, Executor)):
            raise TypeError(f"Executor.register: {cls!r} must subclass mlcomp.worker.executors.Executor")
        taken = set(BUILTINS) | COMPOSITE_KINDS  # the composite kinds have no executor but keep their names
        names = [n for n in mlcomp_names(cls.__name__) if n not in taken]
        if not names:
            raise TypeError(f"Executor.register: {cls.__name__}'s names are built-in task types "
                            f"({', '.join(sorted(taken))}); rename the class")
        namespace = sys._getframe(1).f_globals  # the defining module, where the registry looks
        for name in names:
            task_class = type(f"{cls.__name__}_{name}_task", (_Adapter,),
                              {"type_name": name, "user_class": cls, "__module__": cls.__module__})
            namespace[f"_mlcomp_task_{name}"] = task_class
        return cls


class _Adapter(base.Executor):
    """The task type of an MLComp-API executor: builds it and calls ``work()``."""

    user_class: type[Executor]

    @classmethod
    def model_checkpoint(cls, config: dict) -> str | None:
        """The user class's :meth:`Executor._model_checkpoint` of the task's spec."""
        return cls.user_class._model_checkpoint({"type": cls.type_name, **config})

    def run(self, task: base.TaskContext) -> dict | None:
        """Builds the user's executor with ``_from_config`` and returns what ``work()`` returns
        when it is a dict (anything else is not a result and gives None)."""
        spec = {"type": self.type_name, **task.config}
        executor = self.user_class._from_config(spec, {"executors": {task.name: spec}},
                                                {"grid_cell": task.grid_cell})
        executor.task = task
        result: Any = executor.work()
        return result if isinstance(result, dict) else None
