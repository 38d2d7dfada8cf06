"""Read-only queries behind the pages and the API. Each takes the session first, never commits,
and returns plain JSON-able dicts (times as ISO-8601 UTC strings, durations in seconds).

Built for the scale budget (100,000 tasks, DAGs of thousands of grid cells, 100,000 points per
metric series): DAG lists are paged in SQL with status counts aggregated by ``GROUP BY``; a DAG's
grid cells are counted by ``GROUP BY`` and read a page at a time; logs are read after an id
cursor; metric series are read by :mod:`ui.series`.
"""
from __future__ import annotations

import datetime as dt
import json
from collections import defaultdict
from typing import Any

from sqlalchemy import ColumnElement, Text, and_, case, cast, func, select
from sqlalchemy.orm import Session

from mlcomp.db import (
    Attempt,
    Checkpoint,
    Computer,
    Dag,
    LogLine,
    Metric,
    Preemption,
    Project,
    SnapshotBlob,
    SnapshotFile,
    Task,
    TaskDependency,
    TaskStatus,
    as_utc,
    utcnow,
)
from mlcomp import gang
from mlcomp.errors import NotFoundError
from mlcomp.search.rollup import leaderboard, main_metric_of
from mlcomp.lifecycle import ACTIVE, counted_status, rollup_status

__all__ = [
    "STATUSES",
    "iso",
    "unix",
    "overrides",
    "derived_dag_status",
    "list_dags",
    "get_dag_or_404",
    "get_task_or_404",
    "dag_detail",
    "dag_tasks",
    "dag_cells",
    "snapshot_file",
    "task_detail",
    "task_logs",
    "grid_leaderboard",
    "list_computers",
]

STATUSES = [s.value for s in TaskStatus]
TASK_COLUMNS = (Task.id, Task.name, Task.type, Task.status, Task.attempt, Task.parent_id, Task.computer,
                Task.gpus, Task.started, Task.finished, Task.grid_cell)


def iso(value: dt.datetime | None) -> str | None:
    """A stored time as ISO-8601 UTC (naive values from SQLite are UTC)."""
    value = as_utc(value)
    return value.isoformat() if value is not None else None


def unix(value: dt.datetime | None, default: float) -> float:
    """A stored time as Unix seconds (naive values from SQLite are UTC); ``default`` for None."""
    value = as_utc(value)
    return value.timestamp() if value is not None else default


def _span(started, finished, running: bool, now: dt.datetime) -> float | None:
    started, finished = as_utc(started), as_utc(finished)
    if started is None:
        return None
    end = now if running or finished is None else finished
    return (end - started).total_seconds()


def get_dag_or_404(session: Session, dag_id: int) -> Dag:
    """The DAG ``dag_id``. Raises NotFoundError naming the id."""
    dag = session.get(Dag, dag_id)
    if dag is None:
        raise NotFoundError(f"DAG {dag_id} does not exist")
    return dag


def get_task_or_404(session: Session, task_id: int) -> Task:
    """The task ``task_id``. Raises NotFoundError naming the id."""
    task = session.get(Task, task_id)
    if task is None:
        raise NotFoundError(f"task {task_id} does not exist")
    return task


# -- DAGs --------------------------------------------------------------------------------------
# Written for PostgreSQL with or without statistics of the task table: right after a bulk fill,
# before autovacuum's ANALYZE, the planner costs a bare ``dag_id IN (50 ids)`` as a quarter of the
# table (a sequential scan, 20-40 ms at 100,000 tasks) and ``parent_id IS NULL`` as rare (it would
# read the parent_id index, which lists nearly every task).
def _in_dags(dag_ids: list[int]) -> ColumnElement[bool]:
    """``task.dag_id IN dag_ids``, also bounded by their range so that the dag_id index is used."""
    return and_(Task.dag_id.in_(dag_ids), Task.dag_id.between(min(dag_ids), max(dag_ids)))


def _own() -> ColumnElement[bool]:
    """``task.parent_id IS NULL`` (a DAG's own task, not a cell), in a form no index matches."""
    return func.coalesce(Task.parent_id, 0) == 0


def _status_counts(session: Session, dag_ids: list[int]) -> tuple[dict[int, dict[str, int]], dict[int, tuple],
                                                                   dict[int, set[TaskStatus]]]:
    """Per DAG its task count by status, its first start and last end, and its statuses as
    :func:`mlcomp.lifecycle.rollup_status` counts them (:func:`counted_status`; one ``GROUP BY``)."""
    preempted = Task.preempted_by.is_not(None)
    rows = session.execute(
        select(Task.dag_id, Task.status, preempted, func.count(), func.min(Task.started), func.max(Task.finished))
        .where(_in_dags(dag_ids)).group_by(Task.dag_id, Task.status, preempted)
    )
    found: dict[int, dict[str, int]] = defaultdict(dict)
    times: dict[int, tuple] = {}
    counted: dict[int, set[TaskStatus]] = defaultdict(set)
    for dag_id, status, by_preemption, n, started, finished in rows:
        status = TaskStatus(status)
        found[dag_id][status.value] = found[dag_id].get(status.value, 0) + n
        counted[dag_id].add(counted_status(status, bool(by_preemption)))
        first, last = times.get(dag_id, (None, None))
        times[dag_id] = (min(filter(None, (first, started)), default=None),
                         max(filter(None, (last, finished)), default=None))
    return {dag_id: _in_status_order(c) for dag_id, c in found.items()}, times, counted


def _in_status_order(counts: dict[str, int]) -> dict[str, int]:
    return {s: counts[s] for s in STATUSES if s in counts}


def derived_dag_status() -> ColumnElement[str]:
    """:func:`mlcomp.lifecycle.rollup_status` as a SQL aggregate over the ``task`` rows of
    a ``GROUP BY`` on DAGs (outer-joined: a DAG without tasks is ``not_ran``), so that the DAG list
    filters and pages by status in the database. ``tests/test_ui_dags.py`` checks it against
    ``rollup_status`` for every combination of statuses."""
    def count(*statuses: TaskStatus):
        return func.sum(case((Task.status.in_(statuses), 1), else_=0))

    s = TaskStatus
    preempted = func.sum(case((and_(Task.status == s.paused, Task.preempted_by.is_not(None)), 1), else_=0))
    return case(  # a task paused by a preemption counts as queued (counted_status)
        (func.count(Task.id) == count(s.not_ran), s.not_ran.value),
        (count(*ACTIVE, s.not_ran) + preempted > 0, s.in_progress.value),
        (count(s.failed) > 0, s.failed.value),
        (count(s.stopped, s.paused) > 0, s.stopped.value),
        (count(s.skipped) > 0, s.skipped.value),
        else_=s.success.value,
    )


def list_dags(session: Session, *, project: str | None = None, status: str | None = None,
              name: str | None = None, tag: str | None = None, page: int = 1, per_page: int = 50,
              now: dt.datetime | None = None) -> dict[str, Any]:
    """One page of DAGs, newest first, filtered by project name, derived status (the supervisor's
    :func:`rollup_status` of the tasks, computed in SQL by :func:`derived_dag_status`), a name
    substring and a tag.

    Returns:
        ``{"dags": [{id, name, project, created, status, counts: {status: n}, tasks, started,
        finished, duration, overrides, best, tags, note}], "page", "per_page", "pages", "total",
        "projects", "statuses", "filters"}``.
    """
    now = now or utcnow()
    ids = select(Dag.id).join(Project)
    if project:
        ids = ids.where(Project.name == project)
    if name:
        ids = ids.where(Dag.name.contains(name, autoescape=True))
    if tag:  # the JSON text of the list holds the tag's JSON string, quotes included
        ids = ids.where(cast(Dag.tags, Text).contains(json.dumps(tag), autoescape=True))
    if status:
        ids = (ids.outerjoin(Task, Task.dag_id == Dag.id).group_by(Dag.id)
               .having(derived_dag_status() == status))
    total = session.scalar(select(func.count()).select_from(ids.subquery()))
    page_ids = list(session.scalars(ids.order_by(Dag.id.desc()).offset((page - 1) * per_page).limit(per_page)))
    return {
        "dags": _dag_rows(session, page_ids, now),
        "page": page, "per_page": per_page, "total": total, "pages": max(1, -(-total // per_page)),
        "projects": list(session.scalars(select(Project.name).order_by(Project.name))),
        "statuses": STATUSES,
        "filters": {"project": project or "", "status": status or "", "name": name or "", "tag": tag or ""},
    }


def overrides(config: str, grid_cell: dict | None) -> dict[str, Any]:
    """A DAG's hyper-parameter overrides: the ``--set KEY=VALUE`` it was submitted with (recorded
    as ``# --set`` lines at the end of its YAML), then its DAG-level grid cell's values."""
    sets = dict(line[len("# --set "):].split("=", 1) for line in config.splitlines()
                if line.startswith("# --set ") and "=" in line)
    return {**sets, **(grid_cell or {})}


def _best_main(session: Session, dag_ids: list[int]) -> dict[int, dict]:
    """Per DAG, the best final value of its tasks' main metric (:func:`main_metric_of`: a train
    task's ``best``, a grid search's ``best_value``): ``{dag_id: {"metric", "value", "minimize"}}``."""
    rows = session.execute(select(Task.dag_id, Task.result, Task.executor_config)
                           .where(_in_dags(dag_ids), Task.result.is_not(None), _own()))
    best: dict[int, dict] = {}
    for task in rows:  # main_metric_of reads a task's result and executor_config only
        main, result = main_metric_of(task), task.result
        value = result.get("best", result.get("best_value")) if isinstance(result, dict) else None
        if not main or not isinstance(value, (int, float)):
            continue
        known = best.get(task.dag_id)
        if known is None or (value < known["value"] if main["minimize"] else value > known["value"]):
            best[task.dag_id] = {"metric": main["metric"], "value": value, "minimize": main["minimize"]}
    return best


def _dag_rows(session: Session, dag_ids: list[int], now: dt.datetime) -> list[dict]:
    if not dag_ids:
        return []
    counts, times, counted = _status_counts(session, dag_ids)
    best = _best_main(session, dag_ids)
    rows = session.execute(select(Dag.id, Dag.name, Dag.created, Project.name, Dag.config, Dag.grid_cell, Dag.tags,
                                  Dag.note).join(Project).where(Dag.id.in_(dag_ids)).order_by(Dag.id.desc()))
    dags = []
    for dag_id, name, created, project, config, grid_cell, tags, note in rows:
        dag_counts = counts.get(dag_id, {})
        status = rollup_status(counted.get(dag_id, ())).value
        started, finished = times.get(dag_id, (None, None))
        dags.append({
            "id": dag_id, "name": name, "project": project, "created": iso(created), "status": status,
            "counts": dag_counts, "task_count": sum(dag_counts.values()), "started": iso(started),
            "finished": iso(finished),
            "duration": _span(started, finished, status == TaskStatus.in_progress.value, now),
            "overrides": overrides(config, grid_cell), "best": best.get(dag_id), "tags": list(tags or []),
            "note": note or "",
        })
    return dags


def _task_rows(session: Session, where: list, now: dt.datetime, *, offset: int = 0,
               limit: int | None = None) -> list[dict]:
    """Task rows (:data:`TASK_COLUMNS`) matching ``where``, each with the ids it depends on (read
    for those rows only, by the dependency table's primary key)."""
    query = select(*TASK_COLUMNS).where(*where).order_by(Task.id)
    if offset:
        query = query.offset(offset)
    if limit is not None:
        query = query.limit(limit)
    rows = list(session.execute(query))
    depends: dict[int, list[int]] = defaultdict(list)
    if rows:
        for task_id, depend_id in session.execute(
                select(TaskDependency.task_id, TaskDependency.depend_id)
                .where(TaskDependency.task_id.in_([row.id for row in rows]))):
            depends[task_id].append(depend_id)
    tasks = []
    for row in rows:
        task = dict(row._mapping)
        status = TaskStatus(task["status"])
        task.update(status=status.value, gpus=list(task["gpus"] or []), started=iso(task["started"]),
                    finished=iso(task["finished"]), depends=sorted(depends.get(task["id"], [])),
                    duration=_span(row.started, row.finished, status in ACTIVE, now))
        tasks.append(task)
    return tasks


def dag_tasks(session: Session, dag_id: int, now: dt.datetime | None = None) -> list[dict]:
    """The DAG's own tasks (id order), those that are not a cell (a child) of a grid search or a
    search, each with the ids it depends on; a parent of cells also gets ``cells``, its cells'
    count by status, and ``cell_count`` (the cells themselves are paged by :func:`dag_cells`).

    Returns:
        ``[{id, name, type, status, attempt, parent_id (None), computer, gpus, started, finished,
        duration, grid_cell, depends: [task ids], and for a parent cells: {status: n}, cell_count}]``.
    """
    now = now or utcnow()
    tasks = _task_rows(session, [Task.dag_id == dag_id, _own()], now)
    counts: dict[int, dict[str, int]] = defaultdict(dict)
    for parent_id, status, n in session.execute(
            select(Task.parent_id, Task.status, func.count())
            .where(Task.dag_id == dag_id, Task.parent_id.is_not(None)).group_by(Task.parent_id, Task.status)):
        counts[parent_id][TaskStatus(status).value] = n
    for task in tasks:
        if task["id"] in counts:
            task["cells"] = _in_status_order(counts[task["id"]])
            task["cell_count"] = sum(task["cells"].values())
    return tasks


def dag_cells(session: Session, dag_id: int, *, status: str | None = None, page: int = 1, per_page: int = 50,
              now: dt.datetime | None = None, total: int | None = None) -> dict[str, Any]:
    """One page of the DAG's cells (the children of its grid searches and searches), id order,
    optionally only those in ``status``. ``total``, the number of cells matching when the caller
    knows it (:func:`dag_detail` takes it from the DAG's status counts), saves counting them again.

    Returns:
        ``{"tasks": [task rows as :func:`dag_tasks`'s, ``parent_id`` set], "page", "per_page",
        "pages", "total" (cells matching), "status" (the filter, "" for none)}``; a page past the
        last has no tasks.

    Raises:
        ValueError: ``status`` is not a task status.
    """
    now = now or utcnow()
    where = [Task.dag_id == dag_id, Task.parent_id.is_not(None)]
    if status:
        where.append(Task.status == TaskStatus(status))
    if total is None:
        total = session.scalar(select(func.count()).select_from(Task).where(*where)) or 0
    tasks = _task_rows(session, where, now, offset=(page - 1) * per_page, limit=per_page) if total else []
    return {"tasks": tasks, "page": page, "per_page": per_page, "pages": max(1, -(-total // per_page)),
            "total": total, "status": status or ""}


def dag_detail(session: Session, dag_id: int, now: dt.datetime | None = None, *, cell_status: str | None = None,
               page: int = 1, per_page: int = 50) -> dict[str, Any]:
    """A DAG with its own tasks (:func:`dag_tasks`), one page of its cells (:func:`dag_cells`
    with ``cell_status``, ``page``, ``per_page``), status counts, submitted YAML and snapshot file
    list. Its size does not grow with the number of cells.

    Raises:
        NotFoundError: no DAG ``dag_id``.
        ValueError: ``cell_status`` is not a task status.
    """
    now = now or utcnow()
    dag = get_dag_or_404(session, dag_id)
    row = _dag_rows(session, [dag_id], now)[0]
    files = session.execute(select(SnapshotFile.path, SnapshotBlob.size)
                            .join(SnapshotBlob, SnapshotBlob.sha256 == SnapshotFile.sha256)
                            .where(SnapshotFile.dag_id == dag_id).order_by(SnapshotFile.path))
    tasks = dag_tasks(session, dag_id, now)
    own = [t for t in tasks if not cell_status or t["status"] == cell_status]  # the rest are cells
    total = max(0, (row["counts"].get(cell_status, 0) if cell_status else row["task_count"]) - len(own))
    return {**row, "config": dag.config, "source": dag.source, "grid_cell": dag.grid_cell, "tasks": tasks,
            "cells": dag_cells(session, dag_id, status=cell_status, page=page, per_page=per_page, now=now,
                               total=total),
            "files": [{"path": path, "size": size} for path, size in files]}


def snapshot_file(session: Session, dag_id: int, path: str) -> dict[str, Any]:
    """One file of a DAG's code snapshot: ``{dag_id, path, size, text, binary}`` (``text`` is
    ``None`` for a file that is not UTF-8).

    Raises:
        NotFoundError: no DAG ``dag_id`` or no such path in its snapshot.
    """
    get_dag_or_404(session, dag_id)
    content = session.scalar(select(SnapshotBlob.content)
                             .join(SnapshotFile, SnapshotBlob.sha256 == SnapshotFile.sha256)
                             .where(SnapshotFile.dag_id == dag_id, SnapshotFile.path == path))
    if content is None:
        raise NotFoundError(f"DAG {dag_id} has no file {path!r} in its snapshot")
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    return {"dag_id": dag_id, "path": path, "size": len(content), "text": text, "binary": text is None}


# -- tasks -------------------------------------------------------------------------------------
def _task_ref(task: Task) -> dict[str, Any]:
    return {"id": task.id, "name": task.name, "status": task.status.value}


def _progress(progress: dict | None) -> dict | None:
    if not progress:
        return None
    progress = dict(progress)
    for done, total in (("epoch", "epochs"), ("batch", "batches")):
        if progress.get(done) is not None and progress.get(total):
            progress[f"{done}_percent"] = round(100.0 * float(progress[done]) / float(progress[total]), 1)
    return progress


def task_detail(session: Session, task_id: int, now: dt.datetime | None = None) -> dict[str, Any]:
    """Everything the task page shows except the logs and metric values (fetched lazily):
    status, reason, why it waits, attempts, preemptions, placement, timings, progress with ETA,
    dependencies, grid cells, checkpoints, metric series names and the result.

    Raises:
        NotFoundError: no task ``task_id``.
    """
    now = now or utcnow()
    task = get_task_or_404(session, task_id)
    deps = session.scalars(select(Task).join(TaskDependency, TaskDependency.depend_id == Task.id)
                           .where(TaskDependency.task_id == task_id).order_by(Task.id))
    dependents = session.scalars(select(Task).join(TaskDependency, TaskDependency.task_id == Task.id)
                                 .where(TaskDependency.depend_id == task_id).order_by(Task.id))
    children = _status_counts_children(session, task_id)
    return {
        "id": task.id, "name": task.name, "type": task.type, "status": task.status.value,
        "dag": {"id": task.dag_id, "name": task.dag.name},
        "parent": {**_task_ref(task.parent), "type": task.parent.type} if task.parent else None,
        "children": children, "attempt": task.attempt, "computer": task.computer,
        "gpus": list(task.gpus or []), "gpu_request": [task.gpu_min, task.gpu_max], "cpu": task.cpu,
        "memory": task.memory, "pid": task.pid, "priority": task.priority, "retries": task.retries,
        "created": iso(task.created), "queued": iso(task.queued), "started": iso(task.started),
        "finished": iso(task.finished), "updated": iso(task.updated),
        "duration": _span(task.started, task.finished, task.status in ACTIVE, now),
        "reason": task.reason, "waiting_reason": task.waiting_reason, "progress": _progress(task.progress),
        "result": task.result, "resume_from": task.resume_from, "grid_cell": task.grid_cell,
        "executor_config": task.executor_config,
        "depends": [_task_ref(t) for t in deps], "dependents": [_task_ref(t) for t in dependents],
        "attempts": [_attempt(a, now) for a in task.attempts],
        "preemptions": _preemptions(session, task_id),
        "checkpoints": _checkpoints(session, task_id),
        "metrics": _metric_names(session, task_id),
        "finished_status": task.status.finished,
    }


def _status_counts_children(session: Session, task_id: int) -> dict[str, int]:
    rows = session.execute(select(Task.status, func.count()).where(Task.parent_id == task_id)
                           .group_by(Task.status))
    return _in_status_order({TaskStatus(status).value: n for status, n in rows})


def _attempt(attempt: Attempt, now: dt.datetime) -> dict[str, Any]:
    """An attempt's row; an attempt after the first with no checkpoint chosen resumed from the
    executors' default, ``"last"`` (:func:`executors.train.resolve_resume`)."""
    return {"number": attempt.number, "status": attempt.status.value, "computer": attempt.computer,
            "gpus": list(attempt.gpus or []), "started": iso(attempt.started),
            "finished": iso(attempt.finished), "reason": attempt.reason,
            "resume_from": attempt.resume_from or ("last" if attempt.number > 1 else None),
            "duration": _span(attempt.started, attempt.finished, attempt.status in ACTIVE, now)}


def _preemptions(session: Session, task_id: int) -> list[dict]:
    """The task's preemptions, oldest first: the attempt paused, the task it made room for and
    when the pause was asked for, when the process ended paused and when the task ran again."""
    rows = session.execute(select(Preemption, Task.name).join(Task, Task.id == Preemption.by_task_id)
                           .where(Preemption.task_id == task_id).order_by(Preemption.id))
    return [{"attempt": p.attempt, "by": {"id": p.by_task_id, "name": name}, "requested": iso(p.requested),
             "paused": iso(p.paused), "resumed": iso(p.resumed)} for p, name in rows]


def _checkpoints(session: Session, task_id: int) -> list[dict]:
    """The task's checkpoint files, each with its latest record (a file such as ``best.pth`` is
    rewritten, and recorded, many times), in the order they were last written."""
    latest = (select(func.max(Checkpoint.id)).where(Checkpoint.task_id == task_id)
              .group_by(Checkpoint.path).scalar_subquery())
    rows = session.scalars(select(Checkpoint).where(Checkpoint.id.in_(latest)).order_by(Checkpoint.id))
    return [{"id": c.id, "attempt": c.attempt, "path": c.path, "stage": c.stage, "epoch": c.epoch,
             "metric": c.metric, "size": c.size, "created": iso(c.created)} for c in rows]


def _metric_names(session: Session, task_id: int) -> list[dict]:
    rows = session.execute(select(Metric.name, Metric.kind, func.count()).where(Metric.task_id == task_id)
                           .group_by(Metric.name, Metric.kind).order_by(Metric.name, Metric.kind))
    return [{"name": name, "kind": kind, "points": n} for name, kind, n in rows]


def task_logs(session: Session, task_id: int, *, after: int | None = None, limit: int = 500) -> dict:
    """Log lines of a task, oldest first: those with an id above ``after``, or the last ``limit``
    lines when ``after`` is None (the tail).

    Returns:
        ``{"task_id", "lines": [{id, attempt, time, level, stream, text}], "last": the id to pass
        as ``after`` next time, "more": True when more lines wait after ``last``}``.

    Raises:
        NotFoundError: no task ``task_id``.
    """
    get_task_or_404(session, task_id)
    columns = (LogLine.id, LogLine.attempt, LogLine.time, LogLine.level, LogLine.stream, LogLine.text)
    query = select(*columns).where(LogLine.task_id == task_id)
    if after is None:
        rows = list(session.execute(query.order_by(LogLine.id.desc()).limit(limit)))[::-1]
        more = False
    else:
        rows = list(session.execute(query.where(LogLine.id > after).order_by(LogLine.id).limit(limit + 1)))
        more = len(rows) > limit
        rows = rows[:limit]
    lines = [{"id": r.id, "attempt": r.attempt, "time": iso(r.time), "level": r.level, "stream": r.stream,
              "text": r.text} for r in rows]
    last = lines[-1]["id"] if lines else (after or 0)
    return {"task_id": task_id, "lines": lines, "last": last, "more": more}


# -- grid search -------------------------------------------------------------------------------
def grid_leaderboard(session: Session, task_id: int, *, metric: str | None = None,
                     minimize: bool | None = None, loader: str | None = None,
                     descending: bool | None = None) -> dict[str, Any]:
    """A grid search's cells ranked by a metric: per cell its parameters, status and value.

    By default this is :func:`mlcomp.search.rollup.leaderboard`, the ranking the supervisor uses
    to pick the best cell: the template's main metric (``main`` of the train executor's config),
    each cell's final ``best`` when it finished, else the best epoch value its valid loader
    reported so far. Asking for another ``metric``, ``loader`` or ``minimize`` ranks the cells by
    the best epoch-level value of that metric (any loader when ``loader`` is not given;
    ``minimize`` defaults to True for names containing ``loss`` or ``error``). ``descending``
    orders the rows (default: best first).

    Returns:
        ``{"task", "dag", "metric", "metrics" (the cells' epoch metric names), "minimize",
        "loader", "descending", "params", "cells": [{id, name, status, attempt, params, value,
        final}]}``.

    Raises:
        NotFoundError: no task ``task_id``, or it has no grid cells.
    """
    parent = get_task_or_404(session, task_id)
    board = leaderboard(session, parent)
    if not board:
        raise NotFoundError(f"task {task_id} ({parent.name!r}) is not a grid search: it has no cells")
    cells = [session.get(Task, row["task_id"]) for row in board]
    main = next(filter(None, (main_metric_of(t) for t in [*cells, parent])), None) or {}
    names = list(session.scalars(select(Metric.name).where(Metric.task_id.in_([c.id for c in cells]),
                                                           Metric.kind == "epoch")
                                 .group_by(Metric.name).order_by(Metric.name)))
    metric = metric or main.get("metric") or (names[0] if names else None)
    if metric == main.get("metric"):
        loader = loader or main.get("loader")
        minimize = bool(main.get("minimize")) if minimize is None else minimize
    elif minimize is None:
        minimize = bool(metric) and any(w in metric for w in ("loss", "error"))
    rows = [{"id": row["task_id"], **{k: row[k] for k in ("name", "status", "attempt", "params", "value", "final")}}
            for row in board]
    if (metric, loader, minimize) != (main.get("metric"), main.get("loader"), main.get("minimize")):
        best = _best_values(session, [c.id for c in cells], metric, loader, minimize) if metric else {}
        for row in rows:
            row.update(value=best.get(row["id"]), final=False)
    descending = (not minimize) if descending is None else descending
    rows.sort(key=lambda r: (r["value"] is None, -(r["value"] or 0) if descending else (r["value"] or 0)))
    return {"task": _task_ref(parent), "dag": {"id": parent.dag_id, "name": parent.dag.name},
            "metric": metric, "metrics": names, "minimize": minimize, "loader": loader,
            "descending": descending, "params": sorted({key for row in rows for key in row["params"]}),
            "cells": rows}


def _best_values(session, cell_ids, metric, loader, minimize) -> dict[int, float]:
    """Best epoch-level value of ``metric`` per cell (on ``loader``, or any loader when None)."""
    agg = func.min(Metric.value) if minimize else func.max(Metric.value)
    query = (select(Metric.task_id, agg)
             .where(Metric.task_id.in_(cell_ids), Metric.name == metric, Metric.kind == "epoch")
             .group_by(Metric.task_id))
    if loader:
        query = query.where(Metric.loader == loader)
    return dict(session.execute(query).all())


# -- computers ---------------------------------------------------------------------------------
def list_computers(session: Session, now: dt.datetime | None = None) -> dict[str, Any]:
    """Computers with their GPUs (memory and utilisation when the worker reported
    ``Computer.usage``), CPU and RAM use, heartbeat age in seconds, and running tasks."""
    now = now or utcnow()
    running: dict[str, list[dict]] = defaultdict(list)
    for task in session.scalars(select(Task).where(Task.status.in_(list(ACTIVE)), Task.computer.is_not(None))
                                .order_by(Task.id)):
        for part in gang.holdings(task.computer, task.gpus, task.placement):  # a gang: on each of its computers
            running[part.computer].append({**_task_ref(task), "gpus": list(part.gpus),
                                           "dag_id": task.dag_id, "cpu": task.cpu, "memory": task.memory})
    computers = []
    for c in session.scalars(select(Computer).order_by(Computer.name)):
        usage = c.usage or {}
        gpu_usage = {g.get("index"): g for g in usage.get("gpus") or []}
        busy = {i: t["id"] for t in running[c.name] for i in t["gpus"]}
        gpus = [{**g, **gpu_usage.get(g.get("index"), {}), "task_id": busy.get(g.get("index"))}
                for g in c.gpus or []]
        heartbeat = as_utc(c.heartbeat)
        computers.append({
            "name": c.name, "address": c.address, "cpu": c.cpu, "memory": c.memory, "gpus": gpus,
            "usage": {k: v for k, v in usage.items() if k != "gpus"},
            "heartbeat": iso(heartbeat),
            "heartbeat_age": (now - heartbeat).total_seconds() if heartbeat else None,
            "tasks": running[c.name],
        })
    return {"computers": computers}
