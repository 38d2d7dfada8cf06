"""A search's trials as rows, best first, and its best trial: what ``dag show``, the UI, infer and
trace use (reads only, never commits).

A trial's ``value`` is its best value of the scheduler's metric over the epochs it trained; the
ranking puts trials that reached a higher rung first, then better values. The best trial is the
best that reached ``max_epochs`` (the last rung) and succeeded.
"""
from __future__ import annotations

from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from mlcomp.db import Metric, SearchRung, SearchTrial, Task, TaskStatus
from mlcomp.search.asha import rank_key

__all__ = ["series", "best_so_far", "leaderboard", "best_trial", "search_result"]


def series(session: Session, search: Task, task_ids) -> dict[int, dict[int, float]]:
    """The scheduler metric of each trial in ``task_ids`` by epoch (global epoch, from 1)."""
    sched = search.executor_config["search"]["scheduler"]
    values: dict[int, dict[int, float]] = defaultdict(dict)
    if task_ids:
        rows = session.execute(select(Metric.task_id, Metric.step, Metric.value)
                               .where(Metric.task_id.in_(list(task_ids)), Metric.name == sched["metric"],
                                      Metric.loader == sched["loader"], Metric.kind == "epoch")
                               .order_by(Metric.id))
        for task_id, step, value in rows:
            values[task_id][int(step)] = value
    return values


def best_so_far(values: dict[int, float], epoch: int, minimize: bool) -> float | None:
    """The best of ``values`` (by epoch) at epochs up to ``epoch``; None when there is none."""
    seen = [v for e, v in values.items() if e <= epoch and v == v]
    return (min(seen) if minimize else max(seen)) if seen else None


def leaderboard(session: Session, search: Task) -> list[dict[str, Any]]:
    """The trials of ``search``, best first. Each row: ``task_id``, ``number``, ``name``, ``params``,
    ``status``, ``rung`` (the highest rung index reached, None before the first), ``epochs``
    (trained so far), ``value`` (best scheduler metric so far), ``metric``, ``minimize``,
    ``best`` (True for :func:`best_trial`)."""
    sched = search.executor_config["search"]["scheduler"]
    minimize = sched["mode"] == "min"
    rows = session.execute(select(SearchTrial, Task).join(Task, Task.id == SearchTrial.task_id)
                           .where(SearchTrial.search_id == search.id).order_by(SearchTrial.number)).all()
    rungs: dict[int, int] = {}
    for task_id, rung in session.execute(select(SearchRung.task_id, SearchRung.rung)
                                         .where(SearchRung.search_id == search.id)):
        rungs[task_id] = max(rung, rungs.get(task_id, -1))
    values = series(session, search, [trial.task_id for trial, _ in rows])
    board = []
    for trial, task in rows:
        curve = values.get(task.id, {})
        board.append({"task_id": task.id, "number": trial.number, "name": task.name, "params": dict(trial.params),
                      "status": task.status.value, "rung": rungs.get(task.id), "epochs": max(curve, default=0),
                      "value": best_so_far(curve, max(curve, default=0), minimize), "metric": sched["metric"],
                      "minimize": minimize, "best": False})
    board.sort(key=lambda r: (-(r["rung"] if r["rung"] is not None else -1),) + rank_key(r["value"], r["number"],
                                                                                          minimize))
    top = len(sched["rungs"]) - 1
    for row in board:
        if row["rung"] == top and row["status"] == TaskStatus.success.value and row["value"] is not None:
            row["best"] = True
            break
    return board


def best_trial(session: Session, search: Task) -> Task | None:
    """The succeeded trial that reached ``max_epochs`` with the best value; None when none did."""
    row = next((r for r in leaderboard(session, search) if r["best"]), None)
    return session.get(Task, row["task_id"]) if row else None


def search_result(session: Session, search: Task) -> dict[str, Any]:
    """The result stored on a finished search: the leaderboard, the best trial (``best_task_id``,
    ``best_params``, ``best_value``), ``metric``, ``minimize`` and the trials' total ``epochs``."""
    board = leaderboard(session, search)
    best = next((r for r in board if r["best"]), None)
    sched = search.executor_config["search"]["scheduler"]
    return {"leaderboard": board, "metric": sched["metric"], "minimize": sched["mode"] == "min",
            "best_task_id": best and best["task_id"], "best_params": best and best["params"],
            "best_value": best and best["value"], "epochs": sum(r["epochs"] for r in board)}
