"""The executor contract: one :class:`Executor` subclass per task type (MLComp's ``Executor``).

An executor is used twice in a task's life:

* at submission, :meth:`Executor.validate` checks the task's executor-specific keys (the YAML
  keys left once the service keys ``type``, ``depends``, ``gpu``… are removed) and returns the
  ``executor_config`` stored on the task; mistakes become a :class:`~mlcomp.errors.DagError`
  naming the file, line, task and key through :meth:`SubmitContext.error`;
* on a worker, :meth:`Executor.command` gives the argv to run directly (``bash`` runs
  ``["bash", "-c", cmd]``), or ``None`` to run :meth:`Executor.run` in the generic Python child.

The port is narrow: an executor gets a :class:`TaskContext` with everything resolved in advance
(resources, data folder, the model to use) and reports through the :class:`Reporter` protocol;
executors import neither the store (``mlcomp.db``) nor the worker (``mlcomp.worker``).
"""
from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Protocol, Sequence, runtime_checkable

from mlcomp.configkit import PathError, set_path, split_path
from mlcomp.errors import DagError

__all__ = ["Executor", "SubmitContext", "TaskContext", "Reporter", "ModelSource", "LOGDIR"]


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
    """``key`` of :meth:`SubmitContext.line` as a path: ``()`` for None, a dotted name split by
    :func:`mlcomp.configkit.split_path`, a sequence as it is. A name that is no dotted path (a YAML
    key such as ``"a..b"`` or ``""`` being reported) is one part, so reporting it never fails."""
    if key is None:
        return ()
    if isinstance(key, str):
        try:
            return split_path(key)
        except PathError:
            return (key,)
    return tuple(key)


LOGDIR = "logdir"
"""A train task's logdir, relative to its folder."""


@runtime_checkable
class Reporter(Protocol):
    """What an executor reports through (``TaskContext.reporter``): the worker's batched writer
    to the store implements it; executors never import it. Calls are cheap (buffered)."""

    task_id: int

    def log(self, text: str, level: str = "info", stream: str = "system") -> None:
        """One log line; ``level`` debug/info/warning/error, ``stream`` stdout/stderr/system."""

    def metric(self, name: str, value: float, *, loader: str | None = None, stage: str | None = None,
               epoch: int | None = None, step: int, kind: str = "epoch") -> None:
        """One metric value at ``step`` (the global epoch for ``kind="epoch"``, else the batch step)."""

    def progress(self, progress: dict[str, Any]) -> None:
        """The task's progress ``{stage, epoch, epochs, batch, batches, eta}`` (latest wins)."""

    def checkpoint(self, path: str, stage: str | None = None, epoch: int | None = None,
                   metric: float | None = None, size: int = 0) -> None:
        """A checkpoint file, ``path`` relative to the task's folder, ``size`` in bytes."""

    def flush(self) -> None:
        """Writes what waits."""

    def start(self) -> "Reporter":
        """Starts flushing in the background; returns itself."""

    def close(self) -> None:
        """Stops flushing in the background and writes what waits."""


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """The train run a task takes its model from (``TaskContext.model``): its task id and name,
    its logdir and the chosen checkpoint file."""

    task_id: int
    name: str
    logdir: Path
    checkpoint: Path

    def describe(self) -> dict:
        """JSON-able summary for a task's result."""
        return {"source_task": self.task_id, "source_name": self.name, "checkpoint": str(self.checkpoint)}


@dataclasses.dataclass
class TaskContext:
    """What an executor gets on the worker when its task runs: everything resolved in advance,
    so an executor never reads the store (the port between executors and the orchestrator).

    Attributes:
        task_id, attempt, dag_id, name: the task row's identity; ``attempt`` counts from 1.
        folder: the task's folder, ``settings.tasks_dir / str(task_id)`` (logdir, outputs).
        code_dir: the task's copy of the DAG's code snapshot; the Python child's working folder.
        gpus: allocated physical GPU indices (``CUDA_VISIBLE_DEVICES`` holds the same).
        cpu: allocated CPUs (a count).
        distr: whether the task asked for distributed training (one process per GPU).
        config: the ``executor_config`` returned by :meth:`Executor.validate` at submission.
        grid_cell: this task's grid parameter values, or ``None``.
        settings: the worker's :class:`mlcomp.settings.Settings`.
        resume_from: ``"last"``, ``"best"``, a checkpoint path, or ``None`` (a fresh start).
        resume: the checkpoint file this attempt continues from, resolved from ``resume_from``
            by the worker for an executor that is :attr:`Executor.resumable`; ``None`` for a
            fresh start.
        reporter: a :class:`Reporter` writing to the store, or ``None``.
        open_reporter: a picklable callable returning a new :class:`Reporter` of this task, for a
            process the executor starts itself (rank 0 of a distributed run), or ``None``.
        env: the task's extra environment variables from the DAG file.
        data_dir: the project's data folder (``settings.data_dir / project``, created; also in
            ``MLCOMP_DATA_DIR``), or ``None`` outside a worker.
        model: the model this task builds on, when its executor asks for one
            (:meth:`Executor.model_checkpoint`): the train run it depends on (a grid search's
            best cell) and the checkpoint chosen.
        group: for a distributed task spread over several computers, the rank group this
            computer's processes join: ``{"world_size", "first_rank", "master_addr",
            "master_port"}`` (one process per GPU of ``gpus``, ranks from ``first_rank``); None
            when the task runs on one computer.
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
    reporter: Reporter | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    cpu: int = 1
    distr: bool = False
    data_dir: Path | None = None
    model: ModelSource | None = None
    resume: Path | None = None
    open_reporter: Callable[[], Reporter] | None = None
    group: dict[str, Any] | None = None


class Executor:
    """Base class of the task types; subclass it, set ``type_name`` and register it.

    A subclass in any module of a DAG's folder or of its direct sub-folders is found by its
    ``type_name`` without registering (MLComp's rule; :mod:`executors.discovery`). Built-ins
    live in ``executors/`` and are imported only when their type is used.

    Attributes:
        type_name: the DAG's ``type:`` value, e.g. ``"bash"``.
        virtual: True for types that never run a process (no built-in is; the parents of grid
            searches and searches are composite kinds, :class:`mlcomp.kinds.TaskKind`, driven by
            the supervisor, not executors).
        resumable: True for types whose later attempts continue from a checkpoint of the task's
            logdir (``train``); the worker then resolves ``TaskContext.resume`` before :meth:`run`.
    """

    type_name: ClassVar[str]
    virtual: ClassVar[bool] = False
    resumable: ClassVar[bool] = False

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
            DagError: a cell key has an empty part (``a..b``) or too many parts
                (:func:`mlcomp.configkit.split_path`), or its dotted path goes through a value that
                is not a mapping.
        """
        spec = copy.deepcopy(dict(spec))
        for key, value in cell.items():
            parts = ()
            try:
                parts = split_path(str(key))
                if parts[0] in spec:
                    set_path(spec, parts, value)
            except PathError as e:
                raise ctx.error(parts[:1] or None, f"grid key {key!r}: {e}") from None
        return spec

    @classmethod
    def model_checkpoint(cls, config: dict) -> str | None:
        """Which checkpoint of the train run this task depends on its run needs (``best``,
        ``last``, a file name or a path), resolved into ``TaskContext.model`` before :meth:`run`;
        None (the default) for a task that builds on no model."""
        return None

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
