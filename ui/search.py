"""The search page: a search's trials (parameters, rung reached, status, best metric) best first,
the metric-vs-epoch curves of every trial on one plot, and parallel coordinates over the sampled
parameters, the best trial marked; the page reloads while the search runs."""
from __future__ import annotations

from flask import Blueprint

from mlcomp.db import Task
from mlcomp.errors import NotFoundError
from mlcomp.kinds import TaskKind
from mlcomp.search.board import leaderboard, series
from ui import plots
from ui.db import get_session
from ui.views import twin

__all__ = ["bp", "search_page"]

bp = Blueprint("search", __name__)


def search_page(session, task_id: int) -> dict:
    """The search ``task_id`` as the page's dict: ``task``, ``dag``, ``metric``, ``minimize``,
    ``rungs`` (epochs), ``params`` (names), ``trials`` (:func:`mlcomp.search.board.leaderboard`),
    ``best_task_id`` and the two figures.

    Raises:
        NotFoundError: no task ``task_id``, or it is not a search.
    """
    task = session.get(Task, task_id)
    if task is None or task.type != TaskKind.SEARCH:
        raise NotFoundError(f"task {task_id} is not a search")
    spec = task.executor_config["search"]
    trials = leaderboard(session, task)
    sched = spec["scheduler"]
    minimize = sched["mode"] == "min"
    params = list(spec["space"])
    best = next((r["task_id"] for r in trials if r["best"]), None)
    return {"task": {"id": task.id, "name": task.name, "status": task.status.value},
            "dag": {"id": task.dag_id, "name": task.dag.name}, "metric": sched["metric"], "minimize": minimize,
            "scheduler": sched["type"], "sampler": spec["sampler"], "budget": spec["trials"],
            "rungs": sched["rungs"], "params": params, "trials": trials, "best_task_id": best,
            "curves": plots.search_curves(trials, series(session, task, [r["task_id"] for r in trials]),
                                          sched["metric"]),
            "parcoords": plots.parallel_coordinates({"cells": trials, "params": params, "metric": sched["metric"],
                                                     "minimize": minimize})}


@twin(bp, "/search/<int:task_id>", "search/search.html")
def search(task_id: int) -> dict:
    """Trials, curves and parallel coordinates of search ``task_id``."""
    return search_page(get_session(), task_id)
