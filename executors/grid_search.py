"""The ``grid_search`` task type: the parent of a grid's cells. It runs no process; the supervisor
moves it to ``in_progress`` when it is ready and rolls its status up from its cells
(``mlcomp.supervisor.ready``).

Written either as a ``grid:`` on any task, or as a task of this type naming its template::

    search:
      type: grid_search
      executor: train        # another task of the file, used as the template
      parallel: 2            # at most 2 cells active at once (optional)
      grid:
        - lr: [0.1, 0.01]

Submission (``mlcomp.dag.submit``) stores the parent's executor_config as
``{"template": {"type": …, <template's executor keys>}, "parallel": int | None, "cells": int}``.

The leaderboard (:func:`leaderboard`, which the UI calls too) ranks the cells by the template's
main metric: a finished ``train`` cell's result (``best``), else the best epoch value its
valid loader reported so far. :func:`best_cell` is the first succeeded cell of that ranking: what
the tasks depending on the grid search get. :func:`grid_result` is stored as the parent's result
when it ends (the supervisor's roll-up calls it).
"""
from __future__ import annotations

import math
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from executors.base import Executor, SubmitContext, TaskContext
from executors.registry import register
from mlcomp.db import Metric, Task, TaskStatus

__all__ = ["GridSearchExecutor", "leaderboard", "best_cell", "grid_result", "main_metric_of"]

CONFIG_KEYS = ("template", "parallel", "cells")


@register
class GridSearchExecutor(Executor):
    """The parent task of a grid search (virtual: no process, status rolled up from its cells)."""

    type_name = "grid_search"
    virtual = True

    @classmethod
    def validate(cls, spec: dict, ctx: SubmitContext) -> dict:
        """Checks a stored parent config: ``template`` (a mapping with a ``type``), ``parallel``
        (None or an int >= 1) and ``cells`` (an int >= 1).

        Raises:
            DagError: a key is missing, unknown or of the wrong kind.
        """
        unknown = sorted(set(spec) - set(CONFIG_KEYS))
        if unknown:
            raise ctx.error(unknown[0], f"unknown key for a grid search; allowed: {', '.join(CONFIG_KEYS)}")
        template, parallel, cells = spec.get("template"), spec.get("parallel"), spec.get("cells")
        if not isinstance(template, dict) or not isinstance(template.get("type"), str):
            raise ctx.error("template", f"expected a mapping with a 'type', got {template!r}")
        if parallel is not None and (not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1):
            raise ctx.error("parallel", f"got {parallel!r}; allowed: an int >= 1")
        if not isinstance(cells, int) or isinstance(cells, bool) or cells < 1:
            raise ctx.error("cells", f"got {cells!r}; allowed: an int >= 1 (the number of cells)")
        return {"template": dict(template), "parallel": parallel, "cells": cells}

    def run(self, task: TaskContext) -> dict | None:
        """Never called: the supervisor rolls a grid search up from its cells.

        Raises:
            RuntimeError: always, naming the task.
        """
        raise RuntimeError(f"task {task.task_id} ({task.name!r}) is a grid search: it has no process; "
                           f"the supervisor rolls its status up from its cells")


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
