"""The commands the CLI and the UI both send: submit, stop and resume tasks and DAGs, and a DAG's
derived status.

Each function takes the caller's session and never commits; the caller calls :func:`wake` after
its commit, which reaches the supervisors of the store through the bus (in this process at once,
in others through the deployment's backend); a supervisor tells the computers. On SQLite the caller frames a writer transaction
(``mlcomp.db.immediate(session)``); on PostgreSQL the task rows are locked here.
"""
from __future__ import annotations

import datetime as dt
import os
from typing import Iterable, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlcomp.db import Dag, Task, TaskDependency, TaskStatus
from mlcomp.errors import ConfigError, NotFoundError, StateError
from mlcomp.settings import Settings
from mlcomp.bus import SUPERVISOR, Bus
from mlcomp.kinds import is_composite
from mlcomp.lifecycle import counted_status, rollup_status, set_task_status

__all__ = [
    "submit_dag",
    "get_task",
    "get_dag",
    "stop_task",
    "resume_task",
    "resume_from",
    "stop_dag",
    "resume_dag",
    "set_dag_priority",
    "dag_status",
    "wake",
    "RESUME_FROM",
]

S = TaskStatus
RESUMABLE = frozenset({S.failed, S.stopped, S.skipped})
RESUME_FROM = ("last", "best")
"""Named checkpoints a resume may start from; anything else must be a checkpoint path."""


def submit_dag(session: Session, settings: Settings, path, sets: Sequence[str] = ()) -> list[Dag]:
    """Parses, validates and writes the DAG file at ``path`` (``--set key=value`` overrides in
    ``sets``); one DAG per cell of a DAG-level grid. Delegates to :func:`mlcomp.dag.submit`;
    ``path`` may be what :func:`mlcomp.dag.submit.prepare` made of the file before the transaction.

    Raises:
        DagError: the file is rejected; nothing is written.
    """
    from mlcomp.dag import submit

    dags = submit(session, settings, path, sets)
    return dags


def get_task(session: Session, task_id: int, lock: bool = False) -> Task:
    """The task ``task_id`` (row-locked with ``lock`` on PostgreSQL).

    Raises:
        NotFoundError: no task has this id.
    """
    task = session.get(Task, task_id, with_for_update=lock or None)
    if task is None:
        raise NotFoundError(f"task {task_id} does not exist")
    return task


def get_dag(session: Session, dag_id: int) -> Dag:
    """The DAG ``dag_id``.

    Raises:
        NotFoundError: no DAG has this id.
    """
    dag = session.get(Dag, dag_id)
    if dag is None:
        raise NotFoundError(f"dag {dag_id} does not exist")
    return dag


def _children(session: Session, task: Task) -> list[Task]:
    return list(session.scalars(select(Task).where(Task.parent_id == task.id).order_by(Task.id).with_for_update()))


def _stop(session: Session, task: Task, reason: str, now: dt.datetime | None) -> bool:
    """Stops one task if it has not ended; returns False when there was nothing to stop."""
    if is_composite(task.type):
        for child in _children(session, task):
            _stop(session, child, reason, now)
    if task.status in (S.not_ran, S.queued) or (task.status is S.paused and task.preempted_by is not None):
        set_task_status(session, task, S.stopped, reason, now)
    elif task.status is S.in_progress:
        set_task_status(session, task, S.stopping, reason, now)
    elif task.status is S.stopping and task.preempted_by is not None:
        task.preempted_by = None  # a stop asked while it pauses for a preemption: it ends stopped
    else:
        return False
    return True


def stop_task(session: Session, task_id: int, now: dt.datetime | None = None) -> Task:
    """Stops task ``task_id``: a waiting or queued task becomes ``stopped`` at once, a running one
    ``stopping`` (its worker then signals the process group: SIGTERM, grace, SIGKILL). Stopping a
    grid search stops its cells. A preempted task (:mod:`mlcomp.supervisor.preempt`) paused for
    another becomes ``stopped`` at once; one still pausing ends ``stopped`` instead of ``paused``.

    Raises:
        NotFoundError: no such task.
        StateError: the task is already stopping or has ended.
    """
    task = get_task(session, task_id, lock=True)
    if not _stop(session, task, "stop requested", now):
        raise StateError(f"task {task_id} ({task.name!r}) is {task.status.value}; only a waiting, queued "
                         f"or running task can be stopped")
    return task


def resume_from(settings: Settings, task_id: int, from_: str | None, base: str | os.PathLike | None = None) -> str | None:
    """``from_`` checked for :func:`resume_task`: None, ``"last"`` and ``"best"`` as they are; a
    path (relative to ``base``, default the task's folder) must name a checkpoint file inside the
    task's logdir or a folder of the ``checkpoint_dirs`` setting (one resolver for every layer:
    :func:`mlcomp.runner.checkpoint.resolve_checkpoint`). It is returned relative to the task's
    folder when inside it (workers keep task folders in their own roots), else absolute.

    Raises:
        StateError: ``from_`` is an empty string.
        ConfigError: no such file, or it lies outside the task's logdir and those folders.
    """
    if from_ is None or from_ in RESUME_FROM:
        return from_
    if not str(from_).strip():
        raise StateError(f"resume from {from_!r}: expected 'last', 'best' or a checkpoint path")
    from mlcomp.worker.lookup import task_folder, task_logdir
    from mlcomp.runner.checkpoint import resolve_checkpoint

    folder = task_folder(settings, task_id).resolve()
    path = resolve_checkpoint(task_logdir(settings, task_id), from_, full=True,
                              allowed_dirs=settings.checkpoint_dirs, base=base or folder).resolve()
    return path.relative_to(folder).as_posix() if path.is_relative_to(folder) else str(path)


def _dependents(session: Session, task: Task) -> Iterable[Task]:
    return session.scalars(
        select(Task).join(TaskDependency, TaskDependency.task_id == Task.id)
        .where(TaskDependency.depend_id == task.id, Task.status == S.skipped)
    )


def _resume(session: Session, task: Task, from_: str | None, now: dt.datetime | None) -> None:
    """Resumes ``task`` if it ended without success, its unsuccessful grid cells, and the tasks
    that were skipped because of it (transitively)."""
    if task.status not in RESUMABLE:
        return
    if from_ is not None:
        task.resume_from = from_
    set_task_status(session, task, S.not_ran, "resume requested", now)
    if is_composite(task.type):
        for child in _children(session, task):
            _resume(session, child, from_, now)
    for dependent in list(_dependents(session, task)):
        _resume(session, dependent, None, now)


def resume_task(session: Session, task_id: int, from_: str | None = None, now: dt.datetime | None = None) -> Task:
    """Starts a new attempt of a failed, stopped or skipped task (attempt + 1). ``from_`` is the
    checkpoint the attempt continues from: ``"last"``, ``"best"`` or a path checked by
    :func:`resume_from` (stored in ``Task.resume_from``); None keeps the task's previous choice. Tasks skipped because of this
    one are resumed too, and a grid search resumes its unsuccessful cells.

    Raises:
        NotFoundError: no such task.
        StateError: the task is waiting, running or succeeded.
    """
    task = get_task(session, task_id, lock=True)
    if task.status not in RESUMABLE:
        what = "succeeded" if task.status is S.success else f"is {task.status.value}"
        raise StateError(f"task {task_id} ({task.name!r}) {what}; only a failed, stopped or skipped task "
                         f"can be resumed")
    _resume(session, task, from_, now)
    return task


def _dag_tasks(session: Session, dag_id: int) -> list[Task]:
    get_dag(session, dag_id)
    return list(session.scalars(select(Task).where(Task.dag_id == dag_id).order_by(Task.id).with_for_update()))


def stop_dag(session: Session, dag_id: int, now: dt.datetime | None = None) -> list[Task]:
    """Stops every task of DAG ``dag_id`` that has not ended. Returns the tasks stopped.

    Raises:
        NotFoundError: no such DAG.
        StateError: every task has already ended or is stopping.
    """
    stopped = [t for t in _dag_tasks(session, dag_id) if _stop(session, t, f"dag {dag_id} stop requested", now)]
    if not stopped:
        raise StateError(f"dag {dag_id} has no waiting, queued or running task to stop")
    return stopped


def resume_dag(session: Session, dag_id: int, now: dt.datetime | None = None) -> list[Task]:
    """Resumes every failed, stopped or skipped task of DAG ``dag_id``, so only what has not
    succeeded runs again. Returns the tasks resumed.

    Raises:
        NotFoundError: no such DAG.
        StateError: no task of the DAG is failed, stopped or skipped.
    """
    tasks = [t for t in _dag_tasks(session, dag_id) if t.status in RESUMABLE]
    if not tasks:
        raise StateError(f"dag {dag_id} has no failed, stopped or skipped task to resume")
    for task in tasks:
        _resume(session, task, None, now)
    return tasks


def set_dag_priority(session: Session, dag_id: int, priority: int) -> list[Task]:
    """Sets ``priority`` on every task of DAG ``dag_id`` that has not finished (waiting, queued,
    running, stopping or paused), so its waiting tasks are placed, and it is preempted, by the new
    priority (higher runs first, :mod:`mlcomp.supervisor.fairshare`). Returns the tasks changed.

    Raises:
        NotFoundError: no such DAG.
        ConfigError: ``priority`` is not an int in the range of a DAG file's ``priority`` key.
        StateError: every task of the DAG has finished.
    """
    from mlcomp.dag.spec import CHECKS

    _, check, allowed = CHECKS["priority"]
    try:
        check(priority)
    except ValueError:
        raise ConfigError(f"priority {priority!r}: allowed: {allowed}") from None
    tasks = [t for t in _dag_tasks(session, dag_id) if not t.status.finished]
    if not tasks:
        raise StateError(f"dag {dag_id} has no waiting, queued, running or paused task")
    for task in tasks:
        task.priority = priority
    return tasks


def dag_status(session: Session, dag: Dag | int) -> TaskStatus:
    """A DAG's status derived from its tasks (:func:`mlcomp.lifecycle.rollup_status`; a task
    paused by a preemption counts as waiting, :func:`~mlcomp.lifecycle.counted_status`).

    Raises:
        NotFoundError: ``dag`` is an id that does not exist.
    """
    dag_id = dag.id if isinstance(dag, Dag) else get_dag(session, dag).id
    rows = session.execute(select(Task.status, Task.preempted_by).where(Task.dag_id == dag_id))
    return rollup_status(counted_status(status, by is not None) for status, by in rows)


def wake(settings: Settings) -> None:
    """Wakes the supervisors of ``settings``' store after a commit: those of this process at
    once, the others through the bus's backend (:mod:`mlcomp.bus`). Whether a server runs is
    told by its heartbeat row (:func:`mlcomp.supervisor.supervisor.serving`), not by this."""
    Bus.of(settings).publish(SUPERVISOR)
