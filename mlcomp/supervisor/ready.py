"""Which waiting tasks may run: dependency checks, skips, and grid parents.

A task is *ready* (luigi's ``_schedulable``) when it is ``not_ran``, every dependency succeeded
and, for a grid cell, its parent grid search has started. A dependency that failed, was stopped or
was skipped makes the dependent ``skipped`` with a reason naming it. A grid parent (``type:
grid_search``) needs no process: once ready it goes straight to ``in_progress``, its cells become
ready (at most ``executor_config["parallel"]`` of them active at once, if set), and its status is
rolled up from the cells (:func:`mlcomp.supervisor.status.grid_parent_status`).

Functions take the caller's session and never commit.
"""
from __future__ import annotations

import datetime as dt
from collections import defaultdict
from typing import Collection

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from mlcomp.db import Task, TaskDependency, TaskStatus
from mlcomp.supervisor.status import ACTIVE, grid_parent_status, set_task_status

__all__ = ["GRID_TYPE", "is_grid_parent", "rollup_grid_parents", "find_ready"]

GRID_TYPE = "grid_search"
S = TaskStatus
_BLOCKING = (S.failed, S.stopped, S.skipped)


def is_grid_parent(task: Task) -> bool:
    """True for a grid search task, which runs no process of its own."""
    return task.type == GRID_TYPE


def _children_by_parent(session: Session, parent_ids) -> dict[int, list[Task]]:
    children: dict[int, list[Task]] = defaultdict(list)
    if parent_ids:
        for child in session.scalars(select(Task).where(Task.parent_id.in_(parent_ids)).order_by(Task.id)):
            children[child.parent_id].append(child)
    return children


def rollup_grid_parents(session: Session, now: dt.datetime) -> int:
    """Ends the running grid parents whose cells have all ended. Returns how many changed."""
    parents = session.scalars(
        select(Task).where(Task.type == GRID_TYPE, Task.status.in_([S.in_progress, S.stopping]))
    ).all()
    children = _children_by_parent(session, [p.id for p in parents])
    changed = 0
    for parent in parents:
        cells = children[parent.id]
        new = grid_parent_status(parent, cells)
        if new is not None:
            done = sum(c.status is S.success for c in cells)
            set_task_status(session, parent, new, f"{done} of {len(cells)} grid cells succeeded", now)
            parent.result = _grid_result(session, parent)
            changed += 1
    return changed


def _grid_result(session: Session, parent: Task) -> dict:
    """The leaderboard and best cell stored as a finished grid search's result."""
    from executors.grid_search import grid_result  # light: no torch

    return grid_result(session, parent)


# Built once: a fresh alias per query would rebuild its column proxies and defeat the SQL cache.
_DEPEND = aliased(Task, name="depend")
_WAITING = aliased(Task, name="waiting")


def _dependencies(session: Session) -> dict[int, list[tuple[int, str, TaskStatus]]]:
    depend, waiting = _DEPEND, _WAITING
    rows = session.execute(
        select(TaskDependency.task_id, depend.id, depend.name, depend.status)
        .join(depend, depend.id == TaskDependency.depend_id)
        .join(waiting, waiting.id == TaskDependency.task_id)
        .where(waiting.status == S.not_ran)
    )
    deps: dict[int, list[tuple[int, str, TaskStatus]]] = defaultdict(list)
    for task_id, dep_id, dep_name, dep_status in rows:
        deps[task_id].append((dep_id, dep_name, dep_status))
    return deps


def _parent_status(session: Session, tasks: list[Task]) -> dict[int, Task]:
    ids = {t.parent_id for t in tasks if t.parent_id is not None}
    if not ids:
        return {}
    return {p.id: p for p in session.scalars(select(Task).where(Task.id.in_(ids)))}


def _blocked_reason(task: Task, deps, parent: Task | None) -> str | None:
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
    children = _children_by_parent(session, list(limited))
    return {pid: limit - sum(c.status in ACTIVE for c in children[pid]) for pid, limit in limited.items()}


def find_ready(session: Session, now: dt.datetime,
               dag_ids: Collection[int] | None = None) -> tuple[list[Task], list[Task]]:
    """Skips the blocked waiting tasks and returns the ready ones, highest priority first, then
    oldest; with ``dag_ids``, only tasks of those DAGs.

    Returns:
        ``(parents, tasks)``: ready grid parents (the caller starts them without a process) and
        ready tasks that need a computer.
    """
    stmt = select(Task).where(Task.status == S.not_ran)
    if dag_ids is not None:
        stmt = stmt.where(Task.dag_id.in_(list(dag_ids)))
    waiting = session.scalars(stmt.order_by(Task.priority.desc(), Task.created, Task.id)).all()
    if not waiting:
        return [], []
    deps = _dependencies(session)
    parents = _parent_status(session, waiting)
    slots = _slots(session, parents)
    ready_parents, ready = [], []
    for task in waiting:
        parent = parents.get(task.parent_id)
        reason = _blocked_reason(task, deps[task.id], parent)
        if reason is not None:
            set_task_status(session, task, S.skipped, reason, now)
        elif any(status is not S.success for _, _, status in deps[task.id]):
            continue
        elif parent is not None and parent.status is not S.in_progress:
            continue
        elif is_grid_parent(task):
            ready_parents.append(task)
        elif task.parent_id in slots and slots[task.parent_id] <= 0:
            limit = parent.executor_config["parallel"]
            reason = f"grid search {parent.name!r} (task {parent.id}) runs at most {limit} cells at once"
            if task.waiting_reason != reason:
                task.waiting_reason = reason
        elif task.parent_id in slots:
            slots[task.parent_id] -= 1
            ready.append(task)
        else:
            ready.append(task)
    return ready_parents, ready
