"""A grid search's stored config, ranking and roll-up, in one place.

A grid search is a composite parent task (kind :attr:`mlcomp.kinds.TaskKind.GRID`) that runs no
process: once ready the supervisor moves it to ``in_progress`` and its cells run as ordinary tasks;
its cells come from :mod:`mlcomp.search.grid` (expansion). Here:

* the parent's **stored config** (:func:`grid_config`), checked at submission;

* the **ranking** (:func:`leaderboard`): cells by the template's main metric, a finished ``train``
  cell by its result (``best``), a running one by the best epoch value its valid loader reported
  so far; :func:`best_cell` is the first succeeded cell of that ranking, what the tasks depending
  on the grid search get (infer, trace) and what the UI shows;
* the **roll-up** (:func:`rollup_grid_parents`, the grid's driver in :mod:`mlcomp.search.drivers`):
  a running parent ends when every cell has ended (:func:`grid_parent_status`), with
  :func:`grid_result` (its leaderboard and best cell) stored as its result.

Functions take the caller's session and never commit.
"""
from __future__ import annotations

import datetime as dt
import math
from collections import defaultdict
from typing import Any, Callable, Collection

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from mlcomp.db import Metric, Task, TaskStatus
from mlcomp.kinds import TaskKind
from mlcomp.lifecycle import ACTIVE, set_task_status

__all__ = ["GRID_CONFIG_KEYS", "grid_config", "main_metric_of", "leaderboard", "best_cell", "grid_result",
           "grid_parent_status", "cell_rows", "rollup_grid_parents"]

GRID_CONFIG_KEYS = ("template", "parallel", "cells")
"""The keys of a grid parent's stored ``executor_config``."""
S = TaskStatus


def grid_config(spec: dict, error: Callable[[str, str], Exception]) -> dict:
    """Checks and returns a grid parent's config to store: ``{"template": {"type": …, <the
    template's executor keys>}, "parallel": int | None, "cells": int}``.

    Args:
        spec: the config to check: ``template`` (a mapping with a string ``type``), ``parallel``
            (None or an int >= 1, the cells active at once) and ``cells`` (an int >= 1, how many).
        error: ``error(key, message)`` → the exception to raise for ``key`` (a submission's
            ``SubmitContext.error``, which points at the DAG file's line).

    Raises:
        whatever ``error`` returns (a ``DagError`` at submission): a key is missing, unknown or of
        the wrong kind.
    """
    unknown = sorted(set(spec) - set(GRID_CONFIG_KEYS))
    if unknown:
        raise error(unknown[0], f"unknown key for a grid search; allowed: {', '.join(GRID_CONFIG_KEYS)}")
    template, parallel, cells = spec.get("template"), spec.get("parallel"), spec.get("cells")
    if not isinstance(template, dict) or not isinstance(template.get("type"), str):
        raise error("template", f"expected a mapping with a 'type', got {template!r}")
    if parallel is not None and (not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1):
        raise error("parallel", f"got {parallel!r}; allowed: an int >= 1")
    if not isinstance(cells, int) or isinstance(cells, bool) or cells < 1:
        raise error("cells", f"got {cells!r}; allowed: an int >= 1 (the number of cells)")
    return {"template": dict(template), "parallel": parallel, "cells": cells}


def main_metric_of(task: Task) -> dict[str, Any] | None:
    """The main metric of a train-like task: ``{"metric": name, "minimize": bool, "loader":
    valid loader}`` from its result, else from its executor_config's ``main`` (stored by the
    train executor at submission, also inside a grid parent's ``template``); None when it has
    none (a bash cell)."""
    result = task.result or {}
    if result.get("main_metric"):
        return {"metric": result["main_metric"], "minimize": bool(result.get("minimize")),
                "loader": result.get("valid_loader", "valid")}
    config = task.executor_config or {}
    main = config.get("main") or (config.get("template") or {}).get("main")
    return dict(main) if isinstance(main, dict) and main.get("metric") else None


def _so_far(session: Session, cells: list[Task], main: dict) -> dict[int, float]:
    """Best epoch value of the main metric each cell reported so far (any attempt)."""
    best = func.min(Metric.value) if main["minimize"] else func.max(Metric.value)
    rows = session.execute(select(Metric.task_id, best)
                           .where(Metric.task_id.in_([c.id for c in cells]), Metric.name == main["metric"],
                                  Metric.loader == main["loader"], Metric.kind == "epoch")
                           .group_by(Metric.task_id))
    return {task_id: value for task_id, value in rows if value is not None}


def leaderboard(session: Session, parent: Task) -> list[dict[str, Any]]:
    """The cells of grid search ``parent``, best first.

    Each row: ``task_id``, ``name``, ``params`` (the cell's values), ``status``, ``attempt``,
    ``metric`` (the main metric's name or None), ``value`` (the cell's best value: its result,
    or the best epoch reported so far; None when unknown), ``final`` (True when ``value`` comes
    from a finished result), ``minimize``. Rows without a value come last, in id order.
    Functions of the store: reads only, never commits.
    """
    cells = list(session.scalars(select(Task).where(Task.parent_id == parent.id).order_by(Task.id)))
    main = next(filter(None, (main_metric_of(t) for t in [*cells, parent])), None)
    so_far = _so_far(session, cells, main) if main and cells else {}
    rows = []
    for cell in cells:
        result = cell.result or {}
        final = result.get("best") is not None
        value = result.get("best") if final else so_far.get(cell.id)
        rows.append({"task_id": cell.id, "name": cell.name, "params": dict(cell.grid_cell or {}),
                     "status": cell.status.value, "attempt": cell.attempt,
                     "metric": main and main["metric"], "minimize": bool(main and main["minimize"]),
                     "value": value, "final": final})
    sign = 1.0 if main is None or main["minimize"] else -1.0
    rows.sort(key=lambda r: (r["value"] is None or _nan(r["value"]),
                             0.0 if r["value"] is None or _nan(r["value"]) else sign * r["value"], r["task_id"]))
    return rows


def _nan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def best_cell(session: Session, parent: Task) -> Task | None:
    """The succeeded cell of ``parent`` with the best final main metric (the first succeeded cell
    when the cells report no metric); None when no cell succeeded."""
    for row in leaderboard(session, parent):
        if row["status"] == TaskStatus.success.value and (row["final"] or row["metric"] is None):
            return session.get(Task, row["task_id"])
    return None


def grid_result(session: Session, parent: Task) -> dict[str, Any]:
    """The result stored on a finished grid search: its leaderboard and best cell
    (``best_task_id``, ``best_params``, ``best_value``, ``metric``, ``minimize``)."""
    rows = leaderboard(session, parent)
    best = best_cell(session, parent)
    row = next((r for r in rows if best is not None and r["task_id"] == best.id), None)
    return {"leaderboard": rows, "metric": rows[0]["metric"] if rows else None,
            "minimize": rows[0]["minimize"] if rows else None,
            "best_task_id": best and best.id, "best_params": row and row["params"],
            "best_value": row and row["value"]}


def grid_parent_status(parent: Task, children: list) -> TaskStatus | None:
    """The status a running grid parent (:attr:`~mlcomp.kinds.TaskKind.GRID`) should move to, or None to stay.

    A parent needs no process: it is ``in_progress`` while its cells run or wait (a cell ``paused``
    for a task of higher priority, :mod:`mlcomp.supervisor.preempt`, waits to resume) and ends when
    all have ended (success only if every cell succeeded); a ``stopping`` parent ends as
    ``stopped`` once no cell is active. ``children`` are the cells: Task rows, or light rows with a
    ``status``.
    """
    statuses = [c.status for c in children]
    if any(s in ACTIVE for s in statuses):
        return None
    if parent.status is S.stopping:
        return S.stopped
    if S.not_ran in statuses or S.paused in statuses:
        return None
    if all(s is S.success for s in statuses):
        return S.success
    return S.failed if S.failed in statuses or S.skipped in statuses else S.stopped


def cell_rows(session: Session, parent_ids) -> dict[int, list]:
    """The cells of each grid parent in ``parent_ids`` as light rows (``id``, ``status``)."""
    cells: dict[int, list] = defaultdict(list)
    if parent_ids:
        for row in session.execute(select(Task.parent_id, Task.id, Task.status)
                                   .where(Task.parent_id.in_(list(parent_ids))).order_by(Task.id)):
            cells[row.parent_id].append(row)
    return cells


def rollup_grid_parents(session: Session, now: dt.datetime, parent_ids: Collection[int] | None = None) -> int:
    """Ends the running grid parents whose cells have all ended. Returns how many changed.

    Args:
        parent_ids: the active grid parents when the caller has read them (a tick, from its
            active tasks); None reads them here.
    """
    if parent_ids is not None and not parent_ids:
        return 0
    stmt = select(Task).where(Task.type == TaskKind.GRID.value, Task.status.in_([S.in_progress, S.stopping]))
    if parent_ids is not None:
        stmt = stmt.where(Task.id.in_(list(parent_ids)))
    parents = session.scalars(stmt).all()
    children = cell_rows(session, [p.id for p in parents])
    changed = 0
    for parent in parents:
        cells = children[parent.id]
        new = grid_parent_status(parent, cells)
        if new is not None:
            done = sum(c.status is S.success for c in cells)
            set_task_status(session, parent, new, f"{done} of {len(cells)} grid cells succeeded", now)
            parent.result = grid_result(session, parent)
            changed += 1
    return changed
