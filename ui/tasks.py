"""The task page and its API: details, the log tail after an id cursor, metric curves, resource
history, checkpoint downloads confined to the task's folder, and the stop/resume commands."""
from __future__ import annotations

import time

from flask import Blueprint, current_app, jsonify, request, send_file

from mlcomp import control
from mlcomp.db import Checkpoint
from mlcomp.errors import NotFoundError
from ui import plots, queries
from ui.series import X_AXES, metric_series, relabel, series_marks
from ui.api import control_response, json_body
from ui.computers import history_body
from ui.db import get_session, writer
from ui.errors import ApiError
from ui.security import confined_path
from ui.views import MAX_INT, choice_arg, int_arg, twin

__all__ = ["bp"]

bp = Blueprint("tasks", __name__)


def _log_tail(context: dict) -> dict:
    return {"logs": queries.task_logs(get_session(), context["id"], limit=current_app.config["LOG_TAIL"])}


@twin(bp, "/tasks/<int:task_id>", "tasks/task.html", page_extra=_log_tail)
def task(task_id: int) -> dict:
    """A task: status, attempts, placement, timings, progress, checkpoints, metric names, result."""
    return queries.task_detail(get_session(), task_id)


@bp.get("/api/tasks/<int:task_id>/logs")
def logs(task_id: int):
    """Log lines after ``?after=<id>`` (or the tail), at most ``?limit=`` (≤ 5000)."""
    return jsonify(queries.task_logs(get_session(), task_id, after=int_arg("after"),
                                     limit=int_arg("limit", 500, lo=1, hi=5000)))


@bp.get("/api/tasks/<int:task_id>/metrics")
def metrics(task_id: int):
    """Metric series (``?name=&kind=epoch|batch&max_points=&x=step|epoch|time``), downsampled
    server-side, ``x`` the steps or the points' epochs or wall times (Unix ms);
    ``?figures=1`` adds one plotly figure per metric (stage boundaries and resume points marked)
    and the one-point series (test, infer) as ``scalars``."""
    session = get_session()
    queries.get_task_or_404(session, task_id)
    kind = request.args.get("kind") or None
    if kind not in (None, "epoch", "batch"):
        raise ApiError(f"query argument kind={kind!r}: expected 'epoch' or 'batch'")
    series = metric_series(session, [task_id], name=request.args.get("name") or None, kind=kind,
                           max_points=int_arg("max_points", current_app.config["MAX_POINTS"], lo=3,
                                              hi=current_app.config["MAX_POINTS"]))
    axis = choice_arg("x", X_AXES, "step")
    relabel(session, series, axis)
    body: dict = {"task_ids": [task_id], "x": axis, "series": series}
    if request.args.get("figures"):
        body["figures"] = plots.metric_figures(series, marks=series_marks(session, task_id), axis=axis)
        body["scalars"] = plots.scalar_values(series)
    return jsonify(body)


@bp.get("/api/tasks/<int:task_id>/resources")
def resources(task_id: int):
    """The CPU % and RSS of the task's processes and the use of its GPUs, from its start to its
    end (or now)."""
    task = queries.get_task_or_404(get_session(), task_id)
    now = time.time()
    start, end = queries.unix(task.started, now), queries.unix(task.finished, now)
    return jsonify({"task_id": task_id, **history_body(get_session(), int(start), int(end) + 1, task_id=task_id)})


@bp.get("/tasks/<int:task_id>/files/<path:path>")
def download(task_id: int, path: str):
    """Downloads a file of the task's folder (a checkpoint); anything outside is refused."""
    queries.get_task_or_404(get_session(), task_id)
    folder = current_app.config["MLCOMP_SETTINGS"].tasks_dir / str(task_id)
    return send_file(confined_path(folder, path), as_attachment=True)


@bp.post("/api/tasks/<int:task_id>/stop")
def stop(task_id: int):
    """Stops the task (:func:`mlcomp.control.stop_task`)."""
    return control_response(control.stop_task, task_id)


@bp.post("/api/tasks/<int:task_id>/resume")
def resume(task_id: int):
    """Resumes the task (:func:`mlcomp.control.resume_task`). Body (JSON or form): ``from``
    ("last", "best" or a checkpoint path inside the task's logdir or a ``checkpoint_dirs``
    folder, relative to the task's folder; :func:`mlcomp.control.resume_from`) or ``checkpoint``
    (the id of one of its checkpoints: its path, relative to the task's folder, becomes
    ``Task.resume_from``)."""
    writer()
    body = json_body()
    from_ = body.get("from") or None
    if from_ is not None and not isinstance(from_, str):
        raise ApiError(f"from={from_!r}: expected 'last', 'best' or a checkpoint path")
    from_ = control.resume_from(current_app.config["MLCOMP_SETTINGS"], task_id, from_)
    if body.get("checkpoint") not in (None, ""):
        from_ = _checkpoint_path(task_id, body["checkpoint"])
    return control_response(control.resume_task, task_id, from_)


def _checkpoint_path(task_id: int, checkpoint_id) -> str:
    try:
        number = int(checkpoint_id)
    except (TypeError, ValueError):
        number = -1
    if not 0 <= number <= MAX_INT:
        raise ApiError(f"checkpoint={checkpoint_id!r}: expected a checkpoint id (an integer)")
    checkpoint = get_session().get(Checkpoint, number)
    if checkpoint is None or checkpoint.task_id != task_id:
        raise NotFoundError(f"task {task_id} has no checkpoint {checkpoint_id}")
    return checkpoint.path  # relative to the task's folder, wherever the worker keeps it
