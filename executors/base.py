"""The executor contract: one :class:`Executor` subclass per task type (MLComp's ``Executor``).

An executor is used twice in a task's life:

* at submission, :meth:`Executor.validate` checks the task's executor-specific keys (the YAML
  keys left once the service keys ``type``, ``depends``, ``gpu``… are removed) and returns the
  ``executor_config`` stored on the task; mistakes become a :class:`~mlcomp.errors.DagError`
  naming the file, line, task and key through :meth:`SubmitContext.error`;
* on a worker, :meth:`Executor.command` gives the argv to run directly (``bash`` runs
  ``["bash", "-c", cmd]``), or ``None`` to run :meth:`Executor.run` in the generic Python child.
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

from mlcomp.configkit import PathError, set_path
from mlcomp.errors import DagError

__all__ = ["Executor", "SubmitContext", "TaskContext"]


@dataclasses.dataclass(frozen=True)
class SubmitContext:
    """What an executor's :meth:`Executor.validate` knows about the task being submitted.

    Attributes:
        file: the DAG's YAML file.
        expdir: the DAG's experiment folder (the one snapshotted), absolute.
        dag: the DAG's name (with its DAG-level grid cell, if any).
        task: the task's name (a grid child's name includes its cell, ``"train lr=0.1"``).
        path: where the task's spec sits in the YAML, e.g. ``("executors", "train")``.
        line_of: maps a key path of the YAML document to its 1-based line number.
        grid_cell: the parameter values of this task's grid cell (DAG-level and task-level
            merged), or ``None`` outside a grid.
        settings: the :class:`mlcomp.settings.Settings` of the submission, when known.
        env: the task's ``env:`` mapping (variables its process gets), as strings.
    """

    file: Path
    expdir: Path
    dag: str
    task: str
    path: tuple = ()
    line_of: Callable[[Sequence], int] = lambda path: 1
    grid_cell: Mapping[str, Any] | None = None
    settings: Any = None
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def line(self, key: str | Sequence | None = None) -> int:
        """The line of ``key`` (a name, or a path below the task's spec) in the YAML file."""
        return self.line_of(self.path + _as_path(key))

    def error(self, key: str | Sequence | None, message: str) -> DagError:
        """A :class:`DagError` ``"FILE:LINE: task 'T', key 'K': message"`` to raise."""
        where = f"task {self.task!r}"
        if key is not None:
            where += f", key {'.'.join(map(str, _as_path(key)))!r}"
        return DagError(f"{self.file}:{self.line(key)}: {where}: {message}")


def _as_path(key) -> tuple:
    if key is None:
        return ()
    if isinstance(key, str):
        return tuple(key.split("."))
    return tuple(key)


@dataclasses.dataclass
class TaskContext:
    """What an executor gets on the worker when its task runs.

    Attributes:
        task_id, attempt, dag_id, name: the task row's identity; ``attempt`` counts from 1.
        folder: the task's folder, ``settings.tasks_dir / str(task_id)`` (logdir, outputs).
        code_dir: the task's copy of the DAG's code snapshot; the Python child's working folder.
        gpus: allocated physical GPU indices (``CUDA_VISIBLE_DEVICES`` holds the same).
        config: the ``executor_config`` returned by :meth:`Executor.validate` at submission.
        grid_cell: this task's grid parameter values, or ``None``.
        settings: the worker's :class:`mlcomp.settings.Settings`.
        resume_from: ``"last"``, ``"best"``, a checkpoint path, or ``None`` (a fresh start).
        reporter: the batched writer to the store (``mlcomp.worker.report``), or ``None``.
        env: the task's extra environment variables from the DAG file.
    """

    task_id: int
    attempt: int
    dag_id: int
    name: str
    folder: Path
    code_dir: Path
    gpus: list[int] = dataclasses.field(default_factory=list)
    config: dict[str, Any] = dataclasses.field(default_factory=dict)
    grid_cell: dict[str, Any] | None = None
    settings: Any = None
    resume_from: str | None = None
    reporter: Any = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)

    @classmethod
    def for_task(cls, task, settings, reporter=None) -> "TaskContext":
        """The context of a :class:`mlcomp.db.Task` row under ``settings.tasks_dir``."""
        folder = Path(settings.tasks_dir) / str(task.id)
        return cls(
            task_id=task.id, attempt=task.attempt, dag_id=task.dag_id, name=task.name,
            folder=folder, code_dir=folder / "code", gpus=list(task.gpus or []),
            config=dict(task.executor_config or {}), grid_cell=task.grid_cell, settings=settings,
            resume_from=task.resume_from, reporter=reporter, env=dict(task.env or {}),
        )


class Executor:
    """Base class of the task types; subclass it, set ``type_name`` and register it.

    A subclass in a DAG's expdir (its package ``__init__.py`` or ``executors.py``) is found by
    its ``type_name`` without registering (as in MLComp). Built-ins live in ``executors/`` and
    are imported only when their type is used.

    Attributes:
        type_name: the DAG's ``type:`` value, e.g. ``"bash"``.
        virtual: True for types that never run a process; the supervisor rolls their status up
            from their children (``grid_search``).
    """

    type_name: ClassVar[str]
    virtual: ClassVar[bool] = False

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks ``spec`` (the task's executor-specific keys) and returns the executor_config.

        The default accepts any keys and returns a deep copy.

        Raises:
            DagError: through ``raise ctx.error(key, message)`` for a key that does not fit.
        """
        return copy.deepcopy(dict(spec))

    @classmethod
    def apply_cell(cls, spec: dict, cell: Mapping[str, Any], ctx: SubmitContext) -> dict:
        """``spec`` with a grid cell's values applied, before :meth:`validate`.

        The default sets each cell key whose first dotted part is a key of ``spec`` at that
        dotted path (``command``, ``args.lr``; :func:`mlcomp.configkit.set_path`); other keys stay only in ``ctx.grid_cell`` for the
        executor to use at run time (a runner config path, a ``$name`` substitution).

        Raises:
            DagError: a dotted path goes through a value that is not a mapping.
        """
        spec = copy.deepcopy(dict(spec))
        for key, value in cell.items():
            if str(key).split(".")[0] in spec:
                try:
                    set_path(spec, str(key), value)
                except PathError as e:
                    raise ctx.error(str(key).split(".")[0], f"grid key {key!r}: {e}") from None
        return spec

    @classmethod
    def command(cls, task: TaskContext) -> list[str] | None:
        """The argv the worker runs for ``task``, or ``None`` to call :meth:`run` in the generic
        Python child (``python -m mlcomp.worker.child``). The default is ``None``."""
        return None

    def run(self, task: TaskContext) -> dict | None:
        """Does the task's work in the child process; returns the task's result (JSON-able).

        Raises:
            NotImplementedError: the type runs a command (:meth:`command`) or is virtual.
        """
        raise NotImplementedError(f"executor {type(self).__name__} ({self.type_name!r}) has no run()")

    def __repr__(self):
        return f"{type(self).__name__}(type_name={getattr(self, 'type_name', None)!r})"
