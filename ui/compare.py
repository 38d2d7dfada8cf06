"""The comparison page: the curves of several runs overlaid, one figure per metric, one colour per
run across every figure (train solid, valid dashed), each run named by the hyper-parameters that
differ between the runs (its grid cell, its DAG's cell and ``--set`` overrides) and its DAG; and
a table of each run's best and final epoch values. Runs are picked by task id or by DAG."""
from __future__ import annotations

from flask import Blueprint, current_app, request
from sqlalchemy import exists, select

from mlcomp.db import Metric, Task
from ui import plots, queries
from ui.series import X_AXES, metric_series, relabel
from ui.db import get_session
from ui.errors import ApiError
from ui.views import MAX_INT, choice_arg, twin

__all__ = ["bp", "run_labels", "summary"]

bp = Blueprint("compare", __name__)
MAX_TASKS = 20


def _ids(arg: str, what: str) -> list[int]:
    raw = ",".join(request.args.getlist(arg))
    try:
        ids = list(dict.fromkeys(int(part) for part in raw.replace(" ", ",").split(",") if part))
    except ValueError:
        raise ApiError(f"query argument {arg}={raw!r}: expected {what} ids separated by commas") from None
    if not all(0 <= i <= MAX_INT for i in ids):
        raise ApiError(f"query argument {arg}={raw!r}: {what} ids are integers from 0 to {MAX_INT}")
    return ids


def _task_ids(session) -> list[int]:
    """``?tasks=`` and the tasks with metrics of the DAGs in ``?dags=``, at most MAX_TASKS."""
    ids = _ids("tasks", "task")
    dag_ids = _ids("dags", "DAG")
    for dag_id in dag_ids:
        queries.get_dag_or_404(session, dag_id)
    if dag_ids:
        reported = exists().where(Metric.task_id == Task.id)
        ids += [i for i in session.scalars(select(Task.id).where(Task.dag_id.in_(dag_ids), reported)
                                           .order_by(Task.dag_id, Task.id)) if i not in ids]
    if len(ids) > MAX_TASKS:
        raise ApiError(f"query arguments tasks and dags: at most {MAX_TASKS} runs at once, got {len(ids)}")
    return ids


def _params(task: Task) -> dict:
    """A run's hyper-parameters: its DAG's ``--set`` overrides and grid cell, then its own cell."""
    return {**queries.overrides(task.dag.config, task.dag.grid_cell), **(task.grid_cell or {})}


def run_labels(tasks: list[Task]) -> dict[int, str]:
    """A legend name per task: ``"lr=0.1 model=m0 · digits#3"``, the parameters whose values differ
    between ``tasks`` (all of them for a single task) and the DAG; the task's name when none differ."""
    params = {t.id: _params(t) for t in tasks}
    keys = sorted({k for p in params.values() for k in p})
    differing = [k for k in keys if len(tasks) == 1 or len({repr(p.get(k)) for p in params.values()}) > 1]
    labels = {}
    for t in tasks:
        named = " ".join(f"{k}={params[t.id][k]}" for k in differing if k in params[t.id])
        labels[t.id] = f"{named or t.name} · {t.dag.name}#{t.dag_id}"
    if len(set(labels.values())) < len(labels):  # the same parameters twice: tell them apart by id
        labels = {i: f"#{i} {label}" for i, label in labels.items()}
    return labels


def summary(series: list[dict], labels: dict[int, str]) -> list[dict]:
    """The best and final epoch value of each run's series: ``[{"task_id", "run", "name",
    "loader", "best", "final", "minimize"}]``; the best is the lowest for names holding ``loss``
    or ``error``, else the highest (over the bucket minima or maxima of a bucketed series)."""
    rows = []
    for s in series:
        values = [v for v in s["y"] if v is not None]
        if s["kind"] != "epoch" or not values:
            continue
        minimize = any(word in s["name"] for word in ("loss", "error"))
        extremes = [v for v in s.get("y_min" if minimize else "y_max", values) if v is not None]
        rows.append({"task_id": s["task_id"], "run": labels[s["task_id"]], "name": s["name"],
                     "loader": s["loader"], "best": min(extremes) if minimize else max(extremes),
                     "final": values[-1], "minimize": minimize})
    return rows


@twin(bp, "/compare", "compare/compare.html")
def compare() -> dict:
    """``?tasks=1,2,3&dags=4,5&name=&kind=epoch|batch&x=step|epoch|time``: the runs' series
    overlaid per metric."""
    session = get_session()
    ids = _task_ids(session)
    found = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(ids)))}
    for task_id in ids:
        if task_id not in found:
            queries.get_task_or_404(session, task_id)
    kind = request.args.get("kind") or "epoch"
    if kind not in ("epoch", "batch"):
        raise ApiError(f"query argument kind={kind!r}: expected 'epoch' or 'batch'")
    name = request.args.get("name") or None
    series = metric_series(session, ids, name=name, kind=kind, max_points=current_app.config["MAX_POINTS"])
    summaries = summary(series, labels := run_labels([found[i] for i in ids]))
    axis = choice_arg("x", X_AXES, "step")
    relabel(session, series, axis)
    return {"tasks": [{"id": i, "name": found[i].name, "status": found[i].status.value, "dag_id": found[i].dag_id,
                       "label": labels[i], "colour": plots.PALETTE[n % len(plots.PALETTE)]}
                      for n, i in enumerate(ids)],
            "kind": kind, "name": name or "", "x": axis, "series": series,
            "figures": plots.metric_figures(series, labels=labels, axis=axis),
            "scalars": plots.scalar_values(series, labels), "summary": summaries}
