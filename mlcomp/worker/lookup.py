"""Finding what a task builds on, before its executor runs: the train run it depends on, its
logdir and checkpoints, the best cell of a grid search, the project's data folder.

A task's folder is ``settings.tasks_dir / <task id>``; a train task's logdir is ``<folder>/logdir``
(:data:`executors.base.LOGDIR`). ``infer`` and ``trace`` take the model of the train run they depend on: each
dependency that is a ``train`` task (or MLComp's ``catalyst``) counts as itself, a grid search as its best cell
(:func:`mlcomp.search.rollup.best_cell`); other dependencies are searched through in turn
(``trace`` may depend on ``infer``). Among several candidates the best by the main metric wins,
when they share one; else the first in dependency order. A task of a DAG started for a registered
model through a pipe (:mod:`mlcomp.model_registry`, MLComp's "start pipe") takes that model.
"""
from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from executors.base import LOGDIR, ModelSource
from mlcomp.db import Dag, Model, ModelRun, Project, Task, TaskDependency, TaskStatus
from mlcomp.errors import ConfigError, ExecutorError
from mlcomp.kinds import TaskKind, is_composite
from mlcomp.search.rollup import best_cell, main_metric_of

__all__ = ["task_folder", "task_logdir", "dependencies", "train_source", "train_run", "data_dir", "registered_model",
           "resolve_model"]

TRAIN_TYPES = ("train", "catalyst")  # catalyst: MLComp's train task (executors.catalyst)


def task_folder(settings, task_id: int) -> Path:
    """``settings.tasks_dir / str(task_id)``."""
    return Path(settings.tasks_dir) / str(task_id)


def task_logdir(settings, task_id: int) -> Path:
    """The logdir of train task ``task_id``."""
    return task_folder(settings, task_id) / LOGDIR


def dependencies(session: Session, task_id: int) -> list[Task]:
    """The tasks ``task_id`` depends on, by id."""
    return list(session.scalars(select(Task).join(TaskDependency, TaskDependency.depend_id == Task.id)
                                .where(TaskDependency.task_id == task_id).order_by(Task.id)))


def _is_train(task: Task) -> bool:
    template = (task.executor_config or {}).get("template") or {}
    return task.type in TRAIN_TYPES or (is_composite(task.type) and template.get("type") in TRAIN_TYPES)


def _as_run(session: Session, task: Task) -> Task:
    """A train task itself, a grid search's best cell, or a search's best trial."""
    if task.type == TaskKind.SEARCH:
        from mlcomp.search.board import best_trial

        trial = best_trial(session, task)
        if trial is None:
            raise ExecutorError(f"search {task.name!r} (task {task.id}) has no trial that reached max_epochs")
        return trial
    if task.type != TaskKind.GRID:
        return task
    cell = best_cell(session, task)
    if cell is None:
        raise ExecutorError(f"grid search {task.name!r} (task {task.id}) has no succeeded cell to take a model from")
    return cell


def _better(a: Task, b: Task) -> Task:
    """The better of two finished train runs by their shared main metric; ``a`` on a tie or when
    they cannot be compared."""
    main_a, main_b = main_metric_of(a), main_metric_of(b)
    value_a, value_b = (a.result or {}).get("best"), (b.result or {}).get("best")
    if not main_a or main_a != main_b or value_a is None or value_b is None:
        return a
    better = value_b < value_a if main_a["minimize"] else value_b > value_a
    return b if better else a


def _succeeded(run: Task) -> Task:
    if run.status is not TaskStatus.success:
        raise ExecutorError(f"train task {run.name!r} (task {run.id}) is {run.status.value}, not success: no model "
                            f"to use")
    return run


def train_run(session: Session, task: Task) -> Task:
    """The succeeded train run ``task`` stands for: itself, a grid search's best cell or a
    search's best trial.

    Raises:
        ExecutorError: ``task`` is neither a train task nor a grid search or search of them, or
            the run has not succeeded.
    """
    if not _is_train(task):
        raise ExecutorError(f"task {task.name!r} (task {task.id}) is a {task.type} task; a model comes from a "
                            f"train task, a grid search or a search of train tasks")
    return _succeeded(_as_run(session, task))


def train_source(session: Session, task_id: int) -> Task:
    """The train run task ``task_id`` takes its model from (see the module docstring).

    Raises:
        ExecutorError: no dependency leads to a train task, a grid search has no succeeded
            cell, or the chosen run has not succeeded.
    """
    seen: set[int] = set()
    level = dependencies(session, task_id)
    while level:
        runs = [_as_run(session, t) for t in level if _is_train(t)]
        if runs:
            best = runs[0]
            for run in runs[1:]:
                best = _better(best, run)
            return _succeeded(best)
        seen.update(t.id for t in level)
        level = [d for t in level for d in dependencies(session, t.id) if d.id not in seen]
    task = session.get(Task, task_id)
    name = task.name if task is not None else "?"
    raise ExecutorError(f"task {name!r} (task {task_id}) depends on no train task or grid search of train "
                        f"tasks: add one to its 'depends'")


def data_dir(session: Session, settings, task_id: int) -> Path:
    """The data folder of the project of task ``task_id``: ``settings.data_dir / project``.

    Raises:
        ExecutorError: no such task.
    """
    name = session.scalar(select(Project.name).join(Dag, Dag.project_id == Project.id)
                          .join(Task, Task.dag_id == Dag.id).where(Task.id == task_id))
    if name is None:
        raise ExecutorError(f"task {task_id} does not exist")
    return Path(settings.data_dir) / name


def registered_model(session: Session, settings, task_id: int) -> ModelSource | None:
    """The registered model of the DAG of task ``task_id`` when the DAG was started for one
    (:class:`~mlcomp.db.ModelRun`), else None: its train run's logdir (the config that rebuilds
    it) and the model's own checkpoint file.

    Raises:
        ConfigError: the model's checkpoint file is missing.
    """
    row = session.execute(select(Model.task_id, Model.name, Model.checkpoint)
                          .join(ModelRun, ModelRun.model_id == Model.id)
                          .join(Task, Task.dag_id == ModelRun.dag_id).where(Task.id == task_id)).first()
    if row is None:
        return None
    if not Path(row.checkpoint).is_file():
        raise ConfigError(f"model {row.name!r}: its checkpoint {row.checkpoint} is missing; add the model again "
                          f"(mlcomp model add)")
    return ModelSource(row.task_id, row.name, task_logdir(settings, row.task_id), Path(row.checkpoint))


def resolve_model(session: Session, settings, task_id: int, which: str = "best") -> ModelSource:
    """The :class:`~executors.base.ModelSource` of task ``task_id``: the :func:`registered_model`
    its DAG was started for (``which`` then does not apply: the model is one checkpoint), else the
    run of :func:`train_source` and its checkpoint ``which`` (``best``, ``last``, a file name in
    its checkpoints folder, or a path inside its logdir or the ``checkpoint_dirs`` setting's
    folders, relative to the task's folder).

    Raises:
        ExecutorError: no train run to take the model from (see :func:`train_source`).
        ConfigError: the checkpoint ``which`` does not exist or lies outside those folders.
    """
    from mlcomp.runner.checkpoint import resolve_checkpoint

    registered = registered_model(session, settings, task_id)
    if registered is not None:
        return registered
    source = train_source(session, task_id)
    logdir = task_logdir(settings, source.id)
    return ModelSource(source.id, source.name, logdir, resolve_checkpoint(
        logdir, which, allowed_dirs=getattr(settings, "checkpoint_dirs", ()), base=task_folder(settings, task_id)))
