"""Which waiting tasks may run: dependency checks, skips, and grid parents.

A task is *ready* (luigi's ``_schedulable``) when it is ``not_ran``, every dependency succeeded
and, for a grid cell, its parent grid search has started; a task paused by preemption (``paused``
with ``preempted_by`` set) is ready again at once (it already ran: no dependency to check), keeping
its place (its creation time). A dependency that failed, was stopped or
was skipped makes the dependent ``skipped`` with a reason naming it. A composite parent (a grid
search or a search, :class:`mlcomp.kinds.TaskKind`) needs no process: once ready it goes straight
to ``in_progress``, its children become ready (at most ``executor_config["parallel"]`` of a grid's
cells active at once, if set), and its driver (:mod:`mlcomp.search.drivers`) ends it.

Functions take the caller's session and never commit.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
from collections import defaultdict
from typing import Any, Collection

from sqlalchemy import and_, or_, select, update
from sqlalchemy.orm import Session, aliased

from mlcomp.db import Dag, Project, Task, TaskDependency, TaskStatus
from mlcomp.kinds import is_composite
from mlcomp.lifecycle import ACTIVE, set_task_status
from mlcomp.search.rollup import cell_rows

__all__ = ["WAITING_COLUMNS", "Readiness", "classify", "find_ready", "set_waiting_reasons"]

S = TaskStatus
_BLOCKING = (S.failed, S.stopped, S.skipped)


# Built once: a fresh alias per query would rebuild its column proxies and defeat the SQL cache.
_DEPEND = aliased(Task, name="depend")
_WAITING = aliased(Task, name="waiting")


def _dependencies(session: Session,
                  dag_ids: Collection[int] | None) -> dict[int, list[tuple[int, str, TaskStatus]]]:
    depend, waiting = _DEPEND, _WAITING
    stmt = (select(TaskDependency.task_id, depend.id, depend.name, depend.status)
            .join(depend, depend.id == TaskDependency.depend_id)
            .join(waiting, waiting.id == TaskDependency.task_id)
            .where(waiting.status == S.not_ran))
    if dag_ids is not None:
        stmt = stmt.where(waiting.dag_id.in_(list(dag_ids)))
    deps: dict[int, list[tuple[int, str, TaskStatus]]] = defaultdict(list)
    for task_id, dep_id, dep_name, dep_status in session.execute(stmt):
        deps[task_id].append((dep_id, dep_name, dep_status))
    return deps


def _parent_status(session: Session, tasks) -> dict[int, Task]:
    ids = {t.parent_id for t in tasks if t.parent_id is not None}
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Task).where(Task.id.in_(ids)))}


def _blocked_reason(deps, parent: Task | None) -> str | None:
    for dep_id, dep_name, dep_status in deps:
        if dep_status in _BLOCKING:
            return f"dependency {dep_name!r} (task {dep_id}) {dep_status.value}"
    if parent is not None and parent.status.finished:
        return f"grid search {parent.name!r} (task {parent.id}) {parent.status.value}"
    return None


def _slots(session: Session, parents: dict[int, Task]) -> dict[int, int]:
    """Free cell slots of running grid parents with a ``parallel`` limit."""
    limited = {pid: int(p.executor_config.get("parallel") or 0) for pid, p in parents.items()
               if p.status is S.in_progress and (p.executor_config or {}).get("parallel")}
    cells = cell_rows(session, list(limited))
    return {pid: limit - sum(c.status in ACTIVE for c in cells[pid]) for pid, limit in limited.items()}


WAITING_COLUMNS = (Task.id, Task.name, Task.type, Task.status, Task.attempt, Task.resume_from, Task.parent_id,
                   Task.waiting_reason, Task.gpu_min, Task.gpu_max, Task.cpu, Task.memory, Task.computer_pin,
                   Task.single_node, Task.distr, Task.priority, Task.created, Task.dag_id, Dag.name.label("dag"),
                   Project.name.label("project"))
"""The columns :func:`find_ready` reads of each waiting task: what placement, its reasons,
queueing without loading the task (:func:`mlcomp.lifecycle.queue_many`) and the placement order
(:mod:`mlcomp.supervisor.fairshare`: priority, creation time, the DAG's project) need."""

WAITING = or_(Task.status == S.not_ran, and_(Task.status == S.paused, Task.preempted_by.is_not(None)))
"""The tasks that wait for a computer: not run yet, or paused by preemption."""


LOAD_CHUNK = 5000
"""Ids per ``IN (…)`` list of :func:`set_waiting_reasons`: well under SQLite's limit on bound
parameters."""


def set_waiting_reasons(session: Session, reasons: dict[int, str]) -> None:
    """Writes ``Task.waiting_reason`` for the task ids in ``reasons``: one set-based
    ``UPDATE … WHERE id IN (…)`` per distinct reason (and per :data:`LOAD_CHUNK` ids), since the
    tasks that wait for the same request share its reason; tasks loaded in the session are not
    refreshed."""
    by_reason: dict[str, list[int]] = defaultdict(list)
    for task_id, reason in reasons.items():
        by_reason[reason].append(task_id)
    for reason, ids in by_reason.items():
        for start in range(0, len(ids), LOAD_CHUNK):
            session.execute(update(Task).where(Task.id.in_(ids[start:start + LOAD_CHUNK]))
                            .values(waiting_reason=reason).execution_options(synchronize_session=False))


@dataclasses.dataclass
class Readiness:
    """What :func:`classify` found among the waiting tasks, in priority order, then oldest.

    Attributes:
        parents: ids of ready composite tasks (grid searches, searches): they start without a
            process.
        ready: ready tasks that need a computer, as light rows (:data:`WAITING_COLUMNS`).
        held: ``(row, reason)`` of tasks ready but for their grid search's ``parallel`` limit.
        skip: ``(task id, reason)`` of tasks a failed, stopped or skipped dependency (or a
            finished grid search) blocks for good.
    """

    parents: list[int] = dataclasses.field(default_factory=list)
    ready: list = dataclasses.field(default_factory=list)
    held: list[tuple[Any, str]] = dataclasses.field(default_factory=list)
    skip: list[tuple[int, str]] = dataclasses.field(default_factory=list)


def classify(session: Session, dag_ids: Collection[int] | None = None) -> Readiness:
    """Sorts the waiting tasks (with ``dag_ids``, only those of these DAGs) into ready, held by a
    grid's ``parallel`` limit and blocked, without writing anything (the queue's view,
    :func:`mlcomp.supervisor.queue.queue`, reads it too). Waiting tasks are read as light rows
    (:data:`WAITING_COLUMNS`, one statement), so this stays cheap with many thousands of them."""
    stmt = (select(*WAITING_COLUMNS).join(Dag, Dag.id == Task.dag_id).join(Project, Project.id == Dag.project_id)
            .where(WAITING))
    if dag_ids is not None:
        stmt = stmt.where(Task.dag_id.in_(list(dag_ids)))
    waiting = session.execute(stmt.order_by(Task.priority.desc(), Task.created, Task.id)).all()
    found = Readiness()
    if not waiting:
        return found
    deps = _dependencies(session, dag_ids)
    parents = _parent_status(session, waiting)
    slots = _slots(session, parents)
    for task in waiting:
        parent = parents.get(task.parent_id)
        task_deps = deps.get(task.id, ())
        reason = _blocked_reason(task_deps, parent) if task.status is S.not_ran else None
        if reason is not None:
            found.skip.append((task.id, reason))
        elif any(status is not S.success for _, _, status in task_deps):
            continue
        elif parent is not None and parent.status is not S.in_progress:
            continue
        elif is_composite(task.type):
            found.parents.append(task.id)
        elif task.parent_id in slots and slots[task.parent_id] <= 0:
            limit = parent.executor_config["parallel"]
            found.held.append((task, f"grid search {parent.name!r} (task {parent.id}) runs at most {limit} cells "
                                     f"at once"))
        elif task.parent_id in slots:
            slots[task.parent_id] -= 1
            found.ready.append(task)
        else:
            found.ready.append(task)
    return found


def find_ready(session: Session, now: dt.datetime,
               dag_ids: Collection[int] | None = None) -> tuple[list[Task], list]:
    """Skips the blocked waiting tasks, writes the waiting reason of those a grid's ``parallel``
    limit holds back, and returns the ready ones, highest priority first, then oldest
    (:func:`classify`); with ``dag_ids``, only tasks of those DAGs. Only the tasks whose status
    changes are loaded as Task objects.

    Returns:
        ``(parents, tasks)``: ready grid parents as Task objects (the caller starts them without a
        process) and ready tasks that need a computer, as light rows with the fields of
        :data:`WAITING_COLUMNS` (``session.get(Task, row.id)`` loads one).
    """
    found = classify(session, dag_ids)
    for task_id, reason in found.skip:
        set_task_status(session, session.get(Task, task_id), S.skipped, reason, now)
    set_waiting_reasons(session, {row.id: reason for row, reason in found.held if row.waiting_reason != reason})
    return [session.get(Task, task_id) for task_id in found.parents], found.ready
