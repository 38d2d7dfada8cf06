"""The comparison page: the curves of several tasks overlaid, one figure per metric."""
from __future__ import annotations

from flask import Blueprint, current_app, request
from sqlalchemy import select

from mlcomp.db import Task
from ui import plots, queries
from ui.series import metric_series
from ui.db import get_session
from ui.errors import ApiError
from ui.views import MAX_INT, twin

__all__ = ["bp"]

bp = Blueprint("compare", __name__)
MAX_TASKS = 20


def _task_ids() -> list[int]:
    raw = ",".join(request.args.getlist("tasks"))
    try:
        ids = list(dict.fromkeys(int(part) for part in raw.replace(" ", ",").split(",") if part))
    except ValueError:
        raise ApiError(f"query argument tasks={raw!r}: expected task ids separated by commas") from None
    if not all(0 <= i <= MAX_INT for i in ids):
        raise ApiError(f"query argument tasks={raw!r}: task ids are integers from 0 to {MAX_INT}")
    if len(ids) > MAX_TASKS:
        raise ApiError(f"query argument tasks: at most {MAX_TASKS} tasks at once, got {len(ids)}")
    return ids


@twin(bp, "/compare", "compare/compare.html")
def compare() -> dict:
    """``?tasks=1,2,3&name=&kind=epoch|batch``: the tasks' series overlaid per metric."""
    ids = _task_ids()
    session = get_session()
    found = {t.id: t for t in session.scalars(select(Task).where(Task.id.in_(ids)))}
    for task_id in ids:
        if task_id not in found:
            queries.get_task_or_404(session, task_id)
    kind = request.args.get("kind") or "epoch"
    if kind not in ("epoch", "batch"):
        raise ApiError(f"query argument kind={kind!r}: expected 'epoch' or 'batch'")
    name = request.args.get("name") or None
    series = metric_series(session, ids, name=name, kind=kind,
                                   max_points=current_app.config["MAX_POINTS"])
    return {"tasks": [{"id": i, "name": found[i].name, "status": found[i].status.value, "dag_id": found[i].dag_id}
                      for i in ids],
            "kind": kind, "name": name or "", "series": series,
            "figures": plots.metric_figures(series, label_task=True)}
